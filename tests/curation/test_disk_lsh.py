"""Fuzzy dedup from sorted shard files streamed from disk: the same buckets, in the same order, and
the same clusters as with every signature in memory."""

import random

import numpy as np
import pytest

from lm.curation.disk_lsh import stream_buckets, write_band_keys
from lm.curation.lsh import buckets, cluster_groups
from lm.curation.minhash import minhash_signatures, shingle_set
from lm.curation.near_dedup import MinHashConfig, fuzzy_dedup

from .conftest import edit_words


def _write_shards(sig, cuts, bands, rows, folder):
    prefixes = []
    for s in range(len(cuts) - 1):
        prefixes.append(str(folder / f"shard{s}"))
        write_band_keys(sig[cuts[s]:cuts[s + 1]], bands, rows, prefixes[-1])
    return prefixes


@pytest.mark.parametrize("chunk", [1, 5, 1 << 16])
def test_streamed_buckets_equal_in_memory_buckets(tmp_path, chunk):
    rng = np.random.default_rng(0)
    sig = rng.integers(0, 3, size=(1500, 12)).astype(np.uint32)  # few values: large, many buckets
    sig[[3, 700]] = 0xFFFFFFFF  # empty documents belong to no bucket
    cuts = [0, 0, 400, 401, 1500]  # an empty shard and a one-document shard too
    prefixes = _write_shards(sig, cuts, 6, 2, tmp_path)
    got = [g.tolist() for g in stream_buckets(prefixes, cuts[:-1], 6, chunk=chunk)]
    assert got == [g.tolist() for g in buckets(sig, 6, 2)] and len(got) > 50


def test_clusters_from_disk_equal_in_memory_clusters(tmp_path, english_docs):
    rng = random.Random(0)
    base = english_docs[:40]
    docs = base + [edit_words(base[i], 0.04, rng) for i in range(0, 40, 2)] + [base[5], base[5]]
    c = MinHashConfig()
    root_mem, info_mem = fuzzy_dedup(docs, c)
    sig = minhash_signatures(docs, c.num_perm, c.ngram, c.seed)
    cuts = [0, 30, 31, 50, len(docs)]
    prefixes = _write_shards(sig, cuts, c.bands, c.rows, tmp_path)
    root_disk, info_disk = cluster_groups(stream_buckets(prefixes, cuts[:-1], c.bands, chunk=8), len(docs),
                                          lambda i: shingle_set(docs[i], c.ngram), threshold=c.threshold)
    assert (root_disk == root_mem).all() and info_disk == info_mem
    assert (root_mem != np.arange(len(docs))).sum() >= 20  # the planted copies were found
