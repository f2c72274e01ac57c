"""Run one function over many shards: in this process, in worker processes, or as Ray tasks.

Processes use the "forkserver" start method where it exists: forking a parent that has
started JAX's threads can deadlock, and a fresh server process has not. One pool serves all
the pipeline's passes (starting workers costs seconds). Ray is the cluster engine (tasks over
shards); `ray="local"` starts a local instance, any other value is passed to
`ray.init(address=...)`. With a real cluster the output directory must be on a file system
every node sees.
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
        if address == "local":
            ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
        else:
            ray.init(address=address, log_to_driver=False, configure_logging=False)
    return ray


class ShardExecutor:
    """`with ShardExecutor(workers, ray) as ex: results = ex.map(fn, tasks, desc)`."""

    def __init__(self, workers: int = 0, ray_address: str = "", progress: bool = True):
        self.workers = workers or default_workers()
        self.ray_address = ray_address
        self.progress = progress
        self._pool = None

    def __enter__(self):
        if self.ray_address:
            self._ray = init_ray(self.ray_address, num_cpus=self.workers if self.ray_address == "local" else None)
        elif self.workers > 1:
            ctx = mp.get_context("forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn")
            if ctx.get_start_method() == "forkserver":
                ctx.set_forkserver_preload(["lm.curation.stages"])
            self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx)
        return self

    def __exit__(self, *exc):
        if self._pool is not None:
            self._pool.shutdown()
        return False

    def map(self, fn: Callable, tasks: Sequence[tuple], desc: str = "") -> list:
        """[fn(*t) for t in tasks], in order, with a progress bar over finished tasks."""
        from tqdm.auto import tqdm

        bar = tqdm(total=len(tasks), desc=desc, unit="shard", disable=not self.progress, leave=False)
        try:
            if self.ray_address:
                remote = self._ray.remote(fn)
                refs = [remote.remote(*t) for t in tasks]
                pending = list(refs)
                while pending:
                    done, pending = self._ray.wait(pending, num_returns=1)
                    bar.update(len(done))
                return self._ray.get(refs)
            if self._pool is None or len(tasks) <= 1:
                out = []
                for t in tasks:
                    out.append(fn(*t))
                    bar.update(1)
                return out
            futures = [self._pool.submit(fn, *t) for t in tasks]
            out = []
            for f in futures:
                out.append(f.result())
                bar.update(1)
            return out
        finally:
            bar.close()
