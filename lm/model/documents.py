"""Packed documents: which document each token of a training window belongs to.

A training window cut from a token stream holds the end of one document, an
end-of-text token, the next document, and so on. `segment_ids` numbers them
(the end-of-text token closes its document, as GPT-2's data puts it), and
`document_positions` restarts RoPE positions at 0 in each, so that with
attention kept inside a document every document is read exactly as it would
be alone, wherever the window cut it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def segment_ids(tokens: jax.Array, eot_id: int) -> jax.Array:
    """int32 [batch, seq]: the number of end-of-text tokens before each token of tokens [batch, seq]."""
    ends = (tokens == eot_id).astype(jnp.int32)
    return jnp.cumsum(ends, axis=1) - ends


def document_positions(segments: jax.Array) -> jax.Array:
    """int32 [batch, seq]: each token's index within its document, from segment ids [batch, seq]."""
    idx = jnp.broadcast_to(jnp.arange(segments.shape[1], dtype=jnp.int32), segments.shape)
    starts = jnp.concatenate([jnp.ones_like(segments[:, :1], bool), segments[:, 1:] != segments[:, :-1]], axis=1)
    return idx - jax.lax.cummax(jnp.where(starts, idx, 0), axis=1)


def first_token_mask(inputs: jax.Array, eot_id: int) -> jax.Array:
    """bool [batch, seq]: False where the next-token target is a document's first token (the input is
    end-of-text), so the loss never asks one document to predict the next one's start."""
    return inputs != eot_id
