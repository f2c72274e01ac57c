import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lm.data import batch_at, eval_batches, load_tokens, make_train_iterator, split_tokens


@settings(max_examples=50, deadline=None)
@given(n=st.integers(20, 5000), batch=st.integers(1, 8), ctx=st.integers(1, 16), seed=st.integers(0, 2**31),
       step=st.integers(0, 10**6))
def test_batches_are_windows_of_the_array_and_deterministic(n, batch, ctx, seed, step):
    tokens = np.arange(n, dtype=np.uint16)
    b = batch_at(tokens, step, batch, ctx, seed)
    assert b.shape == (batch, ctx + 1) and b.dtype == np.int32
    # consecutive ids: every row is a contiguous window inside the array
    assert (np.diff(b, axis=1) == 1).all() and b.min() >= 0 and b.max() < n
    assert (batch_at(tokens, step, batch, ctx, seed) == b).all()


def test_resumed_iterator_yields_the_same_batches():
    tokens = np.arange(10_000, dtype=np.uint32)
    straight = make_train_iterator(tokens, 4, 8, seed=3)
    first = [next(straight) for _ in range(6)]
    assert straight.get_state() == {"next_index": 6}
    resumed = make_train_iterator(tokens, 4, 8, seed=3, start_step=3)
    for expected in first[3:]:
        assert (next(resumed) == expected).all()
    assert not (first[0] == make_train_iterator(tokens, 4, 8, seed=4).__next__()).all()


def test_shards_partition_the_global_batch():
    tokens = np.arange(10_000, dtype=np.uint32)
    full = next(make_train_iterator(tokens, 8, 8, seed=0))
    parts = [next(make_train_iterator(tokens, 8, 8, seed=0, shard=(i, 2))) for i in range(2)]
    assert sorted(map(tuple, np.concatenate(parts))) == sorted(map(tuple, full))
    with pytest.raises(ValueError, match="does not divide"):
        make_train_iterator(tokens, 6, 8, seed=0, shard=(0, 4))


def test_eval_batches_cover_the_split_once():
    tokens = np.arange(1000)
    batches = list(eval_batches(tokens, 4, 10))
    targets = np.concatenate([b[:, 1:].ravel() for b in batches])
    assert len(targets) == len(set(targets.tolist())) == 99 * 10


def test_split_and_load_errors(tmp_path):
    data = split_tokens(np.arange(100), 0.1)
    assert len(data.train) == 90 and data.val[0] == 90
    with pytest.raises(ValueError, match="val_fraction"):
        split_tokens(np.arange(100), 1.5)
    with pytest.raises(FileNotFoundError, match="missing.npy"):
        load_tokens(tmp_path / "missing.npy")
    np.save(tmp_path / "two_d.npy", np.zeros((2, 2), np.int32))
    with pytest.raises(ValueError, match="1-D integer"):
        load_tokens(tmp_path / "two_d.npy")
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    with pytest.raises(ValueError, match="not a readable"):
        load_tokens(tmp_path / "junk.npy")
    with pytest.raises(ValueError, match="fewer than one window"):
        batch_at(np.arange(5), 0, 2, 8, 0)


def test_embedded_corpus_is_real_english(tmp_path):
    from lm.data.embedded import EOT, write_embedded_corpus

    path = write_embedded_corpus(tmp_path / "corpus.txt")
    text = path.read_text(encoding="utf-8")
    assert len(text) > 1_000_000 and text.count(EOT) > 1000
    assert " the " in text and "Return" in text


def test_consecutive_batches_are_independent():
    """Each step draws fresh windows: consecutive batches share no more starts than chance."""
    tokens = np.arange(1_000_000, dtype=np.int32)
    starts = [set(batch_at(tokens, k, 64, 32, 0)[:, 0].tolist()) for k in range(20)]
    assert max(len(a & b) for a, b in zip(starts, starts[1:])) <= 2


def test_every_window_can_be_drawn_including_the_last():
    """Starts cover 0 ..= len - context_length - 1: the final window ends on the final token."""
    tokens = np.arange(100)
    starts = {int(s) for k in range(20) for s in batch_at(tokens, k, 256, 7, 0)[:, 0]}
    assert starts == set(range(93))
    # exactly one window's worth of tokens is enough, for training and for evaluation
    assert batch_at(np.arange(8), 0, 3, 7, 0).tolist() == [list(range(8))] * 3
    assert [b.tolist() for b in eval_batches(np.arange(8), 4, 7)] == [[list(range(8))]]
    with pytest.raises(ValueError, match="has 7 tokens, fewer than one window of context_length \\+ 1 = 8"):
        batch_at(np.arange(7), 0, 2, 7, 0)
