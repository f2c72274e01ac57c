"""Exact line deduplication across a corpus, in two passes over 64-bit line hashes.

Pass 1 counts every line's hash (per shard `line_hash_counts`, merged with `merge_counts`, so
memory holds one (hash, count) pair per distinct line, never the documents). Pass 2 rewrites
each document keeping only the lines that occur once in the whole corpus: repeated lines are
boilerplate (menus, footers, cookie banners) and every copy goes. Blank lines are layout, not
content: they are neither counted nor removed (runs of them collapse to one). Indentation and a
document's final newline are kept.
"""

from __future__ import annotations

import hashlib
from typing import Iterable, Sequence

import numpy as np


def line_hash(line: str) -> int:
    return int.from_bytes(hashlib.blake2b(line.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")


def _lines(text: str) -> list[str]:
    return [ln.strip() for ln in text.split("\n")]


def line_hashes(text: str) -> np.ndarray:
    """[non-blank lines] uint64 hashes of a document's stripped lines."""
    return np.fromiter((line_hash(ln) for ln in _lines(text) if ln), dtype=np.uint64)


def line_hash_counts(texts: Iterable[str]) -> tuple[np.ndarray, np.ndarray]:
    """Pass 1 over one shard: (sorted unique hashes, counts)."""
    parts = [line_hashes(t) for t in texts]
    allh = np.concatenate(parts) if parts else np.zeros(0, np.uint64)
    return np.unique(allh, return_counts=True)


def merge_counts(parts: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Combine per-shard (hashes, counts) into corpus-wide ones."""
    if not parts:
        return np.zeros(0, np.uint64), np.zeros(0, np.int64)
    h = np.concatenate([p[0] for p in parts])
    c = np.concatenate([p[1] for p in parts]).astype(np.int64)
    order = np.argsort(h, kind="stable")
    h, c = h[order], c[order]
    uniq, start = np.unique(h, return_index=True)
    return uniq, np.add.reduceat(c, start) if len(c) else c


def dedup_lines(text: str, counts: tuple[np.ndarray, np.ndarray]) -> tuple[str, int]:
    """Pass 2 for one document: (text with corpus-repeated lines removed, lines removed)."""
    hashes, cnt = counts
    raw = text.split("\n")
    stripped = [ln.strip() for ln in raw]
    h = np.fromiter((line_hash(ln) for ln in stripped if ln), dtype=np.uint64)
    idx = np.minimum(np.searchsorted(hashes, h), max(len(hashes) - 1, 0))
    repeated = iter(((hashes[idx] == h) & (cnt[idx] > 1)).tolist() if len(hashes) else [False] * len(h))
    out, removed, blank = [], 0, False
    for r, ln in zip(raw, stripped):
        if not ln:
            if out and not blank:
                out.append("")
            blank = True
        elif next(repeated):
            removed += 1
        else:
            out.append(r.rstrip())
            blank = False
    kept = "\n".join(out).strip("\n")
    # A stage that removes lines keeps the rest of the layout, the final newline included.
    return (kept + "\n" if kept and text.endswith("\n") else kept), removed


def exact_line_dedup(texts: Sequence[str]) -> list[str]:
    """Both passes over an in-memory corpus."""
    counts = line_hash_counts(texts)
    return [dedup_lines(t, counts)[0] for t in texts]
