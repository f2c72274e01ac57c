"""Alignment losses against float64 NumPy references written here."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm.align.dpo import dpo_loss
from lm.align.logprobs import gather_logprobs, masked_mean, masked_normalize, masked_sum, token_entropy
from lm.align.policy_gradient import (group_advantages, grpo_clip_loss, kl_penalty, naive_policy_gradient_loss,
                                      policy_gradient_loss)
from lm.align.step import loss_weights

RNG = np.random.default_rng(0)


def np_log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


@pytest.mark.parametrize("axis", [None, 0, 1, 2, (0, 2), -1])
def test_masked_mean_and_sum_any_axis(axis):
    x = RNG.normal(size=(3, 4, 5))
    mask = RNG.random((3, 4, 5)) < 0.5
    mask[0, 0, :] = False  # an empty row: mean 0, not NaN
    x_nan = np.where(mask, x, np.nan)  # masked-out values must be ignored even when NaN
    want_sum = np.where(mask, x, 0).sum(axis=axis)
    count = mask.sum(axis=axis)
    want_mean = np.where(count > 0, want_sum / np.maximum(count, 1), 0.0)
    np.testing.assert_allclose(masked_sum(jnp.asarray(x_nan, jnp.float32), jnp.asarray(mask), axis), want_sum,
                               rtol=1e-5, atol=1e-5)
    got = masked_mean(jnp.asarray(x_nan, jnp.float32), jnp.asarray(mask), axis)
    np.testing.assert_allclose(got, want_mean, rtol=1e-5, atol=1e-6)
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(masked_normalize(jnp.asarray(x, jnp.float32), jnp.asarray(mask), 7.0, axis),
                               want_sum / 7.0, rtol=1e-5, atol=1e-5)


def test_masked_mean_broadcasts_a_row_mask():
    x = RNG.normal(size=(2, 3, 4))
    mask = np.array([[1, 0, 1], [0, 0, 1]], bool)[..., None]  # [2, 3, 1] against [2, 3, 4]
    want = np.array([x[0, [0, 2]].mean(), x[1, 2].mean()])
    np.testing.assert_allclose(masked_mean(jnp.asarray(x, jnp.float32), jnp.asarray(mask), (1, 2)), want, rtol=1e-5)


def test_entropy_and_logprobs_against_numpy():
    logits = RNG.normal(size=(2, 3, 11)) * 3
    logits[0, 0, 4] = -np.inf  # a filtered-out token
    p = np.exp(np_log_softmax(logits))
    want_h = -np.sum(np.where(p > 0, p * np_log_softmax(np.where(np.isinf(logits), -1e30, logits)), 0), -1)
    np.testing.assert_allclose(token_entropy(jnp.asarray(logits, jnp.float32)), want_h, rtol=1e-5, atol=1e-5)
    labels = RNG.integers(0, 11, size=(2, 3))
    labels[0, 0] = 2
    want_lp = np.take_along_axis(np_log_softmax(logits), labels[..., None], -1)[..., 0]
    np.testing.assert_allclose(gather_logprobs(jnp.asarray(logits, jnp.float32), jnp.asarray(labels)), want_lp,
                               rtol=1e-5)
    # A one-hot distribution has zero entropy; a uniform one has log(V).
    np.testing.assert_allclose(token_entropy(jnp.array([[0.0, -jnp.inf, -jnp.inf], [1.0, 1.0, 1.0]])),
                               [0.0, np.log(3)], atol=1e-6)


def test_dpo_loss_hand_computed():
    # Pair 1: beta * ((-1 - -2) - (-3 - -2)) = 0.5 * 2 = 1     -> -log sigmoid(1)  = log(1 + e^-1)
    # Pair 2: beta * ((-5 - -4) - (-4 - -4)) = 0.5 * -1 = -0.5 -> -log sigmoid(-0.5) = log(1 + e^0.5)
    pc, pr = jnp.array([-1.0, -5.0]), jnp.array([-3.0, -4.0])
    rc, rr = jnp.array([-2.0, -4.0]), jnp.array([-2.0, -4.0])
    loss, m = dpo_loss(pc, pr, rc, rr, beta=0.5)
    want = (np.log1p(np.exp(-1.0)) + np.log1p(np.exp(0.5))) / 2
    assert abs(float(loss) - want) < 1e-6
    assert abs(float(loss) - 0.6436693358491648) < 1e-6
    assert float(m["reward_accuracy"]) == 0.5
    np.testing.assert_allclose(float(m["chosen_reward"]), (0.5 * 1 + 0.5 * -1) / 2, atol=1e-7)
    np.testing.assert_allclose(float(m["reward_margin"]), (1 - 0.5) / 2, atol=1e-7)
    # d loss / d policy_chosen = -beta * sigmoid(-margin) / n_pairs
    g = jax.grad(lambda x: dpo_loss(x, pr, rc, rr, 0.5)[0])(pc)
    def sig(z):
        return 1 / (1 + np.exp(-z))

    np.testing.assert_allclose(g, [-0.5 * sig(-1.0) / 2, -0.5 * sig(0.5) / 2], rtol=1e-6)
    # Equal policy and reference: loss log 2 whatever beta.
    z = jnp.zeros(3)
    assert abs(float(dpo_loss(z, z, z, z, 3.0)[0]) - np.log(2)) < 1e-6


def np_grpo_clip(adv, lp, old, eps):
    ratio = np.exp(lp - old)
    a = adv[:, None]
    return -np.minimum(ratio * a, np.clip(ratio, 1 - eps, 1 + eps) * a)


def test_grpo_clip_inactive_is_the_ratio_objective():
    adv = np.array([1.5, -0.7])
    old = RNG.normal(size=(2, 4)) - 2
    lp = old + RNG.uniform(-0.05, 0.05, size=(2, 4))  # ratios within [0.95, 1.05]: no clipping at eps=0.2
    loss, diag = grpo_clip_loss(jnp.asarray(adv), jnp.asarray(lp), jnp.asarray(old), 0.2)
    np.testing.assert_allclose(loss, np_grpo_clip(adv, lp, old, 0.2), rtol=1e-5)
    np.testing.assert_allclose(loss, -np.exp(lp - old) * adv[:, None], rtol=1e-5)
    assert not np.any(diag["clipped"])
    # Unclipped: d/d lp of -ratio * A = -ratio * A.
    g = jax.grad(lambda x: grpo_clip_loss(jnp.asarray(adv), x, jnp.asarray(old), 0.2)[0].sum())(jnp.asarray(lp))
    np.testing.assert_allclose(g, -np.exp(lp - old) * adv[:, None], rtol=1e-5)


def test_grpo_clip_active_clips_and_kills_gradient():
    # Row 0, A > 0: ratio 1.5 is clipped to 1.2 (no gradient), ratio 0.5 is not (pessimistic min keeps it).
    # Row 1, A < 0: ratio 0.5 is clipped to 0.8 (no gradient), ratio 1.5 is not.
    adv = np.array([2.0, -1.0])
    old = np.zeros((2, 2))
    lp = np.log(np.array([[1.5, 0.5], [0.5, 1.5]]))
    loss, diag = grpo_clip_loss(jnp.asarray(adv), jnp.asarray(lp, jnp.float32), jnp.asarray(old), 0.2)
    np.testing.assert_allclose(loss, np_grpo_clip(adv, lp, old, 0.2), rtol=1e-6)
    np.testing.assert_allclose(loss, [[-1.2 * 2, -0.5 * 2], [0.8, 1.5]], rtol=1e-6)
    np.testing.assert_array_equal(diag["clipped"], [[True, False], [True, False]])
    g = jax.grad(lambda x: grpo_clip_loss(jnp.asarray(adv), x, jnp.asarray(old), 0.2)[0].sum())(
        jnp.asarray(lp, jnp.float32))
    np.testing.assert_allclose(g, [[0.0, -0.5 * 2], [0.0, 1.5]], rtol=1e-6, atol=1e-7)


def test_group_normalisation_against_numpy():
    rewards = np.array([1, 0, 0, 1, 1, 1, 1, 1, 0.5, 0, 0, 0.25], np.float64)
    g = 4
    r = rewards.reshape(-1, g)
    mean, std = r.mean(1, keepdims=True), r.std(1, ddof=1, keepdims=True)
    adv, stats = group_advantages(jnp.asarray(rewards), g, normalize_std=True, eps=1e-6)
    np.testing.assert_allclose(adv, ((r - mean) / (std + 1e-6)).reshape(-1), rtol=1e-5, atol=1e-6)
    adv0, _ = group_advantages(jnp.asarray(rewards), g, normalize_std=False)
    np.testing.assert_allclose(adv0, (r - mean).reshape(-1), atol=1e-7)
    assert np.all(np.asarray(adv)[4:8] == 0)  # all-correct group: no signal, and no NaN
    assert abs(float(stats["groups_all_same"]) - 1 / 3) < 1e-6
    with pytest.raises(ValueError, match="groups of 5"):
        group_advantages(jnp.asarray(rewards), 5)


def test_policy_gradient_loss_types():
    lp = jnp.asarray(RNG.normal(size=(3, 5)), jnp.float32)
    rewards, adv = jnp.array([1.0, 0.0, 1.0]), jnp.array([0.5, -1.0, 0.5])
    np.testing.assert_allclose(policy_gradient_loss(lp, "no_baseline", raw_rewards=rewards)[0],
                               -np.asarray(rewards)[:, None] * np.asarray(lp), rtol=1e-6)
    np.testing.assert_allclose(policy_gradient_loss(lp, "reinforce_with_baseline", advantages=adv)[0],
                               naive_policy_gradient_loss(adv, lp), rtol=1e-6)
    on_policy, _ = policy_gradient_loss(lp, "grpo_clip", advantages=adv, old_log_probs=lp, cliprange=0.2)
    np.testing.assert_allclose(on_policy, -np.asarray(adv)[:, None] * np.ones((3, 5)), rtol=1e-6)
    # On-policy, GRPO-clip and REINFORCE-with-baseline have the same gradient.
    g1 = jax.grad(lambda x: policy_gradient_loss(x, "grpo_clip", advantages=adv, old_log_probs=lp,
                                                 cliprange=0.2)[0].sum())(lp)
    g2 = jax.grad(lambda x: policy_gradient_loss(x, "reinforce_with_baseline", advantages=adv)[0].sum())(lp)
    np.testing.assert_allclose(g1, g2, rtol=1e-6)
    with pytest.raises(ValueError, match="old_log_probs"):
        policy_gradient_loss(lp, "grpo_clip", advantages=adv)
    with pytest.raises(ValueError, match="loss_type"):
        policy_gradient_loss(lp, "ppo")


def test_kl_penalty_k3():
    lp, ref = RNG.normal(size=(2, 6)), RNG.normal(size=(2, 6))
    d = ref - lp
    np.testing.assert_allclose(kl_penalty(jnp.asarray(lp), jnp.asarray(ref)), np.exp(d) - d - 1, rtol=1e-5, atol=1e-7)
    assert np.all(np.asarray(kl_penalty(jnp.asarray(lp), jnp.asarray(ref))) >= 0)
    assert np.all(np.asarray(kl_penalty(jnp.asarray(lp), jnp.asarray(lp))) == 0)


@pytest.mark.parametrize("norm", ["token", "sequence", "constant"])
def test_loss_weights_are_the_length_normalisations(norm):
    x = RNG.normal(size=(4, 6))
    mask = RNG.random((4, 6)) < 0.6
    mask[:, 0] = True
    got = float(jnp.sum(jnp.asarray(x) * loss_weights(jnp.asarray(mask), norm, constant=6.0)))
    if norm == "token":
        want = x[mask].mean()
    elif norm == "sequence":
        want = np.mean([x[i][mask[i]].mean() for i in range(4)])
    else:
        want = np.sum(np.where(mask, x, 0)) / (4 * 6.0)
    assert abs(got - want) < 1e-5
    with pytest.raises(ValueError, match="length_norm"):
        loss_weights(jnp.asarray(mask), "median")
