"""LSH buckets from sorted shard files on disk, merged by streaming: memory does not grow with the corpus.

Each shard writes, for every band, its documents' band keys sorted (`write_band_keys`: PREFIX.keys.npy
[bands, m] uint64 and PREFIX.docs.npy [bands, m] uint32, local document numbers, ascending within
equal keys). `stream_buckets` then merges the shards band by band, reading each file through a
memory map in windows of `chunk` entries, and yields the groups of documents that share a band key:
exactly the groups, in exactly the order, that `lm.curation.lsh.buckets` finds with every signature
in memory, so `cluster_groups` builds the same clusters from either. This is datatrove's scheme
(signatures to sorted files, buckets by a k-way merge); the driver holds one window per shard plus
one union-find entry per document.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import numpy as np
from tqdm.auto import tqdm

from lm.curation.lsh import band_keys
from lm.curation.minhash import MAX_HASH


def _save(path: str, arr: np.ndarray) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        np.save(f, arr)
    os.replace(tmp, path)


def write_band_keys(signatures: np.ndarray, bands: int, rows: int, prefix: str | os.PathLike) -> int:
    """Write one shard's sorted band keys; returns the number of (non-empty) documents written.

    signatures: [n_docs, num_perm] uint32 of the shard; documents whose signature is all
    0xFFFFFFFF (empty text) are left out, as `buckets` leaves them out.
    """
    prefix = os.fspath(prefix)
    n = len(signatures)
    valid = np.flatnonzero(~np.all(signatures == MAX_HASH, axis=1)) if n else np.zeros(0, np.int64)
    keys = band_keys(signatures[valid], bands, rows) if len(valid) else np.zeros((0, bands), np.uint64)
    out_keys = np.empty((bands, len(valid)), np.uint64)
    out_docs = np.empty((bands, len(valid)), np.uint32)
    for b in range(bands):
        order = np.argsort(keys[:, b], kind="stable")  # equal keys keep ascending document order
        out_keys[b] = keys[order, b]
        out_docs[b] = valid[order]
    _save(prefix + ".docs.npy", out_docs)
    _save(prefix + ".keys.npy", out_keys)  # last: its presence means both are complete
    return len(valid)


def _band_groups(keys: Sequence[np.ndarray], docs: Sequence[np.ndarray], starts: Sequence[int],
                 chunk: int) -> Iterator[np.ndarray]:
    """Groups (size > 1, ascending global ids) of equal keys across sorted per-shard rows of one band."""
    k = len(keys)
    pos = [0] * k
    lens = [len(x) for x in keys]
    while any(pos[s] < lens[s] for s in range(k)):
        # Everything up to the smallest window end key is complete once each shard gives its
        # entries <= that key (found by binary search over the memory map, not by reading it).
        ends = [keys[s][min(pos[s] + chunk, lens[s]) - 1] for s in range(k)
                if pos[s] < lens[s] and pos[s] + chunk < lens[s]]
        bound = min(ends) if ends else None
        parts_k, parts_d = [], []
        for s in range(k):
            if pos[s] >= lens[s]:
                continue
            end = lens[s] if bound is None else int(np.searchsorted(keys[s], bound, side="right"))
            if end > pos[s]:
                parts_k.append(np.asarray(keys[s][pos[s]:end]))
                parts_d.append(np.asarray(docs[s][pos[s]:end], dtype=np.int64) + starts[s])
                pos[s] = end
        kk = np.concatenate(parts_k)
        dd = np.concatenate(parts_d)
        order = np.argsort(kk, kind="stable")  # shard order then local order: ascending global ids
        kk, dd = kk[order], dd[order]
        cut = np.flatnonzero(np.diff(kk)) + 1
        lo, hi = np.concatenate(([0], cut)), np.concatenate((cut, [len(kk)]))
        for a, b in zip(lo[hi - lo > 1], hi[hi - lo > 1]):
            yield dd[a:b]


def stream_buckets(prefixes: Sequence[str | os.PathLike], starts: Sequence[int], bands: int,
                   chunk: int = 1 << 16, progress: bool = False) -> Iterator[np.ndarray]:
    """Groups of global document ids sharing a band, band by band, from the shards' sorted files.

    `starts[s]` is shard s's first global document id (its documents are numbered from there in
    their order in the shard), so ids match the in-memory concatenation of all shards.
    """
    keys = [np.load(os.fspath(p) + ".keys.npy", mmap_mode="r") for p in prefixes]
    docs = [np.load(os.fspath(p) + ".docs.npy", mmap_mode="r") for p in prefixes]
    for b in tqdm(range(bands), desc="fuzzy dedup", unit="band", disable=not progress, leave=False):
        yield from _band_groups([x[b] for x in keys], [x[b] for x in docs], starts, chunk)
