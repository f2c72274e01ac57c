"""Rollouts: G sampled responses per prompt from our inference engine (lm.inference's on-device loop).

    out = rollout(params, config, prompt_ids, group_size=8, sampling=SamplingConfig(temperature=1.0,
                  max_new_tokens=16, stop_ids=(eot,), seed=step))
    out["responses"][i]    # token ids of sample i (prompt i // G), ending with eot if the model stopped

Each distinct prompt is prefilled once: the n prompts run through the model as one batch, then
every prompt's KV cache (and last-token logits) is copied into its G sample rows and the n * G
rows decode together. The samples are the ones prefilling the n * G repeated prompts gives under
the same seed (`share_prefill=False` runs that path), at 1/G of the prefill work.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lm.inference import KVCache, SamplingConfig, extend, generate_ids, init_cache
# `_record` is the engine's own bookkeeping for a sampled token; reusing it keeps the rows' state
# exactly what `lm.inference.generate.start` builds.
from lm.inference.generate import PAD, PROMPT_BUCKET, DecodeState, _record, check_prompts, decode, left_pad
from lm.inference.sampling import sample
from lm.model import ModelConfig


def repeat_rows(cache: KVCache, repeats: int) -> KVCache:
    """Each row of a KV cache (stacked layout: k, v [layers, batch, kv_heads, max_len, head_dim]) copied
    `repeats` times in place: row i becomes rows i * repeats ... i * repeats + repeats - 1."""
    return KVCache(jnp.repeat(cache.k, repeats, axis=1), jnp.repeat(cache.v, repeats, axis=1),
                   jnp.repeat(cache.pos, repeats, axis=0), jnp.repeat(cache.valid, repeats, axis=0), cache.length)


@functools.partial(jax.jit, static_argnames=("config", "sampling", "n_max", "group_size"))
def _start_groups(params, tokens, prompt_lengths, key, *, config: ModelConfig, sampling: SamplingConfig, n_max: int,
                  group_size: int) -> DecodeState:
    """`lm.inference.generate`'s start on the prompts repeated group_size times, prefilling each once."""
    n, width = tokens.shape
    offset = width - prompt_lengths[:, None]
    cols = jnp.arange(width)[None, :]
    positions, valid = jnp.maximum(cols - offset, 0), cols >= offset
    cache = init_cache(config, n, width + n_max - 1)
    logits, cache = extend(params, config, cache, tokens, positions, valid, fresh=True, last_only=True)
    cache, logits = repeat_rows(cache, group_size), jnp.repeat(logits, group_size, axis=0)
    prompt_lengths = jnp.repeat(prompt_lengths, group_size)
    b = n * group_size
    key, sub = jax.random.split(key)
    limits = jnp.minimum(n_max, config.context_length - prompt_lengths + 1)
    s = DecodeState(cache, jnp.zeros(b, jnp.int32), jnp.full((b, n_max), PAD, jnp.int32), jnp.zeros(b, jnp.int32),
                    jnp.zeros(b, bool), limits, prompt_lengths, key, jnp.zeros([], jnp.int32))
    return _record(s, sample(logits, sub, sampling), sampling)


def sample_groups(params, config: ModelConfig, prompts: Sequence[Sequence[int]], group_size: int,
                  sampling: SamplingConfig) -> tuple[np.ndarray, np.ndarray]:
    """`generate_ids` of every prompt repeated group_size times (rows grouped by prompt), prefilling each
    prompt once: (tokens int32 [n * G, max generated] with PAD after each row's end, lengths [n * G])."""
    prompts = check_prompts(prompts, config)
    width = -(-max(map(len, prompts)) // PROMPT_BUCKET) * PROMPT_BUCKET
    tokens, lengths = left_pad(prompts, width)
    n_max = min(sampling.max_new_tokens, config.context_length)
    static = dataclasses.replace(sampling, seed=0)  # the seed travels as a key, as in the engine
    state = _start_groups(params, jnp.asarray(tokens), jnp.asarray(lengths), jax.random.PRNGKey(sampling.seed),
                          config=config, sampling=static, n_max=n_max, group_size=group_size)
    state = decode(params, config, state, sampling)
    out, lengths = jax.device_get((state.out, state.lengths))
    return out[:, : max(int(lengths.max()), 0)], lengths


def rollout(params, config: ModelConfig, prompts: Sequence[Sequence[int]], group_size: int,
            sampling: SamplingConfig, share_prefill: bool = True) -> dict:
    """Sample `group_size` responses per prompt in one batch, laid out group by group.

    Returns {"prompts": [n * G] id lists, "responses": [n * G] id lists, "stopped": bool [n * G]}.
    The engine drops the stop token from its output; it is put back on responses that
    ended with it, so that training also teaches the model when to stop. That needs
    exactly one stop id (otherwise which one ended a row is unknown). `share_prefill=False`
    prefills every repeated prompt separately (the same samples, G times the prefill work).
    """
    if len(sampling.stop_ids) != 1:
        raise ValueError(f"rollouts need exactly one stop id (the task's end token), got {sampling.stop_ids}")
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    repeated = [list(p) for p in prompts for _ in range(group_size)]
    if share_prefill:
        tokens, lengths = sample_groups(params, config, prompts, group_size, sampling)
    else:
        tokens, lengths = generate_ids(params, config, repeated, sampling)
    n_max = min(sampling.max_new_tokens, config.context_length)
    responses, stopped = [], np.zeros(len(repeated), bool)
    for i, p in enumerate(repeated):
        limit = min(n_max, config.context_length - len(p) + 1)  # the engine's own per-row budget
        r = tokens[i, : lengths[i]].tolist()
        if lengths[i] < limit:  # ended before its budget: it sampled the stop token
            r.append(sampling.stop_ids[0])
            stopped[i] = True
        responses.append(r)
    return {"prompts": repeated, "responses": responses, "stopped": stopped}
