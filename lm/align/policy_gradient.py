"""Group-normalised advantages and policy-gradient losses (GRPO: Shao et al. 2024).

    adv, stats = group_advantages(rewards, group_size=8, normalize_std=True)        # [n_prompts * G]
    per_token, stats = policy_gradient_loss(log_probs, "grpo_clip", advantages=adv, old_log_probs=old, cliprange=0.2)

Per-token losses are [batch, seq]; `lm.align.step.loss_weights` turns them
into one number (the length normalisation). Loss types:
  "no_baseline"              -R * log pi              (naive REINFORCE, raw rewards)
  "reinforce_with_baseline"  -A * log pi              (A = group-normalised advantage)
  "grpo_clip"                -min(r A, clip(r, 1-eps, 1+eps) A),  r = pi / pi_old
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

LOSS_TYPES = ("no_baseline", "reinforce_with_baseline", "grpo_clip")


def group_advantages(rewards: jax.Array, group_size: int, normalize_std: bool = True,
                     eps: float = 1e-6) -> tuple[jax.Array, dict]:
    """Advantages [n * G] of rewards [n * G] laid out group by group (G samples of prompt 0, then prompt 1, ...).

    A = (r - mean of its group) / (std of its group + eps) with `normalize_std`, else r - mean
    (Dr. GRPO drops the std, which up-weights groups that are nearly all right or all wrong).
    The std is the unbiased one (ddof=1), as in the GRPO reference code.
    """
    if group_size < 2:
        raise ValueError(f"group_size must be >= 2 for a group baseline, got {group_size}")
    if rewards.shape[0] % group_size:
        raise ValueError(f"{rewards.shape[0]} rewards do not form groups of {group_size}")
    r = rewards.astype(jnp.float32).reshape(-1, group_size)
    mean = jnp.mean(r, axis=1, keepdims=True)
    adv = r - mean
    std = jnp.std(r, axis=1, keepdims=True, ddof=1)
    if normalize_std:
        adv = adv / (std + eps)
    return adv.reshape(-1), {"reward_mean": jnp.mean(r), "reward_std_within_group": jnp.mean(std),
                             "groups_all_same": jnp.mean((std == 0).astype(jnp.float32))}


def naive_policy_gradient_loss(scores: jax.Array, log_probs: jax.Array) -> jax.Array:
    """-score * log pi per token: scores [batch] (rewards or advantages), log_probs [batch, seq]."""
    return -jax.lax.stop_gradient(scores)[:, None] * log_probs


def grpo_clip_loss(advantages: jax.Array, log_probs: jax.Array, old_log_probs: jax.Array,
                   cliprange: float) -> tuple[jax.Array, dict]:
    """PPO-style clipped surrogate per token [batch, seq] and {"clipped": bool [batch, seq], "ratio"}.

    A token is "clipped" when the clipped term is the smaller one, i.e. its gradient is zero.
    """
    adv = jax.lax.stop_gradient(advantages)[:, None]
    ratio = jnp.exp(log_probs - jax.lax.stop_gradient(old_log_probs))
    unclipped = ratio * adv
    clipped = jnp.clip(ratio, 1 - cliprange, 1 + cliprange) * adv
    return -jnp.minimum(unclipped, clipped), {"clipped": clipped < unclipped, "ratio": ratio}


def policy_gradient_loss(log_probs: jax.Array, loss_type: str, raw_rewards: jax.Array | None = None,
                         advantages: jax.Array | None = None, old_log_probs: jax.Array | None = None,
                         cliprange: float | None = None) -> tuple[jax.Array, dict]:
    """Per-token loss [batch, seq] of `loss_type` (one of LOSS_TYPES) and its diagnostics."""
    if loss_type == "no_baseline":
        if raw_rewards is None:
            raise ValueError("loss_type='no_baseline' needs raw_rewards")
        return naive_policy_gradient_loss(raw_rewards, log_probs), {}
    if loss_type == "reinforce_with_baseline":
        if advantages is None:
            raise ValueError("loss_type='reinforce_with_baseline' needs advantages")
        return naive_policy_gradient_loss(advantages, log_probs), {}
    if loss_type == "grpo_clip":
        if advantages is None or old_log_probs is None or cliprange is None:
            raise ValueError("loss_type='grpo_clip' needs advantages, old_log_probs and cliprange")
        return grpo_clip_loss(advantages, log_probs, old_log_probs, cliprange)
    raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")


def kl_penalty(log_probs: jax.Array, ref_log_probs: jax.Array) -> jax.Array:
    """Per-token estimate of KL(pi || ref) from samples of pi: exp(q - p) - (q - p) - 1 with
    p = log pi, q = log ref (Schulman's k3: unbiased, always >= 0; the GRPO paper's choice)."""
    d = jax.lax.stop_gradient(ref_log_probs) - log_probs
    return jnp.expm1(d) - d  # expm1 keeps small differences accurate in float32
