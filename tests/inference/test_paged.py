"""The paged KV cache against the contiguous cache and the full forward pass, at every step."""

import jax.numpy as jnp
import numpy as np
import pytest

from lm.inference.cache import extend_jit, init_cache
from lm.inference.paged import init_pool, paged_extend_jit
from tests.inference.tiny import model
from tests.inference.tiny import full_forward as forward

# (variant, dtype, tolerance against float32-exact references): GQA with a sliding window (5 tokens,
# across page boundaries), in float32 and bfloat16.
CASES = [("gqa-window", "float32", 1e-5), ("gqa-window", "bfloat16", None)]


@pytest.mark.parametrize("name,dtype,tol", CASES, ids=[f"{n}-{d}" for n, d, _ in CASES])
def test_paged_logits_equal_contiguous_cache_and_full_forward(name, dtype, tol):
    """Three rows (9, 3 and 6 prompt tokens) on shuffled, non-contiguous pages of 4 tokens: a chunked
    prefill (chunks of 4, rows at different offsets), then single-token decode steps. Every logit
    equals the full forward pass of the row alone and the contiguous (left-padded) cache's."""
    params, c = model(name, dtype=dtype)
    lengths, more, page, chunk = [9, 3, 6], 14, 4, 4
    rng = np.random.default_rng(0)
    seqs = [rng.integers(0, c.vocab_size, n + more) for n in lengths]
    ref_in = np.zeros((3, max(lengths) + more), np.int32)
    for r, s in enumerate(seqs):
        ref_in[r, : len(s)] = s
    full = np.asarray(forward(params, jnp.asarray(ref_in), config=c))

    max_pages = -(-(max(lengths) + more) // page)
    table = rng.permutation(3 * max_pages).reshape(3, max_pages).astype(np.int32)  # pages interleaved across rows
    pool = init_pool(c, 3 * max_pages, page)
    paged = [[] for _ in range(3)]  # each row's logits, position by position
    done = np.zeros(3, np.int32)
    while (done < lengths).any():  # chunked prefill
        n_new = np.minimum(chunk, np.array(lengths) - done)
        toks = np.zeros((3, chunk), np.int32)
        for r in range(3):
            toks[r, : n_new[r]] = seqs[r][done[r]: done[r] + n_new[r]]
        logits, pool = paged_extend_jit(params, c, pool, jnp.asarray(table), jnp.asarray(done), jnp.asarray(toks),
                                        jnp.asarray(n_new))
        for r in range(3):
            paged[r].extend(np.asarray(logits[r, : n_new[r]]))
        done += n_new
    width = max(lengths)  # the contiguous cache: left-padded prompts, then the same decode steps
    tokens, pos, valid = (np.zeros((3, width), t) for t in (np.int32, np.int32, bool))
    for r, n in enumerate(lengths):
        tokens[r, width - n:], pos[r, width - n:], valid[r, width - n:] = seqs[r][:n], np.arange(n), True
    _, cache = extend_jit(params, c, init_cache(c, 3, width + more), jnp.asarray(tokens), jnp.asarray(pos),
                          jnp.asarray(valid), fresh=True)
    contiguous = []
    for j in range(more):
        nxt = jnp.asarray([[s[n + j]] for s, n in zip(seqs, lengths)], jnp.int32)
        logits, pool = paged_extend_jit(params, c, pool, jnp.asarray(table), jnp.asarray(done), nxt,
                                        jnp.ones(3, np.int32), block_pages=2)  # attention in 3 blocks of 2 pages
        for r in range(3):
            paged[r].append(np.asarray(logits[r, 0]))
        done += 1
        clogits, cache = extend_jit(params, c, cache, nxt, jnp.asarray([[n + j] for n in lengths], jnp.int32),
                                    last_only=True)
        contiguous.append(np.asarray(clogits))
    paged = [np.stack(p) for p in paged]
    scale = float(np.abs(full).max())
    tol_full = tol if tol is not None else 0.05 * scale  # bfloat16: a different sum order, 8-bit mantissas
    tol_cont = tol if tol is not None else 0.02 * scale
    for r, n in enumerate(lengths):
        np.testing.assert_allclose(paged[r], full[r, : n + more], atol=tol_full, rtol=0, err_msg=f"row {r} vs full")
        np.testing.assert_allclose(paged[r][n:], np.stack(contiguous)[:, r], atol=tol_cont, rtol=0,
                                   err_msg=f"row {r} vs contiguous")
        if dtype == "bfloat16":  # still the same model: the same greedy choice nearly everywhere
            assert (paged[r].argmax(-1) == full[r, : n + more].argmax(-1)).mean() >= 0.9


def test_padding_and_idle_rows_write_nothing():
    """A row with n_new 0 (an idle decode slot) and the padded tail of a chunk leave every other slot of
    the pool untouched. (The shapes of the float32 case above, so nothing new compiles.)"""
    params, c = model("gqa-window")
    pool = init_pool(c, 18, 4)
    table = jnp.arange(18, dtype=jnp.int32).reshape(3, 6)
    toks = jnp.asarray(np.arange(1, 13).reshape(3, 4), jnp.int32)
    _, pool = paged_extend_jit(params, c, pool, table, jnp.asarray([0, 5, 2], jnp.int32), toks,
                               jnp.asarray([3, 0, 2], jnp.int32))
    k = np.asarray(pool.k).reshape(c.n_layers, 3, 24, -1)  # [layers, row, slot, ...]
    written = np.abs(k).sum(axis=(0, 3)) > 0
    want = np.zeros((3, 24), bool)
    want[0, 0:3] = want[2, 2:4] = True
    np.testing.assert_array_equal(written, want)


def test_reading_more_blocks_changes_no_bit():
    """Attention in blocks of 2 pages: a row's logits are bit-identical whether the call reads 2 pages or 6
    (the engine sizes reads to a batch's longest row, so this is what makes it batch-invariant)."""
    params, c = model("gqa-window")
    table = jnp.arange(18, dtype=jnp.int32).reshape(3, 6)
    toks = jnp.asarray(np.arange(1, 13).reshape(3, 4), jnp.int32)
    n_new = jnp.asarray([4, 0, 2], jnp.int32)
    few, _ = paged_extend_jit(params, c, init_pool(c, 18, 4), table, jnp.asarray([3, 0, 1], jnp.int32), toks, n_new,
                              read_pages=2, block_pages=2)
    many, _ = paged_extend_jit(params, c, init_pool(c, 18, 4), table, jnp.asarray([3, 0, 1], jnp.int32), toks, n_new,
                               read_pages=6, block_pages=2)
    np.testing.assert_array_equal(np.asarray(few)[0], np.asarray(many)[0])
    np.testing.assert_array_equal(np.asarray(few)[2, :2], np.asarray(many)[2, :2])
