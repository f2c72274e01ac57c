"""The device mesh: named axes over the devices, built from a ParallelConfig."""

from __future__ import annotations

import math

import jax
from jax.sharding import AxisType, Mesh

from lm.parallel.config import ParallelConfig

# Outermost to innermost: pipeline stages talk least (one activation per microbatch), tensor
# parallelism most (every layer), so `tensor` gets the neighbouring, best-connected devices.
MESH_ORDER = ("pipe", "data", "fsdp", "tensor")


def make_mesh(config: ParallelConfig, devices=None) -> Mesh:
    """A mesh with axes (pipe,) data, fsdp, tensor; `pipe` only when it has more than one stage.

    Uses all of `devices` (default: every device of every process), or a prefix of them when the
    axis sizes multiply to a divisor of the count in a single-process run. Axes are Auto: the
    compiler partitions from shardings and constraints (jax.make_mesh defaults to Explicit).
    """
    devices = list(jax.devices() if devices is None else devices)
    sizes = config.axis_sizes(len(devices))
    total = math.prod(sizes.values())
    if total < len(devices) and jax.process_count() > 1:
        raise ValueError(f"a multi-process run must use every device: the mesh {sizes} has {total} devices but "
                         f"{len(devices)} are available over {jax.process_count()} processes; set one axis to -1")
    names = tuple(a for a in MESH_ORDER if a != "pipe" or sizes["pipe"] > 1)
    shape = tuple(sizes[a] for a in names)
    return jax.make_mesh(shape, names, axis_types=(AxisType.Auto,) * len(names), devices=devices[:total])


def mesh_sizes(mesh: Mesh) -> dict[str, int]:
    """{axis: size} for every axis the project knows (1 for axes the mesh lacks)."""
    return {a: int(mesh.shape.get(a, 1)) for a in MESH_ORDER}
