"""The model run on top of key/value segments, its layers one `lax.scan` body.

    stack = stack_layers(params, config)                        # once: blocks stacked on a leading axis
    _, prefix = run(stack, config, prefix_ids, pos, valid, logits="none")            # rows = 1
    last, rest = run(stack, config, suffix_ids, pos2, valid2, (prefix,), logits="last")  # rows = batch
    logits, _ = run(stack, config, answer_ids, pos3, valid3, (prefix, rest))

A `Segment` holds the keys and values of tokens already read, for every
layer, with each token's position and whether it is real. New tokens attend
to every segment they are given and to themselves (causally, by position, so
RoPE, sliding windows and padding follow `lm.model.forward` exactly), and
their own keys and values come back as a new segment. A segment of one row
is shared by the whole batch: its keys are broadcast, never copied.

`lm.inference.cache` serves decoding, where one buffer is filled a token at a
time. Scoring reads a long k-shot prefix once and many short rows on top of
it, in shapes that change from batch to batch, and there two other costs
dominate: the unrolled layers of the cached pass make every new shape a
compile of the whole depth (about 20 s for a 30-layer model here), and a
prefix copied into every row's cache is memory traffic for nothing. Scanning
one layer program keeps compiles to about a second, and segments are never
copied.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from lm.model import ModelConfig, bind
from lm.model.layers import MASK_VALUE, attention_mask, softmax
from lm.model.transformer import Block


class Segment(NamedTuple):
    k: jax.Array  # [layers, rows, len, kv_heads, head_dim], compute dtype; rows is the batch, or 1 if shared
    v: jax.Array  # same
    pos: jax.Array  # int32 [rows, len]: each token's position
    valid: jax.Array  # bool [rows, len]: a real token, not padding


def stack_layers(params: dict, config: ModelConfig) -> dict:
    """`params` with block_0 .. block_{n-1} replaced by "blocks": the same tree, leaves [layers, ...]."""
    blocks = [params[f"block_{i}"] for i in range(config.n_layers)]
    rest = {k: v for k, v in params.items() if not k.startswith("block_")}
    return {**rest, "blocks": jax.tree.map(lambda *x: jnp.stack(x), *blocks)}


def _attend(q, parts):
    """q [b, t, heads, hd] over key/value parts [(k, v, mask)]: k, v [b or 1, s, kv_heads, hd], mask
    broadcastable to [b, 1, 1, t, s]; one softmax across all parts. Returns [b, t, heads, hd]."""
    b, t, h, hd = q.shape
    kv = parts[0][0].shape[2]
    qg = q.reshape(b, t, kv, h // kv, hd)
    scores = []
    for k, _, mask in parts:
        if k.shape[0] == 1:  # shared by every row: one matmul with the whole batch as its rows
            s = jnp.einsum("btkgd,skd->bkgts", qg, k[0], preferred_element_type=jnp.float32)
        else:
            s = jnp.einsum("btkgd,bskd->bkgts", qg, k, preferred_element_type=jnp.float32)
        scores.append(jnp.where(mask, s / math.sqrt(hd), MASK_VALUE))
    probs = softmax(jnp.concatenate(scores, axis=-1))
    out, start = 0.0, 0
    for k, v, _ in parts:
        p = probs[..., start: start + k.shape[1]].astype(v.dtype)
        start += k.shape[1]
        spec = "bkgts,skd->btkgd" if v.shape[0] == 1 else "bkgts,bskd->btkgd"
        out = out + jnp.einsum(spec, p, v[0] if v.shape[0] == 1 else v)
    return out.reshape(b, t, h, hd)


def run(stack: dict, config: ModelConfig, tokens: jax.Array, positions: jax.Array, valid: jax.Array,
        segments: tuple[Segment, ...] = (), *, logits: str = "all"):
    """Read tokens int [b, t] (positions int [b, t], valid bool [b, t]) after `segments`.

    Returns (logits, Segment of these tokens [layers, b, t, ...]); logits are float32
    [b, t, vocab] ("all"), [b, vocab] of the last column ("last"), or None ("none").
    """
    c = config
    dt = jnp.dtype(c.dtype)
    positions, valid = positions.astype(jnp.int32), valid.astype(bool)
    first = jax.tree.map(lambda x: x[0], stack["blocks"])  # bind wants every block; only the embedding and head are used
    model = bind({**{k: v for k, v in stack.items() if k != "blocks"},
                  **{f"block_{i}": first for i in range(c.n_layers)}}, c)
    masks = [attention_mask(positions, s.pos, c.sliding_window, s.valid) for s in segments]
    own_mask = attention_mask(positions, positions, c.sliding_window, valid)

    def layer(x, xs):
        params, seg_kv = xs
        block = bind(params, c, Block)
        new = {}

        def attend(h):
            q, k, v = block.attn.qkv(h, positions)
            new["k"], new["v"] = k.astype(dt), v.astype(dt)
            parts = [(sk.astype(q.dtype), sv.astype(q.dtype), m) for (sk, sv), m in zip(seg_kv, masks)]
            return block.attn.output(_attend(q, [*parts, (k, v, own_mask)]))

        x, _ = block(x, positions, attend=attend)
        return x, (new["k"], new["v"])

    x = model.embed_tokens(tokens, positions)
    x, (ks, vs) = jax.lax.scan(layer, x, (stack["blocks"], tuple((s.k, s.v) for s in segments)))
    out = None if logits == "none" else model.logits(x[:, -1] if logits == "last" else x)
    return out, Segment(ks, vs, positions, valid)
