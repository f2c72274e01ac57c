"""A quality classifier: fastText trained on positive (high-quality) and negative examples.

In the CS336 recipe positives are pages linked from a trusted source (Wikipedia references) and
negatives are random crawl pages; here the caller supplies both lists.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Sequence

HQ, LQ = "hq", "lq"


def train_quality_classifier(positives: Sequence[str], negatives: Sequence[str], out_path: str | os.PathLike,
                             *, epoch: int = 10, lr: float = 0.5, word_ngrams: int = 2, dim: int = 32,
                             seed: int = 0, threads: int = 1) -> Path:
    """Train and save a fastText model with labels `hq`/`lq`; returns the saved path.

    threads=1 makes training deterministic (fastText's Hogwild SGD is not, with several threads).
    """
    from lm.curation.fasttext_util import fasttext_module, one_line

    if not positives or not negatives:
        raise ValueError(f"need positive and negative examples, got {len(positives)} and {len(negatives)}")
    fasttext = fasttext_module(need_training=True)
    rows = [f"__label__{HQ} {one_line(t)}" for t in positives] + [f"__label__{LQ} {one_line(t)}" for t in negatives]
    random.Random(seed).shuffle(rows)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", dir=out_path.parent, delete=False, encoding="utf-8") as f:
        f.write("\n".join(rows) + "\n")
    try:
        model = fasttext.train_supervised(input=f.name, epoch=epoch, lr=lr, wordNgrams=word_ngrams, dim=dim,
                                          seed=seed, thread=threads, verbose=0, minCount=1)
    finally:
        os.unlink(f.name)
    model.save_model(str(out_path))
    return out_path


def quality_score(text: str, model_path: str | os.PathLike) -> float:
    """Probability that `text` is high quality under the model at `model_path`."""
    from lm.curation.fasttext_util import load_fasttext, predict_probs

    probs = predict_probs(load_fasttext(str(model_path)), text)
    if HQ not in probs:
        raise ValueError(f"{str(model_path)!r} has labels {sorted(probs)}, not the quality labels {HQ}/{LQ}")
    return probs[HQ]


def quality_filter(text: str, model_path: str | os.PathLike, min_score: float = 0.5) -> tuple[bool, str | None]:
    return (True, None) if quality_score(text, model_path) >= min_score else (False, "low_quality")
