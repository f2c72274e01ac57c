"""Shared pieces of the GPU kernel benchmarks: the GPU check, interleaved timing, memory, bandwidth."""

from __future__ import annotations

import statistics
import sys
import time

import jax

# Memory bandwidth from NVIDIA's data sheets, GB/s, by a substring of jax's device_kind.
SPEC_BANDWIDTH = {"H200": 4800.0, "H100 PCIe": 2000.0, "H100 NVL": 3900.0, "H100": 3350.0, "A100-SXM4-80GB": 2039.0,
                  "A100": 1555.0, "L40S": 864.0, "L4": 300.0}


def require_gpu(what: str) -> jax.Device:
    """The first GPU, or a message and exit status 0 (these benchmarks mean nothing on a CPU)."""
    if jax.default_backend() != "gpu":
        print(f"{what} needs a CUDA GPU; jax sees only {jax.default_backend()!r} devices here, so nothing was "
              "measured. Run it on a GPU machine after `pip install -e '.[gpu]'`.")
        sys.exit(0)
    return jax.devices()[0]


def spec_bandwidth(device: jax.Device) -> float | None:
    kind = device.device_kind
    return next((bw for name, bw in SPEC_BANDWIDTH.items() if name in kind), None)


def compile_fn(fn, *args):
    """(compiled callable, bytes XLA allocates for its outputs and temporaries) or (None, error text)."""
    try:
        compiled = jax.jit(fn).lower(*args).compile()
        mem = compiled.memory_analysis()
        extra = (mem.output_size_in_bytes + mem.temp_size_in_bytes) if mem is not None else float("nan")
        jax.block_until_ready(compiled(*args))  # also catches failures that only show when it runs
        return compiled, extra
    except Exception as e:  # noqa: BLE001 (out of memory, unsupported cuDNN config...: report, go on)
        return None, f"{type(e).__name__}: {str(e).splitlines()[0][:80]}"


def time_interleaved(fns: dict, args: tuple, repeats: int = 7, min_seconds: float = 0.02) -> dict:
    """Median seconds per call of each compiled fn; rounds run every fn in turn so drift hits all alike."""
    iters = {}
    for name, fn in fns.items():  # calls per sample: enough to last min_seconds
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        iters[name] = max(1, int(min_seconds / max(time.perf_counter() - start, 1e-6)))
    samples = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(iters[name]):
                out = fn(*args)
            jax.block_until_ready(out)
            samples[name].append((time.perf_counter() - start) / iters[name])
    return {name: statistics.median(s) for name, s in samples.items()}
