"""Load a policy to align, and save one so that the next stage (or `lm.inference.load_run`) can read it.

    params, config, tokenizer = load_policy("runs/arith-pretrain")      # our run directory
    params, config, tokenizer = load_policy("runs/smollm2-135m")        # a Hugging Face checkpoint dir
    save_policy("runs/arith-sft", state, train_config, tokenizer)
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from lm.config import to_dict
from lm.train.checkpoint import checkpoint_manager, save_checkpoint
from lm.train.config import TrainConfig


def load_policy(path: str | os.PathLike):
    """(params, ModelConfig, tokenizer) from a run directory of ours (checkpoints/) or a Hugging Face
    checkpoint directory (config.json + safetensors, through lm.interop)."""
    path = Path(path)
    if (path / "checkpoints").is_dir():
        from lm.inference import load_run

        return load_run(path)
    if (path / "config.json").is_file():
        try:
            from lm.interop import load_hf
        except ImportError as e:
            raise ImportError(f"{str(path)!r} is a Hugging Face checkpoint, which needs lm.interop ({e})") from None
        return load_hf(path)
    raise FileNotFoundError(f"{str(path)!r} is neither a run directory of ours (with checkpoints/) nor a Hugging "
                            "Face checkpoint directory (with config.json); train one with experiments.pretrain "
                            "or convert one with lm.interop")


def save_policy(run_dir: str | os.PathLike, state: dict, train_config: TrainConfig, tokenizer=None,
                extra: dict | None = None) -> Path:
    """Write `state` (lm.train's state dict) as run_dir/checkpoints/STEP plus tokenizer.json, the layout
    `lm.inference.load_run` and `load_policy` read. Earlier checkpoints in run_dir are removed."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    # A fine-tuned policy replaces whatever an earlier run left here: a stale checkpoint at a
    # higher step would otherwise be the one `load_policy` picks up.
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    manager = checkpoint_manager(run_dir / "checkpoints", keep=1, async_save=False)
    step = int(state["step"])
    save_checkpoint(manager, step, state, {"next_index": step}, {"train": to_dict(train_config), **(extra or {})})
    manager.wait_until_finished()
    manager.close()
    if tokenizer is not None and hasattr(tokenizer, "merges"):
        from lm.tokenizer import save_tokenizer

        save_tokenizer(tokenizer, run_dir)
    return run_dir
