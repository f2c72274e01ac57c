"""Load a policy to align: one of our run directories or a Hugging Face checkpoint directory.

    params, config, tokenizer = load_policy("runs/arith-pretrain")      # our run directory
    params, config, tokenizer = load_policy("runs/smollm2-135m")        # a Hugging Face checkpoint dir

An alignment run saves its policy as any run does: the training driver's checkpoints
(lm.trainer.fit, with {"train": TrainConfig} in each) plus tokenizer.json (lm.align.run.prepare).
"""

from __future__ import annotations

import os
from pathlib import Path


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
