"""Batched generation with a KV cache: prefill once, then a decode loop that stays on the device.

    texts = generate(params, config, tokenizer, ["Once upon", "The"], SamplingConfig(temperature=0.8))
    tokens, lengths = generate_ids(params, config, [[5, 6, 7], [9]], SamplingConfig(temperature=0))
    for new_ids in stream_ids(params, config, [ids], sampling, chunk=8): ...

Prompts of different lengths are left-padded to one length, so every row
writes the same cache slot at each step; each row keeps its own positions
(0 at its first real token) and padding slots are masked out. The decode loop
is one `lax.while_loop` per call; `stream_ids` runs it `chunk` tokens at a
time to hand tokens to the host as they are produced.

A row ends at a stop token (not included in its output), after
`max_new_tokens`, or when the model has read `context_length` tokens (prompt
plus generated, the last generated token is never read, so a prompt of
`context_length` tokens still gets one).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from lm.inference.cache import KVCache, extend, init_cache, repeat_rows
from lm.inference.sampling import SamplingConfig, is_stop, sample
from lm.model import ModelConfig

PAD = -1  # in `out` after a row has ended
PROMPT_BUCKET = 16  # prompt batches are padded to a multiple of this, to reuse compiled programs


class DecodeState(NamedTuple):
    cache: KVCache
    token: jax.Array  # int32 [batch]: the latest token, not yet in the cache
    out: jax.Array  # int32 [batch, n_max]: generated tokens, PAD after a row's end
    lengths: jax.Array  # int32 [batch]: tokens generated per row
    done: jax.Array  # bool [batch]
    limits: jax.Array  # int32 [batch]: most tokens each row may generate
    prompt_lengths: jax.Array  # int32 [batch]
    key: jax.Array
    step: jax.Array  # int32: columns of `out` written


def check_prompts(prompts: Sequence[Sequence[int]], config: ModelConfig) -> list[list[int]]:
    """The prompts as lists of ints, or a ValueError naming the bad one."""
    if isinstance(prompts, (str, bytes)) or not len(prompts):
        raise ValueError("give a non-empty list of prompts (each a list of token ids)")
    return [check_prompt(p, config, f"prompt {i}") for i, p in enumerate(prompts)]


def check_prompt(prompt: Sequence[int], config: ModelConfig, name: str = "the prompt") -> list[int]:
    """One prompt as a list of ints, or a ValueError saying what is wrong with it for this model."""
    p = [int(t) for t in prompt]
    if not p:
        raise ValueError(f"{name} is empty; give at least one token")
    if len(p) > config.context_length:
        raise ValueError(f"{name} has {len(p)} tokens, longer than the model's context_length="
                         f"{config.context_length}; shorten it")
    bad = [t for t in p if not 0 <= t < config.vocab_size]
    if bad:
        raise ValueError(f"{name} has token id {bad[0]} outside the vocabulary [0, {config.vocab_size})")
    return p


def left_pad(prompts: list[list[int]], width: int) -> tuple[np.ndarray, np.ndarray]:
    """(tokens int32 [batch, width] with the prompts right-aligned, lengths int32 [batch])."""
    tokens = np.zeros((len(prompts), width), np.int32)
    for i, p in enumerate(prompts):
        tokens[i, width - len(p):] = p
    return tokens, np.array([len(p) for p in prompts], np.int32)


def _record(s: DecodeState, tok: jax.Array, sampling: SamplingConfig) -> DecodeState:
    keep = ~s.done & ~is_stop(tok, sampling)
    out = jax.lax.dynamic_update_slice(s.out, jnp.where(keep, tok, PAD)[:, None], (0, s.step))
    lengths = s.lengths + keep
    done = s.done | ~keep | (lengths >= s.limits)
    return s._replace(token=tok, out=out, lengths=lengths, done=done, step=s.step + 1)


@functools.partial(jax.jit, static_argnames=("config", "sampling", "n_max", "group_size"))
def _start(params, tokens, prompt_lengths, key, *, config: ModelConfig, sampling: SamplingConfig, n_max: int,
           group_size: int = 1):
    """Prefill the prompts and sample each row's first token. With group_size G > 1 each prompt is
    prefilled once and its cache and last logits copied into G consecutive rows (GRPO's samples)."""
    n, width = tokens.shape
    offset = width - prompt_lengths[:, None]
    cols = jnp.arange(width)[None, :]
    positions, valid = jnp.maximum(cols - offset, 0), cols >= offset
    cache = init_cache(config, n, width + n_max - 1)
    logits, cache = extend(params, config, cache, tokens, positions, valid, fresh=True, last_only=True)
    if group_size > 1:
        cache, logits = repeat_rows(cache, group_size), jnp.repeat(logits, group_size, axis=0)
        prompt_lengths = jnp.repeat(prompt_lengths, group_size)
    b = n * group_size
    key, sub = jax.random.split(key)
    limits = jnp.minimum(n_max, config.context_length - prompt_lengths + 1)
    s = DecodeState(cache, jnp.zeros(b, jnp.int32), jnp.full((b, n_max), PAD, jnp.int32), jnp.zeros(b, jnp.int32),
                    jnp.zeros(b, bool), limits, prompt_lengths, key, jnp.zeros([], jnp.int32))
    return _record(s, sample(logits, sub, sampling), sampling)


@functools.partial(jax.jit, static_argnames=("config", "sampling"), donate_argnums=(1,))
def _decode(params, state: DecodeState, steps, *, config: ModelConfig, sampling: SamplingConfig) -> DecodeState:
    """Up to `steps` more tokens per row (fewer if every row ends), in one on-device loop."""
    limit = jnp.minimum(state.step + steps, state.out.shape[1])

    def body(s: DecodeState) -> DecodeState:
        pos = s.prompt_lengths + s.step - 1  # only rows that have ended can pass the context
        ok = pos < config.context_length
        pos = jnp.minimum(pos, config.context_length - 1)
        logits, cache = extend(params, config, s.cache, s.token[:, None], pos[:, None], ok[:, None],
                               last_only=True)
        key, sub = jax.random.split(s.key)
        return _record(s._replace(cache=cache, key=key), sample(logits, sub, sampling), sampling)

    return jax.lax.while_loop(lambda s: (s.step < limit) & ~jnp.all(s.done), body, state)


def start(params, config: ModelConfig, prompts: Sequence[Sequence[int]], sampling: SamplingConfig,
          group_size: int = 1) -> DecodeState:
    """Prefill the left-padded prompts and sample each row's first token; with group_size G, each prompt
    is prefilled once and decodes as G consecutive rows (rows grouped by prompt)."""
    prompts = check_prompts(prompts, config)
    width = -(-max(map(len, prompts)) // PROMPT_BUCKET) * PROMPT_BUCKET
    tokens, lengths = left_pad(prompts, width)
    n_max = min(sampling.max_new_tokens, config.context_length)  # no row gets more; one shape for all prompts
    return _start(params, jnp.asarray(tokens), jnp.asarray(lengths), jax.random.PRNGKey(sampling.seed),
                  config=config, sampling=_static(sampling), n_max=n_max, group_size=group_size)


def decode(params, config: ModelConfig, state: DecodeState, sampling: SamplingConfig, steps: int | None = None):
    """Continue `state` by up to `steps` tokens (default: to the end). `state` is consumed."""
    steps = state.out.shape[1] if steps is None else steps
    return _decode(params, state, jnp.int32(steps), config=config, sampling=_static(sampling))


def _static(sampling: SamplingConfig) -> SamplingConfig:
    return dataclasses.replace(sampling, seed=0)  # the seed travels as a key, not as a compile-time constant


def generate_ids(params, config: ModelConfig, prompts: Sequence[Sequence[int]], sampling: SamplingConfig):
    """(tokens int32 [batch, n] with PAD after each row's end, lengths int32 [batch]) as NumPy arrays."""
    s = decode(params, config, start(params, config, prompts, sampling), sampling)
    out, lengths = jax.device_get((s.out, s.lengths))
    return out[:, : max(int(lengths.max()), 0)], lengths


def stream_ids(params, config: ModelConfig, prompts: Sequence[Sequence[int]], sampling: SamplingConfig,
               chunk: int = 8) -> Iterator[list[list[int]]]:
    """Yield each row's new token ids after the first token and then every `chunk` decode steps."""
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    s = start(params, config, prompts, sampling)
    seen = np.zeros(s.lengths.shape[0], np.int64)
    while True:
        out, lengths, done, step = jax.device_get((s.out, s.lengths, s.done, s.step))
        yield [out[i, seen[i]: lengths[i]].tolist() for i in range(len(seen))]
        seen = lengths.astype(np.int64)
        if done.all() or step >= out.shape[1]:
            return
        s = decode(params, config, s, sampling, chunk)


def stop_ids_for(tokenizer, sampling: SamplingConfig) -> SamplingConfig:
    """`sampling` with the tokenizer's special tokens (e.g. <|endoftext|>) added to its stop ids."""
    stops = tuple(dict.fromkeys((*sampling.stop_ids, *tokenizer.special_ids.values())))
    return dataclasses.replace(sampling, stop_ids=stops)


def generate(params, config: ModelConfig, tokenizer, prompts: str | Sequence[str],
             sampling: SamplingConfig = SamplingConfig()) -> str | list[str]:
    """Completions (without the prompts) of one prompt string or a list of them, generated as one batch.

    Besides `sampling.stop_ids`, generation stops at the tokenizer's special tokens.
    """
    single = isinstance(prompts, str)
    texts = [prompts] if single else list(prompts)
    ids = [tokenizer.encode(t) for t in texts]
    for i, p in enumerate(ids):
        if not p:
            raise ValueError(f"prompt {i} ({texts[i]!r}) is empty; give some text")
    tokens, lengths = generate_ids(params, config, ids, stop_ids_for(tokenizer, sampling))
    outs = [tokenizer.decode(tokens[i, : lengths[i]].tolist()) for i in range(len(ids))]
    return outs[0] if single else outs
