"""Fused RMSNorm speed on a GPU: our Pallas and Triton (jax-triton) kernels against XLA's fusion.

    python -m benchmarks.norm                       # batch 8, seq 512..16k, d_model 2048/4096/8192, bf16
    python -m benchmarks.norm --seqs 8192 --widths 4096 --no-write

Achieved bandwidth counts the bytes a fused kernel must move, the same numerator for every
implementation: forward reads x and writes y (2 * rows * d elements), forward+backward adds
reading x and dy and writing dx (5 * rows * d in all). It is given in GB/s, as a share of the
data-sheet bandwidth of the device, and as a share of a measured copy (y = 2 * x under XLA),
the practical ceiling. Memory is what XLA allocates for outputs and temporaries. Target on an
H100: the fused kernels reach at least 80% of the memory bandwidth. On a machine without a GPU
this prints that one is needed and exits 0.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import jax
import jax.numpy as jnp

from benchmarks.gpu import compile_fn, require_gpu, spec_bandwidth, time_interleaved
from benchmarks.results import markdown_table, write_section
from lm.cli_env import prepare_process
from lm.kernels.rms_norm import rms_norm_pallas, rms_norm_triton
from lm.model.layers import rms_norm

REPO = Path(__file__).resolve().parents[1]

BATCH, TARGET_SHARE = 8, 0.8
HEADER = ["seq", "d_model", "implementation", "fwd us", "fwd GB/s", "fwd+bwd us", "fwd+bwd GB/s", "% of spec",
          "% of copy", "memory MiB"]


def with_backward(f):
    def fwd_bwd(x, w, dy):
        y, vjp = jax.vjp(f, x, w)
        return y, vjp(dy)

    return fwd_bwd


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seqs", type=int, nargs="+", default=[512, 2048, 8192, 16384])
    p.add_argument("--widths", type=int, nargs="+", default=[2048, 4096, 8192])
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--no-write", action="store_true", help="do not write benchmarks/RESULTS.md")
    a = p.parse_args(argv)
    device = require_gpu("benchmarks/norm.py")
    spec = spec_bandwidth(device)
    impls = {"XLA": rms_norm, "pallas (ours)": rms_norm_pallas, "triton (ours)": rms_norm_triton}

    rows, summary = [], []
    for seq, d in itertools.product(a.seqs, a.widths):
        ks = jax.random.split(jax.random.PRNGKey(seq + d), 3)
        x, dy = (jax.random.normal(k, (BATCH, seq, d), jnp.bfloat16) for k in ks[:2])
        w = 1.0 + 0.1 * jax.random.normal(ks[2], (d,), jnp.float32)
        elem = BATCH * seq * d * x.dtype.itemsize
        copy, _ = compile_fn(lambda x: x * 2, x)
        t_copy = time_interleaved({"copy": copy}, (x,), a.repeats)["copy"]
        copy_bw = 2 * elem / t_copy
        fwd, both, memory = {}, {}, {}
        for name, f in impls.items():
            fwd[name], _ = compile_fn(lambda x, w, f=f: f(x, w, 1e-5), x, w)
            both[name], memory[name] = compile_fn(with_backward(lambda x, w, f=f: f(x, w, 1e-5)), x, w, dy)
        t_fwd = time_interleaved({n: c for n, c in fwd.items() if c is not None}, (x, w), a.repeats)
        t_both = time_interleaved({n: c for n, c in both.items() if c is not None}, (x, w, dy), a.repeats)
        for name in impls:
            tf, tb, mem = t_fwd.get(name), t_both.get(name), memory[name]
            bw = 5 * elem / tb if tb else None
            rows.append([seq, d, name, f"{tf * 1e6:.1f}" if tf else "-", f"{2 * elem / tf / 1e9:.0f}" if tf else "-",
                         f"{tb * 1e6:.1f}" if tb else "-", f"{bw / 1e9:.0f}" if bw else "-",
                         f"{100 * bw / 1e9 / spec:.0f}" if bw and spec else "-",
                         f"{100 * bw / copy_bw:.0f}" if bw else "-",
                         f"{mem / 2**20:.0f}" if isinstance(mem, (int, float)) else mem])
            if bw and spec and name != "XLA" and seq == max(a.seqs) and d == max(a.widths):
                share = bw / 1e9 / spec
                summary.append(f"- {name}, seq {seq}, d_model {d}: {100 * share:.0f}% of the data-sheet "
                               f"{spec:.0f} GB/s (target >= {100 * TARGET_SHARE:.0f}%): "
                               f"{'met' if share >= TARGET_SHARE else 'NOT met'}")
        print(markdown_table(HEADER, rows[-len(impls):]) + f"\n(copy: {copy_bw / 1e9:.0f} GB/s)", flush=True)

    body = "\n".join([
        "## Kernels: fused RMSNorm (`python -m benchmarks.norm`)", "",
        f"Device: {device.device_kind}, jax {jax.__version__}, bf16 activations, float32 scale, batch {BATCH}; "
        f"data-sheet bandwidth {spec or 'unknown'} GB/s.", "", markdown_table(HEADER, rows), "", *summary])
    print("\n" + body)
    if not a.no_write:
        write_section("kernels_norm", body)


if __name__ == "__main__":
    prepare_process()
    main()
