"""Harmful-content filters (toxic, NSFW) behind one interface: `classifier(text) -> (label, score)`.

`score` is the probability that the text is harmful; `label` is the classifier's positive label
("toxic", "nsfw") or "non-" plus it.

Offline defaults: for "toxic" we use alt-profanity-check, whose wheel carries its model (a linear
SVM over word n-grams, trained on offensive/toxic comment data): nothing is downloaded. We found
no package on PyPI that ships an offline NSFW *text* model (the NSFW packages there classify
images, or call a web API, or download weights at run time), so "nsfw" has no default: give a
fastText model path, e.g. Dolma's Jigsaw classifiers (`jigsaw_fasttext_bigrams_nsfw_final.bin`,
`jigsaw_fasttext_bigrams_hatespeech_final.bin`), whose labels are `__label__nsfw` /
`__label__non-nsfw` and `__label__toxic` / `__label__non-toxic`.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Protocol


class HarmfulClassifier(Protocol):
    name: str

    def __call__(self, text: str) -> tuple[str, float]: ...

    def batch(self, texts: list[str]) -> list[tuple[str, float]]: ...


@dataclasses.dataclass(frozen=True)
class ProfanityCheckClassifier:
    """alt-profanity-check's bundled model (English)."""

    name: str = "toxic"

    def __call__(self, text: str) -> tuple[str, float]:
        return self.batch([text])[0]

    def batch(self, texts: list[str]) -> list[tuple[str, float]]:
        """Many texts in one call (scikit-learn's per-call overhead dominates single texts)."""
        try:
            from profanity_check import predict_prob
        except ImportError as e:
            raise ImportError("the offline toxic-language default needs alt-profanity-check: "
                              "pip install -e '.[curation]'") from e
        if not texts:
            return []
        return [((self.name if p >= 0.5 else f"non-{self.name}"), float(p)) for p in predict_prob(list(texts))]


@dataclasses.dataclass(frozen=True)
class FastTextClassifier:
    """A fastText binary classifier; `positive` is its harmful label without `__label__`."""

    path: str
    name: str = "harmful"
    positive: str = ""

    def __call__(self, text: str) -> tuple[str, float]:
        from lm.curation.fasttext_util import load_fasttext, predict_probs

        probs = predict_probs(load_fasttext(self.path), text)
        positive = self.positive or _guess_positive(probs)
        if positive not in probs:
            raise ValueError(f"label {positive!r} is not one of {self.path!r}'s labels {sorted(probs)}")
        p = probs[positive]
        return (positive if p >= 0.5 else f"non-{positive}"), p

    def batch(self, texts: list[str]) -> list[tuple[str, float]]:
        return [self(t) for t in texts]


def _guess_positive(probs: dict[str, float]) -> str:
    positives = [lab for lab in probs if not lab.startswith("non")]
    if len(positives) != 1:
        raise ValueError(f"cannot tell which of the labels {sorted(probs)} means harmful; pass positive=")
    return positives[0]


def load_harmful_classifier(kind: str = "toxic", path: str | os.PathLike | None = None,
                            positive: str = "") -> HarmfulClassifier:
    """`kind` in {"toxic", "nsfw"}; `path` a fastText model (required for "nsfw")."""
    if path:
        return FastTextClassifier(str(path), name=kind, positive=positive)
    if kind == "toxic":
        return ProfanityCheckClassifier()
    raise ValueError(f"no offline {kind!r} model ships with any package we know of; "
                     f"pass the path of a fastText {kind} classifier (e.g. Dolma's Jigsaw {kind} model)")


def harmful_filter(text: str, classifiers: list[HarmfulClassifier], threshold: float = 0.5
                   ) -> tuple[bool, str | None]:
    """(keep, reason): dropped when any classifier's harmful probability reaches `threshold`."""
    return harmful_filter_batch([text], classifiers, threshold)[0]


def harmful_filter_batch(texts: list[str], classifiers: list[HarmfulClassifier], threshold: float = 0.5
                         ) -> list[tuple[bool, str | None]]:
    out: list[tuple[bool, str | None]] = [(True, None)] * len(texts)
    for clf in classifiers:
        for i, (_, p) in enumerate(clf.batch(texts)):
            if p >= threshold and out[i][0]:
                out[i] = (False, clf.name)
    return out
