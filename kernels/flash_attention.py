"""FlashAttention-2 in Pallas: tiled attention that never materialises the [t, s] score matrix.

    out = flash_attention(q, k, v)                      # causal, scale 1/sqrt(head_dim)
    out = flash_attention(q, k, v, causal=False, k_valid=mask, block_sizes=BlockSizes(128, 64))
    ref = reference_attention(q, k, v)                  # the same thing in plain jnp

q [batch, t, heads, head_dim]; k, v [batch, s, kv_heads, head_dim] (grouped-query attention
when kv_heads < heads, query head i reading key head i // (heads // kv_heads)).

The forward kernel walks one query block over the key blocks with an online softmax in base 2,
skipping key blocks that causal (and sliding-window) masking hides entirely, and saves the
log-sum-exp. The backward pass recomputes the probabilities from it in two kernels: dK/dV
(one program per key block, looping over query blocks of every query head in its group)
and dQ (one program per query block), after the delta = rowsum(dO * O) preprocessing.
`jax.custom_vjp` ties them together. Lengths that are not multiples of the block size and
head dims that are not powers of two are zero-padded here and masked in the kernels.

The softmax scale is an argument. A Python float (or None: 1/sqrt(head_dim)) is compiled into
the kernels. A jax array is instead multiplied into q before the kernels, so autodiff of that
multiply turns the kernels' dq into d(scale) = <dq_scaled, q>; this is how d(scale) is
checked in tests/kernels.

Backends. On a GPU the kernels compile with Pallas's Triton backend, chosen explicitly with
`pallas.triton.CompilerParams` because jax 0.10 already defaults Pallas on GPU to Mosaic GPU.
jax 0.11 deprecates that Triton backend (still shipped, to be removed in a later release) in
favour of Mosaic GPU, which targets Hopper and later only and has a different programming
model (warpgroup `plgpu.kernel`s, explicit shared-memory pipelining with barriers, no masked
pointer loads). The path forward, in order: keep this kernel as the portable baseline while
the Triton backend ships (nothing here is specific to 0.10 or 0.11); port forward and backward
to a Mosaic GPU kernel with the same tiling, base-2 online softmax and LSE residual, so that
`reference_attention`, the custom_vjp wiring and tests/kernels carry over unchanged; or, to
stay on Triton after the removal, write the kernel in Triton itself and call it through
jax-triton, as kernels/rms_norm_triton.py does for RMSNorm. On CPU the kernels run in Pallas
interpret mode (slow, exact): that is how they are tested on machines without a GPU.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from kernels.flash_kernels import FAR, BlockSizes, Static, backward, forward

__all__ = ["BlockSizes", "flash_attention", "reference_attention", "default_block_sizes", "default_interpret"]


def default_interpret() -> bool:
    """Interpret on CPU; compile on GPU. Other platforms have no backend for these kernels."""
    backend = jax.default_backend()
    if backend not in ("cpu", "gpu", "cuda", "rocm"):
        raise NotImplementedError(f"the Pallas Triton kernels run on GPU (or interpreted on CPU), not {backend!r}")
    return backend == "cpu"


def default_block_sizes(head_dim: int, interpret: bool) -> BlockSizes:
    if interpret:  # every grid step is a loop iteration on CPU: fewer, larger blocks are faster
        return BlockSizes(128, 128, 128, 128)
    big = head_dim > 64  # registers: wider heads need more warps or smaller tiles
    return BlockSizes(block_q=128, block_k=64, block_q_bwd=64, block_k_bwd=64,
                      num_warps=8 if big else 4, num_stages=2 if big else 3)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _flash(q, k, v, pos, st: Static):
    return forward(q, k, v, pos, st)[0]


def _flash_fwd(q, k, v, pos, st):
    o, lse = forward(q, k, v, pos, st)
    return o, (q, k, v, pos, o, lse)


def _flash_bwd(st, res, do):
    q, k, v, pos, o, lse = res
    dq, dk, dv = backward(q, k, v, pos, o, lse, do, st)
    return dq.astype(q.dtype), dk, dv, None


_flash.defvjp(_flash_fwd, _flash_bwd)


def _pad_axis(x, axis: int, size: int, value=0):
    if x.shape[axis] == size:
        return x
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, size - x.shape[axis])
    return jnp.pad(x, widths, constant_values=value)


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def _check(q, k, v, causal, window, k_valid, q_positions, k_positions):
    if q.ndim != 4 or k.shape != v.shape or k.ndim != 4:
        raise ValueError(f"expected q [b, t, heads, d] and k, v [b, s, kv_heads, d], "
                         f"got {q.shape}, {k.shape}, {v.shape}")
    if q.shape[0] != k.shape[0] or q.shape[3] != k.shape[3] or q.shape[2] % k.shape[2]:
        raise ValueError(f"q {q.shape} and k {k.shape} must share batch and head_dim, and heads must be a "
                         "multiple of kv_heads")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if window and not causal:
        raise ValueError("a sliding window needs causal=True")
    if (q_positions is None) != (k_positions is None):
        raise ValueError("pass both q_positions and k_positions, or neither")
    if k_valid is not None and k_valid.shape != k.shape[:2]:
        raise ValueError(f"k_valid must be [batch, s] = {k.shape[:2]}, got {k_valid.shape}")


def flash_attention(q: jax.Array, k: jax.Array, v: jax.Array, scale=None, *, causal: bool = True,
                    window: int = 0, k_valid: jax.Array | None = None, q_positions: jax.Array | None = None,
                    k_positions: jax.Array | None = None, block_sizes: BlockSizes | None = None,
                    interpret: bool | None = None) -> jax.Array:
    """Attention softmax(scale * q k^T + mask) v, [b, t, heads, d], in q's dtype (float32 accumulation).

    causal: key j visible to query i iff pos(j) <= pos(i); window > 0 also needs pos(i) - pos(j) < window.
    k_valid: bool [b, s], False hides a key (padding). q_positions [b, t], k_positions [b, s]: int
    positions for the masks (default: the indices 0..t-1, 0..s-1; with explicit positions no block
    can be skipped, since the kernel cannot know they are ordered). A query that sees no key outputs 0.
    scale: None (1/sqrt(d)), a Python float (compiled in), or an array (differentiable).
    interpret: None chooses by backend (interpret on CPU).
    """
    _check(q, k, v, causal, window, k_valid, q_positions, k_positions)
    b, t, h, d = q.shape
    s = k.shape[1]
    interpret = default_interpret() if interpret is None else interpret
    blocks = block_sizes or default_block_sizes(d, interpret)
    if scale is None or isinstance(scale, (int, float)):
        static_scale = 1.0 / math.sqrt(d) if scale is None else float(scale)
    else:  # traced: scale q outside the kernels so that autodiff gives d(scale) from dq
        q, static_scale = (q.astype(jnp.float32) * scale).astype(q.dtype), 1.0

    dp = max(16, 1 << (d - 1).bit_length())  # Triton tiles need power-of-two sizes >= 16
    tp = _round_up(t, max(blocks.block_q, blocks.block_q_bwd))
    sp = _round_up(s, max(blocks.block_k, blocks.block_k_bwd))
    qp = _pad_axis(_pad_axis(q, 3, dp), 1, tp)
    kp, vp = (_pad_axis(_pad_axis(x, 3, dp), 1, sp) for x in (k, v))

    explicit = q_positions is not None
    if explicit or k_valid is not None:
        if not explicit:
            q_positions = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
            k_positions = jnp.broadcast_to(jnp.arange(s, dtype=jnp.int32), (b, s))
        kpos = k_positions.astype(jnp.int32)
        if k_valid is not None:
            kpos = jnp.where(k_valid, kpos, FAR)
        # Padded queries sit at -1 (they see nothing), padded keys at FAR (nobody sees them).
        pos = (_pad_axis(q_positions.astype(jnp.int32), 1, tp, -1), _pad_axis(kpos, 1, sp, FAR))
    else:
        pos = ()
    st = Static(scale=static_scale, causal=causal, window=int(window), kv_len=s, has_pos=bool(pos),
                skip=not explicit, blocks=blocks, interpret=bool(interpret))
    return _flash(qp, kp, vp, pos, st)[:, :t, :, :d]


def reference_attention(q, k, v, scale=None, *, causal: bool = True, window: int = 0, k_valid=None,
                        q_positions=None, k_positions=None) -> jax.Array:
    """`flash_attention` in plain jnp (float32 math, full score matrix); same arguments and conventions."""
    _check(q, k, v, causal, window, k_valid, q_positions, k_positions)
    b, t, h, d = q.shape
    s, kvh = k.shape[1], k.shape[2]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    qp = jnp.arange(t)[None, :] if q_positions is None else q_positions
    kp = jnp.arange(s)[None, :] if k_positions is None else k_positions
    visible = jnp.ones((b, t, s), bool) if k_valid is None else jnp.broadcast_to(k_valid[:, None, :], (b, t, s))
    if causal:
        visible = visible & (kp[:, None, :] <= qp[:, :, None])
    if window:
        visible = visible & (qp[:, :, None] - kp[:, None, :] < window)
    qg = q.astype(jnp.float32).reshape(b, t, kvh, h // kvh, d)
    logits = jnp.einsum("btkgd,bskd->bkgts", qg, k.astype(jnp.float32)) * scale
    mask = visible[:, None, None]
    logits = jnp.where(mask, logits, -jnp.inf)
    m = jnp.max(logits, axis=-1, keepdims=True)
    p = jnp.where(mask, jnp.exp(logits - jnp.where(jnp.isfinite(m), m, 0.0)), 0.0)
    p = p / jnp.maximum(jnp.sum(p, axis=-1, keepdims=True), 1e-30)  # rows with no visible key give 0
    out = jnp.einsum("bkgts,bskd->btkgd", p, v.astype(jnp.float32))
    return out.reshape(b, t, h, d).astype(q.dtype)
