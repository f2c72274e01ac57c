import numpy as np
import pytest

from lm.align.data import pack_examples, tokenize_pairs


def test_tokenize_pairs_masks_exactly_the_response():
    prompts, responses = [[1, 2, 3], [4]], [[5, 6], [7, 8, 9, 10]]
    b = tokenize_pairs(prompts, responses, context_length=16, pad_id=0)
    assert b["input_ids"].shape == (2, 4)  # longest pair has 5 tokens -> 4 inputs
    np.testing.assert_array_equal(b["input_ids"], [[1, 2, 3, 5], [4, 7, 8, 9]])
    np.testing.assert_array_equal(b["labels"], [[2, 3, 5, 6], [7, 8, 9, 10]])
    np.testing.assert_array_equal(b["response_mask"], [[0, 0, 1, 1], [1, 1, 1, 1]])
    # The masked labels are exactly the responses, in order.
    for i, r in enumerate(responses):
        assert b["labels"][i][b["response_mask"][i]].tolist() == r
    assert b["input_ids"].dtype == np.int32 and b["response_mask"].dtype == bool


def test_tokenize_pairs_pad_to_and_truncate():
    b = tokenize_pairs([[1, 2]], [[3, 4, 5]], context_length=8, pad_id=99, pad_to=6)
    np.testing.assert_array_equal(b["input_ids"], [[1, 2, 3, 4, 99, 99]])
    np.testing.assert_array_equal(b["response_mask"], [[0, 1, 1, 1, 0, 0]])
    with pytest.raises(ValueError, match="more than the context"):
        tokenize_pairs([[1, 2]], [[3, 4, 5, 6]], context_length=4)
    t = tokenize_pairs([[1, 2]], [[3, 4, 5, 6]], context_length=4, truncate=True)
    np.testing.assert_array_equal(t["labels"], [[2, 3, 4, 5]])
    np.testing.assert_array_equal(t["response_mask"], [[0, 1, 1, 1]])
    with pytest.raises(ValueError, match="pad_to"):
        tokenize_pairs([[1, 2]], [[3, 4, 5]], context_length=8, pad_to=2)


@pytest.mark.parametrize("prompts, responses, match", [
    ([list(range(8))], [[1]], "prompt has 8 tokens but the context is 8"),
    ([list(range(20))], [[1]], "prompt has 20 tokens"),
    ([[1, 2]], [[]], "response is empty"),
    ([[]], [[1]], "prompt is empty"),
    ([[1], [2]], [[3]], "2 prompts but 1 responses"),
    ([], [], "no examples"),
])
def test_bad_pairs_give_clear_errors(prompts, responses, match):
    with pytest.raises(ValueError, match=match):
        tokenize_pairs(prompts, responses, context_length=8)
    with pytest.raises(ValueError, match=match):
        pack_examples(prompts, responses, seq_len=8)


def test_strings_are_refused():
    with pytest.raises(TypeError, match="encode the text first"):
        tokenize_pairs("hello", ["x"], context_length=8)


def test_pack_examples_keeps_examples_whole_and_masks_responses():
    rng = np.random.default_rng(0)
    prompts = [rng.integers(1, 50, rng.integers(1, 6)).tolist() for _ in range(40)]
    responses = [rng.integers(50, 100, rng.integers(1, 6)).tolist() + [0] for _ in range(40)]
    seq_len = 24
    p = pack_examples(prompts, responses, seq_len=seq_len, pad_id=0)
    n_rows = p["input_ids"].shape[0]
    assert p["input_ids"].shape == (n_rows, seq_len)
    # Every response token is a label exactly once, in order; no prompt token is.
    labelled = [int(t) for row, m in zip(p["labels"], p["response_mask"]) for t in row[m]]
    want = [t for ex in responses for t in ex]
    assert labelled == want
    assert p["response_mask"].sum() == sum(map(len, responses))
    # Fewer rows than one example per row, and each row's tokens are a concatenation of whole examples.
    assert n_rows < 40
    padded = tokenize_pairs(prompts, responses, context_length=seq_len)
    def prompt_and_padding(batch):
        return batch["response_mask"].size - batch["response_mask"].sum()

    assert prompt_and_padding(p) < prompt_and_padding(padded)


def test_pack_rejects_an_example_longer_than_a_row():
    with pytest.raises(ValueError, match="more than seq_len"):
        pack_examples([[1, 2, 3]], [[4, 5, 6, 7]], seq_len=5)
