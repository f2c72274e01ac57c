"""A paged KV cache: fixed-size pages in one preallocated pool per layer stack, a page table per sequence.

    pool = init_pool(config, num_pages=64, page_size=16)
    logits, pool = paged_extend(params, config, pool, page_table, lengths, tokens, n_new)

The pool holds every layer's keys and values, `[layers, pages, page_size, kv_heads, head_dim]`
(the stacked layout: the scan over layers carries the whole pool and updates its own layer). A
sequence owns a list of pages, its row of `page_table`; token i of the sequence lives in page
`page_table[i // page_size]` at offset `i % page_size`, and its position is i. Which pages are
free, and which hold a prompt prefix other sequences share, is the host's business
(`lm.inference.pages`): this module only reads and writes the pages it is given.

`paged_extend` writes the new tokens' keys and values into their pages (a scatter; padding tokens
go nowhere) and attends to the sequence's pages read back by an XLA gather over the page table,
so prefill, chunked prefill on top of a cached prefix and single-token decode are one function.
The math is the model's own, as in `lm.inference.cache`: `lm.model.bind`'s modules, the layer
scan, and `lm.model.attention` over the slots' positions (RoPE, GQA, sliding windows).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from lm.model import ModelConfig, attention, bind


class PagedKV(NamedTuple):
    k: jax.Array  # [layers, pages, page_size, kv_heads, head_dim], compute dtype
    v: jax.Array  # same

    @property
    def num_pages(self) -> int:
        return self.k.shape[1]

    @property
    def page_size(self) -> int:
        return self.k.shape[2]


def init_pool(config: ModelConfig, num_pages: int, page_size: int) -> PagedKV:
    """An empty pool of `num_pages` pages of `page_size` tokens for every layer."""
    if num_pages < 1 or page_size < 1:
        raise ValueError(f"num_pages and page_size must be positive, got {num_pages} and {page_size}")
    shape = (config.n_layers, num_pages, page_size, config.kv_heads, config.head_dim)
    dt = jnp.dtype(config.dtype)
    return PagedKV(jnp.zeros(shape, dt), jnp.zeros(shape, dt))


def pages_for(tokens: int, page_size: int) -> int:
    """Pages needed to hold `tokens` tokens."""
    return -(-tokens // page_size)


def paged_extend(params: dict, config: ModelConfig, pool: PagedKV, page_table: jax.Array, lengths: jax.Array,
                 tokens: jax.Array, n_new: jax.Array, *, read_pages: int | None = None, block_pages: int | None = None,
                 last_only: bool = False):
    """Read `tokens` [batch, t] after each row's cached tokens; returns (logits float32, new pool).

    page_table int32 [batch, max_pages]: each row's pages in order (entries past its length are
    never read or written, whatever they hold). lengths int32 [batch]: tokens already cached per row;
    row b's new tokens take positions lengths[b], lengths[b] + 1, ... n_new int32 [batch]: how many
    of the row's t tokens are real (the rest is padding: not written, its logits meaningless; a row
    with n_new 0 is an idle slot). read_pages (static): attend to the first `read_pages` pages of each
    row only (default all); every row's lengths + n_new must fit in them. block_pages (static, must
    divide read_pages): attention runs over blocks of this many pages, merged one after the other
    (default: one block). A block that holds none of a row's keys leaves its result bit for bit
    unchanged, so a row's logits do not depend on how many pages its batch reads, only on its own
    keys: the engine can size reads to the longest row and stay batch-invariant. last_only: logits
    [batch, vocab] of each row's last real token instead of [batch, t, vocab].
    """
    c = config
    b, t = tokens.shape
    page = pool.page_size
    read_pages = page_table.shape[1] if read_pages is None else read_pages
    block_pages = read_pages if block_pages is None else block_pages
    if read_pages % block_pages:
        raise ValueError(f"block_pages={block_pages} must divide read_pages={read_pages}")
    lengths, n_new = lengths.astype(jnp.int32), n_new.astype(jnp.int32)
    positions = lengths[:, None] + jnp.arange(t, dtype=jnp.int32)[None]
    real = jnp.arange(t)[None] < n_new[:, None]
    # Padding is written to page index `num_pages`, out of range, which the scatter drops.
    slot_page = jnp.take_along_axis(page_table, jnp.minimum(positions // page, page_table.shape[1] - 1), axis=1)
    slot_page = jnp.where(real, slot_page, pool.num_pages)
    slot_off = positions % page
    # Only padding can run past the context (an idle slot, the tail of a prefill chunk); its positions
    # are clamped so that learned position tables are never indexed out of range.
    positions = jnp.minimum(positions, c.context_length - 1)
    table = page_table[:, :read_pages]
    n_keys = read_pages * page
    k_pos = jnp.arange(n_keys, dtype=jnp.int32)[None]
    k_valid = k_pos < (lengths + n_new)[:, None]
    model = bind(params, c)
    attend_kw = dict(window=c.sliding_window, impl="xla", softcap=c.logit_softcap, return_lse=True)

    def layer(block, carry, i):
        x, ks, vs = carry
        new = {}

        def attend(h):
            q, k, v = block.attn.qkv(h, positions)  # k, v [b, t, kv_heads, hd]
            new["k"] = ks.at[i, slot_page, slot_off].set(k.astype(ks.dtype), mode="drop")
            new["v"] = vs.at[i, slot_page, slot_off].set(v.astype(vs.dtype), mode="drop")
            # The gather: [b, read_pages, page, kv, hd] -> one row of keys per sequence, in position order.
            k_all = new["k"][i, table].reshape(b, n_keys, c.kv_heads, c.head_dim).astype(q.dtype)
            v_all = new["v"][i, table].reshape(b, n_keys, c.kv_heads, c.head_dim).astype(q.dtype)
            out = _blocked_attention(q, k_all, v_all, positions, k_pos, k_valid, block_pages * page, attend_kw)
            return block.attn.output(out)

        x, _ = block(x, positions, attend=attend)
        return (x, new["k"], new["v"]), None

    x = model.embed_tokens(tokens, positions)
    (x, ks, vs), _ = model.scan(layer, (x, pool.k, pool.v), jnp.arange(c.n_layers), unroll=False)
    if last_only:
        x = x[jnp.arange(b), jnp.maximum(n_new - 1, 0)]
    return model.logits(x), PagedKV(ks, vs)


def _blocked_attention(q, k, v, q_pos, k_pos, k_valid, block: int, kw: dict) -> jax.Array:
    """Attention of q [b, t, heads, hd] over keys [b, n, kv, hd] taken `block` at a time, in order, each block's
    (out, lse) folded into the running one. A block with no visible key has lse -inf and weight exactly 0, and
    the running result's weight is exactly 1, so trailing empty blocks change nothing, not even rounding."""
    def part(j):
        take = lambda x: jax.lax.dynamic_slice_in_dim(x, j * block, block, axis=1)  # noqa: E731
        out, lse = attention(q, take(k), take(v), q_positions=q_pos, k_positions=take(k_pos), k_valid=take(k_valid),
                             **kw)
        return out.astype(jnp.float32), lse

    def fold(carry, j):
        out, lse = carry
        o, l2 = part(j)
        top = jnp.maximum(lse, l2)
        top = jnp.where(jnp.isfinite(top), top, 0.0)
        wa, wb = jnp.exp(lse - top), jnp.exp(l2 - top)
        total = wa + wb
        out = (wa[..., None] * out + wb[..., None] * o) / jnp.where(total > 0, total, 1.0)[..., None]
        return (out, top + jnp.log(total)), None

    carry = part(0)
    if k.shape[1] > block:
        carry, _ = jax.lax.scan(fold, carry, jnp.arange(1, k.shape[1] // block))
    return carry[0].astype(q.dtype)


paged_extend_jit = jax.jit(paged_extend, static_argnames=("config", "read_pages", "block_pages", "last_only"),
                           donate_argnums=(2,))
paged_extend_jit.__doc__ = "`paged_extend`, compiled once per config and shape; the pool passed in is consumed."
