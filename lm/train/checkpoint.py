"""Orbax checkpoints of the train state, the data iterator position and the config.

A checkpoint directory holds one sub-directory per saved step, each with three
items: `state` (step, params, optimizer state: `TrainState.to_tree`), `data` (the grain
iterator state, JSON) and `config` (the run's config, JSON). Saves are
asynchronous: training continues while the arrays are written.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from lm.train.state import TrainState, as_train_state


def checkpoint_manager(directory: str | os.PathLike, keep: int = 2, async_save: bool = True) -> ocp.CheckpointManager:
    directory = Path(directory).absolute()
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=async_save, create=True)
    return ocp.CheckpointManager(directory, options=options)


def save_checkpoint(manager: ocp.CheckpointManager, step: int, state: Any, data_state: dict, config: dict) -> None:
    """Start saving; returns once the arrays are copied off the live buffers."""
    manager.save(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(_stored(state)),
            data=ocp.args.JsonSave(data_state),
            config=ocp.args.JsonSave(config),
        ),
        force=True,
    )


def _stored(state):
    """What a checkpoint holds for a state: a TrainState (or a dict holding one's fields) as its dict."""
    try:
        return as_train_state(state).to_tree()
    except TypeError:
        return state


def _saved_extras(step_dir: Path) -> dict:
    """{name: ShapeDtypeStruct} of top-level state entries saved beside step/params/opt_state (the
    "rng" of checkpoints written before TrainState), so that a restore can read and drop them."""
    absl = logging.getLogger("absl")
    level = absl.level
    absl.setLevel(logging.ERROR)  # orbax warns about a metadata file it does not need
    try:
        with ocp.StandardCheckpointer() as checkpointer:
            meta = checkpointer.metadata(step_dir.absolute() / "state").item_metadata
        extras = {k: v for k, v in dict(meta).items() if k not in TrainState._fields}
        return {k: jax.ShapeDtypeStruct(tuple(v.shape), np.dtype(v.dtype)) for k, v in extras.items()}
    except Exception:  # unreadable metadata (a damaged step): the restore itself reports what is wrong
        return {}
    finally:
        absl.setLevel(level)


def _short(e: Exception, limit: int = 300) -> str:
    """An exception's first line, cut to `limit` characters (orbax's can embed pages of storage spec)."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {text[:limit]}{'...' if len(text) > limit else ''}"


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
    typed = isinstance(template, TrainState)
    stored = _stored(template)
    extras = _saved_extras(Path(manager.directory) / str(step)) if isinstance(stored, dict) else {}
    abstract = jax.tree.map(_restore_target, {**stored, **extras})
    try:
        restored = manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract), data=ocp.args.JsonRestore(), config=ocp.args.JsonRestore()
            ),
        )
    except Exception as e:  # orbax raises many types for missing or damaged files
        raise ValueError(
            f"checkpoint step {step} in {manager.directory} cannot be restored ({_short(e)}). "
            "It may be corrupt or from a different config; delete that step's folder to fall back to an "
            "earlier one, or start fresh without --resume"
        ) from None
    saved = restored["state"]
    if extras:
        saved = {k: v for k, v in saved.items() if k not in extras}
    state = jax.tree.unflatten(jax.tree.structure(stored), jax.tree.leaves(saved))
    return (as_train_state(state) if typed else state), dict(restored["data"]), dict(restored["config"])
