"""The model run on top of key/value segments, its layers one `lax.scan` body.

    _, prefix = run(params, config, prefix_ids, pos, valid, logits="none")            # rows = 1
    last, rest = run(params, config, suffix_ids, pos2, valid2, (prefix,), logits="last")  # rows = batch
    logits, _ = run(params, config, answer_ids, pos3, valid3, (prefix, rest))

A `Segment` holds the keys and values of tokens already read, for every
layer, with each token's position and whether it is real. New tokens attend
to every segment they are given and to themselves (causally, by position, so
RoPE, sliding windows and padding follow `lm.model.forward` exactly), and
their own keys and values come back as a new segment. A segment of one row
is shared by the whole batch: its keys are broadcast, never copied. Each part
is attended by `lm.model.attention`, and the parts' results are joined into
one softmax by their log-sum-exps (`lm.model.attention.merge`).

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

from typing import NamedTuple

import jax
import jax.numpy as jnp

from lm.model import ModelConfig, attention, bind
from lm.model.attention import merge


class Segment(NamedTuple):
    k: jax.Array  # [layers, rows, len, kv_heads, head_dim], compute dtype; rows is the batch, or 1 if shared
    v: jax.Array  # same
    pos: jax.Array  # int32 [rows, len]: each token's position
    valid: jax.Array  # bool [rows, len]: a real token, not padding


def _attend_part(q, positions, k, v, k_pos, k_valid, config: ModelConfig):
    """(out [b, t, heads, hd], lse [b, t, heads]) of q over one part; a one-row part is read by the whole
    batch at once, its rows folded into one long query."""
    kw = dict(window=config.sliding_window, impl="xla", softcap=config.logit_softcap, return_lse=True)
    b, t, h, hd = q.shape
    if k.shape[0] == 1 and b > 1:
        out, lse = attention(q.reshape(1, b * t, h, hd), k, v, q_positions=positions.reshape(1, b * t),
                             k_positions=k_pos, k_valid=k_valid, **kw)
        return out.reshape(b, t, h, hd), lse.reshape(b, t, h)
    return attention(q, k, v, q_positions=positions, k_positions=k_pos, k_valid=k_valid, **kw)


def run(params: dict, config: ModelConfig, tokens: jax.Array, positions: jax.Array, valid: jax.Array,
        segments: tuple[Segment, ...] = (), *, logits: str = "all"):
    """Read tokens int [b, t] (positions int [b, t], valid bool [b, t]) after `segments`.

    Returns (logits, Segment of these tokens [layers, b, t, ...]); logits are float32
    [b, t, vocab] ("all"), [b, vocab] of the last column ("last"), or None ("none").
    """
    c = config
    dt = jnp.dtype(c.dtype)
    positions, valid = positions.astype(jnp.int32), valid.astype(bool)
    model = bind(params, c)

    def layer(block, x, seg_kv):
        new = {}

        def attend(h):
            q, k, v = block.attn.qkv(h, positions)
            new["k"], new["v"] = k.astype(dt), v.astype(dt)
            parts = [_attend_part(q, positions, sk.astype(q.dtype), sv.astype(q.dtype), s.pos, s.valid, c)
                     for (sk, sv), s in zip(seg_kv, segments)]
            parts.append(_attend_part(q, positions, k, v, positions, valid, c))
            return block.attn.output(merge(parts))

        x, _ = block(x, positions, attend=attend)
        return x, (new["k"], new["v"])

    x = model.embed_tokens(tokens, positions)
    # Always a loop: every new shape of a scoring batch compiles one layer, not the whole depth.
    x, (ks, vs) = model.scan(layer, x, tuple((s.k, s.v) for s in segments), unroll=False)
    out = None if logits == "none" else model.logits(x[:, -1] if logits == "last" else x)
    return out, Segment(ks, vs, positions, valid)
