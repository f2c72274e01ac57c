"""Collectives per train step of each parallelism strategy, from the compiled HLO, against the textbook.

    python -m benchmarks.parallel            # 8 virtual CPU devices; writes the `parallel` section of RESULTS.md
    python -m benchmarks.parallel --quick    # fewer strategies, no RESULTS.md

Each strategy's train step is lowered and compiled for 8 devices (virtual CPU
devices unless the machine has 8 real ones), and its HLO is read for
all-reduce, all-gather, reduce-scatter and collective-permute ops: how many
run per step and how many bytes each device sends under the ring algorithms
(all-reduce 2(n-1)/n x size, all-gather and reduce-scatter (n-1)/n x the
whole, a permute its buffer). The textbook column counts the same bytes from
first principles (P = parameter bytes a device would hold without this axis,
A = one activation [local batch, seq, d_model]):

    DP over n:        all-reduce of the gradients               2(n-1)/n P
    FSDP over n:      all-gather P forward and again backward, reduce-scatter the gradients   3(n-1)/n P
    TP over n:        per layer 2 all-reduces of A forward (attention out, MLP out) and 2 backward,
                      plus one each for the vocab-split embedding and head            (4L+2) 2(n-1)/n A
    ZeRO-1 over n:    reduce-scatter gradients + all-gather params                    2(n-1)/n P
    GPipe, S stages, M microbatches: one activation permute per tick, forward and backward   2(M+S-1) A_mb
                      plus the data-parallel all-reduce of each stage's gradients
Step times on virtual CPU devices (8 "devices" sharing this machine's cores) are informative only.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import sys
import time
from pathlib import Path

import jax
import numpy as np

from benchmarks.hlo_collectives import KINDS, collectives
from benchmarks.results import machine_description, markdown_table, write_section
from lm.cli_env import prepare_process
from lm.data import batch_at
from lm.model import get_preset
from lm.parallel import ParallelConfig
from lm.trainer import pretrain_plan as make_plan
from lm.parallel.mesh import mesh_sizes
from lm.parallel.sharding import batch_sharding
from lm.train import TrainConfig
from lm.train.step import init_state, make_optimizer

REPO = Path(__file__).resolve().parents[1]

STRATEGIES = {
    "DP 8": dict(data=8), "FSDP 8": dict(fsdp=8), "TP 4 (x DP 2)": dict(data=2, tensor=4),
    "FSDP 2 x TP 4": dict(fsdp=2, tensor=4), "DP 4 x PP 2": dict(data=4, pipe=2),
    "DDP 8 (shard_map)": dict(data=8, mode="ddp"), "ZeRO-1 8 (shard_map)": dict(data=8, mode="zero1"),
}
QUICK = ("DP 8", "FSDP 8", "DP 4 x PP 2")
MB = 1e6
# What the HLO showed on jax 0.10.2's CPU backend (read from op metadata in the compiled text).
NOTES = """What the HLO shows (jax 0.10.2, CPU backend):
- DP, DDP (`shard_map` + `pmean`) and ZeRO-1 (`psum_scatter` + `all_gather`) send the textbook bytes; XLA
  combines DP's per-leaf gradient all-reduces into one tuple all-reduce.
- FSDP sends less than the textbook 3(n-1)/n P: XLA gathers each weight once and keeps it for the backward
  pass (no second all-gather, so peak memory holds every gathered layer, unlike ZeRO-3 proper), reduces
  gradients with a full all-reduce rather than a reduce-scatter (twice that part's bytes), and never gathers
  the embedding table: the lookup runs on each device's columns and the activations move by all-to-all.
- TP sends about 1.5x the textbook: in the backward pass the partial input gradients of wq, wk and wv (and of
  w1 and w3) are all-reduced separately (3 + 2 activations per layer) instead of being summed locally before
  one all-reduce. Fusing wq/wk/wv and w1/w3 into single matrices would recover the textbook count.
- GPipe over 2 stages: exactly one activation permute per tick forward and backward, and each stage's
  gradients all-reduced once over `data` after the backward loop."""
SHORT = {"all-reduce": "AR", "all-gather": "AG", "reduce-scatter": "RS", "collective-permute": "permute",
         "all-to-all": "A2A"}


def host_state(config: TrainConfig) -> dict:
    """A random train state made with NumPy (compiling the threefry init is not what is measured)."""
    abstract = jax.eval_shape(functools.partial(init_state, config), jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda s: (rng.normal(size=s.shape) * 0.02).astype(s.dtype), abstract["params"])
    return {"step": np.zeros([], np.int32), "params": params,
            "opt_state": jax.device_get(make_optimizer(config).init(params)),
            "rng": np.asarray(jax.random.PRNGKey(1))}


def param_bytes(tree) -> int:
    return sum(np.asarray(x).nbytes for x in jax.tree.leaves(tree))


def textbook(config: TrainConfig, sizes: dict, state: dict) -> float:
    """Bytes one device sends per step by the formulas in the module docstring."""
    m, p_all = config.model, param_bytes(state["params"])
    d, f, t, s = sizes["data"], sizes["fsdp"], sizes["tensor"], sizes["pipe"]
    ring = lambda n: 2 * (n - 1) / n  # noqa: E731  all-reduce factor
    local_rows = config.batch_size // (d * f)
    act = local_rows * m.context_length * m.d_model * 4
    p_t = p_all / t  # what a device holds once tensor parallelism has split it
    total = 0.0
    if t > 1:
        total += (4 * m.n_layers + 2) * ring(t) * act
    if f > 1:
        total += 3 * (f - 1) / f * p_t
    if s > 1:
        micro = config.parallel.microbatches or 2 * s
        blocks = param_bytes(state["params"]["blocks"])
        total += 2 * (micro + s - 1) * (local_rows // micro) * m.context_length * m.d_model * 4
        total += ring(d) * blocks / s + ring(d * s) * (p_all - blocks)
    elif d > 1:
        total += ring(d) * p_t  # DP, DDP and ZeRO-1 (reduce-scatter + all-gather) alike
    return total


def measure(name: str, config: TrainConfig, init: dict, steps: int) -> dict:
    plan = make_plan(config)
    shape = (config.batch_size, config.model.context_length + 1)
    if plan.mesh is None:  # the single-device path: nothing to read, only a time to compare with
        compiled, ops, compile_s = plan.train_step, [], 0.0
        state = jax.tree.map(np.copy, init)
    else:
        abstract = jax.tree.map(lambda x, sh: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype, sharding=sh),
                                plan.layout(init), plan.state_shardings)
        batch = jax.ShapeDtypeStruct(shape, np.int32, sharding=batch_sharding(plan.mesh))
        t0 = time.perf_counter()
        compiled = plan.train_step.lower(abstract, batch).compile()
        compile_s = time.perf_counter() - t0
        ops = collectives(compiled.as_text())
        state = plan.place(init)
    tokens = np.random.default_rng(0).integers(0, config.model.vocab_size, 100_000).astype(np.int32)
    times = []
    for i in range(steps + 1):
        b = plan.put_batch(batch_at(tokens, i, config.batch_size, config.model.context_length, 0))
        t0 = time.perf_counter()
        state, metrics = compiled(state, b)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - t0)
    counts = {k: sum(o.count for o in ops if o.kind == k) for k in KINDS}
    return {
        "name": name, "description": plan.description, "counts": counts,
        "payload": sum(o.bytes * o.count for o in ops), "sent": sum(o.ring_bytes * o.count for o in ops),
        "textbook": textbook(config, mesh_sizes(plan.mesh), init) if plan.mesh is not None else 0.0,
        "by_kind": {k: sum(o.ring_bytes * o.count for o in ops if o.kind == k) for k in KINDS},
        "step_s": float(np.median(times[1:])), "compile_s": compile_s,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="three strategies, 2 timed steps, no RESULTS.md")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per strategy (median reported)")
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args(argv)
    if jax.device_count() < 8:
        print(f"needs 8 devices, found {jax.device_count()}", file=sys.stderr)
        return 2
    model = get_preset("tiny")
    base = TrainConfig(model=model, batch_size=args.batch_size)
    init = host_state(base)
    names = QUICK if args.quick else tuple(STRATEGIES)
    single = measure("1 device", base, init, 2 if args.quick else args.steps)
    rows, results = [], []
    for name in names:
        r = measure(name, dataclasses.replace(base, parallel=ParallelConfig(**STRATEGIES[name])), init,
                    2 if args.quick else args.steps)
        results.append(r)
        kinds = ", ".join(f"{n} {k}" for k, n in r["counts"].items() if n)
        split = ", ".join(f"{SHORT[k]} {v / MB:.2f}" for k, v in r["by_kind"].items() if v)
        rows.append([name, kinds, split, f"{r['sent'] / MB:.2f}", f"{r['textbook'] / MB:.2f}",
                     f"{r['sent'] / r['textbook']:.2f}" if r["textbook"] else "-", f"{r['step_s'] * 1e3:.0f}",
                     f"{single['step_s'] / r['step_s']:.2f}x"])
        print(f"{name}: {kinds}; sent {r['sent'] / MB:.2f} MB/device vs textbook {r['textbook'] / MB:.2f} MB",
              flush=True)
    header = ["strategy", "collectives per step (HLO)", "MB sent/device by kind", "MB sent/device",
              "textbook MB/device", "HLO / textbook", "step ms", "vs 1 device"]
    table = markdown_table(header, rows)
    print(table)
    print(f"one device: {single['step_s'] * 1e3:.0f} ms/step; params {param_bytes(init['params']) / MB:.2f} MB")
    if args.quick:
        return 0
    body = "\n".join([
        "## Parallelism collectives (`python -m benchmarks.parallel`)",
        "",
        f"Machine: {machine_description()}; jax {jax.__version__}, 8 virtual CPU devices "
        f"(`--xla_force_host_platform_device_count=8`). `tiny` preset ({model.num_params():,} parameters, "
        f"{param_bytes(init['params']) / MB:.2f} MB float32), batch {args.batch_size} x {model.context_length} tokens, "
        "AdamW with clipping. Collectives and bytes come from the compiled HLO of one train step (ops inside "
        "the pipeline's scans counted once per trip); the textbook formulas are in the script's docstring. "
        f"Step times are medians of {args.steps} steps on 8 virtual devices sharing 2 cores with other jobs: "
        "informative only (one-device step: "
        f"{single['step_s'] * 1e3:.0f} ms).",
        "",
        table,
        "",
        NOTES,
        "",
        "Single-GPU MFU of the TinyStories preset: pending (no GPU was lent to this session).",
    ])
    write_section("parallel", body)
    return 0


if __name__ == "__main__":
    flags = os.environ.get("XLA_FLAGS", "")
    if "--xla_force_host_platform_device_count" not in flags:  # 8 virtual CPU devices
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count=8".strip()
    prepare_process()
    sys.exit(main())
