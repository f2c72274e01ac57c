"""Fuzzy deduplication of a corpus: MinHash signatures, LSH candidates, exact-Jaccard verification.

Defaults suit "documents with about 5% of their words edited are duplicates": with 3-word
shingles one substituted word breaks up to 3 shingles, so 5% substitutions leave Jaccard near
(1 - 0.15) / (1 + 0.15) = 0.74 at worst; with 20 bands of 5 rows such a pair becomes a candidate
with probability 1 - (1 - 0.74^5)^20 = 0.993, and the verification threshold is 0.6.

`fuzzy_dedup` holds every signature in memory (and every text, when given texts); the pipeline
instead writes per-shard sorted band files and streams them (`lm.curation.disk_lsh`), which gives the
same clusters with memory that does not grow with the corpus.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class MinHashConfig:
    num_perm: int = 100
    bands: int = 20
    rows: int = 5
    ngram: int = 3
    threshold: float = 0.6  # exact Jaccard at or above which a candidate pair is a duplicate
    seed: int = 1

    def __post_init__(self):
        if self.bands * self.rows > self.num_perm:
            raise ValueError(f"bands * rows = {self.bands * self.rows} must be <= num_perm = {self.num_perm}")
        if min(self.num_perm, self.bands, self.rows, self.ngram) < 1:
            raise ValueError("num_perm, bands, rows and ngram must be positive")
        if not 0 < self.threshold <= 1:
            raise ValueError(f"threshold must be in (0, 1], got {self.threshold}")


def fuzzy_dedup(texts: Sequence[str] | None, config: MinHashConfig = MinHashConfig(), *,
                signatures: np.ndarray | None = None, load_text: Callable[[int], str] | None = None
                ) -> tuple[np.ndarray, dict]:
    """Near-duplicate clustering; returns (root [n], stats) with root[i] == i for kept documents.

    Give `texts` for an in-memory corpus, or `signatures` plus `load_text(i)` to keep only the
    signatures in memory and read documents back when a candidate pair needs verifying.
    """
    from lm.curation.lsh import duplicate_clusters
    from lm.curation.minhash import minhash_signatures, shingle_set

    if signatures is None:
        if texts is None:
            raise ValueError("give texts, or signatures and load_text")
        signatures = minhash_signatures(texts, config.num_perm, config.ngram, config.seed)
    if load_text is None:
        if texts is None:
            raise ValueError("with precomputed signatures, pass load_text to read documents for verification")
        load_text = texts.__getitem__
    return duplicate_clusters(signatures, lambda i: shingle_set(load_text(i), config.ngram), bands=config.bands,
                              rows=config.rows, threshold=config.threshold)
