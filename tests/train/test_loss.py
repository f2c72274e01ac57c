import jax
import jax.numpy as jnp
import numpy as np

from lm.train.loss import cross_entropy, perplexity


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
