"""Sampling without a KV cache: recompute the whole prefix for every new token.

Slow by design (O(n^2) work); it is the reference the cached engine is tested
and benchmarked against, and it is enough for a short sample after training.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from lm.model import forward


@functools.partial(jax.jit, static_argnames=("config",))
def _next_logits(params, buf: jax.Array, length: jax.Array, config):
    """Logits [vocab] of the token after buf[:length]; buf is int32 [context_length]."""
    logits = forward(params, buf[None, :], config)[0]
    return logits[length - 1]


def sample_naive(params, config, prompt_ids: list[int], max_new_tokens: int, key: jax.Array,
                 temperature: float = 1.0, stop_ids: tuple[int, ...] = ()) -> list[int]:
    """Sample up to `max_new_tokens` ids after `prompt_ids` (greedy when temperature is 0)."""
    if not prompt_ids:
        raise ValueError("prompt is empty; give at least one token")
    ctx = config.context_length
    ids = list(prompt_ids)[-ctx:]
    out: list[int] = []
    for _ in range(max_new_tokens):
        window = ids[-ctx:]
        buf = np.zeros(ctx, np.int32)
        buf[: len(window)] = window
        logits = _next_logits(params, jnp.asarray(buf), jnp.int32(len(window)), config)
        if temperature == 0:
            nxt = int(jnp.argmax(logits))
        else:
            key, sub = jax.random.split(key)
            nxt = int(jax.random.categorical(sub, logits / temperature))
        if nxt in stop_ids:
            break
        ids.append(nxt)
        out.append(nxt)
    return out
