"""A preallocated KV cache and the cached forward pass.

    cache = init_cache(config, batch, max_len)
    logits, cache = extend(params, config, cache, tokens, positions, valid)   # prefill: many tokens
    logits, cache = extend(params, config, cache, next_tok[:, None], pos[:, None])  # decode: one token

`extend` writes the new tokens' keys and values at slots [length, length + t)
and attends to every valid slot, so one function serves prefill, single-token
decode and the k + 1 token verification pass of speculative decoding. The
math is the model's own: `lm.model.bind` gives the Transformer's modules
(embedding, norms, `Attention.qkv` / `Attention.output`, MLP or MoE, head),
and attention is `lm.model.layers.dot_product_attention` with
`attention_mask` over the slots' stored positions, so RoPE, GQA, sliding
windows and padding behave exactly as in `forward`.

Rows of a batch share slot indices (prompts are left-padded to one length);
each slot also stores its token's position and whether it is real, so padded
rows see only their own tokens. Rolling back (rejected draft tokens) is just
`rewind`: slots at or past `length` are never attended to.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from lm.model import ModelConfig, bind
from lm.model.layers import attention_mask, dot_product_attention


class KVCache(NamedTuple):
    k: jax.Array  # [layers, batch, kv_heads, max_len, head_dim], compute dtype
    v: jax.Array  # same
    pos: jax.Array  # int32 [batch, max_len]: position of the token held in each slot
    valid: jax.Array  # bool [batch, max_len]: the slot holds a real (non-padding) token
    length: jax.Array  # int32 scalar: slots [0, length) are filled

    @property
    def max_len(self) -> int:
        return self.k.shape[3]


def init_cache(config: ModelConfig, batch: int, max_len: int) -> KVCache:
    """An empty cache with room for `max_len` tokens per row."""
    shape = (config.n_layers, batch, config.kv_heads, max_len, config.head_dim)
    dt = jnp.dtype(config.dtype)
    return KVCache(jnp.zeros(shape, dt), jnp.zeros(shape, dt), jnp.zeros((batch, max_len), jnp.int32),
                   jnp.zeros((batch, max_len), bool), jnp.zeros([], jnp.int32))


def rewind(cache: KVCache, length: jax.Array) -> KVCache:
    """Forget every slot from `length` on (they are overwritten by the next `extend`)."""
    return cache._replace(length=jnp.asarray(length, jnp.int32))


def extend(params: dict, config: ModelConfig, cache: KVCache, tokens: jax.Array, positions: jax.Array,
           valid: jax.Array | None = None, *, fresh: bool = False, last_only: bool = False):
    """Run `tokens` [batch, t] through the model on top of `cache`; returns (logits float32, new cache).

    positions: int [batch, t]; valid: bool [batch, t] (False for padding; default all True).
    fresh: the cache is known to be empty (a prefill), so attention runs over the new tokens
    only rather than all `max_len` slots. last_only: logits [batch, vocab] of the last token
    only, skipping the vocabulary projection elsewhere (prefill for sampling).
    """
    # Attention here is always XLA over the cache slots, whatever `attention_impl` the model trained
    # with: decode reads one query against many slots, where a flash kernel's tiling saves nothing.
    c = config
    b, t = tokens.shape
    positions = positions.astype(jnp.int32)
    valid = jnp.ones((b, t), bool) if valid is None else valid.astype(bool)
    model = bind(params, c)
    start = cache.length
    slot_pos = jax.lax.dynamic_update_slice(cache.pos, positions, (0, start))
    slot_valid = jax.lax.dynamic_update_slice(cache.valid, valid, (0, start))
    length = start + t
    if fresh:
        mask = attention_mask(positions, positions, c.sliding_window, valid)
    else:
        filled = jnp.arange(cache.max_len) < length
        mask = attention_mask(positions, slot_pos, c.sliding_window, slot_valid & filled[None, :])

    x = model.embed_tokens(tokens, positions)

    ks, vs = cache.k, cache.v
    for i in range(c.n_layers):
        block = getattr(model, f"block_{i}")

        def attend(h, i=i, attn=block.attn):
            nonlocal ks, vs
            q, k, v = attn.qkv(h, positions)  # k, v [b, t, kv_heads, hd]
            at = (i, 0, 0, start, 0)
            ks = jax.lax.dynamic_update_slice(ks, jnp.swapaxes(k, 1, 2)[None].astype(ks.dtype), at)
            vs = jax.lax.dynamic_update_slice(vs, jnp.swapaxes(v, 1, 2)[None].astype(vs.dtype), at)
            if not fresh:  # attend over every slot: [b, kv, max_len, hd] -> [b, max_len, kv, hd]
                k, v = jnp.swapaxes(ks[i], 1, 2), jnp.swapaxes(vs[i], 1, 2)
            return attn.output(dot_product_attention(q, k.astype(q.dtype), v.astype(q.dtype), mask))

        x, _ = block(x, positions, attend=attend)
    logits = model.logits(x[:, -1] if last_only else x)
    return logits, KVCache(ks, vs, slot_pos, slot_valid, length)


extend_jit = jax.jit(extend, static_argnames=("config", "fresh", "last_only"))
extend_jit.__doc__ = "`extend`, compiled once per config and shape (for calls from Python)."
