"""Multi-process runs: `jax.distributed.initialize` from flags or the usual environment.

One process per host (or per GPU). Every process runs the same program; each
loads only its rows of every batch, and `jax.make_array_from_process_local_data`
assembles the global batch. Only process 0 writes logs and checkpoint metadata;
orbax writes each process's array shards itself.
"""

from __future__ import annotations

import os

import jax
import numpy as np

ENV = {"coordinator_address": "JAX_COORDINATOR_ADDRESS", "num_processes": "JAX_NUM_PROCESSES",
       "process_id": "JAX_PROCESS_ID"}


def distributed_settings(coordinator_address: str = "", num_processes: int = 0, process_id: int = -1,
                         environ=os.environ) -> dict | None:
    """Arguments for jax.distributed.initialize, flags first, then JAX_* environment variables.

    None when nothing asks for more than one process. Values left unset are
    passed as None, so JAX's cluster detection (SLURM, Open MPI, ...) fills them in.
    """
    address = coordinator_address or environ.get(ENV["coordinator_address"], "")
    n = num_processes or int(environ.get(ENV["num_processes"], "0") or 0)
    pid = process_id if process_id >= 0 else int(environ.get(ENV["process_id"], "-1") or -1)
    if not address and n <= 1:
        return None
    if n and n > 1 and pid >= n:
        raise ValueError(f"process id {pid} is out of range for {n} processes (ids are 0..{n - 1})")
    return {"coordinator_address": address or None, "num_processes": n or None,
            "process_id": pid if pid >= 0 else None}


def initialize_distributed(coordinator_address: str = "", num_processes: int = 0, process_id: int = -1) -> bool:
    """Join the multi-process run described by the flags or environment; False if single-process.

    Must run before anything touches a JAX device. On CPU, cross-process
    collectives use gloo.
    """
    settings = distributed_settings(coordinator_address, num_processes, process_id)
    if settings is None:
        return False
    if jax.distributed.is_initialized():
        return True
    if "jax_cpu_collectives_implementation" in jax.config.values:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(**settings)
    return True


def to_host(tree):
    """NumPy copies of (possibly sharded, possibly multi-process) arrays, on every process.

    Every process must call it (a collective when the arrays span processes).
    """
    if jax.process_count() == 1:
        return jax.device_get(tree)
    from jax.experimental import multihost_utils

    def one(x):
        if not isinstance(x, jax.Array) or x.is_fully_addressable:
            return np.asarray(x)
        if x.is_fully_replicated:
            return np.asarray(x.addressable_data(0))
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))

    return jax.tree.map(one, tree)
