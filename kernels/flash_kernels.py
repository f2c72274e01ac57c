"""The three Pallas kernels of FlashAttention-2 (forward, dK/dV, dQ) and their `pallas_call`s.

Inputs arrive already padded by `kernels.flash_attention`: q, o, dO [b, t, heads, d], k, v
[b, s, kv_heads, d] with t, s multiples of the block sizes and d a power of two, so every
block load is in bounds and no load needs a mask. Ragged lengths become a score mask
instead: a key is visible when its index is below the true key length (or its position is
below `FAR`), and, under causal masking, not after the query (and, with a window, less
than `window` before it). Logits are kept in base 2 (scaled by scale * log2 e), so the
softmax uses exp2 and the saved log-sum-exp `lse` is log2 of the row's normaliser.

Rows that see no key output 0 and get lse = -MASK_VALUE, which makes every recomputed
probability exp2(s - lse) exactly 0 in the backward pass: such rows pass no gradient.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

LOG2E = 1.4426950408889634
MASK_VALUE = -1e30  # finite: exp2(MASK_VALUE - m) is 0 without inf - inf = NaN
FAR = 2**30  # the position of a key nobody may see (padding, k_valid False)


@dataclasses.dataclass(frozen=True)
class BlockSizes:
    """Tile sizes (powers of two >= 16, Triton's smallest dot) and Triton launch parameters.

    block_q/block_k tile the forward pass; block_q_bwd/block_k_bwd tile both backward
    kernels. num_warps and num_stages go to the Triton compiler and are ignored when
    interpreting.
    """

    block_q: int = 64
    block_k: int = 64
    block_q_bwd: int = 64
    block_k_bwd: int = 64
    num_warps: int = 4
    num_stages: int = 2

    def __post_init__(self):
        for name in ("block_q", "block_k", "block_q_bwd", "block_k_bwd"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 16 or v & (v - 1):
                raise ValueError(f"BlockSizes.{name} must be a power of two >= 16, got {v!r}")
        if self.num_warps not in (1, 2, 4, 8, 16) or self.num_stages < 1:
            raise ValueError(f"num_warps must be a power of two <= 16 and num_stages >= 1, got "
                             f"{self.num_warps}, {self.num_stages}")


@dataclasses.dataclass(frozen=True)
class Static:
    """Everything the kernels specialise on (hashable: it is a nondiff argument of custom_vjp)."""

    scale: float
    causal: bool
    window: int  # 0: none; else key visible iff q_pos - k_pos < window
    kv_len: int  # true key length (index mode)
    has_pos: bool  # positions come as arrays; otherwise they are the indices
    skip: bool  # positions are the indices, so causal/window bounds may skip whole blocks
    blocks: BlockSizes
    interpret: bool


def _compiler_params(st: Static):
    # Naming Triton's params picks the Triton backend; jax >= 0.10 would otherwise pick Mosaic GPU.
    from jax.experimental.pallas import triton as plt

    return plt.CompilerParams(num_warps=st.blocks.num_warps, num_stages=st.blocks.num_stages)


def _visible(st: Static, q_ids: jax.Array, k_ids: jax.Array) -> jax.Array:
    """Boolean [bq, bk] from query and key positions (or indices) [bq], [bk]."""
    allowed = (k_ids < FAR if st.has_pos else k_ids < st.kv_len)[None, :]
    if st.causal:
        allowed = allowed & (k_ids[None, :] <= q_ids[:, None])
    if st.window:
        allowed = allowed & (q_ids[:, None] - k_ids[None, :] < st.window)
    return allowed


def _k_blocks(st: Static, q_start, bq: int, bk: int, nk: int):
    """Key blocks [lo, hi) that queries q_start..q_start+bq-1 can see (index mode skips the rest)."""
    if not (st.skip and st.causal):
        return 0, nk
    hi = jnp.minimum(lax.div(q_start + bq + bk - 1, bk), nk)
    lo = lax.div(jnp.maximum(q_start - st.window + 1, 0), bk) if st.window else 0
    return lo, hi


def _q_blocks(st: Static, k_start, bq: int, bk: int, nq: int):
    """Query blocks [lo, hi) that can see keys k_start..k_start+bk-1: the transpose of `_k_blocks`."""
    if not (st.skip and st.causal):
        return 0, nq
    lo = lax.div(k_start, bq)
    hi = jnp.minimum(lax.div(k_start + bk - 1 + st.window - 1, bq) + 1, nq) if st.window else nq
    return lo, hi


def _dot_t(a, b):
    """a [m, d] @ b [n, d]^T in float32."""
    return lax.dot_general(a, b, (((1,), (1,)), ((), ())), preferred_element_type=jnp.float32)


def _t_dot(a, b):
    """a [m, n]^T @ b [m, d] in float32."""
    return lax.dot_general(a, b, (((0,), (0,)), ((), ())), preferred_element_type=jnp.float32)


def _scores(st, q, k, q_ids, k_ids):
    """Masked base-2 logits [bq, bk] in float32."""
    s = _dot_t(q, k) * (st.scale * LOG2E)
    return jnp.where(_visible(st, q_ids, k_ids), s, MASK_VALUE)


def _split(refs, n_in, has_pos):
    ins = list(refs[:n_in])
    pos = (ins.pop(), ins.pop())[::-1] if has_pos else (None, None)
    return ins, pos, refs[n_in:]


# ----------------------------------------------------------------- forward
def _fwd_kernel(*refs, st: Static):
    (q_ref, k_ref, v_ref), (qpos_ref, kpos_ref), (o_ref, lse_ref) = _split(refs, 3 + 2 * st.has_pos, st.has_pos)
    bq, d = q_ref.shape
    bk = st.blocks.block_k
    q_start = pl.program_id(0) * bq
    q = q_ref[...]
    q_ids = qpos_ref[...] if st.has_pos else q_start + jnp.arange(bq, dtype=jnp.int32)

    def body(j, carry):
        acc, m, l = carry
        ks = pl.multiple_of(j * bk, bk)
        k_ids = kpos_ref[pl.ds(ks, bk)] if st.has_pos else ks + jnp.arange(bk, dtype=jnp.int32)
        s = _scores(st, q, k_ref[pl.ds(ks, bk), :], q_ids, k_ids)
        m_new = jnp.maximum(m, jnp.max(s, axis=1))
        p = jnp.exp2(s - m_new[:, None])
        alpha = jnp.exp2(m - m_new)  # rescales what was summed under the old running max
        v = v_ref[pl.ds(ks, bk), :]
        acc = acc * alpha[:, None] + lax.dot(p.astype(v.dtype), v, preferred_element_type=jnp.float32)
        return acc, m_new, l * alpha + jnp.sum(p, axis=1)

    lo, hi = _k_blocks(st, q_start, bq, bk, k_ref.shape[0] // bk)
    init = (jnp.zeros((bq, d), jnp.float32), jnp.full((bq,), MASK_VALUE, jnp.float32), jnp.zeros((bq,), jnp.float32))
    acc, m, l = lax.fori_loop(lo, hi, body, init)
    empty = m <= 0.5 * MASK_VALUE  # no visible key: every score was the mask value
    o_ref[...] = jnp.where(empty[:, None], 0.0, acc / l[:, None]).astype(o_ref.dtype)
    lse_ref[...] = jnp.where(empty, -MASK_VALUE, m + jnp.log(l) * LOG2E)


def _pos_specs(st, q_block, k_block, q_map, k_map):
    if not st.has_pos:
        return []
    return [pl.BlockSpec((None, q_block), q_map), pl.BlockSpec((None, k_block), k_map)]


def forward(q, k, v, pos, st: Static):
    """(o [b, t, h, d] in q's dtype, lse float32 [b, h, t]) for padded inputs."""
    b, t, h, d = q.shape
    s, groups = k.shape[1], h // k.shape[2]
    bq = st.blocks.block_q
    qspec = pl.BlockSpec((None, bq, None, d), lambda i, bi, hi: (bi, i, hi, 0))
    kvspec = pl.BlockSpec((None, s, None, d), lambda i, bi, hi: (bi, 0, hi // groups, 0))
    in_specs = [qspec, kvspec, kvspec] + _pos_specs(st, bq, s, lambda i, bi, hi: (bi, i), lambda i, bi, hi: (bi, 0))
    return pl.pallas_call(
        functools.partial(_fwd_kernel, st=st),
        grid=(t // bq, b, h),
        in_specs=in_specs,
        out_specs=[qspec, pl.BlockSpec((None, None, bq), lambda i, bi, hi: (bi, hi, i))],
        out_shape=[jax.ShapeDtypeStruct(q.shape, q.dtype), jax.ShapeDtypeStruct((b, h, t), jnp.float32)],
        compiler_params=_compiler_params(st), interpret=st.interpret, name="flash_attention_fwd",
    )(q, k, v, *pos)


# ----------------------------------------------------------------- backward
def _probs(st, q, k, lse, q_ids, k_ids):
    """Attention probabilities [bq, bk] recomputed from the saved base-2 log-sum-exp."""
    return jnp.exp2(_scores(st, q, k, q_ids, k_ids) - lse[:, None])


def _dkdv_kernel(*refs, st: Static, groups: int):
    # q, dO [t, groups, d]; lse, delta [groups, t]: every query head that shares this key head.
    ins, (qpos_ref, kpos_ref), (dk_ref, dv_ref) = _split(refs, 6 + 2 * st.has_pos, st.has_pos)
    q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref = ins
    bk, d = k_ref.shape
    bq = st.blocks.block_q_bwd
    k_start = pl.program_id(0) * bk
    k, v = k_ref[...], v_ref[...]
    k_ids = kpos_ref[...] if st.has_pos else k_start + jnp.arange(bk, dtype=jnp.int32)

    def q_block(i, carry, g):
        dk, dv = carry
        qs = pl.multiple_of(i * bq, bq)
        q, do = q_ref[pl.ds(qs, bq), g, :], do_ref[pl.ds(qs, bq), g, :]
        q_ids = qpos_ref[pl.ds(qs, bq)] if st.has_pos else qs + jnp.arange(bq, dtype=jnp.int32)
        p = _probs(st, q, k, lse_ref[g, pl.ds(qs, bq)], q_ids, k_ids)
        dv = dv + _t_dot(p.astype(do.dtype), do)
        ds = p * (_dot_t(do, v) - delta_ref[g, pl.ds(qs, bq)][:, None])  # dL/dlogits
        return dk + _t_dot(ds.astype(q.dtype), q), dv

    lo, hi = _q_blocks(st, k_start, bq, bk, q_ref.shape[0] // bq)

    def head(g, carry):
        return lax.fori_loop(lo, hi, functools.partial(q_block, g=g), carry)

    zeros = jnp.zeros((bk, d), jnp.float32)
    dk, dv = lax.fori_loop(0, groups, head, (zeros, zeros))
    dk_ref[...] = (dk * st.scale).astype(dk_ref.dtype)
    dv_ref[...] = dv.astype(dv_ref.dtype)


def _dq_kernel(*refs, st: Static):
    ins, (qpos_ref, kpos_ref), (dq_ref,) = _split(refs, 6 + 2 * st.has_pos, st.has_pos)
    q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref = ins
    bq, d = q_ref.shape
    bk = st.blocks.block_k_bwd
    q_start = pl.program_id(0) * bq
    q, do, lse, delta = q_ref[...], do_ref[...], lse_ref[...], delta_ref[...]
    q_ids = qpos_ref[...] if st.has_pos else q_start + jnp.arange(bq, dtype=jnp.int32)

    def body(j, dq):
        ks = pl.multiple_of(j * bk, bk)
        k, v = k_ref[pl.ds(ks, bk), :], v_ref[pl.ds(ks, bk), :]
        k_ids = kpos_ref[pl.ds(ks, bk)] if st.has_pos else ks + jnp.arange(bk, dtype=jnp.int32)
        p = _probs(st, q, k, lse, q_ids, k_ids)
        ds = p * (_dot_t(do, v) - delta[:, None])
        return dq + lax.dot(ds.astype(k.dtype), k, preferred_element_type=jnp.float32)

    lo, hi = _k_blocks(st, q_start, bq, bk, k_ref.shape[0] // bk)
    dq_ref[...] = lax.fori_loop(lo, hi, body, jnp.zeros((bq, d), jnp.float32)) * st.scale


def backward(q, k, v, pos, o, lse, do, st: Static):
    """(dq float32, dk, dv) for padded inputs; delta = rowsum(dO * O) is the FA-2 preprocessing step."""
    b, t, h, d = q.shape
    s, kvh = k.shape[1], k.shape[2]
    groups = h // kvh
    bq, bk = st.blocks.block_q_bwd, st.blocks.block_k_bwd
    delta = jnp.einsum("bthd,bthd->bht", o.astype(jnp.float32), do.astype(jnp.float32))
    common = dict(compiler_params=_compiler_params(st), interpret=st.interpret)

    # dK, dV: one program per (key block, batch, key head), looping over its query heads and blocks.
    qspec = pl.BlockSpec((None, t, groups, d), lambda j, bi, kh: (bi, 0, kh, 0))
    kspec = pl.BlockSpec((None, bk, None, d), lambda j, bi, kh: (bi, j, kh, 0))
    rowspec = pl.BlockSpec((None, groups, t), lambda j, bi, kh: (bi, kh, 0))
    dk, dv = pl.pallas_call(
        functools.partial(_dkdv_kernel, st=st, groups=groups),
        grid=(s // bk, b, kvh),
        in_specs=[qspec, kspec, kspec, qspec, rowspec, rowspec]
        + _pos_specs(st, t, bk, lambda j, bi, kh: (bi, 0), lambda j, bi, kh: (bi, j)),
        out_specs=[kspec, kspec],
        out_shape=[jax.ShapeDtypeStruct(k.shape, k.dtype), jax.ShapeDtypeStruct(v.shape, v.dtype)],
        name="flash_attention_dkdv", **common,
    )(q, k, v, do, lse, delta, *pos)

    # dQ: one program per (query block, batch, head), looping over key blocks.
    qspec = pl.BlockSpec((None, bq, None, d), lambda i, bi, hi: (bi, i, hi, 0))
    kvspec = pl.BlockSpec((None, s, None, d), lambda i, bi, hi: (bi, 0, hi // groups, 0))
    rowspec = pl.BlockSpec((None, None, bq), lambda i, bi, hi: (bi, hi, i))
    dq = pl.pallas_call(
        functools.partial(_dq_kernel, st=st),
        grid=(t // bq, b, h),
        in_specs=[qspec, kvspec, kvspec, qspec, rowspec, rowspec]
        + _pos_specs(st, bq, s, lambda i, bi, hi: (bi, i), lambda i, bi, hi: (bi, 0)),
        out_specs=qspec,
        out_shape=jax.ShapeDtypeStruct(q.shape, jnp.float32),
        name="flash_attention_dq", **common,
    )(q, k, v, do, lse, delta, *pos)
    return dq, dk, dv
