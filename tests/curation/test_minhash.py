"""MinHash + LSH: bit-exact against datasketch, planted near-duplicates found, bounded work."""

import random

import numpy as np
import pytest

from lm.curation.near_dedup import MinHashConfig, fuzzy_dedup
from lm.curation.lsh import UnionFind, candidate_pairs, duplicate_clusters
from lm.curation.minhash import jaccard, minhash_signatures, normalize, shingle_hashes_batch, shingle_set, shingles

from .conftest import edit_words

datasketch = pytest.importorskip("datasketch")


def synthetic_corpus(n_base=400, n_dups=100, fraction=0.05, seed=0):
    """Base documents of random words (Zipf-ish vocabulary) plus copies with `fraction` of words edited."""
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(3000)]
    weights = [1 / (i + 1) for i in range(len(vocab))]
    base = [" ".join(rng.choices(vocab, weights, k=rng.randint(80, 600))) for _ in range(n_base)]
    src = rng.sample(range(n_base), n_dups)
    docs = base + [edit_words(base[i], fraction, rng) for i in src]
    truth = {(i, n_base + k) for k, i in enumerate(src)}
    return docs, truth


def test_normalize_and_shingles():
    assert normalize("Héllo,  WORLD!\nIt's   fine_") == "hello world it s fine"
    assert shingles("a b c d", 3) == ["a b c", "b c d"]
    assert shingles("a b", 3) == ["a b"] and shingles("", 3) == []
    h, off = shingle_hashes_batch(["a b c d", "", "a b", "x a b c"], 3)
    assert off.tolist() == [0, 2, 2, 3, 5]
    assert h[0] == h[4]  # same n-gram, different document and position


def test_signatures_equal_datasketch_bit_for_bit(english_docs):
    docs = english_docs[:40] + ["", "one", "two words"]
    sig = minhash_signatures(docs, num_perm=64, ngram=3, seed=7, hash="sha1")
    for d, row in zip(docs, sig):
        m = datasketch.MinHash(num_perm=64, seed=7)
        m.update_batch([s.encode() for s in shingles(d, 3)])
        assert np.array_equal(m.hashvalues, row)


def test_batching_and_chunking_do_not_change_signatures(english_docs):
    docs = english_docs[:30] + ["", "short"]
    ref = minhash_signatures(docs, 32, 5)
    assert np.array_equal(ref, minhash_signatures(docs, 32, 5, chunk=100))
    assert np.array_equal(ref, np.stack([minhash_signatures([d], 32, 5)[0] for d in docs]))
    assert (ref[-2] == 0xFFFFFFFF).all()


def test_signature_agreement_estimates_jaccard():
    docs, truth = synthetic_corpus(60, 60, fraction=0.1)
    sig = minhash_signatures(docs, 256, 3)
    errors = [np.mean(sig[i] == sig[j]) - jaccard(shingle_set(docs[i], 3), shingle_set(docs[j], 3))
              for i, j in truth]
    assert abs(np.mean(errors)) < 0.01 and np.std(errors) < 0.05


def test_lsh_candidates_equal_datasketch_minhashlsh():
    """Same signatures (sha1 shingle hash), same bands x rows: identical candidate pairs."""
    docs, _ = synthetic_corpus(150, 60, fraction=0.15)  # Jaccard ~0.5: some become candidates, some not
    rng = random.Random(1)
    docs += [edit_words(d, 0.05, rng) for d in docs[:30]]  # Jaccard ~0.75: nearly all do
    bands, rows = 20, 5
    sig = minhash_signatures(docs, 100, 3, hash="sha1")
    lsh = datasketch.MinHashLSH(num_perm=100, params=(bands, rows))
    mhs = []
    for i, d in enumerate(docs):
        m = datasketch.MinHash(num_perm=100)
        m.update_batch([s.encode() for s in shingles(d, 3)])
        lsh.insert(i, m)
        mhs.append(m)
    theirs = {(min(i, j), max(i, j)) for i, m in enumerate(mhs) for j in lsh.query(m) if j != i}
    ours = candidate_pairs(sig, bands, rows)
    assert ours == theirs
    assert len(ours) >= 40


def test_lsh_candidates_with_fast_hash_agree_with_datasketch():
    """Our fast shingle hash draws different permutations, so pairs agree statistically."""
    docs, truth = synthetic_corpus(200, 100)
    c = MinHashConfig()
    ours = candidate_pairs(minhash_signatures(docs, c.num_perm, c.ngram), c.bands, c.rows)
    lsh = datasketch.MinHashLSH(num_perm=c.num_perm, params=(c.bands, c.rows))
    mhs = [_mh(d, c) for d in docs]
    for i, m in enumerate(mhs):
        lsh.insert(i, m)
    theirs = {(min(i, j), max(i, j)) for i, m in enumerate(mhs) for j in lsh.query(m) if j != i}
    assert len(ours & theirs) / len(ours | theirs) >= 0.95
    assert truth <= ours | theirs


def _mh(d, c):
    m = datasketch.MinHash(num_perm=c.num_perm)
    m.update_batch([s.encode() for s in shingles(d, c.ngram)])
    return m


def test_planted_near_duplicates_recall_and_precision():
    docs, truth = synthetic_corpus()
    root, info = fuzzy_dedup(docs)
    found = {(int(root[j]), j) for j in range(len(docs)) if root[j] != j}
    tp = len(found & truth)
    assert tp / len(truth) >= 0.95 and tp / max(len(found), 1) >= 0.95, (tp, len(truth), len(found))
    assert info["verified_pairs"] == len(found)


def test_all_duplicate_corpus_keeps_one_with_linear_work(english_docs):
    docs = [english_docs[0]] * 300
    root, info = fuzzy_dedup(docs)
    assert (root == 0).all() and info["clusters"] == 1
    assert info["comparisons"] == len(docs) - 1  # each joins the bucket's representative once


def test_verification_uses_loader_not_texts():
    docs, truth = synthetic_corpus(50, 20)
    sig = minhash_signatures(docs, 100, 3)
    loaded = []
    root, _ = fuzzy_dedup(None, signatures=sig, load_text=lambda i: loaded.append(i) or docs[i])
    assert set(loaded) >= {j for _, j in truth}
    with pytest.raises(ValueError, match="load_text"):
        fuzzy_dedup(None, signatures=sig)


def test_empty_documents_are_not_clustered():
    root, _ = duplicate_clusters(minhash_signatures(["", "", "a b c d"], 10, 3), lambda i: np.zeros(0, np.uint64),
                                 bands=5, rows=2, threshold=0.5)
    assert root.tolist() == [0, 1, 2]


def test_union_find_and_config_validation():
    uf = UnionFind(6)
    uf.union(4, 2), uf.union(2, 5), uf.union(1, 3)
    assert [uf.find(i) for i in range(6)] == [0, 1, 2, 1, 2, 2]
    with pytest.raises(ValueError, match="bands"):
        MinHashConfig(num_perm=10, bands=5, rows=3)
