"""Shared pieces of the alignment train steps: loss weights and gradient accumulation.

Every alignment loss here is a weighted sum, loss = sum(per_token_loss * weights),
with the weights normalised over the WHOLE batch before it is cut into
microbatches. Summing the microbatches' losses and gradients then gives
exactly the full-batch loss and gradient, whatever the microbatches' token
counts (a mean of microbatch means would not).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

LENGTH_NORMS = ("token", "sequence", "constant")


def loss_weights(mask: jax.Array, length_norm: str = "token", constant: float = 0.0) -> jax.Array:
    """float32 weights [batch, seq] that sum the masked per-token loss into one number.

    "token":    sum over all response tokens / their count (every token counts the same; DAPO).
    "sequence": mean over sequences of each sequence's token mean (GRPO as published:
                a token of a short answer weighs more than one of a long answer).
    "constant": sum / (batch * constant) (Dr. GRPO: no length bias; `constant` is
                typically the generation budget, max_new_tokens).
    Sequences with no response tokens get zero weight.
    """
    m = mask.astype(jnp.float32)
    if length_norm == "token":
        return m / jnp.maximum(jnp.sum(m), 1.0)
    if length_norm == "sequence":
        per_seq = jnp.maximum(jnp.sum(m, axis=-1, keepdims=True), 1.0)
        return m / per_seq / m.shape[0]
    if length_norm == "constant":
        if constant <= 0:
            raise ValueError(f"length_norm='constant' needs a positive constant (e.g. max_new_tokens), got {constant}")
        return m / (m.shape[0] * constant)
    raise ValueError(f"length_norm must be one of {LENGTH_NORMS}, got {length_norm!r}")


def split_microbatches(batch, n: int):
    """Every leaf [batch, ...] -> [n, batch // n, ...]."""
    def cut(x):
        if x.shape[0] % n:
            raise ValueError(f"batch of {x.shape[0]} rows does not split into {n} equal microbatches; "
                             "make the batch size a multiple of grad_accum")
        return x.reshape(n, x.shape[0] // n, *x.shape[1:])
    return jax.tree.map(cut, batch)


def accumulate(loss_fn: Callable, params, batch, microbatches: int):
    """(loss, metrics, grads) of `loss_fn(params, batch) -> (loss, metrics)` over `microbatches`
    microbatches run one after another (lax.scan). Losses and gradients are SUMMED (the weights
    inside `batch` already normalise over the whole batch); metrics are averaged."""
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    if microbatches == 1:
        (loss, metrics), grads = grad_fn(params, batch)
        return loss, metrics, grads
    micro = split_microbatches(batch, microbatches)

    def body(carry, mb):
        (loss, metrics), grads = grad_fn(params, mb)
        return jax.tree.map(jnp.add, carry, (loss, metrics, grads)), None

    first = jax.tree.map(lambda x: x[0], micro)
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(grad_fn, params, first))
    zeros = (zeros[0][0], zeros[0][1], zeros[1])
    (loss, metrics, grads), _ = jax.lax.scan(body, zeros, micro)
    return loss, jax.tree.map(lambda m: m / microbatches, metrics), grads
