"""Next-token cross-entropy with optional mask and z-loss, from logits or fused with the output projection."""

from __future__ import annotations

import functools
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np


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


def chunk_length(batch: int, seq: int, chunk_tokens: int) -> int:
    """Sequence positions per chunk: the largest divisor of `seq` with batch * length <= chunk_tokens (>= 1)."""
    best = 1
    for length in range(1, seq + 1):
        if seq % length == 0 and batch * length <= chunk_tokens:
            best = length
    return best


def linear_cross_entropy(
    x: jax.Array,
    w: jax.Array,
    targets: jax.Array,
    mask: Optional[jax.Array] = None,
    z_loss: float = 0.0,
    *,
    vocab_major: bool = False,
    chunk_tokens: int = 512,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """`cross_entropy(x @ w, ...)` without ever holding the [batch, seq, vocab] logits.

    The output projection and the loss run over chunks of the sequence, and the
    forward pass also produces the loss's gradients with respect to x and w
    (the loss is the end of the graph, so its cotangent is a scalar that the
    backward pass only has to scale). Each chunk's logits stay in cache, and
    the backward pass neither recomputes them nor reads a full logit gradient.
    On this repository's CPU benchmark it is the cheaper head (see
    benchmarks/RESULTS.md); on an accelerator it saves the logits' memory.

    Args:
      x: [batch, seq, d_model] final hidden states (after the final norm).
      w: [d_model, vocab] output projection, or [vocab, d_model] with
        `vocab_major=True` (a tied embedding table).
      targets, mask, z_loss: as in `cross_entropy`.
      chunk_tokens: about how many tokens' logits exist at once.

    Returns:
      (loss [], aux), equal to `cross_entropy`'s. Only `loss` carries a
      gradient; the aux values are for logging.
    """
    b, s, _ = x.shape
    weights = jnp.ones(targets.shape, jnp.float32) if mask is None else mask.astype(jnp.float32)
    targets = jnp.where(weights != 0, targets, 0).astype(jnp.int32)
    num_tokens = jnp.sum(weights)
    # The scale of each token's loss term is fixed before the loop, so the
    # forward pass can already form d(loss)/d(logits) chunk by chunk.
    scale = weights / jnp.maximum(num_tokens, 1.0)
    loss, nll, z_term = _linear_ce(x, w, targets, scale, float(z_loss), bool(vocab_major),
                                   chunk_length(b, s, chunk_tokens))
    aux = {"nll": jax.lax.stop_gradient(nll), "z_loss": jax.lax.stop_gradient(z_term), "num_tokens": num_tokens}
    return loss, aux


def _chunks(a: jax.Array, length: int) -> jax.Array:
    """[batch, seq, ...] -> [seq / length, batch, length, ...]."""
    b, s = a.shape[:2]
    return jnp.moveaxis(a.reshape(b, s // length, length, *a.shape[2:]), 1, 0)


def _unchunk(a: jax.Array) -> jax.Array:
    n, b, length = a.shape[:3]
    return jnp.moveaxis(a, 0, 1).reshape(b, n * length, *a.shape[3:])


def _chunk_logits(xc, w, vocab_major):
    spec = "bcd,vd->bcv" if vocab_major else "bcd,dv->bcv"
    return jnp.einsum(spec, xc, w, preferred_element_type=jnp.float32)


def _linear_ce_sums(x, w, targets, scale, z_loss, vocab_major, length, with_grads):
    """(nll, z_term, dx, dw): the scaled sums, and their gradients when `with_grads`."""
    xs = (_chunks(x, length), _chunks(targets, length), _chunks(scale, length))

    def chunk_sums(chunk):
        xc, tc, sc = chunk
        logits = _chunk_logits(xc, w, vocab_major)  # [batch, length, vocab]
        m = jnp.max(logits, axis=-1, keepdims=True)
        e = jnp.exp(logits - m)
        total = jnp.sum(e, axis=-1, keepdims=True)
        lse = (m + jnp.log(total))[..., 0]
        target_logit = jnp.take_along_axis(logits, tc[..., None], axis=-1)[..., 0]
        sums = (jnp.sum((lse - target_logit) * sc), jnp.sum(jnp.square(lse) * sc))
        if not with_grads:
            return sums, None, None
        # d/dlogits of sc * (lse - logit[t] + z * lse^2) = sc * ((1 + 2 z lse) softmax - onehot(t))
        coef = (sc * (1.0 + 2.0 * z_loss * lse))[..., None] / total
        hit = jax.lax.broadcasted_iota(jnp.int32, logits.shape, 2) == tc[..., None]
        dlogits = jnp.where(hit, e * coef - sc[..., None], e * coef).astype(x.dtype)
        dxc = jnp.einsum("bcv,vd->bcd" if vocab_major else "bcv,dv->bcd", dlogits, w.astype(x.dtype))
        operands = (dlogits, xc) if vocab_major else (xc, dlogits)
        dwc = jnp.einsum("bcv,bcd->vd" if vocab_major else "bcd,bcv->dv", *operands,
                         preferred_element_type=jnp.float32)
        return sums, dxc, dwc

    def body(dw, chunk):
        sums, dxc, dwc = chunk_sums(chunk)
        return (None if dwc is None else dw + dwc), (sums, dxc)

    # The first chunk starts the weight-gradient sum outside the loop, so the carry has the
    # chunks' own type (under shard_map it varies over the data axis, as zeros would not).
    first_sums, first_dx, dw = chunk_sums(jax.tree.map(lambda a: a[0], xs))
    dw, (sums, dx) = jax.lax.scan(body, dw, jax.tree.map(lambda a: a[1:], xs))
    nll, z_sum = (f + jnp.sum(r) for f, r in zip(first_sums, sums))
    z_term = z_loss * z_sum if z_loss else jnp.zeros([], jnp.float32)
    dx = _unchunk(jnp.concatenate([first_dx[None], dx])) if with_grads else None
    return nll, z_term, dx, dw


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6))
def _linear_ce(x, w, targets, scale, z_loss, vocab_major, length):
    nll, z_term, _, _ = _linear_ce_sums(x, w, targets, scale, z_loss, vocab_major, length, with_grads=False)
    return nll + z_term, nll, z_term


def _linear_ce_fwd(x, w, targets, scale, z_loss, vocab_major, length):
    nll, z_term, dx, dw = _linear_ce_sums(x, w, targets, scale, z_loss, vocab_major, length, with_grads=True)
    return (nll + z_term, nll, z_term), (dx, dw.astype(w.dtype), targets, scale)


def _linear_ce_bwd(z_loss, vocab_major, length, res, cotangents):
    dx, dw, targets, scale = res
    g = cotangents[0]  # nll and z_term leave through stop_gradient, so only the loss is differentiated
    zero_targets = np.zeros(targets.shape, jax.dtypes.float0)
    return (g * dx).astype(dx.dtype), (g * dw).astype(dw.dtype), zero_targets, jnp.zeros_like(scale)


_linear_ce.defvjp(_linear_ce_fwd, _linear_ce_bwd)
