"""Load a trained model from a run directory written by `experiments.pretrain` (or `lm.trainer.train`).

    params, config, tokenizer = load_run("runs/default-tiny")

A run directory holds `checkpoints/STEP/` (orbax: `state`, `data`, `config`)
and `tokenizer.json`. The saved config rebuilds the exact train-state
template, so the checkpoint restores as training wrote it; only the
parameters are kept. Runs saved before the layers were stacked are converted
as they load (`lm.train.convert`).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import jax
import orbax.checkpoint as ocp

from lm.config import from_dict
from lm.tokenizer import load_tokenizer
from lm.train.checkpoint import checkpoint_manager
from lm.train.config import TrainConfig
from lm.train.convert import restore_any_layout, saved_layout, upgrade_config
from lm.train.step import init_state


def load_run(run_dir: str | os.PathLike, step: int | None = None, tokenizer: bool = True):
    """(params, ModelConfig, Tokenizer or None) of `run_dir` at `step` (default: the latest checkpoint)."""
    run_dir = Path(run_dir)
    ckpt = run_dir / "checkpoints"
    if not ckpt.is_dir():
        raise FileNotFoundError(f"no checkpoints found in {str(run_dir)!r}: expected {str(ckpt)!r} "
                                "(train with `python -m experiments.pretrain --name NAME`, then use runs/NAME)")
    manager = checkpoint_manager(ckpt, async_save=False)
    steps = manager.all_steps()
    if not steps:
        raise FileNotFoundError(f"{str(ckpt)!r} holds no finished checkpoint")
    step = max(steps) if step is None else step
    if step not in steps:
        raise ValueError(f"no checkpoint for step {step} in {str(ckpt)!r}; saved steps: {sorted(steps)}")
    saved = manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"]
    if saved_layout(ckpt / str(step)) == "legacy":
        saved = upgrade_config(saved)
    train_config = from_dict(TrainConfig, saved["train"])
    if saved.get("lora"):  # a LoRA run: adapters in the checkpoint, the frozen base beside them; merged here
        from lm.train.lora import lora_policy

        params = lora_policy(manager, run_dir, saved, step)
    else:
        template = jax.eval_shape(functools.partial(init_state, train_config), jax.random.PRNGKey(0))
        params = restore_any_layout(manager, template, step)[0]["params"]
    manager.close()
    tok = None
    if tokenizer:
        tok = load_tokenizer(run_dir)
    return params, train_config.model, tok

