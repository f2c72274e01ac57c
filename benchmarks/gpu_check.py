"""Every GPU number `lm` reports, from one command, in stages that each leave their results behind.

    python -m benchmarks.gpu_check --out DIR            # on a GPU: under 8 minutes on one H100/H200
    python -m benchmarks.gpu_check --cpu-smoke --out DIR  # every stage at toy sizes on a CPU (a test runs it)

Stages (DIR/gpu_results.json and DIR/gpu_results.md are rewritten after each one, so a stage that
dies or runs out of time still leaves the earlier ones; `--stages` picks some):
  env          device kind, jax/jaxlib/flax/optax/orbax versions, CUDA and cuDNN versions, free memory
  correctness  the GPU-marked kernel tests (`pytest -m gpu tests/kernels`: the Pallas kernels compiled
               for real against float64 references, f32 and bf16; RMSNorm in Pallas and Triton), and one
               train step of `gpt2-small` with attention impl cudnn, pallas and xla: the same loss to bf16
               tolerance
  attention    causal bf16 attention, batch 1, 16 heads of 64, at 1k, 4k and 16,384 tokens (CS336
               assignment 2's leaderboard shape; best published 5.36 ms on an H100): forward and
               forward+backward ms and TFLOP/s of our Pallas kernel, cuDNN and plain XLA, interleaved
  train        tokens/s and MFU (against the bf16 dense peak, 989 TFLOP/s for H100 SXM and H200) of
               `gpt2-small` and `d12` with remat none and dots, at the largest batch the compiled step's
               memory analysis says fits; model FLOPs checked against XLA's cost analysis
  decode       tokens/s at batch 1 and 64 for `gpt2-small` and `350m` (bf16 weights, 128-token prompts)
               and MBU: weight and KV-cache bytes read per step over the HBM bandwidth (H200 4.8 TB/s)

On the lent GPU machine (Python 3.12, jax 0.11 with CUDA, no network), first fetch here the wheels
its image lacks (`bash benchmarks/gpu_wheels.sh`, into the ignored `.whl/`), then run, with `.whl` carried:

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \\
        .whl/*.whl && export PYTHONPATH=/tmp/site; \\
        PYTHONUNBUFFERED=1 timeout 540 python3 -m benchmarks.gpu_check --out $OUT

and copy DIR/gpu_results.md into benchmarks/RESULTS.md with the device named (`--write` does it).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.gpu import compile_fn, spec_bandwidth, time_interleaved
from benchmarks.results import markdown_table
from lm.cli_env import prepare_process

REPO = Path(__file__).resolve().parents[1]

STAGES = ("env", "correctness", "attention", "train", "decode")
BF16_PEAK = {"H200": 989e12, "H100": 989e12, "A100": 312e12}  # dense bf16 FLOP/s by device kind
LEADERBOARD_MS = 5.36  # CS336 assignment 2, seq 16,384 forward+backward, best published, H100


@dataclasses.dataclass(frozen=True)
class Sizes:
    """What each stage measures; `--cpu-smoke` shrinks every model and shape so a CPU finishes in seconds."""

    smoke: bool = False
    step_check_batch: int = 4
    attention_seqs: tuple = (1024, 4096, 16384)
    attention_heads: int = 16
    head_dim: int = 64
    train_presets: tuple = ("gpt2-small", "d12")
    train_remats: tuple = ("none", "dots")
    train_probe_batch: int = 8
    train_max_batch: int = 512
    train_steps: int = 8
    decode_presets: tuple = ("gpt2-small", "350m")
    decode_batches: tuple = (1, 64)
    prompt_len: int = 128
    new_tokens: int = 128
    repeats: int = 5
    pytest_timeout: int = 180

    @staticmethod
    def cpu_smoke() -> "Sizes":
        return Sizes(smoke=True, step_check_batch=2, attention_seqs=(128,), attention_heads=2, head_dim=32,
                     train_presets=("gpt2-small",), train_remats=("dots",), train_probe_batch=2, train_max_batch=4,
                     train_steps=2, decode_presets=("350m",), decode_batches=(2,), prompt_len=8, new_tokens=8,
                     repeats=2, pytest_timeout=120)

    def model(self, name: str, **overrides):
        """A preset, or in smoke mode the same architecture at toy size."""
        from lm.model import get_preset

        if self.smoke:
            small = dict(vocab_size=256, context_length=64, d_model=64, n_layers=1, d_ff=128)
            heads = get_preset(name).n_heads
            small["n_heads"] = 2 if heads % 2 == 0 else 1
            small["n_kv_heads"] = 1 if get_preset(name).n_kv_heads else 0
            overrides = {**small, **overrides}
        return get_preset(name, **overrides)


class Report:
    """Stage results, written as JSON and Markdown after every stage."""

    def __init__(self, out: Path):
        self.out = out
        out.mkdir(parents=True, exist_ok=True)
        self.data: dict = {"started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "stages": {}}
        self.md: dict[str, str] = {}

    def record(self, stage: str, result: dict, md: str) -> None:
        self.data["stages"][stage] = result
        self.md[stage] = md
        self.write()

    def write(self) -> None:
        _atomic_write(self.out / "gpu_results.json", json.dumps(self.data, indent=2, default=str))
        head = f"# GPU check ({self.data['started']})\n\n`python -m benchmarks.gpu_check`\n"
        _atomic_write(self.out / "gpu_results.md", head + "\n" + "\n\n".join(self.md.values()) + "\n")


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _error(e: BaseException) -> str:
    lines = [x for x in str(e).splitlines() if x.strip()]
    return f"{type(e).__name__}: {lines[0][:200] if lines else ''}"


class Clock:
    """The run's time budget: stages skip what would not finish."""

    def __init__(self, budget_s: float):
        self.end = time.monotonic() + budget_s

    def left(self) -> float:
        return self.end - time.monotonic()


# ----------------------------------------------------------------- env
def stage_env(sizes: Sizes, clock: Clock) -> tuple[dict, str]:
    from importlib import metadata

    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "not installed"

    dev = jax.devices()[0]
    r = {"backend": jax.default_backend(), "device_kind": dev.device_kind, "device_count": jax.device_count(),
         "python": platform.python_version(), "jax": jax.__version__,
         **{d: version(d) for d in ("jaxlib", "flax", "optax", "orbax-checkpoint", "jax-triton", "triton")}}
    try:
        from jax._src.lib import cuda_versions  # present in CUDA builds of jaxlib only

        if cuda_versions is not None:
            r["cuda_runtime"] = cuda_versions.cuda_runtime_get_version()
            r["cudnn"] = cuda_versions.cudnn_get_version()
    except Exception as e:  # noqa: BLE001 (a CPU jaxlib, or the module moved)
        r["cuda_runtime"] = f"unavailable ({_error(e)})"
    stats = dev.memory_stats() if hasattr(dev, "memory_stats") else None
    if stats:
        r["memory_limit_gib"] = round(stats.get("bytes_limit", 0) / 2**30, 2)
        r["memory_in_use_gib"] = round(stats.get("bytes_in_use", 0) / 2**30, 2)
    r["peak_bf16_flops"] = next((p for k, p in BF16_PEAK.items() if k in dev.device_kind), None)
    r["hbm_gb_s"] = spec_bandwidth(dev)
    md = "## Environment\n\n" + markdown_table(["item", "value"], [[k, v] for k, v in r.items()])
    return r, md


# ----------------------------------------------------------------- correctness
def _pytest_gpu(sizes: Sizes) -> dict:
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-n", "0", "-q", "-p", "no:cacheprovider", "tests/kernels"]
    t0 = time.perf_counter()
    try:
        out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=sizes.pytest_timeout)
    except subprocess.TimeoutExpired:
        return {"command": " ".join(cmd[1:]), "summary": f"timed out after {sizes.pytest_timeout} s"}
    tail = [x for x in out.stdout.splitlines() if x.strip()]
    failed = [x for x in tail if x.startswith("FAILED")]
    return {"command": " ".join(cmd[1:]), "returncode": out.returncode,
            "summary": tail[-1] if tail else out.stderr[-300:], "failed": failed[:20],
            "seconds": round(time.perf_counter() - t0, 1)}


def _one_step_losses(sizes: Sizes, clock: Clock) -> dict:
    from lm.train.config import TrainConfig
    from lm.train.step import init_state, train_step

    base = TrainConfig(model=sizes.model("gpt2-small"), batch_size=sizes.step_check_batch)
    state = jax.jit(functools.partial(init_state, base))(jax.random.PRNGKey(0))
    c = base.model
    batch = jnp.asarray(np.random.default_rng(0).integers(0, c.vocab_size, (base.batch_size, c.context_length + 1)),
                        jnp.int32)
    losses = {}
    for impl in ("cudnn", "pallas", "xla"):
        if clock.left() < 30:
            losses[impl] = "skipped: out of time"
            continue
        cfg = dataclasses.replace(base, model=dataclasses.replace(c, attention_impl=impl))
        try:
            _, metrics = jax.jit(functools.partial(train_step, config=cfg))(state, batch)
            losses[impl] = float(metrics["loss"])
        except Exception as e:  # noqa: BLE001 (cuDNN on a CPU, a kernel that fails to compile: report it)
            losses[impl] = _error(e)
    numbers = {k: v for k, v in losses.items() if isinstance(v, float)}
    ref = numbers.get("xla")
    agree = {k: abs(v - ref) / abs(ref) for k, v in numbers.items()} if ref else {}
    return {"model": "gpt2-small" + (" (toy size)" if sizes.smoke else ""), "batch": base.batch_size,
            "losses": losses, "rel_diff_vs_xla": agree, "same_to_bf16": all(d < 2e-2 for d in agree.values())}


def _document_masks() -> dict:
    """Packed documents (segment ids) and a sliding window through cuDNN's and Pallas's attention against
    XLA's, bf16: the dense-mask path of the cuDNN call is only ever run here."""
    from lm.model.attention import attention

    keys = jax.random.split(jax.random.PRNGKey(7), 3)
    q, k, v = (jax.random.normal(key, (2, 256, 8, 64), jnp.bfloat16) for key in keys)
    k, v = k[:, :, :2], v[:, :, :2]  # GQA: 8 query heads over 2 key heads
    seg = jnp.asarray(np.repeat([[0, 1, 2], [0, 0, 1]], [60, 100, 96], axis=1), jnp.int32)
    out = {}
    for name, kw in (("segments", dict(q_segments=seg, k_segments=seg)), ("window", dict(window=64))):
        ref = np.asarray(jax.jit(lambda q, k, v: attention(q, k, v, impl="xla", **kw))(q, k, v), np.float32)
        for impl in ("cudnn", "pallas"):
            try:
                got = np.asarray(jax.jit(lambda q, k, v: attention(q, k, v, impl=impl, **kw))(q, k, v), np.float32)
                out[f"{impl} {name}"] = float(np.abs(got - ref).max() / np.abs(ref).max())
            except Exception as e:  # noqa: BLE001
                out[f"{impl} {name}"] = _error(e)
    return out


def stage_correctness(sizes: Sizes, clock: Clock) -> tuple[dict, str]:
    tests = _pytest_gpu(sizes)
    masks = _document_masks()
    step = _one_step_losses(sizes, clock)
    rows = [[impl, f"{v:.5f}" if isinstance(v, float) else v,
             f"{step['rel_diff_vs_xla'][impl]:.2e}" if impl in step["rel_diff_vs_xla"] else "-"]
            for impl, v in step["losses"].items()]
    md = ("## Correctness\n\n"
          f"GPU-marked kernel tests (`{tests['command']}`): {tests['summary']}"
          + ("".join(f"\n- {f}" for f in tests.get("failed", []))) + "\n\n"
          f"One train step of {step['model']}, batch {step['batch']}, bf16: loss by attention impl "
          f"(same to bf16 tolerance, 2e-2: {'yes' if step['same_to_bf16'] else 'NO'}).\n\n"
          + markdown_table(["impl", "loss", "relative difference to xla"], rows)
          + "\n\nAttention with packed documents (segment ids) and with a 64-token window, bf16, GQA 8/2, "
          "max |difference| / max |xla|:\n\n"
          + markdown_table(["case", "relative difference to xla"],
                           [[k, f"{v:.2e}" if isinstance(v, float) else v] for k, v in masks.items()]))
    return {"kernel_tests": tests, "train_step": step, "document_masks": masks}, md


# ----------------------------------------------------------------- attention
def stage_attention(sizes: Sizes, clock: Clock) -> tuple[dict, str]:
    from lm.kernels.flash_attention import flash_attention
    from lm.model.attention import attention

    impls = {"pallas (ours)": lambda q, k, v: flash_attention(q, k, v),
             "cudnn": lambda q, k, v: attention(q, k, v, impl="cudnn"),
             "xla": lambda q, k, v: attention(q, k, v, impl="xla")}

    def with_backward(f):
        def fwd_bwd(q, k, v, do):
            out, vjp = jax.vjp(f, q, k, v)
            return out, vjp(do)
        return fwd_bwd

    rows, results = [], []
    for seq in sizes.attention_seqs:
        if clock.left() < 45:
            results.append({"seq": seq, "skipped": "out of time"})
            continue
        h, d = sizes.attention_heads, sizes.head_dim
        q, k, v, do = (jax.random.normal(key, (1, seq, h, d), jnp.bfloat16)
                       for key in jax.random.split(jax.random.PRNGKey(seq), 4))
        fwd_flops = 4 * h * seq * seq * d / 2  # causal: half the score matrix
        entry = {"seq": seq}
        backward = {n: with_backward(f) for n, f in impls.items()}
        for phase, fns, args, mult in (("fwd", impls, (q, k, v), 1.0), ("fwd+bwd", backward, (q, k, v, do), 3.5)):
            compiled, errors = {}, {}
            for name, fn in fns.items():
                c, mem = compile_fn(fn, *args)
                (compiled.__setitem__(name, c) if c is not None else errors.__setitem__(name, mem))
            times = time_interleaved(compiled, args, repeats=sizes.repeats) if compiled else {}
            for name in fns:
                t = times.get(name)
                entry[f"{phase} {name}"] = ({"ms": t * 1e3, "tflops": mult * fwd_flops / t / 1e12}
                                            if t else {"error": errors.get(name)})
        results.append(entry)
        for name in impls:
            f, b = entry[f"fwd {name}"], entry[f"fwd+bwd {name}"]
            cell = lambda x, key: f"{x[key]:.2f}" if key in x else x.get("error", "-")  # noqa: E731
            rows.append([seq, name, cell(f, "ms"), cell(f, "tflops"), cell(b, "ms"), cell(b, "tflops")])
    md = ("## Attention\n\n"
          f"Causal, bf16, batch 1, {sizes.attention_heads} heads of {sizes.head_dim}; median of interleaved runs. "
          "TFLOP/s count the causal half of the matmuls (forward+backward: 3.5x the forward's). "
          f"CS336 assignment 2's best published time at 16,384 tokens: {LEADERBOARD_MS} ms (H100).\n\n"
          + markdown_table(["seq", "implementation", "fwd ms", "fwd TFLOP/s", "fwd+bwd ms", "fwd+bwd TFLOP/s"], rows))
    return {"rows": results}, md


# ----------------------------------------------------------------- train
def _abstract(plan, config):
    state = jax.eval_shape(plan.init, jax.ShapeDtypeStruct((2,), np.uint32))
    batch = jax.ShapeDtypeStruct((config.batch_size, config.model.context_length + 1), np.int32)
    return state, batch


def _compile(model, batch: int):
    """(config, plan, compiled train step) for `model` at `batch`, from shapes alone."""
    from lm.train.config import TrainConfig
    from lm.trainer import pretrain_plan

    cfg = TrainConfig(model=model, batch_size=batch)
    plan = pretrain_plan(cfg)
    return cfg, plan, plan.train_step.lower(*_abstract(plan, cfg)).compile()


def _fit_batch(model, sizes: Sizes, limit: float | None):
    """(batch, fit notes, compiled step at the probe batch): the largest power-of-two batch whose compiled
    step fits in 85% of `limit`, from the memory a small probe batch's compiled step plans (activations
    grow with the batch, params and optimizer state do not)."""
    probe = sizes.train_probe_batch
    probe_compiled = _compile(model, probe)
    m = probe_compiled[2].memory_analysis()
    fixed = m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
    per_row = max(m.temp_size_in_bytes / probe, 1.0)
    fit = {"probe_batch": probe, "temp_per_row_mib": per_row / 2**20, "fixed_gib": fixed / 2**30}
    batch = probe
    while limit and batch * 2 <= sizes.train_max_batch and fixed + per_row * batch * 2 <= 0.85 * limit:
        batch *= 2
    return batch, fit, probe_compiled


def _train_one(model, sizes: Sizes, limit, peak) -> dict:
    from lm.train.report import xla_flops_per_token

    batch, fit, probe = _fit_batch(model, sizes, limit)
    while True:
        try:
            cfg, plan, compiled = probe if batch == fit["probe_batch"] else _compile(model, batch)
            state = plan.init(jax.random.PRNGKey(0))
            rng = np.random.default_rng(0)
            data = [jnp.asarray(rng.integers(0, model.vocab_size, (batch, model.context_length + 1)), jnp.int32)
                    for _ in range(2)]
            for i in range(2):  # warm-up
                state, metrics = compiled(state, data[i % 2])
            jax.block_until_ready(metrics)
            t0 = time.perf_counter()
            for i in range(sizes.train_steps):
                state, metrics = compiled(state, data[i % 2])
            jax.block_until_ready(metrics)
            seconds = (time.perf_counter() - t0) / sizes.train_steps
            break
        except Exception as e:  # noqa: BLE001 (out of memory despite the plan: halve and try again)
            if batch <= 1 or "RESOURCE_EXHAUSTED" not in str(e):
                return {"error": _error(e), "batch": batch, **fit}
            batch //= 2
    tokens = batch * model.context_length / seconds
    mine = model.flops_per_token()
    mem = compiled.memory_analysis()
    return {"batch": batch, "step_s": seconds, "tokens_per_s": tokens, "mfu": tokens * mine / peak if peak else None,
            "flops_per_token": mine, "xla_flops_ratio": xla_flops_per_token(cfg) / mine,
            "loss": float(metrics["loss"]), "temp_gib": mem.temp_size_in_bytes / 2**30 if mem else None, **fit}


def stage_train(sizes: Sizes, clock: Clock, env: dict) -> tuple[dict, str]:
    limit, peak = env.get("memory_limit_gib"), env.get("peak_bf16_flops")
    limit = limit * 2**30 if limit else None
    rows, results = [], []
    for name in sizes.train_presets:
        for remat in sizes.train_remats:
            key = f"{name} remat={remat}"
            if clock.left() < 60:
                results.append({"run": key, "skipped": "out of time"})
                rows.append([name, remat, "skipped: out of time", "", "", "", "", ""])
                continue
            r = _train_one(sizes.model(name, remat=remat), sizes, limit, peak)
            results.append({"run": key, **r})
            if "error" in r:
                rows.append([name, remat, r["error"], "", "", "", "", ""])
                continue
            rows.append([name, remat, r["batch"], f"{r['tokens_per_s']:,.0f}",
                         f"{r['mfu']:.1%}" if r["mfu"] is not None else "-", f"{r['step_s'] * 1e3:.1f}",
                         f"{r['xla_flops_ratio']:.3f}", f"{r['temp_gib']:.2f}" if r["temp_gib"] is not None else "-"])
            print(f"  train {key}: {rows[-1]}", flush=True)
    md = ("## Training\n\n"
          f"bf16 compute, float32 params and AdamW state, one device; batch: the largest power of two whose "
          f"compiled step fits 85% of the device memory (from a batch-{sizes.train_probe_batch} probe). MFU: "
          "model FLOPs (6N + 12 L T d, as in the training log) over the bf16 dense peak.\n\n"
          + markdown_table(["preset", "remat", "batch", "tokens/s", "MFU", "step ms", "XLA FLOPs / config",
                            "temporaries GiB"], rows))
    return {"rows": results}, md


# ----------------------------------------------------------------- decode
def _decode_one(model, batch: int, sizes: Sizes, bandwidth) -> dict:
    from lm.inference import SamplingConfig
    from lm.inference.generate import decode, start
    from lm.model import init

    params = jax.jit(init, static_argnums=0)(model, jax.random.PRNGKey(0))
    greedy = SamplingConfig(temperature=0.0, max_new_tokens=sizes.new_tokens)
    prompts = np.random.default_rng(batch).integers(0, model.vocab_size, (batch, sizes.prompt_len)).tolist()
    times = []
    for _ in range(sizes.repeats + 1):  # the first run compiles
        s = jax.block_until_ready(start(params, model, prompts, greedy))
        t0 = time.perf_counter()
        s = jax.block_until_ready(decode(params, model, s, greedy))
        times.append(time.perf_counter() - t0)
    steps = int(s.step) - 1  # the first token came with the prefill
    step_s = float(np.median(times[1:])) / max(steps, 1)
    c = model
    weight_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(params))
    cache_len = s.cache.max_len
    kv_bytes = 2 * c.n_layers * batch * c.kv_heads * cache_len * c.head_dim * jnp.dtype(c.dtype).itemsize
    mbu = (weight_bytes + kv_bytes) / step_s / (bandwidth * 1e9) if bandwidth else None
    return {"batch": batch, "tokens_per_s": batch / step_s, "step_ms": step_s * 1e3, "weight_gib": weight_bytes / 2**30,
            "kv_cache_gib": kv_bytes / 2**30, "mbu": mbu}


def stage_decode(sizes: Sizes, clock: Clock, env: dict) -> tuple[dict, str]:
    bandwidth = env.get("hbm_gb_s")
    rows, results = [], []
    for name in sizes.decode_presets:
        model = sizes.model(name, param_dtype="bfloat16")  # served in bf16: half the bytes per step
        for batch in sizes.decode_batches:
            if clock.left() < 30:
                results.append({"preset": name, "batch": batch, "skipped": "out of time"})
                continue
            try:
                r = _decode_one(model, batch, sizes, bandwidth)
            except Exception as e:  # noqa: BLE001
                r = {"batch": batch, "error": _error(e)}
            results.append({"preset": name, **r})
            rows.append([name, batch, r.get("error") or f"{r['tokens_per_s']:,.0f}",
                         f"{r['step_ms']:.2f}" if "step_ms" in r else "",
                         f"{r['mbu']:.1%}" if r.get("mbu") is not None else "-"])
            print(f"  decode {name} batch {batch}: {rows[-1]}", flush=True)
    md = ("## Decode\n\n"
          f"Greedy, {sizes.prompt_len}-token prompts, {sizes.new_tokens} new tokens, bf16 weights, KV cache over "
          "every slot (XLA attention). MBU: weights plus the KV cache read per step over the HBM bandwidth "
          f"({bandwidth or '?'} GB/s).\n\n"
          + markdown_table(["preset", "batch", "tokens/s", "ms per step", "MBU"], rows))
    return {"rows": results}, md


# ----------------------------------------------------------------- main
def run(out: Path, sizes: Sizes, stages=STAGES, budget_s: float = 480.0) -> dict:
    report, clock, env = Report(out), Clock(budget_s), {}
    for stage in stages:
        t0 = time.perf_counter()
        print(f"[gpu_check] {stage} ({clock.left():.0f} s of the budget left)", flush=True)
        try:
            if stage == "env":
                env, md = stage_env(sizes, clock)
                result = env
            elif stage in ("train", "decode"):
                env = env or stage_env(sizes, clock)[0]
                result, md = (stage_train if stage == "train" else stage_decode)(sizes, clock, env)
            else:
                result, md = {"correctness": stage_correctness, "attention": stage_attention}[stage](sizes, clock)
        except Exception as e:  # noqa: BLE001 (a stage that dies must not take the others' results with it)
            result, md = {"error": _error(e)}, f"## {stage}\n\nfailed: {_error(e)}"
        result = {**result, "seconds": round(time.perf_counter() - t0, 1)} if isinstance(result, dict) else result
        report.record(stage, result, md)
        print(md + "\n", flush=True)
    return report.data


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="directory for gpu_results.json and gpu_results.md")
    ap.add_argument("--cpu-smoke", action="store_true", help="every stage at toy sizes (runs on a CPU)")
    ap.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    ap.add_argument("--budget-s", type=float, default=480.0, help="stop starting work after this many seconds")
    ap.add_argument("--write", action="store_true", help="append the Markdown to benchmarks/RESULTS.md")
    args = ap.parse_args(argv)
    if not args.cpu_smoke and jax.default_backend() != "gpu":
        print(f"the GPU check needs a GPU (jax sees {jax.default_backend()!r}); use --cpu-smoke to exercise it here",
              file=sys.stderr)
        return 2
    sizes = Sizes.cpu_smoke() if args.cpu_smoke else Sizes()
    data = run(Path(args.out), sizes, args.stages, args.budget_s)
    if args.write and not args.cpu_smoke:
        from benchmarks.results import write_section

        kind = data["stages"].get("env", {}).get("device_kind", "GPU")
        body = (Path(args.out) / "gpu_results.md").read_text().replace("# GPU check", f"## GPU check on {kind}", 1)
        write_section("gpu_check", body)
    failed = [s for s, r in data["stages"].items() if isinstance(r, dict) and "error" in r]
    return 1 if failed else 0


if __name__ == "__main__":
    # The kernel tests run in a second process on the same GPU: allocate on demand rather than 75% up front.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    prepare_process()
    sys.exit(main())
