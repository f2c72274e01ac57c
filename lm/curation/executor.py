"""Run one function over many shards: in this process, in worker processes, or as Ray tasks.

Processes use the "forkserver" start method where it exists: forking a parent that has
started JAX's threads can deadlock, and a fresh server process has not. Ray is the cluster
engine (tasks over shards); `ray_address="local"` starts a local instance, any other value is
passed to `ray.init(address=...)`. With a real cluster the output directory must be on a file
system every node sees.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from concurrent.futures import ProcessPoolExecutor
from typing import Callable, Sequence


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def init_ray(address: str, num_cpus: int | None = None):
    try:
        import ray
    except ImportError as e:
        raise ImportError("--ray needs Ray: pip install -e '.[curation]'") from e
    if not ray.is_initialized():
        if address in ("", "local"):
            ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
        else:
            ray.init(address=address, log_to_driver=False, configure_logging=False)
    return ray


def run_tasks(fn: Callable, tasks: Sequence[tuple], *, workers: int = 0, ray_address: str = "",
              desc: str = "", progress: bool = True) -> list:
    """[fn(*t) for t in tasks], in order, with a progress bar over finished tasks."""
    from tqdm.auto import tqdm

    workers = workers or default_workers()
    bar = tqdm(total=len(tasks), desc=desc, unit="shard", disable=not progress, leave=False)
    try:
        if ray_address:
            ray = init_ray(ray_address, num_cpus=workers if ray_address == "local" else None)
            remote = ray.remote(fn)
            refs = [remote.remote(*t) for t in tasks]
            pending = list(refs)
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                bar.update(len(done))
            return ray.get(refs)
        if workers <= 1 or len(tasks) <= 1:
            out = []
            for t in tasks:
                out.append(fn(*t))
                bar.update(1)
            return out
        ctx = mp.get_context("forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn")
        with ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=ctx) as pool:
            futures = [pool.submit(fn, *t) for t in tasks]
            out = []
            for f in futures:
                out.append(f.result())
                bar.update(1)
            return out
    finally:
        bar.close()
