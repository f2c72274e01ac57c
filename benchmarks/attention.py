"""Causal attention speed on a GPU: our Pallas FlashAttention-2 against naive XLA attention and
jax.nn.dot_product_attention (XLA and cuDNN), forward and forward+backward, bf16.

    python -m benchmarks.attention                  # seq 512..16k, head dims 64 and 128; writes RESULTS.md
    python -m benchmarks.attention --tune           # also try a few block sizes for ours, keep the best
    python -m benchmarks.attention --seqs 8192 --head-dims 128 --no-write

Each configuration has 16k tokens (batch = 16384 // seq) and 2048 model dims (32 heads of 64 or
16 of 128). "naive" is the model's own XLA path (`lm.model.attention(..., impl="xla")`, which
materialises the [t, t] scores). TFLOP/s count the causal half of the matmuls: forward
4 * b * h * t^2 * d / 2, forward+backward 3.5x that (the backward does 2.5x the forward's
matmul work), the same numerator for every implementation. Memory is what XLA allocates for
outputs and temporaries (from the compiled program's memory analysis). Targets at seq 8192:
forward+backward at least 0.9x cuDNN's speed and 3x naive XLA's. On a machine without a GPU
this prints that one is needed and exits 0.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import jax
import jax.numpy as jnp

from benchmarks.gpu import compile_fn, require_gpu, time_interleaved
from benchmarks.results import markdown_table, write_section
from lm.cli_env import prepare_process
from lm.kernels.flash_attention import BlockSizes, default_block_sizes, flash_attention
from lm.model.attention import attention

REPO = Path(__file__).resolve().parents[1]

TOKENS, WIDTH = 16384, 2048
TARGET_SEQ, TARGET_VS_CUDNN, TARGET_VS_NAIVE = 8192, 0.9, 3.0
CANDIDATES = [BlockSizes(128, 64, 64, 64, 4, 3), BlockSizes(128, 128, 64, 64, 8, 2), BlockSizes(64, 64, 64, 64, 4, 3),
              BlockSizes(128, 64, 128, 64, 8, 2), BlockSizes(128, 64, 64, 128, 8, 2), BlockSizes(64, 128, 64, 64, 4, 2)]


def implementations(blocks: BlockSizes) -> dict:
    def naive(q, k, v):
        return attention(q, k, v, impl="xla")

    return {
        "pallas (ours)": lambda q, k, v: flash_attention(q, k, v, block_sizes=blocks),
        "naive XLA": naive,
        "jax.nn xla": lambda q, k, v: jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation="xla"),
        "jax.nn cudnn": lambda q, k, v: jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation="cudnn"),
    }


def with_backward(f):
    def fwd_bwd(q, k, v, do):
        out, vjp = jax.vjp(f, q, k, v)
        return out, vjp(do)

    return fwd_bwd


def measure(fns: dict, args: tuple, repeats: int) -> dict:
    """{name: (median seconds, or None if it failed; memory bytes, or the error text)}."""
    compiled, memory = {}, {}
    for name, fn in fns.items():
        c, memory[name] = compile_fn(fn, *args)
        if c is not None:
            compiled[name] = c
    times = time_interleaved(compiled, args, repeats) if compiled else {}
    return {name: (times.get(name), memory[name]) for name in fns}


def tune(seq: int, hd: int, args: tuple, repeats: int) -> BlockSizes:
    fns = {c: with_backward(lambda q, k, v, c=c: flash_attention(q, k, v, block_sizes=c)) for c in CANDIDATES}
    res = measure(fns, args, repeats)
    ok = {c: t for c, (t, _) in res.items() if t is not None}
    best = min(ok, key=ok.get)
    print(f"  tuned seq={seq} hd={hd}: {best} ({ok[best] * 1e3:.2f} ms fwd+bwd; {len(ok)}/{len(fns)} compiled)")
    return best


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seqs", type=int, nargs="+", default=[512, 1024, 2048, 4096, 8192, 16384])
    p.add_argument("--head-dims", type=int, nargs="+", default=[64, 128])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--tune", action="store_true", help="try a few block sizes for ours per configuration")
    p.add_argument("--no-write", action="store_true", help="do not write benchmarks/RESULTS.md")
    a = p.parse_args(argv)
    device = require_gpu("benchmarks/attention.py")

    rows, summary = [], []
    for hd, seq in itertools.product(a.head_dims, a.seqs):
        b, h = max(1, TOKENS // seq), WIDTH // hd
        ks = jax.random.split(jax.random.PRNGKey(seq + hd), 4)
        q, k, v, do = (jax.random.normal(kk, (b, seq, h, hd), jnp.bfloat16) for kk in ks)
        fwd_flops = 4 * b * h * seq * seq * hd / 2
        blocks = tune(seq, hd, (q, k, v, do), a.repeats) if a.tune else default_block_sizes(hd, False)
        impls = implementations(blocks)
        fwd = measure(impls, (q, k, v), a.repeats)
        both = measure({n: with_backward(f) for n, f in impls.items()}, (q, k, v, do), a.repeats)
        ours = both["pallas (ours)"][0]
        for name in impls:
            (tf, _), (tb, mem) = fwd[name], both[name]
            ms = lambda t: f"{t * 1e3:.2f}" if t else "-"  # noqa: E731
            tflops = lambda t, mult: f"{mult * fwd_flops / t / 1e12:.1f}" if t else "-"  # noqa: E731
            memory = f"{mem / 2**20:.0f}" if isinstance(mem, (int, float)) else mem
            speed = f"{tb / ours:.2f}x" if tb and ours else "-"
            rows.append([seq, hd, b, name, ms(tf), tflops(tf, 1), ms(tb), tflops(tb, 3.5), memory, speed])
        if seq == TARGET_SEQ and ours:
            for ref, target in (("jax.nn cudnn", TARGET_VS_CUDNN), ("naive XLA", TARGET_VS_NAIVE)):
                t_ref = both[ref][0]
                ratio = t_ref / ours if t_ref else float("nan")
                summary.append(f"- seq {seq}, head dim {hd}: ours is {ratio:.2f}x the speed of {ref} "
                               f"(target >= {target}x): {'met' if ratio >= target else 'NOT met'}")
        print(markdown_table(HEADER, rows[-len(impls):]), flush=True)

    body = "\n".join([
        "## Kernels: flash attention (`python -m benchmarks.attention" + (" --tune" if a.tune else "") + "`)",
        "", f"Device: {device.device_kind}, jax {jax.__version__}, bf16, causal, 16k tokens per step, "
        "2048 model dims. Speed is the forward+backward time relative to ours (higher: ours is faster).", "",
        markdown_table(HEADER, rows), "", *summary])
    print("\n" + body)
    if not a.no_write:
        write_section("kernels_attention", body)


HEADER = ["seq", "head dim", "batch", "implementation", "fwd ms", "fwd TFLOP/s", "fwd+bwd ms", "fwd+bwd TFLOP/s",
          "memory MiB", "ours faster by"]

if __name__ == "__main__":
    prepare_process()
    main()
