"""The three Pallas kernels of FlashAttention-2 (forward, dK/dV, dQ) and their `pallas_call`s.

Inputs arrive already padded by `lm.kernels.flash_attention`: q, o, dO [b, t, heads, d], k, v
[b, s, kv_heads, d] with t, s multiples of the block sizes and d a power of two, so every
block load is in bounds and no load needs a mask. Ragged lengths become a score mask
instead: a key is visible when its index is below the true key length (or its position is
below `FAR`), and, under causal masking, not after the query (and, with a window, less
than `window` before it). With segment ids (document masking) a key is also visible only to
queries of its own segment, and queries at or past the true query length see nothing.
Logits are kept in base 2 (scaled by scale * log2 e), so the softmax uses exp2 and the saved
log-sum-exp `lse` is log2 of the row's normaliser. A logit softcap is applied in natural units,
cap * tanh(scale * q.k / cap), before the conversion to base 2 and before masking.

Rows that see no key output 0 and get lse = -MASK_VALUE, which makes every recomputed
probability exp2(s - lse) exactly 0 in the backward pass: such rows pass no gradient.

Block skipping. In index mode (`Static.skip`) the causal / window bounds shrink each loop's
range ([lo, hi) from `_k_blocks` / `_q_blocks`). With segment ids, every (query block, key
block) pair inside that range is further gated by `lax.cond` (scf.if on Triton): when the
[min, max] segment-id ranges of the two blocks' real rows do not overlap, no pair of them can
share a segment, and the block's loads and matmuls are not executed. For packed sequences
(non-decreasing ids) this skips every block that lies wholly in other documents; for
unordered ids it is still exact, only less effective.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from lm.kernels.masking import MASK_VALUE  # the model's mask constant too: finite, so exp2(MASK_VALUE - m) is 0

LOG2E = 1.4426950408889634
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
    has_seg: bool = False  # segment ids come as arrays: keys only visible within a segment
    q_len: int = 0  # true query length (read only with segments: later rows see nothing)
    softcap: float = 0.0  # 0: none; else scores become softcap * tanh(scores / softcap)

    def __post_init__(self):
        if self.has_seg and self.q_len <= 0:
            raise ValueError("Static.q_len must be the true query length when has_seg (rows past it see nothing)")
        if self.softcap < 0:
            raise ValueError(f"Static.softcap must be >= 0 (0: no cap), got {self.softcap}")


_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1


def _compiler_params(st: Static):
    # Naming Triton's params picks the Triton backend; jax >= 0.10 would otherwise pick Mosaic GPU.
    from jax.experimental.pallas import triton as plt

    return plt.CompilerParams(num_warps=st.blocks.num_warps, num_stages=st.blocks.num_stages)


class _Rows(NamedTuple):
    """One block's rows: positions (or indices) [n]; with segments, their ids [n], which rows are
    real (not padding, not k_valid=False), and `seg_range` over those."""

    ids: jax.Array
    seg: jax.Array | None = None
    ok: jax.Array | None = None
    seg_range: tuple | None = None


def _seg_range(seg, ok):
    """(min, max) segment id over the real rows; (INT_MAX, INT_MIN), which meets nothing, if none.

    Padding is left out so that it cannot widen the range of a block it shares with real rows.
    """
    return jnp.min(jnp.where(ok, seg, _INT_MAX)), jnp.max(jnp.where(ok, seg, _INT_MIN))


def _key_ok(st: Static, k_ids):
    """Real, valid keys: padding and k_valid=False sit at position FAR; in index mode past kv_len."""
    return k_ids < FAR if st.has_pos else k_ids < st.kv_len


def _q_rows(st: Static, pos_ref, seg_ref, start, n: int, sl) -> _Rows:
    """Queries start..start+n-1, read from their refs at `sl` (`...` for a block-sized ref)."""
    idx = start + jnp.arange(n, dtype=jnp.int32)
    ids = pos_ref[sl] if st.has_pos else idx
    if not st.has_seg:
        return _Rows(ids)
    seg, ok = seg_ref[sl], idx < st.q_len
    return _Rows(ids, seg, ok, _seg_range(seg, ok))


def _k_rows(st: Static, pos_ref, seg_ref, start, n: int, sl) -> _Rows:
    """Keys start..start+n-1, read from their refs at `sl` (`...` for a block-sized ref)."""
    ids = pos_ref[sl] if st.has_pos else start + jnp.arange(n, dtype=jnp.int32)
    if not st.has_seg:
        return _Rows(ids)
    seg, ok = seg_ref[sl], _key_ok(st, ids)
    return _Rows(ids, seg, ok, _seg_range(seg, ok))


def _visible(st: Static, q: _Rows, k: _Rows) -> jax.Array:
    """Boolean [bq, bk] from query and key rows."""
    q_ids, k_ids = q.ids, k.ids
    allowed = _key_ok(st, k_ids)[None, :]
    if st.causal:
        allowed = allowed & (k_ids[None, :] <= q_ids[:, None])
    if st.window:
        allowed = allowed & (q_ids[:, None] - k_ids[None, :] < st.window)
    if st.has_seg:
        allowed = allowed & q.ok[:, None] & (q.seg[:, None] == k.seg[None, :])
    return allowed


def _ranges_meet(q_range, k_range):
    """Whether two blocks may share a segment: their [min, max] id ranges overlap (necessary, not sufficient)."""
    (q_lo, q_hi), (k_lo, k_hi) = q_range, k_range
    return (q_lo <= k_hi) & (k_lo <= q_hi)


def _if_segments_meet(st: Static, q: _Rows, k: _Rows, visit, carry):
    """visit(carry), or carry untouched (no loads, no matmuls) when no segment id can be shared."""
    if not st.has_seg:
        return visit(carry)
    return lax.cond(_ranges_meet(q.seg_range, k.seg_range), visit, lambda c: c, carry)


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


def _scores(st: Static, q, k, visible):
    """(masked base-2 logits [bq, bk] float32, tanh(scale q.k / softcap) [bq, bk] or None without a cap)."""
    raw = _dot_t(q, k)
    if st.softcap:
        # The cap acts on natural-unit scores; only the capped value is converted to base 2.
        th = jnp.tanh(raw * (st.scale / st.softcap))
        s = th * (st.softcap * LOG2E)
    else:
        th, s = None, raw * (st.scale * LOG2E)
    return jnp.where(visible, s, MASK_VALUE), th


def _uncap(st: Static, ds, th):
    """dL/d(scale q.k) from dL/d(capped scores): the cap's derivative is 1 - tanh^2."""
    return ds if th is None else ds * (1.0 - th * th)


def _split(refs, n_in: int, st: Static):
    """(main inputs, (q_pos, k_pos), (q_seg, k_seg), outputs); an absent pair is (None, None)."""
    ins, rest = list(refs[:n_in]), list(refs[n_in:])
    pos = (rest.pop(0), rest.pop(0)) if st.has_pos else (None, None)
    seg = (rest.pop(0), rest.pop(0)) if st.has_seg else (None, None)
    return ins, pos, seg, rest


# ----------------------------------------------------------------- forward
def _fwd_kernel(*refs, st: Static):
    (q_ref, k_ref, v_ref), (qpos_ref, kpos_ref), (qseg_ref, kseg_ref), (o_ref, lse_ref) = _split(refs, 3, st)
    bq, d = q_ref.shape
    bk = st.blocks.block_k
    q_start = pl.program_id(0) * bq
    q = q_ref[...]
    qr = _q_rows(st, qpos_ref, qseg_ref, q_start, bq, ...)

    def body(j, carry):
        ks = pl.multiple_of(j * bk, bk)
        kr = _k_rows(st, kpos_ref, kseg_ref, ks, bk, pl.ds(ks, bk))

        def visit(carry):
            acc, m, ell = carry  # FlashAttention-2's (O, m, l): output, running max, running sum
            s, _ = _scores(st, q, k_ref[pl.ds(ks, bk), :], _visible(st, qr, kr))
            m_new = jnp.maximum(m, jnp.max(s, axis=1))
            p = jnp.exp2(s - m_new[:, None])
            alpha = jnp.exp2(m - m_new)  # rescales what was summed under the old running max
            v = v_ref[pl.ds(ks, bk), :]
            acc = acc * alpha[:, None] + lax.dot(p.astype(v.dtype), v, preferred_element_type=jnp.float32)
            return acc, m_new, ell * alpha + jnp.sum(p, axis=1)

        return _if_segments_meet(st, qr, kr, visit, carry)

    lo, hi = _k_blocks(st, q_start, bq, bk, k_ref.shape[0] // bk)
    init = (jnp.zeros((bq, d), jnp.float32), jnp.full((bq,), MASK_VALUE, jnp.float32), jnp.zeros((bq,), jnp.float32))
    acc, m, ell = lax.fori_loop(lo, hi, body, init)
    empty = m <= 0.5 * MASK_VALUE  # no visible key: every score was the mask value (or no block was visited)
    o_ref[...] = jnp.where(empty[:, None], 0.0, acc / ell[:, None]).astype(o_ref.dtype)
    lse_ref[...] = jnp.where(empty, -MASK_VALUE, m + jnp.log(ell) * LOG2E)


def _row_specs(st, q_block, k_block, q_map, k_map):
    """BlockSpecs of the per-row int inputs: positions (if has_pos), then segment ids (if has_seg)."""
    pair = [pl.BlockSpec((None, q_block), q_map), pl.BlockSpec((None, k_block), k_map)]
    return pair * (st.has_pos + st.has_seg)


def forward(q, k, v, rows, st: Static):
    """(o [b, t, h, d] in q's dtype, lse float32 [b, h, t]) for padded inputs.

    rows: int32 (q_pos [b, t], k_pos [b, s]) if st.has_pos, then (q_seg [b, t], k_seg [b, s]) if st.has_seg.
    """
    b, t, h, d = q.shape
    s, groups = k.shape[1], h // k.shape[2]
    bq = st.blocks.block_q
    qspec = pl.BlockSpec((None, bq, None, d), lambda i, bi, hi: (bi, i, hi, 0))
    kvspec = pl.BlockSpec((None, s, None, d), lambda i, bi, hi: (bi, 0, hi // groups, 0))
    in_specs = [qspec, kvspec, kvspec] + _row_specs(st, bq, s, lambda i, bi, hi: (bi, i), lambda i, bi, hi: (bi, 0))
    return pl.pallas_call(
        functools.partial(_fwd_kernel, st=st),
        grid=(t // bq, b, h),
        in_specs=in_specs,
        out_specs=[qspec, pl.BlockSpec((None, None, bq), lambda i, bi, hi: (bi, hi, i))],
        out_shape=[jax.ShapeDtypeStruct(q.shape, q.dtype), jax.ShapeDtypeStruct((b, h, t), jnp.float32)],
        compiler_params=_compiler_params(st), interpret=st.interpret, name="flash_attention_fwd",
    )(q, k, v, *rows)


# ----------------------------------------------------------------- backward
def _dkdv_kernel(*refs, st: Static, groups: int):
    # q, dO [t, groups, d]; lse, delta [groups, t]: every query head that shares this key head.
    ins, (qpos_ref, kpos_ref), (qseg_ref, kseg_ref), (dk_ref, dv_ref) = _split(refs, 6, st)
    q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref = ins
    bk, d = k_ref.shape
    bq = st.blocks.block_q_bwd
    k_start = pl.program_id(0) * bk
    k, v = k_ref[...], v_ref[...]
    kr = _k_rows(st, kpos_ref, kseg_ref, k_start, bk, ...)

    def q_block(i, carry):
        qs = pl.multiple_of(i * bq, bq)
        qr = _q_rows(st, qpos_ref, qseg_ref, qs, bq, pl.ds(qs, bq))

        def visit(carry):
            visible = _visible(st, qr, kr)  # shared by every query head of the group

            def head(g, carry):
                dk, dv = carry
                q, do = q_ref[pl.ds(qs, bq), g, :], do_ref[pl.ds(qs, bq), g, :]
                s, th = _scores(st, q, k, visible)
                p = jnp.exp2(s - lse_ref[g, pl.ds(qs, bq)][:, None])
                dv = dv + _t_dot(p.astype(do.dtype), do)
                ds = _uncap(st, p * (_dot_t(do, v) - delta_ref[g, pl.ds(qs, bq)][:, None]), th)  # dL/d(scale q.k)
                return dk + _t_dot(ds.astype(q.dtype), q), dv

            return lax.fori_loop(0, groups, head, carry)

        return _if_segments_meet(st, qr, kr, visit, carry)

    lo, hi = _q_blocks(st, k_start, bq, bk, q_ref.shape[0] // bq)
    zeros = jnp.zeros((bk, d), jnp.float32)
    dk, dv = lax.fori_loop(lo, hi, q_block, (zeros, zeros))
    dk_ref[...] = (dk * st.scale).astype(dk_ref.dtype)
    dv_ref[...] = dv.astype(dv_ref.dtype)


def _dq_kernel(*refs, st: Static):
    ins, (qpos_ref, kpos_ref), (qseg_ref, kseg_ref), (dq_ref,) = _split(refs, 6, st)
    q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref = ins
    bq, d = q_ref.shape
    bk = st.blocks.block_k_bwd
    q_start = pl.program_id(0) * bq
    q, do, lse, delta = q_ref[...], do_ref[...], lse_ref[...], delta_ref[...]
    qr = _q_rows(st, qpos_ref, qseg_ref, q_start, bq, ...)

    def body(j, dq):
        ks = pl.multiple_of(j * bk, bk)
        kr = _k_rows(st, kpos_ref, kseg_ref, ks, bk, pl.ds(ks, bk))

        def visit(dq):
            k, v = k_ref[pl.ds(ks, bk), :], v_ref[pl.ds(ks, bk), :]
            s, th = _scores(st, q, k, _visible(st, qr, kr))
            p = jnp.exp2(s - lse[:, None])
            ds = _uncap(st, p * (_dot_t(do, v) - delta[:, None]), th)
            return dq + lax.dot(ds.astype(k.dtype), k, preferred_element_type=jnp.float32)

        return _if_segments_meet(st, qr, kr, visit, dq)

    lo, hi = _k_blocks(st, q_start, bq, bk, k_ref.shape[0] // bk)
    dq_ref[...] = lax.fori_loop(lo, hi, body, jnp.zeros((bq, d), jnp.float32)) * st.scale


def backward(q, k, v, rows, o, lse, do, st: Static):
    """(dq float32, dk, dv) for padded inputs; delta = rowsum(dO * O) is the FA-2 preprocessing step.

    rows: the per-row int inputs, as for `forward`.
    """
    b, t, h, d = q.shape
    s, kvh = k.shape[1], k.shape[2]
    groups = h // kvh
    bq, bk = st.blocks.block_q_bwd, st.blocks.block_k_bwd
    delta = jnp.einsum("bthd,bthd->bht", o.astype(jnp.float32), do.astype(jnp.float32))
    common = dict(compiler_params=_compiler_params(st), interpret=st.interpret)

    # dK, dV: one program per (key block, batch, key head), looping over query blocks and its query heads.
    qspec = pl.BlockSpec((None, t, groups, d), lambda j, bi, kh: (bi, 0, kh, 0))
    kspec = pl.BlockSpec((None, bk, None, d), lambda j, bi, kh: (bi, j, kh, 0))
    rowspec = pl.BlockSpec((None, groups, t), lambda j, bi, kh: (bi, kh, 0))
    dk, dv = pl.pallas_call(
        functools.partial(_dkdv_kernel, st=st, groups=groups),
        grid=(s // bk, b, kvh),
        in_specs=[qspec, kspec, kspec, qspec, rowspec, rowspec]
        + _row_specs(st, t, bk, lambda j, bi, kh: (bi, 0), lambda j, bi, kh: (bi, j)),
        out_specs=[kspec, kspec],
        out_shape=[jax.ShapeDtypeStruct(k.shape, k.dtype), jax.ShapeDtypeStruct(v.shape, v.dtype)],
        name="flash_attention_dkdv", **common,
    )(q, k, v, do, lse, delta, *rows)

    # dQ: one program per (query block, batch, head), looping over key blocks.
    qspec = pl.BlockSpec((None, bq, None, d), lambda i, bi, hi: (bi, i, hi, 0))
    kvspec = pl.BlockSpec((None, s, None, d), lambda i, bi, hi: (bi, 0, hi // groups, 0))
    rowspec = pl.BlockSpec((None, None, bq), lambda i, bi, hi: (bi, hi, i))
    dq = pl.pallas_call(
        functools.partial(_dq_kernel, st=st),
        grid=(t // bq, b, h),
        in_specs=[qspec, kvspec, kvspec, qspec, rowspec, rowspec]
        + _row_specs(st, bq, s, lambda i, bi, hi: (bi, i), lambda i, bi, hi: (bi, 0)),
        out_specs=qspec,
        out_shape=jax.ShapeDtypeStruct(q.shape, jnp.float32),
        name="flash_attention_dq", **common,
    )(q, k, v, do, lse, delta, *rows)
    return dq, dk, dv
