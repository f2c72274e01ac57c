"""Sampling settings and the logits -> token functions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm.inference.sampling import SamplingConfig, filter_logits, is_stop, probabilities, sample

LOGITS = jnp.log(jnp.array([[0.05, 0.5, 0.15, 0.3]]))


@pytest.mark.parametrize("top_p", [0.0, -0.1, 1.5, float("nan")])
def test_top_p_outside_unit_interval_is_an_error(top_p):
    with pytest.raises(ValueError, match=r"top_p must be in \(0, 1\]"):
        SamplingConfig(top_p=top_p)


@pytest.mark.parametrize("bad", [dict(temperature=-1.0), dict(top_k=-2), dict(max_new_tokens=0)])
def test_other_bad_settings(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        SamplingConfig(**bad)


def support(sampling):
    return set(np.flatnonzero(np.isfinite(np.asarray(filter_logits(LOGITS, sampling)[0]))).tolist())


def test_top_k_and_top_p_keep_the_right_tokens():
    assert support(SamplingConfig(top_k=2)) == {1, 3}
    assert support(SamplingConfig(top_p=0.5)) == {1}  # the top token alone reaches 0.5
    assert support(SamplingConfig(top_p=0.8)) == {1, 3}  # 0.5 + 0.3 reaches 0.8
    assert support(SamplingConfig(top_p=0.81)) == {1, 3, 2}
    assert support(SamplingConfig(top_p=1.0)) == {0, 1, 2, 3}
    assert support(SamplingConfig(top_k=3, top_p=0.7)) == {1, 3}
    p = probabilities(LOGITS, SamplingConfig(top_p=0.8))[0]
    np.testing.assert_allclose(p, [0, 0.625, 0, 0.375], atol=1e-6)


def test_greedy_temperature_and_seeds():
    assert int(sample(LOGITS, jax.random.PRNGKey(0), SamplingConfig(temperature=0))[0]) == 1
    np.testing.assert_array_equal(probabilities(LOGITS, SamplingConfig(temperature=0))[0], [0, 1, 0, 0])
    keys = jax.random.split(jax.random.PRNGKey(0), 20_000)
    draw = jax.jit(jax.vmap(lambda k, t: sample(LOGITS[0], k, SamplingConfig(temperature=t)), (0, None)),
                   static_argnums=1)
    freq = np.bincount(np.asarray(draw(keys, 1.0)), minlength=4) / len(keys)
    np.testing.assert_allclose(freq, [0.05, 0.5, 0.15, 0.3], atol=0.015)
    sharp = np.bincount(np.asarray(draw(keys, 0.25)), minlength=4) / len(keys)
    assert sharp[1] > 0.85  # low temperature concentrates on the argmax
    np.testing.assert_array_equal(draw(keys[:50], 1.0), draw(keys[:50], 1.0))


def test_stop_ids():
    toks = jnp.array([1, 5, 7, 2])
    np.testing.assert_array_equal(is_stop(toks, SamplingConfig(stop_ids=(7, 2))), [False, False, True, True])
    assert not is_stop(toks, SamplingConfig()).any()
