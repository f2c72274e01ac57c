"""Train-step speed of `lm` against PyTorch eager and torch.compile, in one run.

    python benchmarks/train_step.py [--steps 10] [--runs 3] [--no-write]

The model is the `bench` preset (d_model 256, 4 layers, 8 heads, d_ff 1024,
vocab 10,000, context 256), batch 16, float32, AdamW with global-norm
clipping in all three. Each measurement is a fresh subprocess (so threads and
caches are its own), and the frameworks alternate so that a busy machine slows
them alike. Prints a table and writes the `train_step` section of
benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.results import machine_description, markdown_table, write_section  # noqa: E402

BATCH = 16
LR, B1, B2, EPS, WD, CLIP = 3e-3, 0.9, 0.95, 1e-8, 0.1, 1.0
WORKERS = ("jax", "torch-eager", "torch-compile")

# What profiling the XLA CPU step found (jaxlib 0.10.2, 2-core EPYC); kept with the numbers it explains.
PROFILE_NOTES = """\
Profile of the JAX step (per-part timings with the machine otherwise idle, `bench` shapes):
- Matmuls are not the problem: every [4096, 256] x [256, 1024] product, forward or either
  backward layout, runs at 150-197 GFLOP/s through YNNPACK, as fast as a 2048^3 matmul.
- The SwiGLU MLP forward+backward took 311 ms per layer against about 110 ms of matmul work.
  The elementwise work around the matmuls (silu, gate product and their gradients) ran as
  separate XLA loops over [4096, 1024] arrays, and the weight-gradient dots took transposed
  operand copies. Letting YNNPACK fuse elementwise ops into its graphs
  (`--xla_cpu_experimental_ynn_fusion_type=...DOT,...ELTWISE`, set by `lm/xla_flags.py`)
  brings the MLP to about 170 ms and the whole step from 2.18 to 1.91 s (1.14x).
- Attention was 183 ms per layer forward+backward, mostly softmax and masking over the full
  [16, 8, 256, 256] score tensor. Query blocks of 64 that score only the keys they can see
  (`blocked_causal_attention`) cut that by 30-40%. `jax.nn.dot_product_attention` (XLA)
  is no faster than our einsum version on CPU.
- The optimizer update is 7-9 ms (ours and optax alike) and cross-entropy on [4096, 10000]
  logits is about 110 ms forward+backward. A one-hot formulation was slower than the gather.
- Together these took the step from about 2.35 s to 1.91 s. That is still short of the
  target: PyTorch eager's step is about 1.5 s. The remaining gap is in XLA's elementwise
  and transpose passes between matmuls: the norms, RoPE, residuals, the softmax backward, and
  the logits. PyTorch runs these as vectorised kernels on both cores.
- A second pass (2026-11-24, a slower day on this host: 2048^3 matmul 137-146 GFLOP/s, one
  run gave jax 1,458 / eager 1,721 / compile 2,001 tokens/s, 0.85x and 0.73x):
  - No XLA flag beat the noise of about 10% on the whole step: adding YNNPACK REDUCE fusion,
    the concurrency-optimised scheduler, the FAST_RUNTIME preset, fast math, or dropping
    ELTWISE fusion (DOT only). Default flags were slowest in both runs (3.1-3.2 s against 2.9-3.0 s).
  - Per fusion: the head's forward matmul ([4096, 256] x [256, 10000]) takes 230 ms, at
    91 GFLOP/s. The head's weight gradient first transposes the [4096, 10000] logit gradient
    (40 ms copy). The MLP's up-projections reach only about 48 GFLOP/s (45 ms each), against
    about 105 GFLOP/s for the same shapes in the backward pass.
  - In isolation, SwiGLU forward+backward on [4096, 256] (w1, w3 256->1024, w2 1024->256)
    takes 255-265 ms in repeated runs, with or without the RMSNorm before it and with or
    without an optimization barrier between them (the norm alone is 5 ms). Its matmuls are
    19 GFLOP, 140 ms at this day's matmul rate, so nearly half of the MLP is elementwise work and
    slow matmul layouts. A first single run that suggested the norm cost 90 ms did not repeat:
    on this shared host, single runs swing by 30%.
"""


def _model_config():
    from lm.model import get_preset

    return get_preset("bench")


def _batches(n: int, vocab: int, ctx: int):
    import numpy as np

    rng = np.random.default_rng(0)
    return [rng.integers(0, vocab, (BATCH, ctx + 1), dtype=np.int32) for _ in range(n)]


def _time_steps(step, batches, warmup: int) -> float:
    """Seconds per step, over batches[warmup:], after `warmup` untimed steps."""
    for b in batches[:warmup]:
        step(b, sync=True)
    t0 = time.perf_counter()
    for b in batches[warmup:]:
        step(b, sync=False)
    step(None, sync=True)
    return (time.perf_counter() - t0) / (len(batches) - warmup)


def worker_jax(steps: int, warmup: int) -> dict:
    import jax

    from lm.optim import OptimizerConfig
    from lm.train.config import TrainConfig
    from lm.train.step import compiled_steps, init_state

    config = TrainConfig(model=_model_config(), batch_size=BATCH, steps=10_000,
                         optim=OptimizerConfig(lr=LR, b1=B1, b2=B2, eps=EPS, weight_decay=WD, grad_clip=CLIP))
    train, _ = compiled_steps(config)
    box = {"state": init_state(config, jax.random.PRNGKey(0))}

    def step(batch, sync):
        if batch is not None:
            box["state"], box["metrics"] = train(box["state"], batch)
        if sync:
            jax.block_until_ready(box["metrics"]["loss"])

    t0 = time.perf_counter()
    step(_batches(1, 10_000, config.model.context_length)[0], sync=True)
    compile_s = time.perf_counter() - t0
    seconds = _time_steps(step, _batches(steps + warmup, 10_000, config.model.context_length), warmup)
    return {"seconds_per_step": seconds, "first_step_s": compile_s, "threads": os.cpu_count()}


def worker_torch(steps: int, warmup: int, compiled: bool) -> dict:
    import torch
    import torch.nn.functional as F

    from benchmarks.torch_model import TorchTransformer, make_optimizer

    torch.manual_seed(0)
    c = _model_config()
    model = TorchTransformer(c)
    opt = make_optimizer(model, LR, B1, B2, EPS, WD)
    fwd = torch.compile(model) if compiled else model

    def step(batch, sync):
        if batch is None:
            return
        x = torch.from_numpy(batch).long()
        opt.zero_grad(set_to_none=True)
        logits = fwd(x[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, c.vocab_size), x[:, 1:].reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        opt.step()
        loss.item()

    t0 = time.perf_counter()
    step(_batches(1, c.vocab_size, c.context_length)[0], sync=True)
    compile_s = time.perf_counter() - t0
    seconds = _time_steps(step, _batches(steps + warmup, c.vocab_size, c.context_length), warmup)
    return {"seconds_per_step": seconds, "first_step_s": compile_s, "threads": torch.get_num_threads()}


def worker_matmul() -> dict:
    """float32 2048^3 matmul GFLOP/s in JAX: the machine's ceiling for this work."""
    import jax
    import jax.numpy as jnp

    n = 2048
    a = jnp.ones((n, n), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    best = min(_timed(lambda: f(a).block_until_ready()) for _ in range(5))
    return {"gflops": 2 * n**3 / best / 1e9}


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _run_worker(name: str, steps: int, warmup: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", name, "--steps", str(steps), "--warmup", str(warmup)]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=os.environ.copy())
    if out.returncode:
        raise RuntimeError(f"worker {name} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=10, help="timed steps per run")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps after the first (compiling) one")
    p.add_argument("--runs", type=int, default=3, help="fresh processes per framework; the median is reported")
    p.add_argument("--only", choices=WORKERS, action="append", help="measure only these (repeatable)")
    p.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.worker:
        if args.worker == "jax":
            result = worker_jax(args.steps, args.warmup)
        elif args.worker == "matmul":
            result = worker_matmul()
        else:
            result = worker_torch(args.steps, args.warmup, compiled=args.worker == "torch-compile")
        print(json.dumps(result))
        return 0

    c = _model_config()
    tokens_per_step = BATCH * c.context_length
    flops_per_token = c.flops_per_token()
    names = args.only or list(WORKERS)
    runs: dict[str, list[dict]] = {n: [] for n in names}
    for r in range(args.runs):
        for name in names:
            res = _run_worker(name, args.steps, args.warmup)
            runs[name].append(res)
            print(f"run {r + 1}/{args.runs} {name}: {tokens_per_step / res['seconds_per_step']:,.0f} tokens/s",
                  file=sys.stderr)
    matmul = _run_worker("matmul", 0, 0)["gflops"]

    speed = {n: tokens_per_step / statistics.median(x["seconds_per_step"] for x in runs[n]) for n in names}
    rows = []
    for n in names:
        ratio = lambda ref: f"{speed[n] / speed[ref]:.2f}x" if ref in speed else "-"  # noqa: E731
        rows.append([n, f"{speed[n]:,.0f}", f"{speed[n] * flops_per_token / 1e9:.0f}",
                     f"{statistics.median(x['first_step_s'] for x in runs[n]):.1f}",
                     ratio("torch-eager"), ratio("torch-compile")])
    header = ["step", "tokens/s", "model GFLOP/s", "first step s", "vs torch eager", "vs torch.compile"]
    table = markdown_table(header, rows)
    print(table)
    print(f"float32 2048^3 matmul: {matmul:.0f} GFLOP/s; model FLOPs/token {flops_per_token:,}")
    if not args.no_write:
        body = "\n".join([
            "## Train step (`python benchmarks/train_step.py`)", "",
            f"Machine: {machine_description()}. `bench` preset (d_model 256, 4 layers, 8 heads, d_ff 1024, "
            f"vocab 10,000, context 256), batch {BATCH}, float32, AdamW + clipping; median of {args.runs} "
            f"fresh processes, {args.steps} timed steps each. Model FLOPs/token {flops_per_token:,} "
            f"(6N + attention). float32 2048^3 matmul in JAX: {matmul:.0f} GFLOP/s.", "", table, "", PROFILE_NOTES,
        ])
        write_section("train_step", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
