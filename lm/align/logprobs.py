"""Per-token log-probabilities, entropy and masked reductions: the pieces every alignment loss uses.

    out = response_logprobs(params, config, batch["input_ids"], batch["labels"], with_entropy=True)
    out["log_probs"]   # [batch, seq]: log p(labels[:, t] | input_ids[:, :t + 1])
    masked_mean(out["log_probs"], batch["response_mask"], axis=1)   # per-sequence mean over the response

All functions are pure and jit-friendly. Masks are bool or 0/1 arrays that
broadcast against the values; reductions ignore masked-out entries even when
they hold inf or NaN (padding logits can be anything).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from lm.model import ModelConfig, forward


def masked_sum(x: jax.Array, mask: jax.Array, axis: int | tuple[int, ...] | None = None) -> jax.Array:
    """Sum of `x` where `mask` is true, over `axis` (None: all axes)."""
    mask = jnp.broadcast_to(mask, x.shape)
    return jnp.sum(jnp.where(mask != 0, x, 0), axis=axis)


def masked_mean(x: jax.Array, mask: jax.Array, axis: int | tuple[int, ...] | None = None) -> jax.Array:
    """Mean of `x` over the entries where `mask` is true, along `axis`; 0 (not NaN) where none are."""
    count = masked_sum(jnp.ones_like(x), mask, axis)
    return masked_sum(x, mask, axis) / jnp.maximum(count, 1)


def masked_normalize(x: jax.Array, mask: jax.Array, constant: float,
                     axis: int | tuple[int, ...] | None = None) -> jax.Array:
    """Masked sum divided by a fixed `constant` (Dr. GRPO's length normalisation: the same
    divisor for every sequence, so long and short answers are weighted alike per token)."""
    return masked_sum(x, mask, axis) / constant


def token_entropy(logits: jax.Array) -> jax.Array:
    """Entropy in nats of softmax(logits) over the last axis: [..., vocab] -> [...].

    Uses H = logsumexp(z) - sum(softmax(z) * z), which never takes log(0).
    """
    logits = logits.astype(jnp.float32)
    lse = jax.nn.logsumexp(logits, axis=-1)
    probs = jax.nn.softmax(logits, axis=-1)
    # 0 * -inf = NaN, so filtered (-inf) logits contribute nothing explicitly.
    return lse - jnp.sum(jnp.where(probs > 0, probs * logits, 0.0), axis=-1)


def gather_logprobs(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """log softmax(logits)[labels]: logits [..., vocab], int labels [...] -> float32 [...]."""
    logits = logits.astype(jnp.float32)
    labels = jnp.clip(labels, 0, logits.shape[-1] - 1).astype(jnp.int32)  # padding labels may be -1
    picked = jnp.take_along_axis(logits, labels[..., None], axis=-1)[..., 0]
    return picked - jax.nn.logsumexp(logits, axis=-1)


def response_logprobs(params, config: ModelConfig, input_ids: jax.Array, labels: jax.Array,
                      with_entropy: bool = False, temperature: float = 1.0) -> dict[str, jax.Array]:
    """{"log_probs": [batch, seq]} (and "entropy": [batch, seq]) of next tokens under the model.

    input_ids, labels: int [batch, seq], labels = input_ids shifted left by one
    (see `lm.align.data.tokenize_pairs`). Log-probs are taken from logits / temperature,
    matching the distribution samples were drawn from.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 for log-probabilities, got {temperature}")
    logits = forward(params, input_ids, config)
    if temperature != 1.0:
        logits = logits / temperature
    out = {"log_probs": gather_logprobs(logits, labels)}
    if with_entropy:
        out["entropy"] = token_entropy(logits)
    return out


def sequence_logprobs(params, config: ModelConfig, batch: dict) -> jax.Array:
    """Summed response log-probability per sequence [batch] (what DPO compares)."""
    lp = response_logprobs(params, config, batch["input_ids"], batch["labels"])["log_probs"]
    return masked_sum(lp, batch["response_mask"], axis=-1)
