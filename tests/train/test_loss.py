import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm.train.loss import chunk_length, cross_entropy, linear_cross_entropy, perplexity


def np_ce(logits, targets, mask):
    lg = logits.astype(np.float64)
    m = lg.max(-1, keepdims=True)
    lse = (m + np.log(np.exp(lg - m).sum(-1, keepdims=True)))[..., 0]
    nll = lse - np.take_along_axis(lg, targets[..., None], -1)[..., 0]
    return (nll * mask).sum() / mask.sum(), lse


def test_matches_float64_reference_with_mask_and_z_loss():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((3, 5, 11)).astype(np.float32) * 4
    targets = rng.integers(0, 11, (3, 5))
    mask = (rng.random((3, 5)) > 0.3).astype(np.float32)
    ref, lse = np_ce(logits, targets, mask)
    loss, aux = cross_entropy(jnp.asarray(logits), jnp.asarray(targets), jnp.asarray(mask), z_loss=1e-3)
    np.testing.assert_allclose(float(aux["nll"]), ref, rtol=1e-6)
    np.testing.assert_allclose(float(loss), ref + 1e-3 * (lse**2 * mask).sum() / mask.sum(), rtol=1e-6)
    assert float(aux["num_tokens"]) == mask.sum()
    np.testing.assert_allclose(float(perplexity(aux["nll"])), np.exp(ref), rtol=1e-5)


def test_stable_for_huge_logits():
    logits = jnp.array([[[1e4, -1e4, 0.0], [-1e4, 1e4, 5e3]]])
    targets = jnp.array([[0, 2]])
    loss, _ = cross_entropy(logits, targets)
    assert np.isfinite(float(loss)) and abs(float(loss) - 2500.0) < 1e-2  # second token: 1e4 - 5e3, averaged
    g = jax.grad(lambda x: cross_entropy(x, targets)[0])(logits)
    assert np.isfinite(np.asarray(g)).all()


def test_all_masked_gives_zero_not_nan():
    loss, aux = cross_entropy(jnp.zeros((1, 2, 4)), jnp.array([[-100, -100]]), jnp.zeros((1, 2)))
    assert float(loss) == 0.0 and float(aux["num_tokens"]) == 0.0


@pytest.mark.parametrize("vocab_major", [False, True])
@pytest.mark.parametrize("chunk_tokens", [3, 12, 10_000])
def test_linear_cross_entropy_matches_logits_path_and_its_gradients(vocab_major, chunk_tokens):
    rng = np.random.default_rng(1)
    b, s, d, v = 3, 12, 8, 37
    x = jnp.asarray(rng.standard_normal((b, s, d)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((v, d) if vocab_major else (d, v)), jnp.float32)
    targets = jnp.asarray(rng.integers(0, v, (b, s)))
    mask = jnp.asarray(rng.random((b, s)) > 0.3)

    def via_logits(x, w):
        return cross_entropy(x @ (w.T if vocab_major else w), targets, mask, z_loss=1e-2)

    def fused(x, w):
        return linear_cross_entropy(x, w, targets, mask, 1e-2, vocab_major=vocab_major, chunk_tokens=chunk_tokens)

    (loss, aux), grads = jax.value_and_grad(fused, argnums=(0, 1), has_aux=True)(x, w)
    (ref_loss, ref_aux), ref_grads = jax.value_and_grad(via_logits, argnums=(0, 1), has_aux=True)(x, w)
    logits = np.asarray(x, np.float64) @ np.asarray(w.T if vocab_major else w, np.float64)
    nll64, _ = np_ce(logits, np.asarray(targets), np.asarray(mask, np.float64))
    np.testing.assert_allclose(float(aux["nll"]), nll64, rtol=1e-6)
    np.testing.assert_allclose(float(loss), float(ref_loss), rtol=1e-6)
    assert float(aux["num_tokens"]) == float(ref_aux["num_tokens"])
    for g, ref in zip(grads, ref_grads):
        np.testing.assert_allclose(np.asarray(g), np.asarray(ref), atol=1e-6)
    # Without differentiation (evaluation) the same value comes from the gradient-free path.
    np.testing.assert_allclose(float(jax.jit(fused)(x, w)[0]), float(ref_loss), rtol=1e-6)


def test_linear_cross_entropy_chunks_divide_the_sequence():
    assert chunk_length(16, 256, 512) == 32
    assert chunk_length(4, 10, 12) == 2  # 3 would not divide 10
    assert chunk_length(1024, 256, 512) == 1  # never below one position
