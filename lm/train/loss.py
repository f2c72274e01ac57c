"""Next-token cross-entropy with optional mask and z-loss."""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp


def cross_entropy(
    logits: jax.Array,
    targets: jax.Array,
    mask: Optional[jax.Array] = None,
    z_loss: float = 0.0,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Mask-weighted mean token cross-entropy, plus optional z-loss.

    Args:
      logits: [batch, seq, vocab], any float dtype; computed in float32.
      targets: [batch, seq] int ids in [0, vocab). Where ``mask`` is 0 the id
        may be anything (e.g. -100); it is replaced before indexing.
      mask: [batch, seq] bool/float weights, or None for all ones.
      z_loss: coefficient of mean(logsumexp(logits)^2) (PaLM), which keeps
        the softmax normaliser near 1 and bf16 logits from drifting.

    Returns:
      (loss [], aux) where loss = nll + z_loss term (what to differentiate)
      and aux = {"nll": [], "z_loss": [], "num_tokens": [] float32}.
      Means are over mask weight; an all-zero mask gives 0, not NaN.
    """
    logits = logits.astype(jnp.float32)
    # logsumexp subtracts the row max first, so |logits| ~ 1e4 stays finite;
    # the target logit is gathered, never a [batch, seq, vocab] one-hot.
    lse = jax.nn.logsumexp(logits, axis=-1)
    if mask is None:
        weights = jnp.ones(targets.shape, jnp.float32)
    else:
        weights = mask.astype(jnp.float32)
        targets = jnp.where(weights != 0, targets, 0)
    target_logit = jnp.take_along_axis(logits, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
    num_tokens = jnp.sum(weights)
    denom = jnp.maximum(num_tokens, 1.0)
    nll = jnp.sum((lse - target_logit) * weights) / denom
    z_term = z_loss * jnp.sum(jnp.square(lse) * weights) / denom if z_loss else jnp.zeros([], jnp.float32)
    return nll + z_term, {"nll": nll, "z_loss": z_term, "num_tokens": num_tokens}


def perplexity(mean_loss: jax.Array) -> jax.Array:
    """exp(mean per-token nll); pass ``aux["nll"]``, not a loss with z-loss added."""
    return jnp.exp(mean_loss)
