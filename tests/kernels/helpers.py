"""Shared helpers for the kernel tests (interpret mode on CPU)."""

from __future__ import annotations

import jax
import numpy as np

# Interpret-mode kernels lower to large loop nests; XLA's backend optimisations only slow their
# compilation here (results are identical), and compiling dominates these tests' time.
FAST_COMPILE = {"xla_backend_optimization_level": 0}


def run(fn, *args):
    """jit-compile fn for args with light optimisation and call it."""
    return jax.jit(fn).lower(*args).compile(compiler_options=FAST_COMPILE)(*args)


def rel_err(got, want) -> float:
    """max |got - want| / max |want| (float64), the error measure the tolerances refer to."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-12))
