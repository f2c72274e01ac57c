"""FlashAttention-2 kernels (Pallas, interpret mode) against float64 NumPy references."""

from __future__ import annotations

import itertools
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm.kernels.flash_attention import BlockSizes, _check, flash_attention
from lm.kernels.flash_kernels import LOG2E, Static, _k_blocks, _q_blocks, _ranges_meet, _seg_range, forward
from lm.model.attention import attention
from tests.kernels import reference
from tests.kernels.helpers import rel_err, run

TOL = {"float32": 1e-4, "bfloat16": 3e-2}


def reference_attention(q, k, v, scale=None, *, causal: bool = True, window: int = 0, k_valid=None,
                        q_positions=None, k_positions=None, q_segments=None, k_segments=None,
                        logit_softcap: float = 0.0) -> jax.Array:
    """`flash_attention` computed by the model's own XLA attention (`lm.model.attention`, impl "xla":
    float32 math, full score matrix), the one reference for every implementation; same arguments.
    It lives with the tests because the kernels sit below `lm.model` and import nothing from it."""
    _check(q, k, v, causal, window, k_valid, q_positions, k_positions, q_segments, k_segments, logit_softcap)
    qf = q.astype(jnp.float32)
    if scale is not None:  # attention() scales by 1/sqrt(d): fold the wanted scale into q (differentiably)
        qf = qf * (scale * math.sqrt(q.shape[-1]))
    out = attention(qf, k.astype(jnp.float32), v.astype(jnp.float32), q_positions=q_positions,
                    k_positions=k_positions, q_segments=q_segments, k_segments=k_segments, k_valid=k_valid,
                    window=window, causal=causal, impl="xla", softcap=logit_softcap)
    return out.astype(q.dtype)


def _inputs(seed, b, t, s, h, kvh, d, dtype):
    ks = jax.random.split(jax.random.PRNGKey(seed), 4)
    q = jax.random.normal(ks[0], (b, t, h, d), jnp.float32).astype(dtype)
    k = jax.random.normal(ks[1], (b, s, kvh, d), jnp.float32).astype(dtype)
    v = jax.random.normal(ks[2], (b, s, kvh, d), jnp.float32).astype(dtype)
    do = jax.random.normal(ks[3], (b, t, h, d), jnp.float32).astype(dtype)
    return q, k, v, do


def check(b, t, s, h, kvh, d, *, causal=True, window=0, dtype="float32", blocks=BlockSizes(16, 16, 16, 16),
          array_scale=True, k_valid=None, q_pos=None, k_pos=None, q_seg=None, k_seg=None, softcap=0.0, seed=0,
          nan_keys=None, interpret=True):
    """Output and dq, dk, dv (and dscale for an array scale) of the kernel against float64 NumPy.

    nan_keys: bool [b, s], keys (and values) set to NaN for the kernel and to 0 for the reference; they
    must be invisible to every query, so the result stays finite only if the kernel never reads them.
    """
    q, k, v, do = _inputs(seed, b, t, s, h, kvh, d, jnp.dtype(dtype))
    scale = 0.7 / np.sqrt(d)
    kw = dict(causal=causal, window=window, k_valid=k_valid, q_positions=q_pos, k_positions=k_pos,
              q_segments=q_seg, k_segments=k_seg, logit_softcap=softcap, block_sizes=blocks, interpret=interpret)

    def loss(q, k, v, sc):
        o = flash_attention(q, k, v, sc if array_scale else scale, **kw)
        return jnp.vdot(o.astype(jnp.float32), do.astype(jnp.float32)), o

    vis = reference.visible(b, t, s, causal, window, k_valid, q_pos, k_pos, q_seg, k_seg)
    kk, vv = k, v
    if nan_keys is not None:
        assert not (vis & nan_keys[:, None, :]).any(), "a NaN key must be invisible to every query"
        hide = jnp.asarray(nan_keys)[:, :, None, None]
        kk, vv = (jnp.where(hide, jnp.nan, x).astype(x.dtype) for x in (k, v))
        k, v = (jnp.where(hide, 0, x).astype(x.dtype) for x in (k, v))
    (_, o), grads = run(jax.value_and_grad(loss, argnums=(0, 1, 2, 3), has_aux=True), q, kk, vv, jnp.float32(scale))
    want = reference.attention(q, k, v, do, scale, vis, softcap)
    names = ["o", "dq", "dk", "dv"] + (["dscale"] if array_scale else [])
    got = [o, *grads[:3]] + ([grads[3]] if array_scale else [])
    assert o.dtype == q.dtype and [g.dtype for g in grads[:3]] == [q.dtype] * 3
    errs = {n: rel_err(g, w) for n, g, w in zip(names, got, want)}
    if array_scale and dtype == "bfloat16":
        # d(scale) = <dq, q> / scale sums terms that cancel to ~0.1% of their size on random inputs, so
        # bf16 rounding of dq is measured against the terms' total size (XLA's bf16 attention does no better).
        terms = np.abs(np.asarray(want[1]) * np.asarray(q, np.float64)).sum() / scale
        errs["dscale"] = abs(float(grads[3]) - want[4]) / terms
    assert max(errs.values()) < TOL[dtype], errs  # a NaN error fails this too
    return errs


def _docs(*rows):
    """Segment ids [len(rows), sum(lengths)] for rows of document lengths; ids count up from 0 per row."""
    return jnp.asarray(np.stack([np.repeat(np.arange(len(r)), r) for r in rows]), jnp.int32)


_PAD = np.arange(50)[None] >= np.array([[0], [11]])  # key padding (left), for index-position masks
_PAD41 = jnp.asarray(np.arange(41)[None] >= np.array([[5], [0]]))
_SEG45 = _docs((10, 23, 12), (30, 5, 10))
_SEG50 = jnp.stack([_docs((20, 13, 17))[0], jnp.asarray(np.repeat([3, 0, 3], [12, 20, 18]), jnp.int32)])

CASES = {  # b, t, s, h, kvh, d, options; lengths deliberately not multiples of the blocks
    "causal-gqa2-hd32": (2, 37, 37, 4, 2, 32, dict(blocks=BlockSizes(16, 16, 16, 32))),
    "cross-hd48-static-scale": (1, 20, 51, 2, 2, 48, dict(causal=False, array_scale=False,
                                                          blocks=BlockSizes(32, 16, 16, 32))),
    "window-kvalid-gqa4-hd128": (2, 50, 50, 4, 1, 128, dict(window=9, k_valid=_PAD)),
    "bf16-causal-gqa2-hd64": (1, 40, 40, 4, 2, 64, dict(dtype="bfloat16")),
    "bf16-full-hd128": (1, 24, 40, 2, 1, 128, dict(dtype="bfloat16", causal=False, blocks=BlockSizes(16, 32, 16, 16))),
    # Packed documents, index positions (causal block skipping stays on): uneven lengths, boundaries differ by row.
    "segments-causal-gqa2-hd32": (2, 45, 45, 4, 2, 32, dict(q_seg=_SEG45, k_seg=_SEG45,
                                                            blocks=BlockSizes(16, 32, 32, 16))),
    # Ids out of order and reused (row 1: id 3, then 0, then 3 again): masking is by equality, not by order.
    "segments-window-hd64": (2, 50, 50, 2, 1, 64, dict(window=25, q_seg=_SEG50, k_seg=_SEG50)),
    # Cross attention (t != s, non-causal) with different query and key documents and left key padding.
    "segments-kvalid-cross-hd48": (2, 30, 41, 2, 2, 48, dict(causal=False, k_valid=_PAD41, q_seg=_docs((9, 21), (30,)),
                                                             k_seg=_docs((20, 21), (25, 16)), array_scale=False)),
    # The scores' spread is about 0.7 here, so a cap of 1.5 is far from linear: the cap and its derivative both matter.
    "softcap-causal-gqa2-hd32": (1, 40, 40, 4, 2, 32, dict(softcap=1.5)),
    "bf16-softcap-segments-gqa2-hd64": (2, 45, 45, 4, 2, 64, dict(dtype="bfloat16", softcap=1.5, q_seg=_SEG45,
                                                                  k_seg=_SEG45)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_matches_float64_reference(name):
    b, t, s, h, kvh, d, opts = CASES[name]
    check(b, t, s, h, kvh, d, **opts)


def test_padding_and_explicit_positions():
    """Left padding with explicit positions and k_valid, as in batched scoring; rows seeing nothing give 0."""
    b, t = 2, 30
    pad = np.array([0, 7])
    k_valid = np.arange(t)[None] >= pad[:, None]
    pos = np.maximum(np.arange(t)[None] - pad[:, None], 0)
    check(b, t, t, 2, 1, 32, k_valid=jnp.asarray(k_valid), q_pos=jnp.asarray(pos), k_pos=jnp.asarray(pos))


def test_lse_matches_reference():
    q, k, v, _ = _inputs(3, 1, 32, 48, 2, 1, 32, jnp.float32)
    st = Static(scale=0.2, causal=False, window=0, kv_len=40, has_pos=False, skip=True,
                blocks=BlockSizes(16, 16, 16, 16), interpret=True)
    o, lse = forward(q, k, v, (), st)
    vis = reference.visible(1, 32, 48, causal=False, k_valid=np.arange(48)[None] < 40)
    assert rel_err(lse / LOG2E, reference.lse(q, k, 0.2, vis)) < 1e-5


@pytest.mark.parametrize("bq,bk,window", [(16, 16, 0), (32, 16, 0), (16, 64, 0), (16, 32, 20), (64, 16, 5)])
def test_block_skipping_is_exact(bq, bk, window):
    """The causal loops visit exactly the blocks holding a visible (query, key) pair, in both directions."""
    t = 160
    st = Static(scale=1.0, causal=True, window=window, kv_len=t, has_pos=False, skip=True,
                blocks=BlockSizes(bq, bk, bq, bk), interpret=True)
    vis = reference.visible(1, t, t, True, window)[0]
    nq, nk = t // bq, t // bk
    needed = {(i, j) for i in range(nq) for j in range(nk) if vis[i * bq:(i + 1) * bq, j * bk:(j + 1) * bk].any()}
    by_q = {(i, j) for i in range(nq) for j in range(*map(int, _k_blocks(st, i * bq, bq, bk, nk)))}
    by_k = {(i, j) for j in range(nk) for i in range(*map(int, _q_blocks(st, j * bk, bq, bk, nq)))}
    assert by_q == needed and by_k == needed
    assert len(needed) < nq * nk  # something was skipped


@pytest.mark.parametrize("bq,bk,window", [(16, 16, 0), (32, 16, 0), (16, 64, 0), (16, 32, 20)])
def test_segment_block_skipping(bq, bk, window):
    """Packed documents: the loops visit only block pairs holding a visible pair, and without a window exactly
    those, in both directions; the padding past the true length (150 of 160) does not widen any block's range."""
    t, tp = 150, 160
    seg = np.repeat(np.arange(6), [7, 40, 3, 50, 25, 25])
    q_seg, k_seg = np.pad(seg, (0, tp - t), constant_values=-1), np.pad(seg, (0, tp - t), constant_values=-2)
    st = Static(scale=1.0, causal=True, window=window, kv_len=t, has_pos=False, skip=True,
                blocks=BlockSizes(bq, bk, bq, bk), interpret=True, has_seg=True, q_len=t)
    vis = np.pad(reference.visible(1, t, t, True, window, q_seg=seg[None], k_seg=seg[None])[0], (0, tp - t))
    nq, nk = tp // bq, tp // bk
    idx = np.arange(tp)
    q_rng = [_seg_range(q_seg[i * bq:(i + 1) * bq], idx[i * bq:(i + 1) * bq] < t) for i in range(nq)]
    k_rng = [_seg_range(k_seg[j * bk:(j + 1) * bk], idx[j * bk:(j + 1) * bk] < t) for j in range(nk)]
    needed = {(i, j) for i in range(nq) for j in range(nk) if vis[i * bq:(i + 1) * bq, j * bk:(j + 1) * bk].any()}
    causal = {(i, j) for i in range(nq) for j in range(*map(int, _k_blocks(st, i * bq, bq, bk, nk)))}
    by_q = {(i, j) for i, j in causal if _ranges_meet(q_rng[i], k_rng[j])}
    by_k = {(i, j) for j in range(nk) for i in range(*map(int, _q_blocks(st, j * bk, bq, bk, nq)))
            if _ranges_meet(q_rng[i], k_rng[j])}
    assert by_q == by_k and needed <= by_q
    if not window:  # a window can hide a pair that shares a document; the ranges cannot know that
        assert by_q == needed
    assert len(by_q) < len(causal)  # segments skipped blocks that causality alone would visit


def test_segment_skipping_never_reads_other_documents():
    """Keys and values of earlier documents are NaN; the last 32 queries (a chunk at positions 32..63, as in
    chunked prefill) belong to later documents. Any read of a NaN block would poison o, dq, dk or dv (even a
    masked score feeds 0 * NaN into p @ v), so finite, exact results show those blocks are skipped. Explicit
    positions turn causal block skipping off, leaving the segment test as the only thing that skips them."""
    t, s = 32, 64
    seg = _docs((20, 12, 17, 15), (32, 20, 12))
    pos = jnp.broadcast_to(jnp.arange(s, dtype=jnp.int32), (2, s))
    check(2, t, s, 2, 1, 32, q_pos=pos[:, s - t:], k_pos=pos, q_seg=seg[:, s - t:], k_seg=seg,
          nan_keys=np.arange(s)[None].repeat(2, 0) < s - t)


def test_reference_module_segments_and_softcap():
    """The jnp reference with segment ids and a softcap (autodiff, array scale) against the NumPy one."""
    q, k, v, do = _inputs(5, 2, 21, 21, 4, 2, 16, jnp.float32)
    seg = _docs((5, 9, 7), (12, 9))
    kw = dict(window=8, q_segments=seg, k_segments=seg, logit_softcap=1.2)

    def loss(q, k, v, sc):
        o = reference_attention(q, k, v, sc, **kw)
        return jnp.vdot(o, do), o

    (_, o), grads = run(jax.value_and_grad(loss, argnums=(0, 1, 2, 3), has_aux=True), q, k, v, jnp.float32(0.6))
    want = reference.attention(q, k, v, do, 0.6, reference.visible(2, 21, 21, True, 8, q_seg=seg, k_seg=seg), 1.2)
    for g, w in zip((o, *grads), want):
        assert rel_err(g, w) < 1e-5


@pytest.mark.parametrize("positions", [False, True], ids=["index", "positions-window-kvalid"])
def test_segments_and_softcap_lower_to_triton(positions):
    """The segment test (`lax.cond` -> scf.if), its reductions and tanh go through Pallas's Triton lowering."""
    q, k = jnp.zeros((2, 96, 4, 64), jnp.bfloat16), jnp.zeros((2, 96, 2, 64), jnp.bfloat16)
    ints = jnp.zeros((2, 96), jnp.int32)
    kw = dict(q_positions=ints, k_positions=ints, window=32, k_valid=ints == 0) if positions else {}

    def loss(q, k, v):
        o = flash_attention(q, k, v, q_segments=ints, k_segments=ints, logit_softcap=30.0, interpret=False, **kw)
        return o.astype(jnp.float32).sum()

    text = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).trace(q, k, k).lower(lowering_platforms=("cuda",)).as_text()
    assert set(re.findall(r"custom_call @([\w$.]+)", text)) == {"__gpu$xla.gpu.triton"}


def test_reference_module_and_numpy_agree():
    """The jnp reference (autodiff) and the NumPy one (hand-derived gradients) agree: each checks the other."""
    q, k, v, do = _inputs(4, 2, 19, 19, 4, 2, 16, jnp.float32)

    def outputs(q, k, v, sc):
        def loss(q, k, v, sc):
            return jnp.vdot(reference_attention(q, k, v, sc, causal=True, window=6), do)

        grads = jax.grad(loss, argnums=(0, 1, 2, 3))(q, k, v, sc)
        # The plain causal case also against jax.nn.dot_product_attention.
        plain = reference_attention(q, k, v), jax.nn.dot_product_attention(q, k, v, is_causal=True)
        return reference_attention(q, k, v, sc, causal=True, window=6), grads, plain

    o, grads, (plain, jax_plain) = jax.jit(outputs)(q, k, v, jnp.float32(0.3))
    want = reference.attention(q, k, v, do, 0.3, reference.visible(2, 19, 19, True, 6))
    for g, w in zip((o, *grads), want):
        assert rel_err(g, w) < 1e-5
    assert rel_err(plain, jax_plain) < 1e-5


def test_bad_arguments():
    q = jnp.zeros((1, 8, 4, 16))
    with pytest.raises(ValueError, match="multiple of kv_heads"):
        flash_attention(q, jnp.zeros((1, 8, 3, 16)), jnp.zeros((1, 8, 3, 16)))
    with pytest.raises(ValueError, match="needs causal"):
        flash_attention(q, q, q, causal=False, window=4)
    with pytest.raises(ValueError, match="both q_positions and k_positions"):
        flash_attention(q, q, q, q_positions=jnp.zeros((1, 8), jnp.int32))
    with pytest.raises(ValueError, match="power of two"):
        BlockSizes(block_q=48)
    seg = jnp.zeros((1, 8), jnp.int32)
    with pytest.raises(ValueError, match="both q_segments and k_segments"):
        flash_attention(q, q, q, q_segments=seg)
    with pytest.raises(ValueError, match=r"k_segments must be an integer array \[batch, s\]"):
        flash_attention(q, q, q, q_segments=seg, k_segments=jnp.zeros((1, 7), jnp.int32))
    with pytest.raises(ValueError, match="q_segments must be an integer array"):
        flash_attention(q, q, q, q_segments=seg.astype(jnp.float32), k_segments=seg)
    with pytest.raises(ValueError, match="logit_softcap must be a Python float >= 0"):
        flash_attention(q, q, q, logit_softcap=-1.0)
    with pytest.raises(ValueError, match="cannot be a jax array"):
        flash_attention(q, q, q, logit_softcap=jnp.float32(30.0))


SWEEP = [(d, c, g, "float32") for d, c, g in itertools.product((32, 64, 128), (True, False), (1, 4))]
SWEEP += [(d, causal, 2, "bfloat16") for d, causal in itertools.product((32, 64, 128), (True, False))]


@pytest.mark.slow
@pytest.mark.parametrize("d,causal,groups,dtype", SWEEP)
def test_sweep(d, causal, groups, dtype):
    """Every head dim, causal and not, MHA to GQA-4, both dtypes; odd lengths, several blocks."""
    check(1, 29, 29 if causal else 35, 4, 4 // groups, d, causal=causal, dtype=dtype, seed=d + groups)
