"""Orbax checkpoints of the train state, the data iterator position and the config.

A checkpoint directory holds one sub-directory per saved step, each with three
items: `state` (params, optimizer state, step, RNG), `data` (the grain
iterator state, JSON) and `config` (the run's config, JSON). Saves are
asynchronous: training continues while the arrays are written.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp


def checkpoint_manager(directory: str | os.PathLike, keep: int = 2, async_save: bool = True) -> ocp.CheckpointManager:
    directory = Path(directory).absolute()
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=async_save, create=True)
    return ocp.CheckpointManager(directory, options=options)


def save_checkpoint(manager: ocp.CheckpointManager, step: int, state: Any, data_state: dict, config: dict) -> None:
    """Start saving; returns once the arrays are copied off the live buffers."""
    manager.save(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=ocp.args.JsonSave(data_state),
            config=ocp.args.JsonSave(config),
        ),
        force=True,
    )


def _restore_target(leaf) -> jax.ShapeDtypeStruct:
    """Where a leaf comes back: the template's sharding, else this process's first device, so a
    checkpoint written by a mesh or by several processes restores on one device too."""
    target = ocp.utils.to_shape_dtype_struct(leaf)
    if getattr(target, "sharding", None) is None:
        target = jax.ShapeDtypeStruct(target.shape, target.dtype,
                                      sharding=jax.sharding.SingleDeviceSharding(jax.local_devices()[0]))
    return target


def restore_checkpoint(manager: ocp.CheckpointManager, template: Any, step: int | None = None):
    """Restore (state, data_state, config) at `step` (default: latest), or None if empty.

    `template` is a state of the right structure (or its `jax.eval_shape`);
    restored leaves are put back into exactly its tree structure, so optax's
    NamedTuple states come back as the same types.
    """
    step = manager.latest_step() if step is None else step
    if step is None:
        return None
    abstract = jax.tree.map(_restore_target, template)
    try:
        restored = manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract), data=ocp.args.JsonRestore(), config=ocp.args.JsonRestore()
            ),
        )
    except Exception as e:  # orbax raises many types for missing or damaged files
        raise ValueError(
            f"checkpoint step {step} in {manager.directory} cannot be restored ({type(e).__name__}: {e}). "
            "It may be corrupt or from a different config; delete that step's folder to fall back to an "
            "earlier one, or start fresh without --resume"
        ) from None
    leaves = jax.tree.leaves(restored["state"])
    state = jax.tree.unflatten(jax.tree.structure(template), leaves)
    return state, dict(restored["data"]), dict(restored["config"])
