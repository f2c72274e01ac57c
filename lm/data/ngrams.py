"""Stable n-gram hashes over token or word sequences, and a sorted index to look them up.

Shared by benchmark decontamination (`lm.curation.decontaminate`) and the evaluation
contamination report, so both count overlaps the same way:

- `normalize_words(text)`: lowercase, drop punctuation and symbols, split on whitespace
  (the GPT-3 / lm-eval-harness normalisation for 13-gram overlap).
- `word_ids(words)`: uint64 id per word from BLAKE2b, identical in every process (no Python
  `hash()`, which is salted per process).
- `ngram_hashes(seq, n)`: one uint64 per window of n consecutive integers (token ids or word ids).
- `text_ngram_hashes(text, n)`: the two above composed (`texts_ngram_hashes` for many texts).
- `NgramIndex`: a sorted array of unique uint64 hashes with `contains` by binary search, built
  from any number of hash arrays in chunks so memory is the index plus one chunk, saved as `.npy`.

All hashes are 64-bit, so two different n-grams collide with probability about 2^-64 per pair:
for 10^9 indexed n-grams, one false match is expected per ~10^10 queries.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Sequence

import numpy as np

# \w keeps letters and digits of every script; "_" is in \w but is punctuation to a reader.
_NOT_WORD = re.compile(r"[^\w\s]|_")

_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def normalize_words(text: str) -> list[str]:
    """Lowercased words of `text` with punctuation and symbols removed ("Don't!" -> ["dont"])."""
    return _NOT_WORD.sub("", text.lower()).split()


def word_ids(words: Sequence[str]) -> np.ndarray:
    """uint64 [len(words)]: the first 8 bytes of BLAKE2b(word), the same in every process."""
    cache: dict[str, int] = {}
    out = np.empty(len(words), dtype=np.uint64)
    for i, w in enumerate(words):
        h = cache.get(w)
        if h is None:
            h = cache[w] = int.from_bytes(hashlib.blake2b(w.encode("utf-8"), digest_size=8).digest(), "little")
        out[i] = h
    return out


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser on a uint64 array (wraps mod 2^64; arrays do not warn on overflow)."""
    x = x + _GOLDEN
    x = (x ^ (x >> np.uint64(30))) * _MIX1
    x = (x ^ (x >> np.uint64(27))) * _MIX2
    return x ^ (x >> np.uint64(31))


def ngram_hashes(seq: np.ndarray | Sequence[int], n: int) -> np.ndarray:
    """uint64 [max(len(seq) - n + 1, 0)]: hash of each window seq[i:i + n].

    `seq` is any 1-D integer sequence (token ids, or `word_ids`); negative values are read as
    their two's-complement uint64. The hash depends only on the window's values in order, never
    on its position, so equal n-grams in different documents hash equally. Each element is folded
    in by `h = splitmix64(h ^ x)`, vectorised over all windows (O(n * len(seq))).
    """
    if n < 1:
        raise ValueError(f"n-gram length must be >= 1, got {n}")
    arr = np.asarray(seq)
    if arr.ndim != 1 or not (np.issubdtype(arr.dtype, np.integer) or arr.size == 0):
        raise ValueError(f"expected a 1-D integer sequence, got shape {arr.shape} dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False).view(np.uint64) if arr.dtype.kind == "i" else arr.astype(np.uint64)
    windows = arr.size - n + 1
    if windows <= 0:
        return np.empty(0, dtype=np.uint64)
    h = np.full(windows, np.uint64(n), dtype=np.uint64)
    for i in range(n):
        h = _splitmix64(h ^ arr[i : i + windows])
    return h


def text_ngram_hashes(text: str, n: int = 13) -> np.ndarray:
    """uint64 [n_words - n + 1]: hashes of the word n-grams of `normalize_words(text)` (empty if shorter)."""
    return ngram_hashes(word_ids(normalize_words(text)), n)


def texts_ngram_hashes(texts: Sequence[str], n: int = 13) -> list[np.ndarray]:
    """`text_ngram_hashes` of many texts at once (one vectorised pass: much faster for short texts)."""
    words = [normalize_words(t) for t in texts]
    lengths = np.fromiter((len(w) for w in words), dtype=np.int64, count=len(words))
    flat = word_ids([w for ws in words for w in ws])
    hashes = ngram_hashes(flat, n)  # windows across text boundaries are computed, then never used
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1])) if len(words) else lengths
    return [hashes[s:s + max(int(k) - n + 1, 0)] for s, k in zip(starts, lengths)]


def _merge_sorted_unique(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Union of two sorted unique uint64 arrays in O(len(a) + len(b)) (no re-sort of `a`)."""
    if a.size == 0:
        return b
    pos = np.searchsorted(a, b)
    hit = pos < a.size
    hit[hit] = a[pos[hit]] == b[hit]
    new = b[~hit]
    return np.insert(a, pos[~hit], new)


class NgramIndex:
    """A set of uint64 n-gram hashes: `hashes` is sorted and unique, membership by binary search."""

    def __init__(self, hashes: np.ndarray):
        hashes = np.asarray(hashes)
        if hashes.dtype != np.uint64 or hashes.ndim != 1:
            raise ValueError(f"NgramIndex holds a 1-D uint64 array, got shape {hashes.shape} dtype {hashes.dtype}")
        if hashes.size > 1 and not (hashes[1:] > hashes[:-1]).all():
            raise ValueError("NgramIndex hashes must be sorted and unique: build it with NgramIndex.build")
        self.hashes = hashes

    @classmethod
    def build(cls, arrays: Iterable[np.ndarray], chunk_size: int = 1 << 22) -> NgramIndex:
        """Index of every hash in `arrays` (an iterable of uint64 arrays, e.g. one per document).

        Arrays are gathered into chunks of about `chunk_size` hashes; each chunk is sorted,
        deduplicated and merged into the index, so peak memory is the unique hashes plus one chunk,
        whatever the total with repeats.
        """
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        index = np.empty(0, dtype=np.uint64)
        pending: list[np.ndarray] = []
        size = 0
        for arr in arrays:
            arr = np.asarray(arr, dtype=np.uint64).ravel()
            pending.append(arr)
            size += arr.size
            if size >= chunk_size:
                index = _merge_sorted_unique(index, np.unique(np.concatenate(pending)))
                pending, size = [], 0
        if pending:
            index = _merge_sorted_unique(index, np.unique(np.concatenate(pending)))
        return cls(index)

    def __len__(self) -> int:
        return int(self.hashes.size)

    def contains(self, hashes: np.ndarray) -> np.ndarray:
        """bool [len(hashes)]: whether each hash is in the index."""
        hashes = np.asarray(hashes, dtype=np.uint64)
        if self.hashes.size == 0:
            return np.zeros(hashes.shape, dtype=bool)
        pos = np.searchsorted(self.hashes, hashes)
        pos[pos == self.hashes.size] = 0
        return self.hashes[pos] == hashes

    def save(self, path: str | os.PathLike) -> None:
        """Write the hashes to `path` (.npy) atomically: a killed save never leaves a truncated index."""
        path = os.fspath(path)
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "wb") as f:
            np.save(f, self.hashes)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike, mmap: bool = False) -> NgramIndex:
        """Read an index written by `save` (memory-mapped if `mmap`, for indexes larger than RAM)."""
        return cls(np.load(os.fspath(path), mmap_mode="r" if mmap else None))
