"""Batched generation: left padding, stopping, seeds, streaming, and bad input."""

import numpy as np
import pytest

from lm.inference.generate import PAD, generate, generate_ids, stream_ids
from lm.inference.naive import sample_naive
from lm.inference.sampling import SamplingConfig
from lm.tokenizer import Tokenizer
from tests.inference.tiny import model

PROMPTS = [[1, 2, 3], [5] * 10, [7, 8, 9, 10, 11, 12, 13], [3]]
GREEDY = SamplingConfig(temperature=0, max_new_tokens=12)


def rows(tokens, lengths):
    return [tokens[i, : lengths[i]].tolist() for i in range(len(lengths))]


def test_batched_left_padded_equals_one_at_a_time():
    params, c = model("gqa-window")
    tokens, lengths = generate_ids(params, c, PROMPTS, GREEDY)
    assert lengths.tolist() == [12] * 4
    batched = rows(tokens, lengths)
    for prompt, got in zip(PROMPTS, batched):
        alone, n = generate_ids(params, c, [prompt], GREEDY)
        assert got == alone[0, : n[0]].tolist()
    # and the no-cache reference sampler agrees (one row is enough: it recompiles per step count)
    import jax

    assert batched[2] == sample_naive(params, c, PROMPTS[2], 12, jax.random.PRNGKey(0), temperature=0)


def test_seed_repeats_and_sampling_settings():
    params, c = model("gqa-window")
    s = SamplingConfig(temperature=1.0, top_k=20, top_p=0.9, max_new_tokens=12, seed=3)
    a, la = generate_ids(params, c, PROMPTS, s)
    b, lb = generate_ids(params, c, PROMPTS, s)
    np.testing.assert_array_equal(a, b)
    other, _ = generate_ids(params, c, PROMPTS, SamplingConfig(**{**s.__dict__, "seed": 4}))
    assert not np.array_equal(a, other)


def test_stop_tokens_max_new_tokens_and_context_limit():
    params, c = model("gqa-window")
    (full,), _ = generate_ids(params, c, [PROMPTS[0]], GREEDY)
    stop = int(full[4])
    first = full.tolist().index(stop)
    tokens, lengths = generate_ids(params, c, [PROMPTS[0], PROMPTS[1]],
                                   SamplingConfig(temperature=0, max_new_tokens=12, stop_ids=(stop,)))
    assert lengths[0] == first and tokens[0, :first].tolist() == full[:first].tolist()
    assert (tokens[0, first:] == PAD).all() and stop not in tokens[1, : lengths[1]].tolist()
    ctx = c.context_length  # the model reads at most ctx tokens; the last generated one is never read
    _, lengths = generate_ids(params, c, [[1] * ctx, [1] * (ctx - 3), [1] * 2],
                              SamplingConfig(temperature=0, max_new_tokens=100))
    assert lengths.tolist() == [1, 4, ctx - 1]


def test_streaming_gives_the_same_tokens():
    params, c = model("gqa-window")
    tokens, lengths = generate_ids(params, c, PROMPTS[:2], GREEDY)
    got = [[], []]
    chunks = 0
    for new in stream_ids(params, c, PROMPTS[:2], GREEDY, chunk=5):
        chunks += 1
        for r in range(2):
            got[r] += new[r]
    assert got == rows(tokens, lengths) and chunks == 4  # first token, then 5 + 5 + 1


def byte_tokenizer():
    return Tokenizer({i: bytes([i]) for i in range(256)}, [], ["<|endoftext|>"])


def test_text_generate_and_bad_input():
    params, c = model("gqa-window")
    tok = byte_tokenizer()
    s = SamplingConfig(temperature=0, max_new_tokens=6)
    texts = generate(params, c, tok, ["Hi", "Hello there"], s)
    assert isinstance(texts, list) and len(texts) == 2
    assert generate(params, c, tok, "Hello there", s) == texts[1]
    with pytest.raises(ValueError, match="empty"):
        generate(params, c, tok, ["Hi", ""], s)
    with pytest.raises(ValueError, match="empty"):
        generate_ids(params, c, [[1], []], s)
    with pytest.raises(ValueError, match="longer than the model's context_length=32"):
        generate_ids(params, c, [[1] * 33], s)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        generate_ids(params, c, [[1, 999]], s)
    with pytest.raises(ValueError, match="non-empty list"):
        generate_ids(params, c, [], s)
