"""Compile time of the jitted train step, layers scanned against unrolled, by depth.

    python -m benchmarks.compile_time [--layers 4 12 24] [--runs 3] [--batch 8] [--steps 2] [--write]

The model is the `bench` preset (d_model 256, 8 heads, d_ff 1024, vocab 10,000,
context 256) at each `--layers` depth, float32, AdamW with clipping (the
`TrainConfig` defaults), and the train step is `lm.train.step.train_step`, jitted
with the state donated as `compiled_steps` does. Two programs per depth:

- unrolled: `ModelConfig(scan_layers=False)`, the stacked layers run by
  `lax.scan(..., unroll=True)`: one copy of the layer per depth, the program the
  per-layer model compiled before the layers were stacked;
- scanned: `ModelConfig(scan_layers=True)`, one layer program in a `lax.scan`.

What is measured, each in a fresh Python process (this file with hidden
`--worker` arguments), so no tracing, lowering or compilation cache is shared
between measurements (JAX's persistent compilation cache is also switched off):

- lower s: `jax.jit(step).lower(state, batch)` on abstract arguments
  (`jax.eval_shape` of `init_state` and a `ShapeDtypeStruct` batch, so nothing
  is allocated): tracing to a jaxpr and lowering to StableHLO;
- compile s: `.compile()` of that lowering, XLA's optimisation and code generation;
- total s: the two together, per process (the median of the sums, not the sum of medians);
- step s: after compiling, the median wall time of `--steps` steps of the
  compiled step on real arrays (random tokens), after one untimed step.

Before the timed lowering, each worker initialises the backend and compiles a
trivial function, so that one-off start-up costs land in neither variant. The
runs interleave (for run: for depth: for variant) so a busy machine slows all
alike, and every number reported is the median over `--runs`. Prints a table
and the growth from the smallest to the largest depth; `--write` also writes
the `compile_time` section of benchmarks/RESULTS.md.
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

from benchmarks.results import machine_description, markdown_table, write_section
from lm.cli_env import prepare_process

REPO = Path(__file__).resolve().parents[1]

VARIANTS = ("unrolled", "scanned")
SCAN_TARGET = 1.5  # the scanned compile should grow by at most this much from the smallest to the largest depth


def _train_config(layers: int, variant: str, batch: int):
    from lm.model import get_preset
    from lm.train.config import TrainConfig

    model = get_preset("bench", n_layers=layers, scan_layers=variant == "scanned")
    return TrainConfig(model=model, batch_size=batch, steps=10_000)


def worker(layers: int, variant: str, batch: int, steps: int) -> dict:
    """Lower and compile the train step from abstract arguments, then time `steps` real steps."""
    import functools

    import jax
    import jax.numpy as jnp
    import numpy as np

    import lm  # noqa: F401  (applies lm's default XLA flags before the backend starts)
    from lm.train.step import init_state, train_step

    jax.config.update("jax_enable_compilation_cache", False)
    config = _train_config(layers, variant, batch)
    ctx, vocab = config.model.context_length, config.model.vocab_size

    # Start the backend and the compiler outside the timed region.
    jax.jit(lambda x: x + 1)(jnp.zeros(4)).block_until_ready()

    key = jax.ShapeDtypeStruct((2,), jnp.uint32)
    abstract_state = jax.eval_shape(functools.partial(init_state, config), key)
    abstract_batch = jax.ShapeDtypeStruct((batch, ctx + 1), jnp.int32)
    step = jax.jit(functools.partial(train_step, config=config), donate_argnums=0)

    t0 = time.perf_counter()
    lowered = step.lower(abstract_state, abstract_batch)
    t1 = time.perf_counter()
    compiled = lowered.compile()
    t2 = time.perf_counter()

    state = jax.jit(functools.partial(init_state, config))(jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)
    batches = [jnp.asarray(rng.integers(0, vocab, (batch, ctx + 1), dtype=np.int32)) for _ in range(steps + 1)]
    times = []
    for i, b in enumerate(batches):
        s0 = time.perf_counter()
        state, metrics = compiled(state, b)
        jax.block_until_ready(metrics["loss"])
        if i:  # the first step is untimed
            times.append(time.perf_counter() - s0)
    return {"lower_s": t1 - t0, "compile_s": t2 - t1, "total_s": t2 - t0,
            "step_s": statistics.median(times), "loss": float(metrics["loss"])}


def _run_worker(layers: int, variant: str, batch: int, steps: int) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.compile_time", "--worker", variant, "--layers", str(layers),
           "--batch", str(batch), "--steps", str(steps)]
    env = dict(os.environ, JAX_ENABLE_COMPILATION_CACHE="false")
    out = subprocess.run(cmd, check=False, capture_output=True, text=True, cwd=REPO, env=env)
    if out.returncode:
        raise RuntimeError(f"worker {variant} {layers} layers failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _median(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", type=int, nargs="+", default=[4, 12, 24], help="depths to compile")
    p.add_argument("--runs", type=int, default=3, help="fresh processes per depth and variant; medians reported")
    p.add_argument("--batch", type=int, default=8, help="sequences per step")
    p.add_argument("--steps", type=int, default=2, help="timed steps per process after compiling (plus one untimed)")
    p.add_argument("--write", action="store_true", help="also write the compile_time section of RESULTS.md")
    p.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.worker:
        print(json.dumps(worker(args.layers[0], args.worker, args.batch, args.steps)))
        return 0

    layers = sorted(set(args.layers))
    runs: dict[tuple[int, str], list[dict]] = {(n, v): [] for n in layers for v in VARIANTS}
    start = time.perf_counter()
    for r in range(args.runs):
        for n in layers:
            for v in VARIANTS:
                res = _run_worker(n, v, args.batch, args.steps)
                runs[n, v].append(res)
                print(f"run {r + 1}/{args.runs} {n:>2} layers {v:>8}: lower {res['lower_s']:.2f} s, "
                      f"compile {res['compile_s']:.2f} s, step {res['step_s']:.2f} s "
                      f"[{time.perf_counter() - start:.0f} s elapsed]", file=sys.stderr)

    med = {(n, v, k): _median(runs[n, v], k) for n in layers for v in VARIANTS
           for k in ("lower_s", "compile_s", "total_s", "step_s")}
    rows = []
    for n in layers:
        u = {k: med[n, "unrolled", k] for k in ("lower_s", "compile_s", "total_s", "step_s")}
        s = {k: med[n, "scanned", k] for k in ("lower_s", "compile_s", "total_s", "step_s")}
        rows.append([n, f"{u['lower_s']:.2f}", f"{u['compile_s']:.2f}", f"{u['total_s']:.2f}",
                     f"{s['lower_s']:.2f}", f"{s['compile_s']:.2f}", f"{s['total_s']:.2f}",
                     f"{s['compile_s'] / u['compile_s']:.2f}x", f"{s['total_s'] / u['total_s']:.2f}x",
                     f"{u['step_s']:.2f}", f"{s['step_s']:.2f}", f"{s['step_s'] / u['step_s']:.2f}x"])
    header = ["layers", "unrolled lower s", "unrolled compile s", "unrolled total s",
              "scanned lower s", "scanned compile s", "scanned total s",
              "compile scanned / unrolled", "total scanned / unrolled",
              "unrolled step s", "scanned step s", "step scanned / unrolled"]
    table = markdown_table(header, rows)

    lo, hi = layers[0], layers[-1]

    def growth(v: str, k: str) -> float:
        return med[hi, v, k] / med[lo, v, k]

    scan_growth = growth("scanned", "compile_s")
    verdict = "met" if scan_growth <= SCAN_TARGET else "not met"
    lines = [
        (f"Growth from {lo} to {hi} layers: scanned compile {scan_growth:.2f}x, total "
         f"{growth('scanned', 'total_s'):.2f}x (target: compile within {SCAN_TARGET}x, {verdict}); "
         f"unrolled compile {growth('unrolled', 'compile_s'):.2f}x, total {growth('unrolled', 'total_s'):.2f}x."),
    ]
    print(table)
    print("\n".join(lines))
    if args.write:
        import jax

        body = "\n".join([
            "## Compile time (`python -m benchmarks.compile_time`)", "",
            (f"Machine: {machine_description()}; jax {jax.__version__}. `bench` preset (d_model 256, 8 heads, "
             f"d_ff 1024, vocab 10,000, context 256) at {', '.join(map(str, layers))} layers, batch {args.batch}, "
             "float32, AdamW + clipping. The jitted train step is lowered from abstract arguments and compiled "
             "with the layers unrolled (`scan_layers=False`, one copy of the layer per depth, the old program) "
             "and scanned (`scan_layers=True`, one layer program in a `lax.scan`); each measurement is a fresh "
             f"process, the variants interleaved, median of {args.runs}. lower = trace + StableHLO lowering, "
             "compile = XLA compile; step = median wall time of "
             f"{args.steps} steps of the compiled step on real arrays after one untimed step."),
            "",
            table, "", *lines,
        ])
        write_section("compile_time", body)
    return 0


if __name__ == "__main__":
    prepare_process()
    sys.exit(main())
