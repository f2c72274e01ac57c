"""Speculative decoding (Leviathan et al. 2023; Chen et al. 2023) for one sequence.

Each round, the small draft model proposes `k` tokens one at a time (d_1..d_k
drawn from its distributions q_0..q_{k-1}); the target model reads the pending
token and all k proposals in one pass, giving p_0..p_k. Proposal d_j is
accepted with probability min(1, p_{j-1}(d_j) / q_{j-1}(d_j)); at the first
rejection, position n, the replacement is drawn from the residual
max(0, p_n - q_n) normalised, and if all k are accepted a bonus token comes
from p_k. Every round therefore emits between 1 and k + 1 tokens and the
output has exactly the target's distribution (after the same temperature /
top-k / top-p processing, applied to both models). With temperature 0 it is
greedy verification: keep proposals while they equal the target's argmax,
then emit the target's argmax, so the output is exactly the target's greedy
output.

Both caches keep the same slot layout: the draft reads the pending token and
d_1..d_k (k + 1 steps, so it also has d_k when everything is accepted), the
target reads the same k + 1 tokens, and both rewind to the accepted prefix.

`k="auto"` decodes in segments, each either plain (the target alone, one token
per step) or speculative with a draft length chosen by a `DraftTuner` from the
round cost and acceptance it measures as it goes (lm/inference/draft_tuner.py),
so a draft that does not pay is turned off; the draft reads the tokens it
missed in one pass when speculation resumes. Every token is still the target's
(greedy: its argmax; sampled: its distribution).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from lm.inference.cache import KVCache, extend, init_cache, rewind
from lm.inference.draft_tuner import DraftTuner
from lm.inference.generate import PROMPT_BUCKET, check_prompts, left_pad
from lm.inference.sampling import SamplingConfig, is_stop, probabilities, sample
from lm.model import ModelConfig


class SpecState(NamedTuple):
    target: KVCache
    draft: KVCache
    token: jax.Array  # int32: the pending token, read by neither model yet
    pos: jax.Array  # int32: its position
    out: jax.Array  # int32 [n_max + k + 1]: emitted tokens (valid up to `count`)
    count: jax.Array  # int32: tokens emitted
    limit: jax.Array  # int32: most tokens this sequence may emit
    stopped: jax.Array  # bool: a stop token was emitted
    key: jax.Array
    rounds: jax.Array  # int32: draft-and-verify rounds run
    accepted: jax.Array  # int32: draft tokens accepted, over all rounds
    rejected: jax.Array  # int32: rounds that ended at a rejected proposal


@dataclasses.dataclass(frozen=True)
class SpecResult:
    tokens: list[int]
    rounds: int
    accepted: int  # draft tokens accepted
    proposed: int  # draft tokens proposed (k per round)
    draft_lengths: tuple[int, ...] = ()  # draft_len="auto": the length chosen for each segment (0: plain)

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / max(self.proposed, 1)


def _residual(p: jax.Array, q: jax.Array) -> jax.Array:
    """The distribution to draw from after a rejection: max(0, p - q), normalised (p itself if p == q)."""
    r = jnp.maximum(p - q, 0.0)
    total = jnp.sum(r, axis=-1, keepdims=True)
    return jnp.where(total > 0, r / jnp.where(total > 0, total, 1.0), p)


def _in_context(pos: jax.Array, config: ModelConfig):
    """(positions clamped into the context, which ones were inside it). Tokens past the context only
    produce tokens beyond the output limit; they are kept out of every attention (never a clamped
    position a causal mask would let earlier tokens see)."""
    return jnp.minimum(pos, config.context_length - 1), pos < config.context_length


def _round(tparams, dparams, s: SpecState, *, tcfg: ModelConfig, dcfg: ModelConfig, sampling: SamplingConfig,
           k: int) -> SpecState:
    key, kd, ka, kr = jax.random.split(s.key, 4)

    def draft_step(carry, j):
        cache, tok = carry
        pos, ok = _in_context(s.pos + j, dcfg)
        logits, cache = extend(dparams, dcfg, cache, tok.reshape(1, 1), pos.reshape(1, 1), ok.reshape(1, 1),
                               last_only=True)
        nxt = sample(logits[0], jax.random.fold_in(kd, j), sampling)
        return (cache, nxt), (nxt, probabilities(logits[0], sampling))

    (dcache, _), (drafts, qs) = jax.lax.scan(draft_step, (s.draft, s.token), jnp.arange(k + 1))
    drafts, qs = drafts[:k], qs[:k]  # the (k+1)-th step only put d_k into the draft cache

    seq = jnp.concatenate([s.token[None], drafts])
    pos, in_ctx = _in_context(s.pos + jnp.arange(k + 1), tcfg)
    tlogits, tcache = extend(tparams, tcfg, s.target, seq[None], pos[None], in_ctx[None])
    tlogits = tlogits[0]  # [k + 1, vocab]
    if sampling.greedy:
        choice = jnp.argmax(tlogits, axis=-1).astype(jnp.int32)
        ok = drafts == choice[:k]
    else:
        ps = probabilities(tlogits, sampling)
        j = jnp.arange(k)
        ok = jax.random.uniform(ka, (k,)) * qs[j, drafts] < ps[j, drafts]  # u < p/q, q > 0 for a drafted token
    n = jnp.argmin(jnp.concatenate([ok, jnp.zeros(1, bool)]))  # leading accepts
    if sampling.greedy:
        x = choice[n]
    else:
        q_n = jnp.concatenate([qs, jnp.zeros_like(qs[:1])])[n]  # q is 0 after the last proposal: bonus from p_k
        x = jax.random.categorical(kr, jnp.log(_residual(ps[n], q_n))).astype(jnp.int32)

    idx = jnp.arange(k + 1)
    new = jnp.where(idx < n, jnp.concatenate([drafts, drafts[:1]]), x)
    stopped = s.stopped | jnp.any(is_stop(new, sampling) & (idx <= n))
    length = s.target.length + n + 1
    return s._replace(target=rewind(tcache, length), draft=rewind(dcache, length), token=x, pos=s.pos + n + 1,
                      out=jax.lax.dynamic_update_slice(s.out, new, (s.count,)), count=s.count + n + 1,
                      stopped=stopped, key=key, rounds=s.rounds + 1, accepted=s.accepted + n,
                      rejected=s.rejected + (n < k))


@functools.partial(jax.jit, static_argnames=("tcfg", "dcfg", "k", "n_max"))
def _start(tparams, dparams, context, plen, *, tcfg: ModelConfig, dcfg: ModelConfig, k: int, n_max: int):
    """context: the prompt except its last token, left-padded [1, width] (may be all padding)."""
    width = context.shape[1]
    cols = jnp.arange(width)[None, :]
    offset = width - (plen - 1)
    positions, valid = jnp.maximum(cols - offset, 0), cols >= offset
    caches = []
    for params, cfg in ((tparams, tcfg), (dparams, dcfg)):
        cache = init_cache(cfg, 1, width + n_max + k + 1)
        caches.append(extend(params, cfg, cache, context, positions, valid, fresh=True, last_only=True)[1])
    return caches


@functools.partial(jax.jit, static_argnames=("tcfg", "dcfg", "sampling", "k"))
def _decode(tparams, dparams, state: SpecState, steps, *, tcfg, dcfg, sampling, k) -> SpecState:
    stop_at = jnp.minimum(state.limit, state.count + steps)
    body = functools.partial(_round, tparams, dparams, tcfg=tcfg, dcfg=dcfg, sampling=sampling, k=k)
    return jax.lax.while_loop(lambda s: (s.count < stop_at) & ~s.stopped, body, state)


def _length(s: SpecState, sampling: SamplingConfig) -> jax.Array:
    """Tokens to keep: up to the first stop token, at most `limit`."""
    end = jnp.minimum(s.count, s.limit)
    stops = is_stop(s.out, sampling) & (jnp.arange(s.out.shape[0]) < end)
    return jnp.where(jnp.any(stops), jnp.argmax(stops), end).astype(jnp.int32)


def _check(tcfg: ModelConfig, dcfg: ModelConfig, k: int | str) -> None:
    if tcfg.vocab_size != dcfg.vocab_size:
        raise ValueError(f"draft vocab_size={dcfg.vocab_size} differs from the target's {tcfg.vocab_size}; "
                         "the two models must share a tokenizer")
    if k != "auto" and (not isinstance(k, int) or k < 1):
        raise ValueError(f"draft length k must be a positive integer or 'auto', got {k!r}")


def start(tparams, tcfg: ModelConfig, dparams, dcfg: ModelConfig, prompt: Sequence[int], sampling: SamplingConfig,
          k: int = 4, key: jax.Array | None = None) -> SpecState:
    """Prefill both models with the prompt (`key` defaults to PRNGKey(sampling.seed))."""
    _check(tcfg, dcfg, k)
    (prompt,) = check_prompts([prompt], tcfg)
    width = -(-max(len(prompt) - 1, 1) // PROMPT_BUCKET) * PROMPT_BUCKET
    context, _ = left_pad([prompt[:-1]], width)
    n_max = min(sampling.max_new_tokens, tcfg.context_length)  # buffer shapes do not depend on the prompt
    limit = min(sampling.max_new_tokens, tcfg.context_length - len(prompt) + 1)
    plen = jnp.int32(len(prompt))
    tcache, dcache = _start(tparams, dparams, jnp.asarray(context), plen, tcfg=tcfg, dcfg=dcfg, k=k, n_max=n_max)
    key = jax.random.PRNGKey(sampling.seed) if key is None else key
    zero = jnp.zeros([], jnp.int32)
    return SpecState(tcache, dcache, jnp.int32(prompt[-1]), plen - 1, jnp.zeros(n_max + k + 1, jnp.int32), zero,
                     jnp.int32(limit), jnp.zeros([], bool), key, zero, zero, zero)


def decode(tparams, tcfg, dparams, dcfg, state: SpecState, sampling: SamplingConfig, k: int = 4,
           steps: int | None = None) -> SpecState:
    """Run rounds until `steps` more tokens are emitted (default: to the end)."""
    steps = state.out.shape[0] if steps is None else steps
    return _decode(tparams, dparams, state, jnp.int32(steps), tcfg=tcfg, dcfg=dcfg,
                   sampling=dataclasses.replace(sampling, seed=0), k=k)


def speculate(tparams, tcfg, dparams, dcfg, prompt: Sequence[int], sampling: SamplingConfig, k: int = 4,
              key: jax.Array | None = None):
    """(tokens int32 [n_max + k + 1], length, rounds, accepted) as device arrays; `jax.vmap` it over keys."""
    s = decode(tparams, tcfg, dparams, dcfg, start(tparams, tcfg, dparams, dcfg, prompt, sampling, k, key),
               sampling, k)
    return s.out, _length(s, sampling), s.rounds, s.accepted


def speculative_generate(tparams, tcfg: ModelConfig, dparams, dcfg: ModelConfig, prompt: Sequence[int],
                         sampling: SamplingConfig, k: int | str = 4, tuner: DraftTuner | None = None) -> SpecResult:
    """Generate after `prompt` (token ids) with target `tparams` and draft `dparams`, proposing k at a time;
    k="auto" lets a `DraftTuner` (`tuner`, or a fresh one) pick k as it goes, or decode plainly."""
    if k == "auto":
        stats: dict = {}
        tokens = sum(_auto(tparams, tcfg, dparams, dcfg, prompt, sampling, tuner or DraftTuner(), stats), [])
        return SpecResult(tokens, stats["rounds"], stats["accepted"], stats["proposed"], tuple(stats["history"]))
    out, length, rounds, accepted = jax.device_get(speculate(tparams, tcfg, dparams, dcfg, prompt, sampling, k))
    return SpecResult(out[: int(length)].tolist(), int(rounds), int(accepted), int(rounds) * k)


def speculative_stream(tparams, tcfg, dparams, dcfg, prompt: Sequence[int], sampling: SamplingConfig,
                       k: int | str = 4, chunk: int = 8, tuner: DraftTuner | None = None) -> Iterator[list[int]]:
    """Yield new token ids about every `chunk` tokens (whole rounds at a time); with k="auto", one list per
    segment the tuner decides on."""
    if k == "auto":
        yield from _auto(tparams, tcfg, dparams, dcfg, prompt, sampling, tuner or DraftTuner(), {})
        return
    s = start(tparams, tcfg, dparams, dcfg, prompt, sampling, k)
    seen = 0
    while True:
        s = decode(tparams, tcfg, dparams, dcfg, s, sampling, k, chunk)
        out, length, count, limit, stopped = jax.device_get((s.out, _length(s, sampling), s.count, s.limit, s.stopped))
        yield out[seen:int(length)].tolist()
        seen = int(length)
        if stopped or count >= limit:
            return


# ----------------------------------------------------------------- draft_len="auto"
@functools.partial(jax.jit, static_argnames=("tcfg", "sampling"))
def _plain(tparams, s: SpecState, steps, *, tcfg: ModelConfig, sampling: SamplingConfig) -> SpecState:
    """Up to `steps` plain decode steps of the target alone (the draft cache falls behind; `_catch_up`)."""
    stop_at = jnp.minimum(s.limit, s.count + steps)

    def body(s: SpecState) -> SpecState:
        pos, ok = _in_context(s.pos, tcfg)
        logits, cache = extend(tparams, tcfg, s.target, s.token.reshape(1, 1), pos.reshape(1, 1), ok.reshape(1, 1),
                               last_only=True)
        key, sub = jax.random.split(s.key)
        tok = sample(logits[0], sub, sampling)
        return s._replace(target=cache, token=tok, pos=s.pos + 1, out=s.out.at[s.count].set(tok), count=s.count + 1,
                          stopped=s.stopped | is_stop(tok, sampling), key=key)

    return jax.lax.while_loop(lambda s: (s.count < stop_at) & ~s.stopped, body, s)


@functools.partial(jax.jit, static_argnames=("tcfg", "dcfg", "sampling", "k"))
def _rounds(tparams, dparams, state: SpecState, n, *, tcfg, dcfg, sampling, k) -> SpecState:
    """Up to `n` draft-and-verify rounds."""
    last = state.rounds + n
    body = functools.partial(_round, tparams, dparams, tcfg=tcfg, dcfg=dcfg, sampling=sampling, k=k)
    return jax.lax.while_loop(lambda s: (s.rounds < last) & (s.count < s.limit) & ~s.stopped, body, state)


@functools.partial(jax.jit, static_argnames=("dcfg",))
def _catch_up(dparams, dcache: KVCache, tokens, positions, valid, n, *, dcfg: ModelConfig) -> KVCache:
    """Read the `n` tokens the draft missed while the target decoded alone (right-padded to [1, width])."""
    _, cache = extend(dparams, dcfg, dcache, tokens, positions, valid)
    return rewind(cache, dcache.length + n)


@jax.jit
def _host_view(s: SpecState):
    """(out, int32 [count, rounds, accepted, rejected, stopped, limit, draft length]) in one program."""
    return s.out, jnp.stack([s.count, s.rounds, s.accepted, s.rejected, s.stopped.astype(jnp.int32), s.limit,
                             s.draft.length.astype(jnp.int32)])


def _compiled(fn) -> int:
    """How many programs a jitted function holds (grows when a call compiles); -1 when jax cannot say."""
    size = getattr(fn, "_cache_size", None)
    return size() if callable(size) else -1


def _auto(tparams, tcfg, dparams, dcfg, prompt, sampling: SamplingConfig, tuner: DraftTuner, stats: dict):
    """Decode in segments, each plain or speculative with the tuner's draft length; yields new tokens per
    segment and leaves rounds / accepted / proposed / history in `stats`. A segment that compiled a program is
    not timed (compiling is not its cost); where jax cannot tell, a mode's first segment in this call is one
    step (or round) and untimed."""
    _check(tcfg, dcfg, "auto")
    # Committed to the device like every jit output, so that each program sees one kind of input
    # whichever segments ran before (a mix of host-made and jit-made arrays compiled again, mid-run).
    s = jax.device_put(start(tparams, tcfg, dparams, dcfg, prompt, sampling, max(tuner.ks)), jax.devices()[0])
    width = int(s.target.length)  # slots before the prompt's last token; slot width + j holds token j below
    static = dataclasses.replace(sampling, seed=0)
    stops = np.asarray(sampling.stop_ids, np.int64)
    knows = _compiled(_plain) >= 0
    warm, seen, proposed, draft_len, out = set(), 0, 0, width, None
    prev = np.zeros(4, np.int64)  # count, rounds, accepted, rejected
    while True:
        k = tuner.choose()
        if k and draft_len < width + int(prev[0]):
            s = s._replace(draft=_draft_caught_up(dparams, dcfg, s.draft, prompt, out, draft_len - width,
                                                  int(prev[0])))
        fn = _rounds if k else _plain
        before = _compiled(fn)
        first = not knows and k not in warm
        t0 = time.perf_counter()
        if k == 0:
            s = _plain(tparams, s, jnp.int32(1 if first else tuner.plain_steps()), tcfg=tcfg, sampling=static)
        else:
            s = _rounds(tparams, dparams, s, jnp.int32(1 if first else tuner.rounds_for(k)), tcfg=tcfg, dcfg=dcfg,
                        sampling=static, k=k)
        # One program and one transfer per segment: everything the host needs (each sync point costs a few
        # percent of a short generation on a busy machine).
        out, packed = jax.device_get(_host_view(s))
        seconds = time.perf_counter() - t0
        now, (stopped, limit, draft_len) = packed[:4].astype(np.int64), packed[4:].tolist()
        count, rounds, accepted, rejected = (int(x) for x in now - prev)
        prev = now
        proposed += k * rounds
        if first or _compiled(fn) != before:
            tuner.observe_untimed(k, count, accepted, rejected)
        elif k == 0:
            tuner.observe_plain(seconds, count)
        else:
            tuner.observe_rounds(k, seconds, rounds, accepted, rejected)
        warm.add(k)
        end = min(int(prev[0]), int(limit))
        hit = np.flatnonzero(np.isin(out[:end], stops)) if len(stops) else []
        length = int(hit[0]) if len(hit) else end
        if length > seen:
            yield out[seen:length].tolist()
            seen = length
        if bool(stopped) or int(prev[0]) >= int(limit):
            stats.update(rounds=int(prev[1]), accepted=int(prev[2]), proposed=proposed, history=tuner.history)
            return


def _draft_caught_up(dparams, dcfg, cache: KVCache, prompt, out: np.ndarray, have: int, want: int,
                     chunk: int = 16) -> KVCache:
    """The draft cache with the target's slots it lacks: slot width holds the prompt's last token, slot
    width + j (j >= 1) the j-th generated token (`out`, on the host), at position len(prompt) - 1 + j; it
    holds slots up to width + have and needs them up to width + want. Read `chunk` tokens per call, so one
    program serves every gap."""
    every = np.concatenate([[prompt[-1]], np.asarray(out)])
    for at in range(have, want, chunk):
        read = every[at: min(at + chunk, want)]
        tokens, positions = np.zeros((1, chunk), np.int32), np.zeros((1, chunk), np.int32)
        valid = np.zeros((1, chunk), bool)
        tokens[0, : len(read)], valid[0, : len(read)] = read, True
        positions[0] = np.minimum(len(prompt) - 1 + at + np.arange(chunk), dcfg.context_length - 1)
        cache = _catch_up(dparams, cache, tokens, positions, valid, jnp.int32(len(read)), dcfg=dcfg)
    return cache
