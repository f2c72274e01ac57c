"""Worker processes for tokenizer training and encoding that are never forked from the caller.

A process that has loaded JAX (or torch, or anything with threads) may hold a lock in another
thread at the moment of `fork`, and the child deadlocks on it; Python 3.12 warns about exactly
this. Workers therefore start from a fresh "forkserver" process (where the platform has one,
else "spawn") and receive the tokenizer once, through the pool's initializer, instead of
inheriting it.
"""

from __future__ import annotations

import multiprocessing as mp
from multiprocessing.pool import Pool
from typing import Callable


def worker_pool(num_workers: int, initializer: Callable | None = None, initargs: tuple = ()) -> Pool:
    """A `multiprocessing.Pool` of `num_workers` processes started without forking this one."""
    method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
    ctx = mp.get_context(method)
    if method == "forkserver":  # workers fork from a server that already imported the tokenizer (~0.3 s each else)
        ctx.set_forkserver_preload(["lm.tokenizer"])
    return ctx.Pool(num_workers, initializer, initargs)
