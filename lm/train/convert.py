"""Checkpoints written before the layers were stacked, and their conversion.

Runs saved before the stacked layout hold `params["block_0"] .. ["block_{L-1}"]`
(and so do AdamW's and Muon's moment trees); the model now keeps one
`params["blocks"]` whose leaves stack those on a leading axis. A pipeline run
of that time already saved its blocks stacked, so it needs nothing.

    python -m experiments.convert_checkpoint runs/OLD runs/NEW

`lm.inference.load_run` converts an old run on the fly when it loads it;
resuming training from one asks for the command above.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

BLOCKS = "blocks"
LEGACY_PREFIX = "block_"


def _is_legacy(x) -> bool:
    return isinstance(x, dict) and f"{LEGACY_PREFIX}0" in x


def _is_stacked(x) -> bool:
    return isinstance(x, dict) and BLOCKS in x


def stack_blocks(tree):
    """Every params-shaped dict in `tree` (params, optimizer moments) from block_0.. to stacked "blocks"."""
    def stack(d):
        names = sorted((k for k in d if k.startswith(LEGACY_PREFIX)), key=lambda k: int(k[len(LEGACY_PREFIX):]))
        rest = {k: v for k, v in d.items() if k not in names}
        return {BLOCKS: jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *(d[n] for n in names)),
                **rest}

    return jax.tree.map(lambda x: stack(x) if _is_legacy(x) else x, tree, is_leaf=_is_legacy)


def legacy_template(template):
    """`template` (a train state, or its eval_shape) in the old per-layer layout: what to restore into."""
    def unstack(d):
        n = jax.tree.leaves(d[BLOCKS])[0].shape[0]
        rest = {k: v for k, v in d.items() if k != BLOCKS}
        def layer(x):
            return jax.ShapeDtypeStruct(x.shape[1:], x.dtype)

        return {**{f"{LEGACY_PREFIX}{i}": jax.tree.map(layer, d[BLOCKS]) for i in range(n)}, **rest}

    return jax.tree.map(lambda x: unstack(x) if _is_stacked(x) else x, template, is_leaf=_is_stacked)


def saved_layout(step_dir: str | os.PathLike) -> str:
    """"stacked" or "legacy": how the checkpoint step directory `step_dir` stores its layers."""
    absl = logging.getLogger("absl")
    level = absl.level
    # orbax warns about a metadata file it does not need; setLevel (not assigning .level) also
    # clears the logger's cached enabled-levels, so the warning is really silenced.
    absl.setLevel(logging.ERROR)
    try:
        with ocp.StandardCheckpointer() as checkpointer:
            meta = checkpointer.metadata(Path(step_dir).absolute() / "state").item_metadata
        params = meta["params"]
    except Exception:  # unreadable metadata (a damaged step): the restore itself reports what is wrong
        return "stacked"
    finally:
        absl.setLevel(level)
    return "legacy" if f"{LEGACY_PREFIX}0" in params else "stacked"


def upgrade_config(saved: dict) -> dict:
    """A saved config dict ({"train": ...}) from before the stacked layout, in today's terms: its
    attention_impl "xla" meant "blocked where positions are the indices", which is now "auto", and
    its layers ran unrolled."""
    model = saved.get("train", {}).get("model", {})
    if not model:
        return saved
    model = dict(model)
    if model.get("attention_impl") == "xla":
        model["attention_impl"] = "auto"
    model.setdefault("scan_layers", False)  # the per-layer model ran its layers unrolled
    return {**saved, "train": {**saved["train"], "model": model}}


def restore_any_layout(manager, template, step: int):
    """`lm.train.checkpoint.restore_checkpoint`, reading old per-layer checkpoints into the stacked layout."""
    from lm.train.checkpoint import restore_checkpoint

    if saved_layout(Path(manager.directory) / str(step)) == "stacked":
        return restore_checkpoint(manager, template, step)
    state, data_state, config = restore_checkpoint(manager, legacy_template(template), step)
    config = upgrade_config(config)
    stacked = stack_blocks(state)
    # Back into exactly the template's tree (optax NamedTuples, dtypes); strict, so a leaf count that
    # disagrees (a checkpoint of another config) fails here instead of pairing leaves up wrongly.
    leaves = [jnp.asarray(x, t.dtype)
              for x, t in zip(jax.tree.leaves(stacked), jax.tree.leaves(template), strict=True)]
    return jax.tree.unflatten(jax.tree.structure(template), leaves), data_state, config


def step_layouts(run_dir: str | os.PathLike) -> dict[int, str]:
    """{step: "stacked" or "legacy"} for every finished checkpoint of run directory `run_dir`."""
    from lm.train.checkpoint import checkpoint_manager

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {str(run_dir)!r} does not exist; give the directory a run "
                                "was written to, such as runs/NAME")
    ckpt = run_dir / "checkpoints"
    if not ckpt.is_dir():
        raise FileNotFoundError(f"{str(run_dir)!r} is not a run directory: it has no checkpoints/ folder "
                                "(give the directory experiments.pretrain wrote, such as runs/NAME)")
    manager = checkpoint_manager(ckpt, async_save=False)
    steps = sorted(manager.all_steps())
    manager.close()
    if not steps:
        raise FileNotFoundError(f"{str(ckpt)!r} holds no finished checkpoint, so there is nothing to convert")
    return {step: saved_layout(ckpt / str(step)) for step in steps}


def convert_run(old: str | os.PathLike, new: str | os.PathLike, progress: bool = True) -> list[int]:
    """Write run directory `old` as `new` in the stacked layout: every checkpoint step converted, the
    other files (tokenizer, metrics, plots) copied; `old` is only read. Returns the converted steps.
    `new` must not exist or be empty; if conversion fails, nothing is left in it."""
    from lm.config import from_dict
    from lm.train.checkpoint import checkpoint_manager, save_checkpoint
    from lm.train.config import TrainConfig
    from lm.train.step import init_state

    old, new = Path(old), Path(new)
    layouts = step_layouts(old)
    if new.exists() and (not new.is_dir() or any(new.iterdir())):
        raise FileExistsError(f"{str(new)!r} already exists and is not empty; choose a new directory "
                              "(the converted run is written beside the old one, which stays as it is)")
    if new.absolute().resolve().is_relative_to(old.absolute().resolve()):
        # Copying `old` would then copy `new` into itself.
        raise ValueError(f"{str(new)!r} is inside {str(old)!r}; write the converted run outside it, "
                         f"such as {str(old.with_name(old.name + '-stacked'))!r}")
    created = not new.exists()
    new.mkdir(parents=True, exist_ok=True)
    try:
        for item in old.iterdir():
            if item.name != "checkpoints":
                (shutil.copytree if item.is_dir() else shutil.copy2)(item, new / item.name)
        source = checkpoint_manager(old / "checkpoints", async_save=False)
        target = checkpoint_manager(new / "checkpoints", keep=len(layouts), async_save=False)
        for step, layout in layouts.items():
            saved = source.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"]
            train_config = from_dict(TrainConfig, upgrade_config(saved)["train"])
            template = jax.eval_shape(functools.partial(init_state, train_config), jax.random.PRNGKey(0))
            state, data_state, config = restore_any_layout(source, template, step)
            save_checkpoint(target, step, state, data_state, config)
            if progress:
                print(f"step {step}: " + ("converted (legacy -> stacked)" if layout == "legacy"
                                          else "copied (already stacked)"), flush=True)
        target.wait_until_finished()
        target.close()
        source.close()
    except BaseException:
        # A half-written NEW would look like a run that resumes from whichever steps made it.
        shutil.rmtree(new, ignore_errors=True)
        if not created:
            new.mkdir(parents=True, exist_ok=True)
        raise
    return list(layouts)
