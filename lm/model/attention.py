"""One attention entry point for training, the KV-cache decoder and the segment scorer.

    out = attention(q, k, v)                                   # causal by index
    out = attention(q, k, v, q_segments=seg, k_segments=seg)   # packed documents: no attention across them
    out = attention(q, k, v, q_positions=qp, k_positions=kp, k_valid=valid, impl="xla")   # a cache
    out, lse = attention(q, k, v, ..., return_lse=True)        # parts of one softmax, merged by `merge`

q [batch, q_len, heads, head_dim]; k, v [batch, k_len, kv_heads, head_dim] (grouped-query
attention when kv_heads < heads: query head i reads key head i // (heads // kv_heads)).

Which keys a query sees (`visible`, the one definition every implementation follows): key j is
visible to query i when k_valid[j], when segment(j) == segment(i), when pos(j) <= pos(i)
(causal) and, with a window w > 0, when pos(i) - pos(j) < w. Positions default to the indices
0..q_len-1 and 0..k_len-1. A query that sees no key outputs 0.

Implementations (`impl`):
    xla      the full score matrix in plain XLA, with a written-out gradient; the reference
    blocked  causal attention by index that skips key blocks no query in a block can see: the
             CPU training path (positions must be the indices; otherwise it is `xla`)
    pallas   the FlashAttention-2 kernel in lm/kernels/ (interpreted on CPU: exact, slow)
    cudnn    `jax.nn.dot_product_attention(implementation="cudnn")` (GPU, bf16/fp16)
    auto     cudnn on a GPU when it supports the call, xla on other accelerators, blocked on a CPU
             (`resolve_impl`)
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from lm.kernels.masking import MASK_VALUE
from lm.nn import attention_scores, scaled_dot_product_attention

IMPLS = ("auto", "xla", "blocked", "pallas", "cudnn")


def visible(q_pos: jax.Array, k_pos: jax.Array, *, causal: bool = True, window: int = 0,
            k_valid: jax.Array | None = None, q_segments: jax.Array | None = None,
            k_segments: jax.Array | None = None) -> jax.Array:
    """Boolean [batch, q_len, k_len]: key k visible to query q. q_pos [batch or 1, q_len], k_pos
    [batch or 1, k_len] int; k_valid bool [batch, k_len]; segments int [batch, q_len] / [batch, k_len]."""
    q_pos, k_pos = q_pos[:, :, None], k_pos[:, None, :]
    allowed = jnp.ones(jnp.broadcast_shapes(q_pos.shape, k_pos.shape), bool)
    if causal:
        allowed = allowed & (k_pos <= q_pos)
    if window:
        allowed = allowed & (q_pos - k_pos < window)
    if k_valid is not None:
        allowed = allowed & k_valid[:, None, :]
    if q_segments is not None:
        allowed = allowed & (q_segments[:, :, None] == k_segments[:, None, :])
    return allowed


def resolve_impl(impl: str, dtype, *, index_positions: bool, softcap: float = 0.0, head_dim: int = 64) -> str:
    """The implementation `impl` names on this backend. `auto` is cudnn on an NVIDIA GPU where cuDNN
    takes the call (bf16/fp16, head_dim <= 128, no softcap) and xla on other accelerators; on a CPU
    it is blocked (which is xla unless positions are the indices)."""
    if impl not in IMPLS:
        raise ValueError(f"attention impl {impl!r} is not one of {IMPLS}")
    if impl == "auto":
        backend = jax.default_backend()
        cudnn_ok = jnp.dtype(dtype) in (jnp.bfloat16, jnp.float16) and head_dim <= 128 and not softcap
        impl = "blocked" if backend == "cpu" else ("cudnn" if backend in ("gpu", "cuda") and cudnn_ok else "xla")
    if impl == "blocked" and not index_positions:
        return "xla"
    return impl


def attention(q: jax.Array, k: jax.Array, v: jax.Array, *, q_positions: jax.Array | None = None,
              k_positions: jax.Array | None = None, q_segments: jax.Array | None = None,
              k_segments: jax.Array | None = None, k_valid: jax.Array | None = None, window: int = 0,
              causal: bool = True, impl: str = "auto", softcap: float = 0.0, return_lse: bool = False):
    """Attention softmax(q k^T / sqrt(head_dim) [softcapped] + mask) v: [batch, q_len, heads, head_dim].

    q_positions [batch or 1, q_len], k_positions [batch or 1, k_len]: positions for the causal and
    window masks (default: the indices; pass both or neither). q_segments [batch, q_len],
    k_segments [batch, k_len]: document ids, no attention across them. k_valid bool [batch, k_len]:
    False hides a key (padding). softcap > 0: scores become softcap * tanh(scores / softcap).
    return_lse (xla only): also the natural log-sum-exp of each query's visible scores, float32
    [batch, q_len, heads] (-inf where nothing is visible), so `merge` can join attention over parts.
    """
    _check(q, k, v, q_positions, k_positions, q_segments, k_segments, k_valid)
    index = q_positions is None
    impl = resolve_impl(impl, q.dtype, index_positions=index, softcap=softcap, head_dim=q.shape[-1])
    if return_lse and impl != "xla":
        raise ValueError(f"return_lse is computed by impl='xla' only, not {impl!r}")
    if impl == "pallas":
        if not causal and window:
            raise ValueError("a sliding window needs causal attention")
        from lm.kernels.flash_attention import flash_attention  # Pallas is imported only when asked for

        return flash_attention(q, k, v, causal=causal, window=window, k_valid=k_valid, q_positions=q_positions,
                               k_positions=k_positions, q_segments=q_segments, k_segments=k_segments,
                               logit_softcap=float(softcap))
    if impl == "cudnn":
        return _cudnn(q, k, v, q_positions, k_positions, q_segments, k_segments, k_valid, window, causal, softcap)
    if impl == "blocked" and causal and q.shape[1] == k.shape[1]:
        return _blocked(q, k, v, window, k_valid, q_segments, k_segments, softcap)
    qp = jnp.arange(q.shape[1], dtype=jnp.int32)[None] if index else q_positions
    kp = jnp.arange(k.shape[1], dtype=jnp.int32)[None] if index else k_positions
    mask = visible(qp, kp, causal=causal, window=window, k_valid=k_valid, q_segments=q_segments,
                   k_segments=k_segments)[:, None, None]  # [b, 1, 1, t, s]: over kv heads and groups
    qh, kh, vh = _head_major(q, k, v)
    if return_lse:
        out, lse = _attention_plain(qh, kh, vh, mask, softcap)
        return _token_major(out), _token_major(lse[..., None])[..., 0]
    out = _attention(qh, kh, vh, mask, float(softcap))
    if not (index and k_valid is None and q_segments is None):  # only data-dependent masks can hide every key
        out = out * jnp.any(mask, axis=-1, keepdims=True).astype(out.dtype)
    return _token_major(out)


def merge(parts: list[tuple[jax.Array, jax.Array]]) -> jax.Array:
    """One softmax over several key sets from their separate results [(out [b, t, h, d], lse [b, t, h])]."""
    lses = jnp.stack([lse for _, lse in parts])
    top = jnp.max(lses, axis=0)
    top = jnp.where(jnp.isfinite(top), top, 0.0)
    weights = jnp.exp(lses - top)  # [parts, b, t, h]; 0 for parts a query sees nothing of
    total = jnp.sum(weights, axis=0)
    out = sum(w[..., None] * o.astype(jnp.float32) for w, (o, _) in zip(weights, parts))
    return (out / jnp.where(total > 0, total, 1.0)[..., None]).astype(parts[0][0].dtype)


def _check(q, k, v, q_positions, k_positions, q_segments, k_segments, k_valid):
    if q.ndim != 4 or k.ndim != 4 or k.shape != v.shape:
        raise ValueError(f"expected q [batch, q_len, heads, head_dim] and k, v [batch, k_len, kv_heads, head_dim], "
                         f"got {q.shape}, {k.shape}, {v.shape}")
    if q.shape[3] != k.shape[3] or q.shape[2] % k.shape[2]:
        raise ValueError(f"q {q.shape} and k {k.shape} must share head_dim, and heads must be a multiple of kv_heads")
    if (q_positions is None) != (k_positions is None):
        raise ValueError("pass both q_positions and k_positions, or neither")
    if (q_segments is None) != (k_segments is None):
        raise ValueError("pass both q_segments and k_segments, or neither")
    if k_valid is not None and k_valid.shape != k.shape[:2]:
        raise ValueError(f"k_valid must be [batch, k_len] = {k.shape[:2]}, got {k_valid.shape}")


# ----------------------------------------------------------------- xla and blocked
# Attention runs head-major: with [batch, kv_heads, ...] leading, every product below is a plain
# batched matmul, where the token-major layout made XLA transpose q, k and v for each one
# (25-30% of attention's time on CPU, benchmarks/RESULTS.md).
def _head_major(q, k, v):
    """q [b, t, heads, hd] -> [b, kv, groups, t, hd]; k, v [b, s, kv, hd] -> [b, kv, s, hd]."""
    b, t, h, hd = q.shape
    kv = k.shape[2]
    qh = q.reshape(b, t, kv, h // kv, hd).transpose(0, 2, 3, 1, 4)
    return qh, k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)


def _token_major(out):
    """[b, kv, groups, t, hd] -> [b, t, heads, hd]."""
    b, kv, g, t, hd = out.shape
    return out.transpose(0, 3, 1, 2, 4).reshape(b, t, kv * g, hd)


def _scores(qh, kh, softcap):
    """Scaled (and softcapped) scores float32 [b, kv, g, t, s]; k's size-1 group axis serves every group."""
    return attention_scores(qh, kh[:, :, None], softcap=softcap)


def _attention_plain(qh, kh, vh, mask, softcap):
    """(out [b, kv, g, t, hd], lse float32 [b, kv, g, t]) by autodiff-able jnp: the merge path."""
    scores = jnp.where(mask, _scores(qh, kh, softcap), -jnp.inf)
    top = jnp.max(scores, axis=-1, keepdims=True)
    top = jnp.where(jnp.isfinite(top), top, 0.0)
    e = jnp.exp(scores - jax.lax.stop_gradient(top))
    total = jnp.sum(e, axis=-1, keepdims=True)
    out = jnp.einsum("bkgts,bksd->bkgtd", (e / jnp.where(total > 0, total, 1.0)).astype(vh.dtype), vh)
    return out, (jnp.log(total) + top)[..., 0]


# The gradient is written out rather than left to autodiff: it reuses the forward's probabilities
# and takes the softmax backward from rowsum(dout * out) over [t, hd] instead of
# rowsum(dprobs * probs) over [t, s].
@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _attention(qh, kh, vh, mask, softcap: float):
    """Head-major attention: qh [b, kv, g, t, hd], kh, vh [b, kv, s, hd] -> [b, kv, g, t, hd]."""
    return _attention_fwd(qh, kh, vh, mask, softcap)[0]


def _attention_fwd(qh, kh, vh, mask, softcap):
    out, probs = scaled_dot_product_attention(qh, kh[:, :, None], vh[:, :, None], mask, softcap=softcap,
                                              mask_value=MASK_VALUE, return_probs=True)
    return out, (qh, kh, vh, mask, probs, out)


def _attention_bwd(softcap, res, dout):
    qh, kh, vh, mask, probs, out = res
    scale = 1.0 / math.sqrt(qh.shape[-1])
    dv = jnp.einsum("bkgts,bkgtd->bksd", probs.astype(dout.dtype), dout)
    dprobs = jnp.einsum("bkgtd,bksd->bkgts", dout, vh, preferred_element_type=jnp.float32)
    # softmax backward: dscores = p * (dp - sum_s p dp), and sum_s p dp = sum_d dout * out.
    delta = jnp.einsum("bkgtd,bkgtd->bkgt", dout.astype(jnp.float32), out.astype(jnp.float32))
    dscores = probs * (dprobs - delta[..., None])
    if softcap:  # d(c tanh(s / c)) / ds = 1 - tanh^2, recomputed rather than stored
        t = jnp.tanh(jnp.einsum("bkgtd,bksd->bkgts", qh, kh, preferred_element_type=jnp.float32) * scale / softcap)
        dscores = dscores * (1.0 - t * t)
    dscores = (dscores * scale).astype(qh.dtype)
    dq = jnp.einsum("bkgts,bksd->bkgtd", dscores, kh)
    dk = jnp.einsum("bkgts,bkgtd->bksd", dscores, qh).astype(kh.dtype)
    return dq, dk, dv, np.zeros(mask.shape, jax.dtypes.float0)


_attention.defvjp(_attention_fwd, _attention_bwd)


def _blocked(q, k, v, window, k_valid, q_segments, k_segments, softcap):
    """Causal attention by index, skipping key blocks that no query in a block can see.

    Queries go in blocks and each block only scores the keys up to its last query (and from its
    first window start), so a causal layer does a bit over half the work of the full score matrix.
    On CPU this is the largest single saving in the training step (see benchmarks/RESULTS.md).
    """
    t = q.shape[1]
    block = max(64, -(-t // 8))  # at most 8 blocks, so long contexts do not unroll into huge graphs
    qh, kh, vh = _head_major(q, k, v)
    hide_rows = k_valid is not None or q_segments is not None
    outs = []
    for start in range(0, t, block):
        end = min(start + block, t)
        k_start = max(0, start - window + 1) if window else 0
        q_idx, k_idx = jnp.arange(start, end)[None], jnp.arange(k_start, end)[None]
        mask = visible(q_idx, k_idx, window=window,
                       k_valid=None if k_valid is None else k_valid[:, k_start:end],
                       q_segments=None if q_segments is None else q_segments[:, start:end],
                       k_segments=None if k_segments is None else k_segments[:, k_start:end])[:, None, None]
        out = _attention(qh[:, :, :, start:end], kh[:, :, k_start:end], vh[:, :, k_start:end], mask, float(softcap))
        if hide_rows:
            out = out * jnp.any(mask, axis=-1, keepdims=True).astype(out.dtype)
        outs.append(out)
    return _token_major(jnp.concatenate(outs, axis=3))


# ----------------------------------------------------------------- cudnn
def _cudnn(q, k, v, q_positions, k_positions, q_segments, k_segments, k_valid, window, causal, softcap,
           implementation: str | None = "cudnn"):
    """`jax.nn.dot_product_attention` with our masks. Causal-by-index and window calls use cuDNN's own
    masks; positions, segments and padding go in as a dense boolean mask (cuDNN adds it as a bias).
    `implementation=None` runs the same call on XLA, which is how CPU tests check the arguments."""
    if softcap:
        raise ValueError("attention softcap is not supported by cuDNN; use attention_impl='pallas' or 'xla'")
    if implementation == "cudnn" and jax.default_backend() not in ("gpu", "cuda"):
        raise ValueError(f"attention_impl='cudnn' needs an NVIDIA GPU (this backend is {jax.default_backend()!r}); "
                         "use 'auto' to pick an implementation for the device")
    if implementation == "cudnn" and q.dtype not in (jnp.bfloat16, jnp.float16):
        raise ValueError(f"cuDNN attention needs bfloat16 or float16 inputs, got {q.dtype}; set "
                         "ModelConfig.dtype='bfloat16' or use attention_impl='xla'")
    dense = q_positions is not None or q_segments is not None or k_valid is not None
    if not dense:
        local = (window - 1, 0) if window else None
        return jax.nn.dot_product_attention(q, k, v, is_causal=causal, local_window_size=local,
                                            implementation=implementation)
    index = q_positions is None
    qp = jnp.arange(q.shape[1], dtype=jnp.int32)[None] if index else q_positions
    kp = jnp.arange(k.shape[1], dtype=jnp.int32)[None] if index else k_positions
    mask = visible(qp, kp, causal=causal, window=window, k_valid=k_valid, q_segments=q_segments,
                   k_segments=k_segments)
    mask = jnp.broadcast_to(mask, (q.shape[0], *mask.shape[1:]))[:, None]  # [b, 1, t, s]
    out = jax.nn.dot_product_attention(q, k, v, mask=mask, implementation=implementation)
    return out * jnp.any(mask[:, 0], axis=-1)[..., None, None].astype(out.dtype)
