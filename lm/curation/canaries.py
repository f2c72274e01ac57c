"""Canaries: synthetic documents planted in a run so that its stats show whether dedup and
decontamination worked.

Near-duplicate canaries are pairs (base, copy) of documents of random made-up words, the copy with
evenly spaced words replaced so that the exact Jaccard similarity of their word n-gram shingles is
close to a target in 0.50, 0.55, ..., 0.95. With b bands of r rows, LSH makes a pair of Jaccard s a
candidate with probability 1 - (1 - s^r)^b (the S-curve), and verification then keeps the pairs at
or above the threshold; `near_duplicate_report` sets the measured rates beside that prediction per
bucket, so a dedup that silently removes nothing shows as recall 0 where ~1 was predicted.
Benchmark canaries embed items of the decontamination sets in made-up text; the decontamination
stage should find every one. Canaries are never written to the clean output.
"""

from __future__ import annotations

import random

import numpy as np

from lm.curation.document import Document

TARGETS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))
_LETTERS = "bcdfghjklmnpqrstvwxz"


def _word(rng: random.Random) -> str:
    # Consonants only: made-up words never equal a real word, so canaries match only each other.
    return "".join(rng.choice(_LETTERS) for _ in range(rng.randint(5, 9)))


def near_duplicate_pair(rng: random.Random, target: float, n_words: int = 300, ngram: int = 3) -> tuple[str, str]:
    """(base, copy) whose word `ngram`-shingle Jaccard is about `target`.

    Each replaced word changes `ngram` shingles when replacements are at least `ngram` words apart,
    so k replacements give Jaccard (m - ngram k) / (m + ngram k) with m = n_words - ngram + 1.
    """
    words = [_word(rng) for _ in range(n_words)]
    m = n_words - ngram + 1
    k = max(1, round(m * (1 - target) / (ngram * (1 + target))))
    step = n_words / k
    copy = list(words)
    for i in range(k):
        copy[int(i * step + step / 2)] = _word(rng)
    return " ".join(words), " ".join(copy)


def make_canaries(per_bucket: int, seed: int, ngram: int, benchmark_items: dict[str, list[str]]) -> list[Document]:
    """Canary documents: `per_bucket` near-duplicate pairs per target, then the benchmark canaries."""
    rng = random.Random(seed)
    docs = []
    for target in TARGETS:
        for k in range(per_bucket):
            base, copy = near_duplicate_pair(rng, target, ngram=ngram)
            pair = f"{target:.2f}-{k}"
            for role, text in (("base", base), ("copy", copy)):
                docs.append(Document(id=f"canary#near-{pair}-{role}", text=text, url="canary:near-duplicate",
                                     meta={"canary": "near_duplicate", "pair": pair, "role": role, "target": target}))
    for name, items in sorted(benchmark_items.items()):
        for k, item in enumerate(items):
            filler = " ".join(_word(rng) for _ in range(40))
            docs.append(Document(id=f"canary#bench-{name}-{k}", text=f"{filler}\n{item}\n{filler}",
                                 url="canary:benchmark", meta={"canary": "benchmark", "benchmark": name}))
    return docs


def s_curve(s: np.ndarray | float, bands: int, rows: int) -> np.ndarray:
    """Probability that a pair of Jaccard s shares at least one of `bands` bands of `rows` rows."""
    return 1 - (1 - np.asarray(s, dtype=np.float64) ** rows) ** bands


def near_duplicate_report(docs: list[Document], jaccards: dict[str, float], candidate: dict[str, bool],
                          removed: dict[str, bool], bands: int, rows: int, threshold: float) -> list[dict]:
    """Per target bucket: pairs, mean exact Jaccard, LSH candidate rate (measured and predicted by
    the S-curve), and the rate at which dedup removed the copy (predicted: the S-curve where the
    pair's Jaccard reaches the verification threshold, else 0)."""
    out = []
    for target in TARGETS:
        pairs = sorted({d.meta["pair"] for d in docs if d.meta.get("target") == target})
        if not pairs:
            continue
        js = np.array([jaccards[p] for p in pairs])
        pred = s_curve(js, bands, rows)
        out.append({"target": target, "pairs": len(pairs), "mean_jaccard": round(float(js.mean()), 4),
                    "candidate_rate": round(float(np.mean([candidate[p] for p in pairs])), 4),
                    "predicted_candidate_rate": round(float(pred.mean()), 4),
                    "removed_rate": round(float(np.mean([removed[p] for p in pairs])), 4),
                    "predicted_removed_rate": round(float(np.mean(np.where(js >= threshold, pred, 0.0))), 4)})
    return out
