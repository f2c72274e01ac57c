"""Policy-gradient loss options (DAPO, Dr. GRPO, GSPO, truncation, dynamic sampling) on hand-computed toy batches."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm.align.dynamic_sampling import fill_groups, filter_groups, uniform_groups
from lm.align.policy_gradient import (LOSS_PRESETS, PGLossConfig, aggregate_loss, group_advantages, grpo_clip_loss,
                                      gspo_loss, kl_penalty, overlong_penalty, policy_gradient_loss, shape_rewards,
                                      truncation_mask)

LP = jnp.asarray(np.random.default_rng(0).normal(size=(2, 10)), jnp.float32)


# --- issue 21.6: reward / advantage / old-log-prob shapes -------------------------------------------------------

@pytest.mark.parametrize("shape", [(2,), (2, 1)])
def test_per_sequence_scores_accept_batch_and_batch_by_one(shape):
    want = -np.array([2.0, 1.0])[:, None] * np.asarray(LP)
    r = jnp.array([2.0, 1.0]).reshape(shape)
    got, _ = policy_gradient_loss(LP, "no_baseline", raw_rewards=r)
    assert got.shape == (2, 10)  # was [2, 2, 10] for a [2, 1] reward: each row times every reward
    np.testing.assert_allclose(got, want, rtol=1e-6)
    got, _ = policy_gradient_loss(LP, "reinforce_with_baseline", advantages=r)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    got, _ = policy_gradient_loss(LP, "grpo_clip", advantages=r, old_log_probs=LP, cliprange=0.2)
    np.testing.assert_allclose(got, -np.array([2.0, 1.0])[:, None] * np.ones((2, 10)), rtol=1e-6)


@pytest.mark.parametrize("loss_type,kw", [("no_baseline", "raw_rewards"), ("reinforce_with_baseline", "advantages"),
                                          ("grpo_clip", "advantages"), ("gspo", "advantages")])
@pytest.mark.parametrize("bad", [(1, 2), (2, 2), (4,), (2, 10)])
def test_wrong_score_shapes_are_refused_by_name(loss_type, kw, bad):
    extra = dict(old_log_probs=LP, cliprange=0.2, response_mask=jnp.ones((2, 10), bool))
    with pytest.raises(ValueError, match=rf"{kw} must have shape \[batch\] or \[batch, 1\] with batch=2"):
        policy_gradient_loss(LP, loss_type, **{kw: jnp.ones(bad)}, **extra)


def test_wrong_old_log_prob_shapes_are_refused():
    adv = jnp.ones(2)
    for bad in [(2, 1), (2,), (1, 10), (2, 9)]:
        with pytest.raises(ValueError, match=r"old_log_probs must have the shape of log_probs \[2, 10\]"):
            policy_gradient_loss(LP, "grpo_clip", advantages=adv, old_log_probs=jnp.zeros(bad), cliprange=0.2)
    with pytest.raises(ValueError, match="ref_log_probs"):
        kl_penalty(LP, jnp.zeros((2, 1)))


# --- aggregation, advantages, clipping ------------------------------------------------------------------------------

PER_TOKEN = jnp.array([[1.0, 2.0, 3.0, 9.0], [4.0, 9.0, 9.0, 9.0]])
MASK = jnp.array([[1, 1, 1, 0], [1, 0, 0, 0]], bool)


@pytest.mark.parametrize("norm,want", [("token", (1 + 2 + 3 + 4) / 4),      # DAPO: every response token alike
                                       ("sequence", (2.0 + 4.0) / 2),       # GRPO: mean of the sequence means
                                       ("constant", (6 + 4) / (2 * 5.0))])  # Dr. GRPO: sum / (batch * 5)
def test_aggregation_hand_computed(norm, want):
    assert float(aggregate_loss(PER_TOKEN, MASK, norm, constant=5.0)) == pytest.approx(want, abs=1e-6)


def test_advantages_with_and_without_std_hand_computed():
    rewards = jnp.array([1.0, 0, 0, 0, 1, 1, 0, 0])
    # Group 1: mean 1/4, std (ddof 1) = sqrt((0.75^2 + 3 * 0.25^2) / 3) = 1/2; group 2: mean 1/2, std = 1/sqrt(3).
    adv, _ = group_advantages(rewards, 4, normalize_std=True, eps=0.0)
    s3 = np.sqrt(3) / 2
    np.testing.assert_allclose(adv, [1.5, -0.5, -0.5, -0.5, s3, s3, -s3, -s3], rtol=1e-6)
    adv, _ = group_advantages(rewards, 4, normalize_std=False)  # Dr. GRPO
    np.testing.assert_allclose(adv, [0.75, -0.25, -0.25, -0.25, 0.5, 0.5, -0.5, -0.5], rtol=1e-6)


def test_clip_higher_hand_computed():
    adv = jnp.array([1.0, -1.0])
    lp = jnp.log(jnp.array([[1.25, 1.3, 0.7], [1.25, 0.75, 0.85]]))
    old = jnp.zeros((2, 3))
    # A > 0: min(r, clip(r, 0.8, 1.28)); A < 0: max(r, clip(r, 0.8, 1.28)) as a loss.
    loss, diag = grpo_clip_loss(adv, lp, old, cliprange_low=0.2, cliprange_high=0.28)
    np.testing.assert_allclose(loss, [[-1.25, -1.28, -0.7], [1.25, 0.8, 0.85]], rtol=1e-6)
    np.testing.assert_array_equal(diag["clipped"], [[False, True, False], [False, True, False]])
    sym, diag = grpo_clip_loss(adv, lp, old, 0.2)  # the symmetric GRPO clip caps 1.25 at 1.2 as well
    np.testing.assert_allclose(sym, [[-1.2, -1.2, -0.7], [1.25, 0.8, 0.85]], rtol=1e-6)
    g = jax.grad(lambda x: grpo_clip_loss(adv, x, old, cliprange_low=0.2, cliprange_high=0.28)[0].sum())(lp)
    np.testing.assert_allclose(g, [[-1.25, 0.0, -0.7], [1.25, 0.0, 0.85]], rtol=1e-6, atol=1e-7)
    same, _ = policy_gradient_loss(lp, "grpo_clip", advantages=adv, old_log_probs=old, cliprange_low=0.2,
                                   cliprange_high=0.28)
    np.testing.assert_array_equal(same, loss)


def test_gspo_sequence_ratio_hand_computed():
    mask = jnp.array([[1, 1, 0], [1, 1, 1]], bool)
    old = jnp.zeros((2, 3))
    lp = jnp.array([[0.2, -0.1, 5.0], [0.3, 0.3, 0.3]])  # the masked 5.0 must not count
    adv = jnp.array([2.0, 1.0])
    # s0 = exp((0.2 - 0.1) / 2) = e^0.05 (inside [0.8, 1.2]); s1 = e^0.3 = 1.35 > 1.2, A > 0: clipped to 1.2.
    loss, diag = gspo_loss(adv, lp, old, mask, 0.2, 0.2)
    s0 = np.exp(0.05)
    np.testing.assert_allclose(loss, [[-2 * s0] * 3, [-1.2] * 3], rtol=1e-6)
    np.testing.assert_allclose(diag["ratio"][:, 0], [s0, np.exp(0.3)], rtol=1e-6)
    np.testing.assert_array_equal(diag["clipped"][:, 0], [False, True])
    assert float(aggregate_loss(loss, mask, "sequence")) == pytest.approx((-2 * s0 - 1.2) / 2, rel=1e-6)
    # Every response token of sequence 0 gets -A s / |y| = -2 e^0.05 / 2; the clipped sequence gets nothing.
    g = jax.grad(lambda x: gspo_loss(adv, x, old, mask, 0.2, 0.2)[0][:, 0].sum())(lp)
    np.testing.assert_allclose(g, [[-s0, -s0, 0.0], [0.0, 0.0, 0.0]], rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="response_mask"):
        policy_gradient_loss(lp, "gspo", advantages=adv, old_log_probs=old, cliprange=0.2)


def test_k3_kl_hand_computed_and_off_by_default():
    # log pi = log 0.5, log ref = log 0.25: d = log(1/2), k3 = 1/2 - log(1/2) - 1 = log 2 - 1/2.
    kl = kl_penalty(jnp.log(jnp.array([[0.5]])), jnp.log(jnp.array([[0.25]])))
    assert float(kl[0, 0]) == pytest.approx(np.log(2) - 0.5, rel=1e-6)
    assert PGLossConfig().kl_coef == 0 and all(p.kl_coef == 0 for p in LOSS_PRESETS.values())


# --- truncation -----------------------------------------------------------------------------------------------------

def test_truncation_mask_and_overlong_penalty_hand_computed():
    mask = jnp.array([[1, 1, 1], [1, 1, 0]], bool)
    np.testing.assert_array_equal(truncation_mask(mask, jnp.array([True, False])), [[0, 0, 0], [1, 1, 0]])
    np.testing.assert_array_equal(truncation_mask(mask, jnp.array([[False], [True]])), [[1, 1, 1], [0, 0, 0]])
    # max 16, ramp of 4: free up to 12 tokens, then (12 - L) / 4 down to -1 at 16, and -1 beyond.
    np.testing.assert_allclose(overlong_penalty([10, 12, 13, 15, 16, 17], 16, 4), [0, 0, -0.25, -0.75, -1, -1])
    cfg = PGLossConfig(truncation="penalty", overlong_cache=4)
    np.testing.assert_allclose(shape_rewards([1.0, 1.0], [8, 14], cfg, 16), [1.0, 0.5])
    np.testing.assert_allclose(shape_rewards([1.0, 1.0], [8, 14], PGLossConfig(), 16), [1.0, 1.0])


def test_loss_config_validation_and_presets():
    with pytest.raises(ValueError, match="length_norm must be one of"):
        PGLossConfig(length_norm="median")
    with pytest.raises(ValueError, match="truncation must be one of"):
        PGLossConfig(truncation="drop")
    with pytest.raises(ValueError, match="cliprange_low"):
        PGLossConfig(cliprange_low=0.0)
    assert LOSS_PRESETS["dapo"].cliprange_high == 0.28 and LOSS_PRESETS["dapo"].length_norm == "token"
    assert LOSS_PRESETS["dr_grpo"].length_norm == "constant" and not LOSS_PRESETS["dr_grpo"].normalize_std
    assert PGLossConfig().length_norm == "token"


# --- dynamic sampling -----------------------------------------------------------------------------------------------

def _groups(rewards, tag):
    n = len(rewards)
    return {"rewards": np.asarray(rewards, np.float32), "ids": [f"{tag}{i}" for i in range(n)],
            "tokens": np.arange(n)[:, None] * np.ones((1, 2), int)}


def test_filter_groups_drops_uniform_rewards():
    batch = _groups([1, 1, 1, 0, 1, 0, 0, 0, 0, 1, 0, 1], "a")
    np.testing.assert_array_equal(uniform_groups(batch["rewards"], 3), [True, False, True, False])
    kept, dropped = filter_groups(batch, 3)
    assert dropped == 2
    assert kept["ids"] == ["a3", "a4", "a5", "a9", "a10", "a11"]
    np.testing.assert_array_equal(kept["rewards"], [0, 1, 0, 1, 0, 1])
    np.testing.assert_array_equal(kept["tokens"][:, 0], [3, 4, 5, 9, 10, 11])
    with pytest.raises(ValueError, match="rows"):
        filter_groups({"rewards": np.zeros(6), "ids": [1, 2]}, 3)


def test_fill_groups_refills_and_caps_tries():
    rounds = [_groups([1, 1, 1, 0, 1, 0, 0, 0, 0, 1, 0, 1], "a"),   # 2 useful groups of 4
              _groups([0, 0, 0, 1, 0, 0, 0, 1, 1, 0, 0, 0], "b")]   # 2 more (and 2 uniform)
    rows, stats = fill_groups(lambda t: rounds[t], n_groups=3, group_size=3, max_tries=5)
    assert stats == {"tries": 2, "groups_dropped": 4, "groups_short": 0}
    assert rows["ids"] == ["a3", "a4", "a5", "a9", "a10", "a11", "b3", "b4", "b5"]
    # Nothing useful: stop after max_tries and top up with dropped (zero-advantage) groups to keep the shape.
    flat = _groups([1] * 6 + [0] * 6, "c")
    rows, stats = fill_groups(lambda t: flat, n_groups=3, group_size=3, max_tries=2)
    assert stats == {"tries": 2, "groups_dropped": 8, "groups_short": 3}
    assert len(rows["ids"]) == 9 and rows["rewards"].shape == (9,)


# --- the options through the GRPO loss on a model ---------------------------------------------------------------

def test_grpo_loss_options_on_the_tiny_model():
    from lm.align.config import GRPOConfig
    from lm.align.data import tokenize_pairs
    from lm.align.grpo import batch_logprobs, grpo_loss, weighted_batch
    from tests.align import tiny

    prompts, responses = [[10, 11, 12]] * 2 + [[20, 21]] * 2, [[50, 51, 52], [60], [50, 51], [60, 61, 62]]
    b = {k: jnp.asarray(v) for k, v in tokenize_pairs(prompts, responses, 32).items()}
    params = tiny.params()
    b.update(advantages=jnp.array([1.0, -1.0, 0.5, -0.5]), truncated=jnp.array([False, False, False, True]),
             old_log_probs=batch_logprobs(params, b["input_ids"], b["labels"], model=tiny.CONFIG))
    config = GRPOConfig(max_new_tokens=4)  # only the loss, temperature and max_new_tokens matter here

    @functools.lru_cache(maxsize=None)
    def compiled(loss):
        with_loss = dataclasses.replace(config, loss=loss)

        def g(p, batch):
            wb = weighted_batch(batch, with_loss)
            return jax.grad(lambda q: grpo_loss(q, wb, with_loss, tiny.CONFIG)[0])(p)
        return jax.jit(g)

    flat = lambda t: np.concatenate([np.ravel(x) for x in jax.tree.leaves(t)])  # noqa: E731
    grads = lambda loss, batch: flat(compiled(loss)(params, batch))  # noqa: E731
    assert config.loss == PGLossConfig(length_norm="token")  # token aggregation is the default (DAPO, TRL)
    # truncation="mask": the truncated row's advantage no longer matters; untruncated, it does.
    gspo = PGLossConfig(loss_type="gspo", length_norm="sequence", truncation="mask")
    flipped = dict(b, advantages=b["advantages"].at[3].set(5.0))
    np.testing.assert_allclose(grads(gspo, b), grads(gspo, flipped), rtol=1e-6, atol=1e-9)
    kept = dict(b, truncated=jnp.zeros(4, bool))
    assert not np.allclose(grads(gspo, kept), grads(gspo, dict(flipped, truncated=kept["truncated"])))
    with pytest.raises(ValueError, match="truncated"):
        weighted_batch({k: v for k, v in b.items() if k != "truncated"}, dataclasses.replace(config, loss=gspo))
    # On-policy GSPO with "sequence" aggregation is sequence-level REINFORCE: -A_i / |y_i| on each of
    # i's tokens, then the mean over sequences, i.e. REINFORCE-with-baseline under "sequence" aggregation.
    reinforce = PGLossConfig(loss_type="reinforce_with_baseline", length_norm="sequence", truncation="mask")
    np.testing.assert_allclose(grads(gspo, kept), grads(reinforce, kept), rtol=1e-4, atol=1e-7)
