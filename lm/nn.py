"""Functional layers: the Transformer's math as pure functions of arrays, for code ported from a
course or a paper, and the one implementation `lm.model`'s modules call.

    y = linear(x, w)                                  # w [d_out, d_in], as PyTorch and CS336 store it
    y = linear(x, params["head"]["kernel"], layout="in_out")   # lm's own parameters are [d_in, d_out]
    h = embedding(ids, table)                         # table [vocab, d]
    y = swiglu(x, w1, w2, w3)                         # w2(silu(w1 x) * w3 x)
    y = rms_norm(x, weight, eps=1e-5)
    p = softmax(x, axis=-1)
    loss = cross_entropy(logits, targets)             # mean over every position; reduction="sum" | "none"
    out = scaled_dot_product_attention(q, k, v, mask) # q [..., queries, d_k]; mask True = attend

Conventions are CS336's (and PyTorch's) wherever the two libraries' conventions differ: weights
[d_out, d_in], any number of leading axes, boolean masks that are True where attention is allowed.
Inputs keep their dtype; reductions that lose too much in bfloat16 (norms, softmax, cross-entropy,
attention scores) run in float32. This module imports nothing from `lm`: it is the bottom layer.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

LAYOUTS = ("out_in", "in_out")
REDUCTIONS = ("mean", "sum", "none")
# The score a masked key gets: finite, so a query that sees no key averages every value (exp(0) / n)
# instead of producing inf - inf = NaN; lm.model.attention zeroes such rows afterwards.
MASK_VALUE = -1e30


def linear(x: jax.Array, weight: jax.Array, bias: jax.Array | None = None, *, layout: str = "out_in") -> jax.Array:
    """x [..., d_in] -> [..., d_out] in x's dtype (the weight is cast to it).

    layout "out_in": weight [d_out, d_in], y = x W^T (PyTorch, CS336); "in_out": weight [d_in, d_out],
    y = x W (Flax, and every `kernel` in lm's parameters). bias [d_out] or None.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    w = weight.astype(x.dtype)
    if w.ndim != 2 or x.shape[-1] != w.shape[1 if layout == "out_in" else 0]:
        raise ValueError(f"linear: x [..., {x.shape[-1]}] does not fit weight {tuple(weight.shape)} with layout "
                         f"{layout!r} ({'[d_out, d_in]' if layout == 'out_in' else '[d_in, d_out]'})")
    y = x @ (w.T if layout == "out_in" else w)
    return y if bias is None else y + bias.astype(y.dtype)


def embedding(ids: jax.Array, table: jax.Array) -> jax.Array:
    """Rows of table [vocab, d] for integer ids [...]: [..., d]."""
    return jnp.take(table, ids, axis=0)


def silu(x: jax.Array) -> jax.Array:
    """x * sigmoid(x), elementwise (also called swish)."""
    return x * jax.nn.sigmoid(x)


def swiglu(x: jax.Array, w1: jax.Array, w2: jax.Array, w3: jax.Array, *, layout: str = "out_in") -> jax.Array:
    """SwiGLU feed-forward, w2(silu(w1 x) * w3 x): x [..., d_model] -> [..., d_model].

    layout "out_in": w1, w3 [d_ff, d_model] and w2 [d_model, d_ff] (CS336); "in_out": the transposes.
    """
    return linear(silu(linear(x, w1, layout=layout)) * linear(x, w3, layout=layout), w2, layout=layout)


def rms_norm(x: jax.Array, weight: jax.Array, eps: float = 1e-5) -> jax.Array:
    """x [..., d] / sqrt(mean(x^2) + eps) * weight [d], computed in float32, returned in x's dtype."""
    xf = x.astype(jnp.float32)
    y = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + eps)
    return (y * weight.astype(jnp.float32)).astype(x.dtype)


def softmax(x: jax.Array, axis: int = -1) -> jax.Array:
    """Numerically stable softmax over `axis`: the max is subtracted before exponentiating."""
    x = x - jax.lax.stop_gradient(jnp.max(x, axis=axis, keepdims=True))
    e = jnp.exp(x)
    return e / jnp.sum(e, axis=axis, keepdims=True)


def cross_entropy(logits: jax.Array, targets: jax.Array, *, reduction: str = "mean") -> jax.Array:
    """Cross-entropy of integer targets [...] under logits [..., vocab], in float32.

    reduction "mean" (CS336's and PyTorch's default): the average over every leading position, a
    scalar; "sum": their total; "none": the per-position losses [...].
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if logits.shape[:-1] != targets.shape:
        raise ValueError(f"cross_entropy: targets must be logits' leading shape {tuple(logits.shape[:-1])} "
                         f"(logits [..., vocab]), got {tuple(targets.shape)}")
    logits = logits.astype(jnp.float32)
    target_logit = jnp.take_along_axis(logits, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
    losses = jax.nn.logsumexp(logits, axis=-1) - target_logit
    return {"mean": jnp.mean, "sum": jnp.sum, "none": lambda a: a}[reduction](losses)


def attention_scores(q: jax.Array, k: jax.Array, *, softcap: float = 0.0) -> jax.Array:
    """q k^T / sqrt(d_k) as float32 [..., queries, keys] (softcap * tanh(s / softcap) when softcap > 0).

    q [..., queries, d_k], k [..., keys, d_k]; leading axes broadcast (a size-1 axis of k serves every
    query head of a group). q is scaled before the product, in its own dtype.
    """
    scale = 1.0 / math.sqrt(q.shape[-1])
    s = jnp.einsum("...qd,...kd->...qk", q * jnp.asarray(scale, q.dtype), k, preferred_element_type=jnp.float32)
    return softcap * jnp.tanh(s / softcap) if softcap else s


def scaled_dot_product_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None = None, *,
                                 softcap: float = 0.0, mask_value: float = MASK_VALUE,
                                 return_probs: bool = False):
    """softmax(q k^T / sqrt(d_k) + mask) v over any number of leading axes: [..., queries, d_v].

    q [..., queries, d_k], k [..., keys, d_k], v [..., keys, d_v]; mask bool, broadcastable to
    [..., queries, keys], True where a query may attend to a key (CS336's convention; None: all).
    A query with no visible key gets the mean of the values (see MASK_VALUE). The softmax runs in
    float32, its weights are cast to v's dtype. return_probs: also the weights, float32 [..., queries, keys].
    """
    if q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2]:
        raise ValueError(f"scaled_dot_product_attention: expected q [..., queries, d_k], k [..., keys, d_k], "
                         f"v [..., keys, d_v]; got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    scores = attention_scores(q, k, softcap=softcap)
    if mask is not None:
        scores = jnp.where(mask, scores, mask_value)
    probs = softmax(scores)
    out = jnp.einsum("...qk,...kd->...qd", probs.astype(v.dtype), v)
    return (out, probs) if return_probs else out
