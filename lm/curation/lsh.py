"""LSH banding over MinHash signatures, verification by exact Jaccard, and clustering.

Documents whose signatures agree on all `rows` values of any of `bands` bands are candidates
(the probability for Jaccard s is 1 - (1 - s^rows)^bands). Candidates are verified by the exact
Jaccard similarity of their shingle sets, loaded on demand through a callable so only
signatures (not documents) stay in memory; verified pairs are joined with union-find, and the
first document of each cluster is kept.

Within one bucket, each document is compared with the bucket's cluster representatives found so
far, not with every member: an all-duplicate bucket of n documents costs n - 1 comparisons, not
n^2 / 2.
"""

from __future__ import annotations

import functools
from typing import Callable, Iterable, Iterator

import numpy as np

from lm.curation.minhash import MAX_HASH, fmix64, jaccard


def band_keys(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """[n_docs, bands] uint64: a 64-bit hash of each band's `rows` values."""
    n, num_perm = signatures.shape
    if bands * rows > num_perm:
        raise ValueError(f"bands * rows = {bands * rows} exceeds num_perm = {num_perm}")
    s = signatures[:, :bands * rows].reshape(n, bands, rows).astype(np.uint64)
    key = np.zeros((n, bands), np.uint64)
    with np.errstate(over="ignore"):
        for r in range(rows):
            key = fmix64(key ^ s[:, :, r]) + np.uint64(r + 1)
    return key


def buckets(signatures: np.ndarray, bands: int, rows: int) -> Iterator[np.ndarray]:
    """Groups (arrays of document indices, ascending) that share a band; empty documents excluded."""
    keys = band_keys(signatures, bands, rows)
    valid = ~np.all(signatures == MAX_HASH, axis=1)
    idx = np.flatnonzero(valid)
    for b in range(bands):
        k = keys[idx, b]
        order = np.argsort(k, kind="stable")
        ks = k[order]
        cut = np.flatnonzero(np.diff(ks)) + 1
        starts, ends = np.concatenate(([0], cut)), np.concatenate((cut, [len(ks)]))
        for s, e in zip(starts[ends - starts > 1], ends[ends - starts > 1]):
            yield idx[order[s:e]]


def candidate_pairs(signatures: np.ndarray, bands: int, rows: int) -> set[tuple[int, int]]:
    """All pairs (i < j) sharing at least one band (quadratic in bucket size: for tests and audits)."""
    pairs = set()
    for g in buckets(signatures, bands, rows):
        g = g.tolist()
        pairs.update((g[x], g[y]) for x in range(len(g)) for y in range(x + 1, len(g)))
    return pairs


class UnionFind:
    """Disjoint sets over 0..n-1; the root of a set is its smallest member."""

    def __init__(self, n: int):
        self.parent = np.arange(n)

    def find(self, x: int) -> int:
        root = x
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[x] != root:
            self.parent[x], x = root, self.parent[x]
        return int(root)

    def union(self, x: int, y: int) -> int:
        rx, ry = self.find(x), self.find(y)
        if rx != ry:
            lo, hi = min(rx, ry), max(rx, ry)
            self.parent[hi] = lo
        return min(rx, ry)


def duplicate_clusters(signatures: np.ndarray, shingle_set: Callable[[int], np.ndarray], *, bands: int,
                       rows: int, threshold: float, cache_size: int = 4096, max_reps: int = 64
                       ) -> tuple[np.ndarray, dict]:
    """Cluster near-duplicates; returns (root [n_docs], stats).

    root[i] == i for documents to keep (cluster heads and singletons); otherwise the index of
    the document it duplicates. `shingle_set(i)` returns document i's sorted unique shingle
    hashes. stats: candidate comparisons, verified pairs.
    """
    return cluster_groups(buckets(signatures, bands, rows), len(signatures), shingle_set, threshold=threshold,
                          cache_size=cache_size, max_reps=max_reps)


def cluster_groups(groups: Iterable[np.ndarray], n: int, shingle_set: Callable[[int], np.ndarray], *,
                   threshold: float, cache_size: int = 4096, max_reps: int = 64) -> tuple[np.ndarray, dict]:
    """Verify and join candidate groups (ascending document indices, in `buckets` order) into clusters.

    The result depends only on the sequence of groups, so any source that yields the same groups
    in the same order (in memory, or streamed from sorted shard files by `lm.curation.disk_lsh`)
    gives the same clusters.
    """
    uf = UnionFind(n)
    sets = functools.lru_cache(maxsize=cache_size)(shingle_set)
    verified: set[tuple[int, int]] = set()
    compared = 0
    for group in groups:
        reps: list[int] = []
        for d in group.tolist():
            for r in reps:
                if uf.find(r) == uf.find(d):
                    break
                compared += 1
                if jaccard(sets(r), sets(d)) >= threshold:
                    uf.union(r, d)
                    verified.add((r, d))
                    break
            else:
                if len(reps) < max_reps:
                    reps.append(d)
    root = np.array([uf.find(i) for i in range(n)], dtype=np.int64)
    return root, {"comparisons": compared, "verified_pairs": len(verified),
                  "clusters": int(np.sum((root == np.arange(n)) & (np.bincount(root, minlength=n) > 1)))}
