"""FlashAttention-2 kernels (Pallas, interpret mode) against float64 NumPy references."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kernels.flash_attention import BlockSizes, flash_attention, reference_attention
from kernels.flash_kernels import LOG2E, Static, _k_blocks, _q_blocks, forward
from tests.kernels import reference
from tests.kernels.helpers import rel_err, run

TOL = {"float32": 1e-4, "bfloat16": 3e-2}


def _inputs(seed, b, t, s, h, kvh, d, dtype):
    ks = jax.random.split(jax.random.PRNGKey(seed), 4)
    q = jax.random.normal(ks[0], (b, t, h, d), jnp.float32).astype(dtype)
    k = jax.random.normal(ks[1], (b, s, kvh, d), jnp.float32).astype(dtype)
    v = jax.random.normal(ks[2], (b, s, kvh, d), jnp.float32).astype(dtype)
    do = jax.random.normal(ks[3], (b, t, h, d), jnp.float32).astype(dtype)
    return q, k, v, do


def check(b, t, s, h, kvh, d, *, causal=True, window=0, dtype="float32", blocks=BlockSizes(16, 16, 16, 16),
          array_scale=True, k_valid=None, q_pos=None, k_pos=None, seed=0):
    """Output and dq, dk, dv (and dscale for an array scale) of the kernel against float64 NumPy."""
    q, k, v, do = _inputs(seed, b, t, s, h, kvh, d, jnp.dtype(dtype))
    scale = 0.7 / np.sqrt(d)
    kw = dict(causal=causal, window=window, k_valid=k_valid, q_positions=q_pos, k_positions=k_pos,
              block_sizes=blocks, interpret=True)

    def loss(q, k, v, sc):
        o = flash_attention(q, k, v, sc if array_scale else scale, **kw)
        return jnp.vdot(o.astype(jnp.float32), do.astype(jnp.float32)), o

    (_, o), grads = run(jax.value_and_grad(loss, argnums=(0, 1, 2, 3), has_aux=True), q, k, v, jnp.float32(scale))
    vis = reference.visible(b, t, s, causal, window, k_valid, q_pos, k_pos)
    want = reference.attention(q, k, v, do, scale, vis)
    names = ["o", "dq", "dk", "dv"] + (["dscale"] if array_scale else [])
    got = [o, *grads[:3]] + ([grads[3]] if array_scale else [])
    assert o.dtype == q.dtype and [g.dtype for g in grads[:3]] == [q.dtype] * 3
    errs = {n: rel_err(g, w) for n, g, w in zip(names, got, want)}
    if array_scale and dtype == "bfloat16":
        # d(scale) = <dq, q> / scale sums terms that cancel to ~0.1% of their size on random inputs, so
        # bf16 rounding of dq is measured against the terms' total size (XLA's bf16 attention does no better).
        terms = np.abs(np.asarray(want[1]) * np.asarray(q, np.float64)).sum() / scale
        errs["dscale"] = abs(float(grads[3]) - want[4]) / terms
    assert max(errs.values()) < TOL[dtype], errs
    return errs


_PAD = np.arange(50)[None] >= np.array([[0], [11]])  # key padding (left), for index-position masks

CASES = {  # b, t, s, h, kvh, d, options; lengths deliberately not multiples of the blocks
    "causal-gqa2-hd32": (2, 37, 37, 4, 2, 32, dict(blocks=BlockSizes(16, 16, 16, 32))),
    "cross-hd48-static-scale": (1, 20, 51, 2, 2, 48, dict(causal=False, array_scale=False,
                                                          blocks=BlockSizes(32, 16, 16, 32))),
    "window-kvalid-gqa4-hd128": (2, 50, 50, 4, 1, 128, dict(window=9, k_valid=_PAD)),
    "bf16-causal-gqa2-hd64": (1, 40, 40, 4, 2, 64, dict(dtype="bfloat16")),
    "bf16-full-hd128": (1, 24, 40, 2, 1, 128, dict(dtype="bfloat16", causal=False, blocks=BlockSizes(16, 32, 16, 16))),
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


SWEEP = [(d, c, g, "float32") for d, c, g in itertools.product((32, 64, 128), (True, False), (1, 4))]
SWEEP += [(d, causal, 2, "bfloat16") for d, causal in itertools.product((32, 64, 128), (True, False))]


@pytest.mark.slow
@pytest.mark.parametrize("d,causal,groups,dtype", SWEEP)
def test_sweep(d, causal, groups, dtype):
    """Every head dim, causal and not, MHA to GQA-4, both dtypes; odd lengths, several blocks."""
    check(1, 29, 29 if causal else 35, 4, 4 // groups, d, causal=causal, dtype=dtype, seed=d + groups)
