import subprocess
import sys

import numpy as np
import pytest

from lm.data.ngrams import NgramIndex, ngram_hashes, normalize_words, text_ngram_hashes, texts_ngram_hashes, word_ids

M64 = (1 << 64) - 1


def _scalar_hash(window):
    """Scalar Python-int reference of the documented fold h = splitmix64(h ^ x), h0 = n."""
    h = len(window)
    for x in window:
        z = ((h ^ (x & M64)) + 0x9E3779B97F4A7C15) & M64
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
        h = z ^ (z >> 31)
    return h


def test_normalize_words_lowercases_and_strips_punctuation():
    assert normalize_words("Don't PANIC!  The answer -- is 42 (forty_two).\nÉtude, naïve.") == [
        "dont", "panic", "the", "answer", "is", "42", "fortytwo", "étude", "naïve"]


def test_ngram_hashes_match_the_scalar_reference_and_ignore_position():
    rng = np.random.default_rng(0)
    seq = rng.integers(-(2**40), 2**40, size=50)
    for n in (1, 3, 13):
        got = ngram_hashes(seq, n)
        assert got.dtype == np.uint64 and got.shape == (50 - n + 1,)
        assert [int(h) for h in got] == [_scalar_hash([int(x) for x in seq[i:i + n]]) for i in range(50 - n + 1)]
    # the same window at another offset, and in another dtype, hashes the same
    a = ngram_hashes(np.array([7, 1, 2, 3, 9], dtype=np.uint16), 3)
    b = ngram_hashes(np.array([1, 2, 3], dtype=np.int64), 3)
    assert a[1] == b[0] and a[0] != a[1]
    assert ngram_hashes([1, 2, 3], 3)[0] != ngram_hashes([3, 2, 1], 3)[0]
    assert ngram_hashes([1, 2], 3).size == 0
    with pytest.raises(ValueError, match="n-gram length"):
        ngram_hashes([1, 2, 3], 0)


def test_distinct_ngrams_do_not_collide():
    rng = np.random.default_rng(1)
    seq = rng.integers(0, 50_000, size=200_000)
    windows = np.lib.stride_tricks.sliding_window_view(seq, 5)
    n_distinct = len(np.unique(windows, axis=0))
    assert len(np.unique(ngram_hashes(seq, 5))) == n_distinct


def test_text_hashes_are_stable_across_processes():
    text = "The quick brown fox, jumps over the lazy dog; again and again."
    code = ("import sys; from lm.data.ngrams import text_ngram_hashes; "
            "sys.stdout.write(','.join(map(str, text_ngram_hashes(sys.argv[1], 4))))")
    outs = {subprocess.run([sys.executable, "-c", code, text], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": str(seed)}).stdout for seed in (1, 2)}
    assert outs == {",".join(map(str, text_ngram_hashes(text, 4)))}
    assert (text_ngram_hashes("the QUICK brown... fox", 2) == text_ngram_hashes("The quick brown fox", 2)).all()
    assert word_ids(["a", "b", "a"])[0] == word_ids(["a"])[0] != word_ids(["b"])[0]


def test_index_build_in_chunks_equals_the_unique_union(tmp_path):
    rng = np.random.default_rng(2)
    arrays = [rng.integers(0, 5000, size=rng.integers(0, 300)).astype(np.uint64) for _ in range(100)]
    expected = np.unique(np.concatenate(arrays))
    for chunk in (1, 37, 10_000):
        idx = NgramIndex.build(iter(arrays), chunk_size=chunk)
        assert (idx.hashes == expected).all() and len(idx) == expected.size
    queries = rng.integers(0, 6000, size=2000).astype(np.uint64)
    np.testing.assert_array_equal(idx.contains(queries), np.isin(queries, expected))
    idx.save(tmp_path / "index.npy")
    for mmap in (False, True):
        loaded = NgramIndex.load(tmp_path / "index.npy", mmap=mmap)
        np.testing.assert_array_equal(loaded.contains(queries), idx.contains(queries))
    assert not NgramIndex.build([]).contains(np.array([1, 2], dtype=np.uint64)).any()
    top = np.array([np.iinfo(np.uint64).max], dtype=np.uint64)
    assert NgramIndex.build([top]).contains(top).all()
    with pytest.raises(ValueError, match="sorted and unique"):
        NgramIndex(np.array([3, 1], dtype=np.uint64))


def test_batched_text_hashes_equal_one_by_one():
    texts = ["One two three four five.", "", "six", "Seven eight, nine ten eleven twelve thirteen!"] * 3
    got = texts_ngram_hashes(texts, 3)
    assert len(got) == len(texts)
    for g, t in zip(got, texts):
        np.testing.assert_array_equal(g, text_ngram_hashes(t, 3))
    assert texts_ngram_hashes([], 3) == []
