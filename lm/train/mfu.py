"""Model FLOP utilisation: achieved model FLOP/s over the device's peak."""

from __future__ import annotations

import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp

from lm.train.files import atomic_write_json

# Dense peak FLOP/s by device kind (bf16 tensor cores; float32 is lower).
KNOWN_PEAKS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "A10G": 125e12, "V100": 125e12}


def device_peak_flops(dtype: str = "float32", measure_size: int = 1024) -> tuple[float, str]:
    """(peak FLOP/s, how it was obtained) for the default device.

    Known accelerators use their published bf16 peak; anything else (a CPU)
    gets a measured square float32 matmul, the best this machine can do on
    the operation that dominates a transformer.
    """
    kind = jax.devices()[0].device_kind
    for name, peak in KNOWN_PEAKS.items():
        if name in kind:
            return (peak if dtype == "bfloat16" else peak / 2), f"published peak of {kind}"
    n = measure_size
    a = jnp.ones((n, n), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        f(a).block_until_ready()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best, f"measured {n}^3 float32 matmul on {kind}"


def cached_peak_flops(dtype: str, cache: str | Path) -> tuple[float, str]:
    """`device_peak_flops`, measured at most once per device kind and dtype: the result is kept in
    the JSON file `cache` and read back by later runs. A measurement taken under load would
    otherwise make equal speeds show different MFUs from one start-up to the next."""
    cache = Path(cache)
    key = f"{jax.devices()[0].device_kind}|{dtype}"
    try:
        table = json.loads(cache.read_text())
    except (OSError, ValueError):
        table = {}
    if key in table:
        return float(table[key]["peak_flops"]), f"{table[key]['source']} (cached in {cache})"
    peak, source = device_peak_flops(dtype)
    atomic_write_json(cache, {**table, key: {"peak_flops": peak, "source": source}})
    return peak, source
