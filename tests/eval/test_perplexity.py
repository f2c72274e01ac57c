"""Perplexity: the sliding window scores every target once, and the number equals exp(mean NLL) by hand."""

import math

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lm.eval.perplexity import perplexity, sliding_windows
from tests.eval.models import config
from tests.inference.tiny import full_forward, random_params


@settings(max_examples=300, deadline=None)
@given(n=st.integers(2, 400), context=st.integers(2, 64), data=st.data())
def test_sliding_windows_score_every_target_exactly_once(n, context, data):
    stride = data.draw(st.integers(1, context - 1))
    plan = sliding_windows(n, context, stride)
    scored = []
    for i, (start, end, first) in enumerate(plan):
        assert 0 <= start < first <= end <= n  # a target always has at least one token of context
        assert end - start <= context
        scored += range(first, end)
        if i:  # past the first window, each target sees at least context - stride tokens (or all before it)
            assert first - start >= min(first, context - stride)
    assert scored == list(range(1, n))


def test_sliding_windows_bad_arguments():
    with pytest.raises(ValueError, match="stride must be in"):
        sliding_windows(100, 16, 0)
    with pytest.raises(ValueError, match="stride must be in"):
        sliding_windows(100, 16, 16)
    with pytest.raises(ValueError, match="at least 2 tokens"):
        sliding_windows(1, 16, 8)


def _log_softmax64(logits):
    x = np.asarray(logits, np.float64)
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


@pytest.fixture(scope="module")
def tiny():
    c = config(sliding_window=0)
    return random_params(c, 3), c


def test_perplexity_is_exp_mean_nll_within_one_window(tiny):
    params, c = tiny
    ids = np.random.default_rng(0).integers(0, c.vocab_size, c.context_length)
    lp = _log_softmax64(full_forward(params, jnp.asarray(ids[None]), config=c)[0])
    nll = [-lp[t - 1, ids[t]] for t in range(1, len(ids))]  # by hand: token t from tokens < t
    r = perplexity(params, c, ids, n_bytes=100)
    assert r["tokens"] == len(ids) - 1 and r["windows"] == 1
    np.testing.assert_allclose(r["nll"], sum(nll), rtol=1e-5)
    np.testing.assert_allclose(r["perplexity"], math.exp(np.mean(nll)), rtol=1e-5)
    np.testing.assert_allclose(r["bits_per_byte"], sum(nll) / math.log(2) / 100, rtol=1e-5)


def test_stride_one_gives_every_token_its_full_context(tiny):
    params, c = tiny
    ids = np.random.default_rng(1).integers(0, c.vocab_size, 3 * c.context_length + 5)
    nll = []
    for t in range(1, len(ids)):  # by hand, one forward per target over the longest context that fits
        window = ids[max(0, t - c.context_length + 1): t + 1]
        padded = np.zeros(c.context_length, np.int32)  # right padding keeps one compiled shape
        padded[: len(window)] = window
        lp = _log_softmax64(full_forward(params, jnp.asarray(padded[None]), config=c)[0])
        nll.append(-lp[len(window) - 2, window[-1]])
    r = perplexity(params, c, ids, stride=1)
    assert r["tokens"] == len(ids) - 1
    np.testing.assert_allclose(r["nll"], sum(nll), rtol=1e-5)
    np.testing.assert_allclose(r["perplexity"], math.exp(np.mean(nll)), rtol=1e-5)


def test_batching_and_stride_trade_context_not_bookkeeping(tiny):
    params, c = tiny
    ids = np.random.default_rng(2).integers(0, c.vocab_size, 200)
    a = perplexity(params, c, ids, stride=8, batch_size=1)
    b = perplexity(params, c, ids, stride=8, batch_size=4)  # padded rows in the last batch change nothing
    np.testing.assert_allclose(a["nll"], b["nll"], rtol=1e-6)
    back_to_back = perplexity(params, c, ids, stride=c.context_length - 1)
    assert back_to_back["tokens"] == a["tokens"] == 199 and back_to_back["windows"] < a["windows"]


def test_perplexity_bad_input(tiny):
    params, c = tiny
    with pytest.raises(ValueError, match="outside|must lie in"):
        perplexity(params, c, [1, 2, c.vocab_size])
    with pytest.raises(ValueError, match="at least 2 tokens"):
        perplexity(params, c, [5])
