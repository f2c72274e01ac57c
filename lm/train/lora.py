"""The files of a LoRA run: its checkpoints hold the adapters, and the frozen base is written once beside them.

    save_base(run_dir, params)                     # runs/x/lora_base/; keep=True: check it is that base
    params = lora_policy(manager, run_dir, saved_config, step)   # the base with that step's adapters merged

A LoRA run's checkpoints (lm.trainer.fit) are TrainStates whose params are the adapters
(`lm.model.lora`) and whose optimizer state is theirs, with {"lora": LoRAConfig} in the saved config;
resuming reads them as any run's. `lm.inference.load_run` reads such a run as a policy through
`lora_policy`, so generation, evaluation, the next alignment stage and `lm.interop.save_hf` see the
merged parameters.
"""

from __future__ import annotations

import functools
import os
import shutil
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp

from lm.config import from_dict
from lm.model.lora import LoRAConfig, init_lora, merge
from lm.train.config import TrainConfig

BASE_DIR = "lora_base"


def _abstract(params):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype), params)


def load_base(run_dir: str | os.PathLike, abstract):
    """The base params saved in `run_dir` (`abstract`: their tree of ShapeDtypeStructs or arrays)."""
    path = Path(run_dir).absolute() / BASE_DIR
    if not path.is_dir():
        raise FileNotFoundError(f"{str(path)!r} does not exist: a LoRA run directory keeps its frozen base there "
                                "(written when the run starts with checkpoints on)")
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=device), abstract)
    with ocp.StandardCheckpointer() as checkpointer:
        return checkpointer.restore(path, target)


def save_base(run_dir: str | os.PathLike, params, keep: bool = False) -> None:
    """Write the frozen base into `run_dir`, replacing any there; with `keep` (the run has checkpoints
    to continue), check instead that the saved base is `params`, bitwise, since the saved adapters
    only mean something on top of it."""
    path = Path(run_dir).absolute() / BASE_DIR
    if keep and path.is_dir():
        saved = load_base(run_dir, _abstract(params))
        same = all(np.array_equal(np.asarray(a), np.asarray(b))
                   for a, b in zip(jax.tree.leaves(saved), jax.tree.leaves(params), strict=True))
        if not same:
            raise ValueError(f"{str(path)!r} holds another base than the params given: this LoRA run's adapters "
                             "were trained on that base; resume with the same --init (or start a new run)")
        return
    if path.exists():
        shutil.rmtree(path)
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(path, params)
        checkpointer.wait_until_finished()


def lora_template(train_config: TrainConfig, lora: LoRAConfig, base_abstract):
    """The abstract TrainState of a LoRA run: (step, adapters, the adapters' optimizer state)."""
    from lm.train.step import fine_tune_state

    return jax.eval_shape(lambda b: fine_tune_state(init_lora(b, lora, jax.random.PRNGKey(0)), train_config),
                          base_abstract)


def lora_policy(manager, run_dir: str | os.PathLike, saved: dict, step: int, restore=None):
    """The merged params of a LoRA run's checkpoint `step` (`saved`: that checkpoint's config, with
    "train" and "lora"). `restore(manager, template, step)` reads the checkpoint (default:
    lm.train.checkpoint.restore_checkpoint)."""
    from lm.model import init
    from lm.train.checkpoint import restore_checkpoint

    train_config = from_dict(TrainConfig, saved["train"])
    lora = from_dict(LoRAConfig, saved["lora"])
    base_abstract = jax.eval_shape(functools.partial(init, train_config.model), jax.random.PRNGKey(0))
    state, _, _ = (restore or restore_checkpoint)(manager, lora_template(train_config, lora, base_abstract), step)
    base = load_base(run_dir, base_abstract)
    return jax.jit(merge, static_argnums=2)(base, state.params, lora)
