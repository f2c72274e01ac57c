"""Group-normalised advantages and policy-gradient losses: GRPO and the variants that replaced its defaults.

    adv, stats = group_advantages(rewards, group_size=8, normalize_std=True)        # [n_prompts * G]
    per_token, diag = policy_gradient_loss(log_probs, "grpo_clip", advantages=adv, old_log_probs=old,
                                           cliprange_low=0.2, cliprange_high=0.28)   # [batch, seq]
    loss = aggregate_loss(per_token, response_mask, "token")                         # one number

Loss types (per-token losses [batch, seq]; rewards and advantages [batch] or [batch, 1]):
  "no_baseline"              -R * log pi              (naive REINFORCE, raw rewards)
  "reinforce_with_baseline"  -A * log pi              (A = group-normalised advantage)
  "grpo_clip"                -min(r A, clip(r, 1 - lo, 1 + hi) A),  r = pi / pi_old per token
                             (PPO/GRPO with lo = hi; DAPO's clip-higher: lo 0.2, hi 0.28)
  "gspo"                     the same clipped surrogate on ONE ratio per sequence, the geometric mean of its
                             token ratios (Zheng et al. 2025), every response token carrying its sequence's loss

`PGLossConfig` collects every option with its field's meaning, and `LOSS_PRESETS` names the
published recipes (grpo, dr_grpo, dapo, gspo). Dynamic sampling (dropping groups whose rewards are
all equal) is `lm.align.dynamic_sampling`.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from lm.align.step import LENGTH_NORMS, loss_weights

LOSS_TYPES = ("no_baseline", "reinforce_with_baseline", "grpo_clip", "gspo")
TRUNCATION_MODES = ("none", "mask", "penalty")


@dataclasses.dataclass(frozen=True)
class PGLossConfig:
    """Every option of the policy-gradient loss: `GRPOConfig.loss` (flags `--grpo.loss.<field>`).

    loss_type       one of LOSS_TYPES.
    length_norm     how per-token losses become one number (`aggregate_loss`): "token" (DAPO, and TRL's
                    default: sum over all response tokens of the batch / their count), "sequence" (GRPO as
                    published: mean over sequences of each one's token mean; short answers' tokens weigh
                    more) or "constant" (Dr. GRPO: sum / (batch * norm_constant)).
    norm_constant   the divisor per sequence for "constant"; 0 means the generation budget (max_new_tokens).
    normalize_std   divide advantages by their group's std (False: Dr. GRPO).
    cliprange_low   ratios below 1 - cliprange_low are clipped (grpo_clip, gspo).
    cliprange_high  ratios above 1 + cliprange_high are clipped; DAPO's clip-higher raises it to 0.28 so
                    unlikely tokens can gain probability. GSPO's ratios are per sequence, near 1, and use
                    about 100x smaller ranges (3e-4 / 4e-4 in the paper).
    kl_coef         weight of the k3 KL penalty to the reference (0: off, as in DAPO and TRL).
    truncation      responses cut by the length limit: "none" (trained as they are), "mask" (no gradient:
                    DAPO's overlong filtering) or "penalty" (DAPO's soft overlong punishment added to the
                    reward; see `overlong_penalty`).
    overlong_cache  the penalty's ramp in tokens (DAPO's L_cache): lengths in (max - cache, max] lose up to 1.
    dynamic_sampling  drop groups whose rewards are all equal (no signal) and refill from further prompts.
    max_sampling_tries  rollout rounds per step at most when refilling (the batch is topped up with
                    dropped groups, which carry zero advantage, if still short).

    The train step (`lm.align.grpo.grpo_train_step`, reading config.loss) applies loss_type, length_norm,
    norm_constant, the clip ranges, kl_coef and truncation="mask" (from batch["truncated"]); the rollout
    loop (`lm.align.grpo_loop`) applies normalize_std (`group_advantages`), truncation="penalty"
    (`shape_rewards`, before the advantages), "mask"'s batch["truncated"] (the rollout's ~stopped) and
    dynamic_sampling (`lm.align.dynamic_sampling.fill_groups`).
    """

    loss_type: str = "grpo_clip"
    length_norm: str = "token"
    norm_constant: float = 0.0
    normalize_std: bool = True
    cliprange_low: float = 0.2
    cliprange_high: float = 0.2
    kl_coef: float = 0.0
    truncation: str = "none"
    overlong_cache: int = 4
    dynamic_sampling: bool = False
    max_sampling_tries: int = 3

    def __post_init__(self):
        for name, allowed in (("loss_type", LOSS_TYPES), ("length_norm", LENGTH_NORMS),
                              ("truncation", TRUNCATION_MODES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"PGLossConfig.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if not (0 < self.cliprange_low < 1 and self.cliprange_high > 0):
            raise ValueError(f"PGLossConfig needs 0 < cliprange_low < 1 and cliprange_high > 0, got "
                             f"{self.cliprange_low} and {self.cliprange_high}")
        if self.kl_coef < 0 or self.norm_constant < 0:
            raise ValueError(f"PGLossConfig.kl_coef and norm_constant must be >= 0, got {self.kl_coef}, "
                             f"{self.norm_constant}")
        if self.overlong_cache < 1 or self.max_sampling_tries < 1:
            raise ValueError(f"PGLossConfig.overlong_cache and max_sampling_tries must be >= 1, got "
                             f"{self.overlong_cache}, {self.max_sampling_tries}")


LOSS_PRESETS = {
    "grpo": PGLossConfig(length_norm="sequence"),
    "dr_grpo": PGLossConfig(length_norm="constant", normalize_std=False),
    "dapo": PGLossConfig(length_norm="token", cliprange_high=0.28, truncation="penalty", dynamic_sampling=True),
    "gspo": PGLossConfig(loss_type="gspo", length_norm="sequence", cliprange_low=3e-4, cliprange_high=4e-4),
}


def _per_sequence(x: jax.Array, name: str, log_probs: jax.Array) -> jax.Array:
    """x as [batch], from [batch] or [batch, 1]; anything else would broadcast into a wrong loss."""
    batch = log_probs.shape[0]
    if jnp.shape(x) not in ((batch,), (batch, 1)):
        raise ValueError(f"{name} must have shape [batch] or [batch, 1] with batch={batch} (log_probs is "
                         f"{list(log_probs.shape)}), got {list(jnp.shape(x))}")
    return jnp.reshape(x, (batch,))


def _like_log_probs(x: jax.Array, name: str, log_probs: jax.Array) -> jax.Array:
    if jnp.shape(x) != log_probs.shape:
        raise ValueError(f"{name} must have the shape of log_probs {list(log_probs.shape)} ([batch, seq]), "
                         f"got {list(jnp.shape(x))}")
    return x


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
    """-score * log pi per token [batch, seq]: scores [batch] or [batch, 1] (rewards or advantages)."""
    scores = _per_sequence(scores, "scores (raw_rewards or advantages)", log_probs)
    return -jax.lax.stop_gradient(scores)[:, None] * log_probs


def _clip_bounds(cliprange, cliprange_low, cliprange_high) -> tuple[float, float]:
    low = cliprange if cliprange_low is None else cliprange_low
    high = low if cliprange_high is None else cliprange_high
    if low is None:
        raise ValueError("give cliprange (symmetric) or cliprange_low (and optionally cliprange_high)")
    return low, high


def grpo_clip_loss(advantages: jax.Array, log_probs: jax.Array, old_log_probs: jax.Array,
                   cliprange: float | None = None, *, cliprange_low: float | None = None,
                   cliprange_high: float | None = None) -> tuple[jax.Array, dict]:
    """PPO-style clipped surrogate per token [batch, seq] and {"clipped": bool [batch, seq], "ratio"}.

    advantages [batch] or [batch, 1]; log_probs, old_log_probs [batch, seq]. The ratio is clipped to
    [1 - cliprange_low, 1 + cliprange_high]; both default to `cliprange` (symmetric, as in GRPO).
    A token is "clipped" when the clipped term is the smaller one, i.e. its gradient is zero.
    """
    low, high = _clip_bounds(cliprange, cliprange_low, cliprange_high)
    adv = jax.lax.stop_gradient(_per_sequence(advantages, "advantages", log_probs))[:, None]
    old = _like_log_probs(old_log_probs, "old_log_probs", log_probs)
    ratio = jnp.exp(log_probs - jax.lax.stop_gradient(old))
    unclipped = ratio * adv
    clipped = jnp.clip(ratio, 1 - low, 1 + high) * adv
    return -jnp.minimum(unclipped, clipped), {"clipped": clipped < unclipped, "ratio": ratio}


def gspo_loss(advantages: jax.Array, log_probs: jax.Array, old_log_probs: jax.Array, response_mask: jax.Array,
              cliprange_low: float, cliprange_high: float | None = None) -> tuple[jax.Array, dict]:
    """GSPO's sequence-level clipped surrogate, per token [batch, seq], and {"clipped", "ratio"} [batch, seq].

    s_i = exp(mean over i's response tokens of (log pi - log pi_old)), the geometric mean of its token
    ratios; loss_i = -min(s_i A_i, clip(s_i, 1 - lo, 1 + hi) A_i), the same for every token of sequence i,
    so `aggregate_loss(..., "sequence")` gives the paper's objective (mean over sequences). Every token's
    gradient is -A_i s_i / |y_i| while unclipped: the sequence's tokens move together.
    """
    high = cliprange_low if cliprange_high is None else cliprange_high
    adv = jax.lax.stop_gradient(_per_sequence(advantages, "advantages", log_probs))
    old = jax.lax.stop_gradient(_like_log_probs(old_log_probs, "old_log_probs", log_probs))
    mask = _like_log_probs(response_mask, "response_mask", log_probs) != 0
    n_tokens = jnp.maximum(jnp.sum(mask, axis=-1), 1)
    seq_log_ratio = jnp.sum(jnp.where(mask, log_probs - old, 0.0), axis=-1) / n_tokens
    ratio = jnp.exp(seq_log_ratio)
    unclipped = ratio * adv
    clipped = jnp.clip(ratio, 1 - cliprange_low, 1 + high) * adv
    loss = -jnp.minimum(unclipped, clipped)
    full = lambda x: jnp.broadcast_to(x[:, None], log_probs.shape)  # noqa: E731
    return full(loss), {"clipped": full(clipped < unclipped), "ratio": full(ratio)}


def policy_gradient_loss(log_probs: jax.Array, loss_type: str, raw_rewards: jax.Array | None = None,
                         advantages: jax.Array | None = None, old_log_probs: jax.Array | None = None,
                         cliprange: float | None = None, *, cliprange_low: float | None = None,
                         cliprange_high: float | None = None,
                         response_mask: jax.Array | None = None) -> tuple[jax.Array, dict]:
    """Per-token loss [batch, seq] of `loss_type` (one of LOSS_TYPES) and its diagnostics.

    log_probs, old_log_probs, response_mask [batch, seq]; raw_rewards, advantages [batch] or [batch, 1]
    (other shapes are refused rather than broadcast). Clip ranges: see `grpo_clip_loss`; "gspo" also
    needs `response_mask` (its ratio is a mean over each response).
    """
    if loss_type == "no_baseline":
        if raw_rewards is None:
            raise ValueError("loss_type='no_baseline' needs raw_rewards")
        return naive_policy_gradient_loss(_per_sequence(raw_rewards, "raw_rewards", log_probs), log_probs), {}
    if loss_type == "reinforce_with_baseline":
        if advantages is None:
            raise ValueError("loss_type='reinforce_with_baseline' needs advantages")
        return naive_policy_gradient_loss(_per_sequence(advantages, "advantages", log_probs), log_probs), {}
    if loss_type in ("grpo_clip", "gspo"):
        if advantages is None or old_log_probs is None or (cliprange is None and cliprange_low is None):
            raise ValueError(f"loss_type={loss_type!r} needs advantages, old_log_probs and cliprange "
                             "(or cliprange_low)")
        if loss_type == "grpo_clip":
            return grpo_clip_loss(advantages, log_probs, old_log_probs, cliprange, cliprange_low=cliprange_low,
                                  cliprange_high=cliprange_high)
        if response_mask is None:
            raise ValueError("loss_type='gspo' needs response_mask (its ratio is a mean over response tokens)")
        low, high = _clip_bounds(cliprange, cliprange_low, cliprange_high)
        return gspo_loss(advantages, log_probs, old_log_probs, response_mask, low, high)
    raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")


def aggregate_loss(per_token: jax.Array, mask: jax.Array, length_norm: str = "token",
                   constant: float = 0.0) -> jax.Array:
    """One number from per-token losses [batch, seq] over the response `mask` [batch, seq]; `length_norm`
    as in PGLossConfig. The same as summing per_token * `lm.align.step.loss_weights` (the form the train
    steps use, normalised over the whole batch before it is cut into microbatches)."""
    weights = loss_weights(mask, length_norm, constant)
    return jnp.sum(jnp.where(mask != 0, per_token * weights, 0.0))


def kl_penalty(log_probs: jax.Array, ref_log_probs: jax.Array) -> jax.Array:
    """Per-token estimate of KL(pi || ref) from samples of pi: exp(q - p) - (q - p) - 1 with
    p = log pi, q = log ref (Schulman's k3: unbiased, always >= 0; the GRPO paper's choice)."""
    d = jax.lax.stop_gradient(_like_log_probs(ref_log_probs, "ref_log_probs", log_probs)) - log_probs
    return jnp.expm1(d) - d  # expm1 keeps small differences accurate in float32


def overlong_penalty(lengths: np.ndarray, max_len: int, cache: int) -> np.ndarray:
    """DAPO's soft overlong punishment per response, float32 [batch] (added to the reward):
    0 up to max_len - cache tokens, then falling linearly to -1 at max_len, and -1 beyond."""
    lengths = np.asarray(lengths, np.float64)
    if not 0 < cache <= max_len:
        raise ValueError(f"overlong cache must be in [1, max_len={max_len}], got {cache}")
    ramp = (max_len - cache - lengths) / cache
    return np.where(lengths <= max_len - cache, 0.0, np.where(lengths <= max_len, ramp, -1.0)).astype(np.float32)


def truncation_mask(response_mask: jax.Array, truncated: jax.Array) -> jax.Array:
    """The response mask [batch, seq] with the rows of responses cut by the length limit (truncated,
    bool [batch] or [batch, 1]) emptied: they get no gradient (DAPO's overlong filtering)."""
    truncated = _per_sequence(truncated, "truncated", response_mask)
    return (response_mask != 0) & ~truncated.astype(bool)[:, None]


def shape_rewards(rewards: np.ndarray, lengths: np.ndarray, config: PGLossConfig, max_len: int) -> np.ndarray:
    """Rewards [batch] with the overlong penalty added when config.truncation == "penalty" (else unchanged).
    lengths: response tokens per row; max_len: the generation budget (max_new_tokens)."""
    rewards = np.asarray(rewards, np.float32)
    if config.truncation != "penalty":
        return rewards
    return rewards + overlong_penalty(lengths, max_len, min(config.overlong_cache, max_len))
