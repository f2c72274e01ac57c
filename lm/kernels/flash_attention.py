"""FlashAttention-2 in Pallas: tiled attention that never materialises the [t, s] score matrix.

    out = flash_attention(q, k, v)                      # causal, scale 1/sqrt(head_dim)
    out = flash_attention(q, k, v, causal=False, k_valid=mask, block_sizes=BlockSizes(128, 64))
    out = flash_attention(q, k, v, q_segments=doc, k_segments=doc)  # packed documents, causal
    out = flash_attention(q, k, v, logit_softcap=50.0)  # scores become 50 tanh(scores / 50)

q [batch, t, heads, head_dim]; k, v [batch, s, kv_heads, head_dim] (grouped-query attention
when kv_heads < heads, query head i reading key head i // (heads // kv_heads)).

Document masking: q_segments [batch, t] and k_segments [batch, s] (int) let a query see only the
keys with its own segment id, on top of the causal / window / k_valid / position rules; packed
training windows pass the same per-token document ids as both. The logit softcap (Gemma 2)
squashes the scaled scores scale * q.k to cap * tanh(scores / cap) before masking; it is a Python
float compiled into the kernels (0: off).

The forward kernel walks one query block over the key blocks with an online softmax in base 2,
skipping key blocks that causal (and sliding-window) masking hides entirely and, with segment
ids, key blocks whose ids cannot meet the query block's (disjoint [min, max] ranges, decided per
block pair with `lax.cond`, so packed documents cost about the sum of their own attention), and
saves the log-sum-exp. The backward pass recomputes the probabilities from it in two kernels:
dK/dV (one program per key block, looping over query blocks and, in each, every query head of
its group) and dQ (one program per query block), after the delta = rowsum(dO * O)
preprocessing; both skip blocks by the same rules.
`jax.custom_vjp` ties them together. Lengths that are not multiples of the block size and
head dims that are not powers of two are zero-padded here and masked in the kernels.

The softmax scale is an argument. A Python float (or None: 1/sqrt(head_dim)) is compiled into
the kernels. A jax array is instead multiplied into q before the kernels, so autodiff of that
multiply turns the kernels' dq into d(scale) = <dq_scaled, q>; this is how d(scale) is
checked in tests/kernels. The softcap composes with both: the kernels cap their own scores
(static scale * q_scaled.k), which equal scale * q.k, so the chain rule through the multiply
still gives the right d(scale).

Backends. On a GPU the kernels compile with Pallas's Triton backend, chosen explicitly with
`pallas.triton.CompilerParams` because jax 0.10 already defaults Pallas on GPU to Mosaic GPU.
jax 0.11 deprecates that Triton backend (still shipped, to be removed in a later release) in
favour of Mosaic GPU, which targets Hopper and later only and has a different programming
model (warpgroup `plgpu.kernel`s, explicit shared-memory pipelining with barriers, no masked
pointer loads). The path forward, in order: keep this kernel as the portable baseline while
the Triton backend ships (nothing here is specific to 0.10 or 0.11); port forward and backward
to a Mosaic GPU kernel with the same tiling, base-2 online softmax and LSE residual, so that
the custom_vjp wiring and tests/kernels carry over unchanged; or, to
stay on Triton after the removal, write the kernel in Triton itself and call it through
jax-triton, as lm/kernels/rms_norm_triton.py does for RMSNorm. On CPU the kernels run in Pallas
interpret mode (slow, exact): that is how they are tested on machines without a GPU.
"""

from __future__ import annotations

import functools
import math
import numbers

import jax
import jax.numpy as jnp

from lm.kernels.flash_kernels import FAR, BlockSizes, Static, backward, forward

__all__ = ["BlockSizes", "flash_attention", "default_block_sizes", "default_interpret"]


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
def _flash(q, k, v, rows, st: Static):
    return forward(q, k, v, rows, st)[0]


def _flash_fwd(q, k, v, rows, st):
    o, lse = forward(q, k, v, rows, st)
    return o, (q, k, v, rows, o, lse)


def _flash_bwd(st, res, do):
    q, k, v, rows, o, lse = res
    dq, dk, dv = backward(q, k, v, rows, o, lse, do, st)
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


def _check(q, k, v, causal, window, k_valid, q_positions, k_positions, q_segments, k_segments, logit_softcap):
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
    if (q_segments is None) != (k_segments is None):
        raise ValueError("pass both q_segments and k_segments, or neither (for self-attention over packed "
                         "documents, the same ids as both)")
    if q_segments is not None:
        for name, x, want in (("q_segments", q_segments, q.shape[:2]), ("k_segments", k_segments, k.shape[:2])):
            if tuple(x.shape) != tuple(want) or not jnp.issubdtype(x.dtype, jnp.integer):
                raise ValueError(f"{name} must be an integer array [batch, {'t' if name[0] == 'q' else 's'}] = "
                                 f"{tuple(want)}, got {x.dtype} {tuple(x.shape)}")
    if (isinstance(logit_softcap, (bool, jax.Array)) or not isinstance(logit_softcap, numbers.Real)
            or not 0 <= logit_softcap < math.inf):
        raise ValueError(f"logit_softcap must be a Python float >= 0 (0 turns it off; it is compiled into the "
                         f"kernels, so it cannot be a jax array), got {logit_softcap!r}")


def flash_attention(q: jax.Array, k: jax.Array, v: jax.Array, scale=None, *, causal: bool = True,
                    window: int = 0, k_valid: jax.Array | None = None, q_positions: jax.Array | None = None,
                    k_positions: jax.Array | None = None, q_segments: jax.Array | None = None,
                    k_segments: jax.Array | None = None, logit_softcap: float = 0.0,
                    block_sizes: BlockSizes | None = None, interpret: bool | None = None) -> jax.Array:
    """Attention softmax(softcap(scale * q k^T) + mask) v, [b, t, heads, d], in q's dtype (float32 accumulation).

    causal: key j visible to query i iff pos(j) <= pos(i); window > 0 also needs pos(i) - pos(j) < window.
    k_valid: bool [b, s], False hides a key (padding). q_positions [b, t], k_positions [b, s]: int
    positions for the masks (default: the indices 0..t-1, 0..s-1; with explicit positions no block
    can be skipped by causality, since the kernel cannot know they are ordered).
    q_segments [b, t], k_segments [b, s]: int segment (document) ids; a key is visible only to queries
    with the same id. Any ids work; blocks whose id ranges cannot meet are skipped, which pays off
    when ids are non-decreasing along the sequence (packed documents), with or without positions.
    A query that sees no key outputs 0.
    logit_softcap: 0 (off) or cap > 0: scores scale * q.k become cap * tanh(scores / cap) before masking.
    scale: None (1/sqrt(d)), a Python float (compiled in), or an array (differentiable).
    interpret: None chooses by backend (interpret on CPU).
    """
    _check(q, k, v, causal, window, k_valid, q_positions, k_positions, q_segments, k_segments, logit_softcap)
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
    if q_segments is not None:
        # The kernels also mask padded rows by index, whatever these ids; -1 and -2 just never match.
        seg = (_pad_axis(q_segments.astype(jnp.int32), 1, tp, -1), _pad_axis(k_segments.astype(jnp.int32), 1, sp, -2))
    else:
        seg = ()
    st = Static(scale=static_scale, causal=causal, window=int(window), kv_len=s, has_pos=bool(pos),
                skip=not explicit, blocks=blocks, interpret=bool(interpret), has_seg=bool(seg), q_len=t,
                softcap=float(logit_softcap))
    return _flash(qp, kp, vp, pos + seg, st)[:, :t, :, :d]
