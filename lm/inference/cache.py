"""A preallocated KV cache and the cached forward pass.

    cache = init_cache(config, batch, max_len)
    logits, cache = extend(params, config, cache, tokens, positions, valid)   # prefill: many tokens
    logits, cache = extend(params, config, cache, next_tok[:, None], pos[:, None])  # decode: one token

`extend` writes the new tokens' keys and values at slots [length, length + t)
and attends to every valid slot, so one function serves prefill, single-token
decode and the k + 1 token verification pass of speculative decoding. The
math is the model's own: `lm.model.bind` gives the Transformer's modules
(embedding, norms, `Attention.qkv` / `Attention.output`, MLP or MoE, head),
its layers run as the same scan (`Transformer.scan`, the cache in the carry),
and attention is `lm.model.attention` over the slots' stored positions, so
RoPE, GQA, sliding windows and padding behave exactly as in `forward`.

Rows of a batch share slot indices (prompts are left-padded to one length);
each slot also stores its token's position and whether it is real, so padded
rows see only their own tokens. Rolling back (rejected draft tokens) is just
`rewind`: slots at or past `length` are never attended to.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from lm.model import ModelConfig, attention, bind


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


def repeat_rows(cache: KVCache, repeats: int) -> KVCache:
    """Each row of a KV cache (stacked layout: k, v [layers, batch, kv_heads, max_len, head_dim]) copied
    `repeats` times in place: row i becomes rows i * repeats ... i * repeats + repeats - 1."""
    return KVCache(jnp.repeat(cache.k, repeats, axis=1), jnp.repeat(cache.v, repeats, axis=1),
                   jnp.repeat(cache.pos, repeats, axis=0), jnp.repeat(cache.valid, repeats, axis=0), cache.length)


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
    filled = slot_valid & (jnp.arange(cache.max_len) < start + t)[None, :]
    attend_kw = dict(window=c.sliding_window, impl="xla", softcap=c.logit_softcap)

    def layer(block, carry, i):
        x, ks, vs = carry
        new = {}

        def attend(h):
            q, k, v = block.attn.qkv(h, positions)  # k, v [b, t, kv_heads, hd]
            at = (i, 0, 0, start, 0)
            new["k"] = jax.lax.dynamic_update_slice(ks, jnp.swapaxes(k, 1, 2)[None].astype(ks.dtype), at)
            new["v"] = jax.lax.dynamic_update_slice(vs, jnp.swapaxes(v, 1, 2)[None].astype(vs.dtype), at)
            if fresh:  # an empty cache: the new tokens are all there is to attend to
                out = attention(q, k, v, q_positions=positions, k_positions=positions, k_valid=valid, **attend_kw)
            else:  # every slot of this layer: [b, kv, max_len, hd] -> [b, max_len, kv, hd]
                k_all = jnp.swapaxes(new["k"][i], 1, 2).astype(q.dtype)
                v_all = jnp.swapaxes(new["v"][i], 1, 2).astype(q.dtype)
                out = attention(q, k_all, v_all, q_positions=positions, k_positions=slot_pos, k_valid=filled,
                                **attend_kw)
            return block.attn.output(out)

        x, _ = block(x, positions, attend=attend)
        return (x, new["k"], new["v"]), None

    x = model.embed_tokens(tokens, positions)
    # Always a loop, whatever `scan_layers` says for training: the cache then updates in place layer by
    # layer, and decoding on a CPU ran about 1.35x faster than with the layers unrolled (RESULTS.md).
    (x, ks, vs), _ = model.scan(layer, (x, cache.k, cache.v), jnp.arange(c.n_layers), unroll=False)
    logits = model.logits(x[:, -1] if last_only else x)
    return logits, KVCache(ks, vs, slot_pos, slot_valid, start + t)


extend_jit = jax.jit(extend, static_argnames=("config", "fresh", "last_only"))
extend_jit.__doc__ = "`extend`, compiled once per config and shape (for calls from Python)."
