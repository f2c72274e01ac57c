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

`k="auto"` decodes in segments, each either plain or speculative with a draft
length chosen by a `DraftTuner` from the round cost and acceptance it measures
as it goes (lm/inference/draft_tuner.py), so a draft that does not pay is
turned off. Its state is plain decoding's own (`lm.inference.generate`: the
same prefill, key, programs and cache), and a plain segment is plain
decoding's program, so a tuner that has decided "plain" costs what plain
decoding costs; the draft model is only run (its prompt prefilled, then the
tokens it missed read in one pass) when speculation starts or resumes. Every
token is still the target's (greedy: its argmax; sampled: its distribution).
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
from lm.inference.generate import PAD, PROMPT_BUCKET, DecodeState, check_prompts, left_pad
from lm.inference.generate import _decode as plain_program  # the jitted loop, to see when it compiles
from lm.inference.generate import decode as plain_decode
from lm.inference.generate import start as plain_start
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

    (dcache, last), (drafts, qs) = jax.lax.scan(draft_step, (s.draft, s.token), jnp.arange(k))
    # d_k into the draft cache too (it is the pending token's predecessor when all k are accepted); its logits
    # are unused, so the compiler drops the draft's vocabulary projection and sampling for this step.
    pos, ok = _in_context(s.pos + k, dcfg)
    _, dcache = extend(dparams, dcfg, dcache, last.reshape(1, 1), pos.reshape(1, 1), ok.reshape(1, 1), last_only=True)

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
    # Each cache keeps what it read up to the accepted prefix (auto's draft cache has its own slot layout).
    return s._replace(target=rewind(tcache, s.target.length + n + 1), draft=rewind(dcache, s.draft.length + n + 1),
                      token=x, pos=s.pos + n + 1,
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
CATCH_UP = 16  # tokens per pass when the draft reads the tokens it missed (one program for every gap)


def _draft_catch_up(dparams, dcfg: ModelConfig, draft: KVCache, g: DecodeState, width) -> KVCache:
    """The draft cache once it has read every generated token before the pending one, read from `g.out` on
    the device `CATCH_UP` at a time. Draft slot `width` + j holds generated token j (the prompt is
    left-padded into the slots before)."""
    count, plen = g.lengths[0], g.prompt_lengths[0]
    tokens = jnp.concatenate([jnp.maximum(g.out[0], 0), jnp.zeros(CATCH_UP, jnp.int32)])  # PAD is never read
    idx = jnp.arange(CATCH_UP)

    def lacking(d: KVCache):
        return count - 1 - (d.length - width)

    def read(d: KVCache) -> KVCache:
        have = d.length - width
        n = jnp.minimum(lacking(d), CATCH_UP)
        pos, ok = _in_context(plen + have + idx, dcfg)
        chunk = jax.lax.dynamic_slice(tokens, (have,), (CATCH_UP,))
        _, d = extend(dparams, dcfg, d, chunk[None], pos[None], (ok & (idx < n))[None], last_only=True)
        return rewind(d, d.length - CATCH_UP + n)  # the logits are unused: the compiler drops them

    return jax.lax.while_loop(lambda d: lacking(d) > 0, read, draft)


@functools.partial(jax.jit, static_argnames=("tcfg", "dcfg", "sampling", "k"), donate_argnums=(2, 4))
def _rounds(tparams, dparams, cache: KVCache, g: DecodeState, draft: KVCache, width, n, *, tcfg, dcfg, sampling,
            k):
    """Up to `n` draft-and-verify rounds continuing plain decoding's state (one row): `cache` is its target
    cache and `g` the rest of it (cache None; apart so that only the caches are donated and `g` stays
    readable by the host). The draft first reads the tokens it missed. A round runs only while k + 1 more
    tokens fit under the row's limit (the last few are left to plain decoding), so every round writes
    inside the cache plain decoding sized. Returns (cache, g without it, draft cache,
    int32 [rounds, accepted, rejected])."""
    draft = _draft_catch_up(dparams, dcfg, draft, g, width)
    zero = jnp.zeros([], jnp.int32)
    s = SpecState(cache, draft, g.token[0], g.prompt_lengths[0] + g.step - 1, g.out[0], g.lengths[0],
                  g.limits[0], g.done[0], g.key, zero, zero, zero)
    body = functools.partial(_round, tparams, dparams, tcfg=tcfg, dcfg=dcfg, sampling=sampling, k=k)
    s = jax.lax.while_loop(lambda s: (s.rounds < n) & (s.count + k < s.limit) & ~s.stopped, body, s)
    # Back to plain decoding's conventions: the output ends before the first stop token, PAD after it.
    idx = jnp.arange(s.out.shape[0])
    new = (idx >= g.lengths[0]) & (idx < s.count)
    stops = is_stop(s.out, sampling) & new
    length = jnp.where(jnp.any(stops), jnp.argmax(stops), s.count).astype(jnp.int32)
    out = jnp.where(new & (idx >= length), PAD, s.out)
    g = g._replace(token=s.token[None], out=out[None], lengths=length[None],
                   done=(s.stopped | (length >= s.limit))[None], key=s.key, step=s.count)
    return s.target, g, s.draft, jnp.stack([s.rounds, s.accepted, s.rejected])


@functools.partial(jax.jit, static_argnames=("dcfg", "max_len"))
def _draft_prefill(dparams, tokens, positions, valid, *, dcfg: ModelConfig, max_len: int) -> KVCache:
    """The draft's cache after reading the left-padded prompt [1, width]."""
    cache = init_cache(dcfg, 1, max_len)
    return extend(dparams, dcfg, cache, tokens, positions, valid, fresh=True, last_only=True)[1]


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
    (prompt,) = check_prompts([prompt], tcfg)
    static = dataclasses.replace(sampling, seed=0)
    g = plain_start(tparams, tcfg, [prompt], sampling)  # plain decoding's prefill, key and first token
    if not tuner.plain_tokens:  # its first segment measures plain decoding: without the prefill's time in it
        jax.block_until_ready(g.lengths)
    n_max = g.out.shape[1]
    limit = min(n_max, tcfg.context_length - len(prompt) + 1)  # as plain decoding computes it
    width = -(-len(prompt) // PROMPT_BUCKET) * PROMPT_BUCKET  # the draft's prompt slots, as plain's
    programs = (plain_program, _rounds, _draft_prefill)
    knows = _compiled(plain_program) >= 0
    draft = None  # the draft's cache, made at the first speculative segment
    warm, seen, count = set(), 0, 1
    totals, proposed = np.zeros(3, np.int64), 0  # rounds, accepted, rejected

    def compiled():
        return [_compiled(f) for f in programs]

    def speculate(g, draft, k, n):
        """Run a speculative segment of up to n rounds of k: (g, draft cache, counts)."""
        if draft is None:
            tokens, _ = left_pad([prompt], width)
            cols = np.arange(width)[None, :]
            offset = width - len(prompt)
            draft = _draft_prefill(dparams, tokens, np.maximum(cols - offset, 0).astype(np.int32), cols >= offset,
                                   dcfg=dcfg, max_len=width + n_max - 1 + CATCH_UP)
        cache, rest, draft, counts = _rounds(tparams, dparams, g.cache, g._replace(cache=None), draft,
                                             np.int32(width), np.int32(n), tcfg=tcfg, dcfg=dcfg, sampling=static,
                                             k=k)
        return rest._replace(cache=cache), draft, counts

    while True:
        k = tuner.choose()
        if k and count + k >= limit:  # too close to the end for a round of k: the rest plainly
            k = tuner.history[-1] = 0
        first = not knows and k not in warm
        before = compiled()
        t0 = time.perf_counter()
        steps = 1 if first else tuner.plain_steps() if k == 0 else tuner.rounds_for(k)
        if k == 0:
            g = plain_decode(tparams, tcfg, g, sampling, steps)
            out, lengths, done_ = jax.device_get((g.out, g.lengths, g.done))
            rounds = accepted = rejected = 0
        else:
            g, draft, counts = speculate(g, draft, k, steps)
            out, lengths, done_, counts = jax.device_get((g.out, g.lengths, g.done, counts))
            rounds, accepted, rejected = (int(x) for x in counts)
            totals += counts
            proposed += k * rounds
        seconds = time.perf_counter() - t0
        new, count, done = max(int(lengths[0]) - count, 0), int(lengths[0]), bool(done_[0])
        if first or compiled() != before:
            tuner.observe_untimed(k, new, accepted, rejected)
        elif k == 0:
            tuner.observe_plain(seconds, new)
        else:
            tuner.observe_rounds(k, seconds, rounds, accepted, rejected)
        warm.add(k)
        if count > seen:
            yield out[0, seen:count].tolist()
            seen = count
        if done or count >= limit:
            stats.update(rounds=int(totals[0]), accepted=int(totals[1]), proposed=proposed, history=tuner.history)
            return
