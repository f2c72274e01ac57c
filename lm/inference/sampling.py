"""Sampling settings and pure logits -> token functions.

Order of operations (as in Hugging Face): divide by the temperature, keep the
`top_k` largest logits, then keep the smallest set of tokens whose probability
reaches `top_p`. Temperature 0 is greedy (argmax); `top_k` 0 and `top_p` 1
disable those filters. The same seed gives the same tokens.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    temperature: float = 1.0  # 0: greedy
    top_k: int = 0  # 0: no top-k filter
    top_p: float = 1.0  # nucleus mass in (0, 1]; 1: no filter
    max_new_tokens: int = 64
    stop_ids: tuple[int, ...] = ()  # generation of a row ends at any of these (not included in the output)
    seed: int = 0

    def __post_init__(self):
        if not self.temperature >= 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if not isinstance(self.top_k, int) or self.top_k < 0:
            raise ValueError(f"top_k must be an integer >= 0 (0 = off), got {self.top_k!r}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be a positive integer, got {self.max_new_tokens!r}")
        object.__setattr__(self, "stop_ids", tuple(int(i) for i in self.stop_ids))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def filter_logits(logits: jax.Array, sampling: SamplingConfig) -> jax.Array:
    """Logits [..., vocab] scaled by 1/temperature, with filtered-out tokens at -inf (temperature > 0)."""
    logits = logits.astype(jnp.float32) / sampling.temperature
    vocab = logits.shape[-1]
    if 0 < sampling.top_k < vocab:
        kth = jax.lax.top_k(logits, sampling.top_k)[0][..., -1:]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    if sampling.top_p < 1:
        desc = -jnp.sort(-logits, axis=-1)
        probs = jax.nn.softmax(desc, axis=-1)
        before = jnp.cumsum(probs, axis=-1) - probs  # mass of the strictly more likely tokens
        cutoff = jnp.min(jnp.where(before < sampling.top_p, desc, jnp.inf), axis=-1, keepdims=True)
        logits = jnp.where(logits < cutoff, -jnp.inf, logits)
    return logits


def probabilities(logits: jax.Array, sampling: SamplingConfig) -> jax.Array:
    """The distribution tokens are drawn from, [..., vocab] (one-hot argmax when greedy)."""
    if sampling.greedy:
        return jax.nn.one_hot(jnp.argmax(logits, axis=-1), logits.shape[-1], dtype=jnp.float32)
    return jax.nn.softmax(filter_logits(logits, sampling), axis=-1)


def sample(logits: jax.Array, key: jax.Array, sampling: SamplingConfig) -> jax.Array:
    """Token ids int32 [...] from logits [..., vocab]."""
    if sampling.greedy:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    return jax.random.categorical(key, filter_logits(logits, sampling), axis=-1).astype(jnp.int32)


def is_stop(tokens: jax.Array, sampling: SamplingConfig) -> jax.Array:
    """Boolean, same shape as `tokens`: the token is one of `sampling.stop_ids`."""
    if not sampling.stop_ids:
        return jnp.zeros(tokens.shape, bool)
    return jnp.isin(tokens, jnp.asarray(sampling.stop_ids, jnp.int32))


def sample_rows(logits: jax.Array, keys: jax.Array, temperature: jax.Array, top_k: jax.Array,
                top_p: jax.Array) -> jax.Array:
    """Token ids int32 [batch] from logits [batch, vocab], each row with its own settings.

    keys [batch] (typed or uint32 [batch, 2]); temperature float [batch] (0: greedy); top_k int [batch]
    (0: off); top_p float [batch] (1: off). Row r draws exactly what `sample(logits[r], keys[r],
    SamplingConfig(temperature[r], top_k[r], top_p[r]))` draws, whatever the other rows hold: the
    continuous-batching engine serves requests with different settings in one decode step.
    """
    logits = logits.astype(jnp.float32)
    greedy = jnp.argmax(logits, axis=-1).astype(jnp.int32)

    def draw(_):
        x = logits / jnp.where(temperature > 0, temperature, 1.0)[:, None]
        vocab = x.shape[-1]

        def top_k_filter(x):
            kth = jnp.take_along_axis(-jnp.sort(-x, axis=-1), jnp.clip(top_k - 1, 0, vocab - 1)[:, None], axis=-1)
            return jnp.where((top_k[:, None] > 0) & (x < kth), -jnp.inf, x)

        def top_p_filter(x):
            desc = -jnp.sort(-x, axis=-1)
            probs = jax.nn.softmax(desc, axis=-1)
            before = jnp.cumsum(probs, axis=-1) - probs
            cutoff = jnp.min(jnp.where(before < top_p[:, None], desc, jnp.inf), axis=-1, keepdims=True)
            return jnp.where((top_p[:, None] < 1) & (x < cutoff), -jnp.inf, x)

        # The sorts cost more than the rest of a small model's step, so they run only when a row asks.
        x = jax.lax.cond(jnp.any((top_k > 0) & (top_k < vocab)), top_k_filter, lambda x: x, x)
        x = jax.lax.cond(jnp.any(top_p < 1), top_p_filter, lambda x: x, x)
        drawn = jax.vmap(lambda k, row: jax.random.categorical(k, row))(keys, x).astype(jnp.int32)
        return jnp.where(temperature > 0, drawn, greedy)

    return jax.lax.cond(jnp.any(temperature > 0), draw, lambda _: greedy, None)
