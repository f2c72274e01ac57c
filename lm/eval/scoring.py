"""Log-likelihood scoring: the one place the harness runs the model to score tokens.

    out = score_continuations(params, config, [(context_ids, [cont_a, cont_b, ...]), ...])
    out[i][j] -> (log p(cont_j | context_i) summed over its tokens, tokens, every token greedy)
    nll, count = window_nll(params, config, tokens, valid, scored)   # perplexity windows

Each context is read once: contexts are left-padded into a batch and read
into key/value segments (`lm.inference.segments`, each row with its own
positions and padding mask), and then every choice's continuation is run on
top of them. So a 4-way multiple-choice question costs one context pass
plus four short continuation passes. Contexts that start alike (k-shot prompts
of one MMLU subject share their k solved examples) are batched together and
the tokens they share are read once into a one-row segment that the whole
batch attends to, before each row's own rest: the same numbers at a fraction
of the cost. The layers run as one scanned program, so the many shapes of a
benchmark (prefix, rest and answer widths) compile in seconds, not minutes.
Padding never changes a score: pad slots are masked out of attention and real
tokens keep positions 0, 1, ... Contexts too long for the model lose tokens
from the left (as in lm-evaluation-harness), so that context + continuation fits.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lm.inference.segments import Segment, run
from lm.model import ModelConfig, forward

Request = tuple[Sequence[int], Sequence[Sequence[int]]]  # (context ids, [continuation ids per choice])


MIN_SHARED = 32  # a shorter common prefix is not worth a separate pass


def _bucket(n: int, multiple: int) -> int:
    return max(multiple, -(-n // multiple) * multiple)


def _round_up(n: int, per_octave: int = 4) -> int:
    """Pad widths to `per_octave` sizes per octave (4: 64, 80, 96, 112, 128, 160, ...; at least 64):
    at most 25% padding with 4, 50% with 2, and few distinct shapes to compile for a large model."""
    if n <= 64:
        return 64
    step = 1 << max(n.bit_length() - 1 - (per_octave.bit_length() - 1), 0)
    return -(-n // step) * step


def _common_prefix(rows: Sequence[Sequence[int]]) -> int:
    """Tokens every row starts with, leaving each row at least one token of its own."""
    n = min(map(len, rows)) - 1
    first = rows[0]
    for r in rows[1:]:
        i = 0
        while i < n and r[i] == first[i]:
            i += 1
        n = i
    return max(n, 0)


def _plan(ctxs: Sequence[Sequence[int]], batch_size: int, share_prefix: bool) -> list[list[int]]:
    """Batches of request indices. With `share_prefix`: contexts sorted by their tokens, cut into runs of
    up to `batch_size` that all share >= MIN_SHARED leading tokens (one k-shot subject after another);
    the rows that share with nobody go together, by length. Otherwise: all by length."""
    by_length = sorted(range(len(ctxs)), key=lambda i: len(ctxs[i]))
    if not share_prefix:
        return [by_length[s: s + batch_size] for s in range(0, len(ctxs), batch_size)]
    order = sorted(range(len(ctxs)), key=lambda i: ctxs[i])
    runs, run, shared = [], [order[0]], len(ctxs[order[0]])
    for i in order[1:]:
        prev = ctxs[run[-1]]
        n = 0  # in sorted order, the prefix a run shares is the smallest of its neighbours' common prefixes
        while n < min(len(prev), len(ctxs[i]), shared) and prev[n] == ctxs[i][n]:
            n += 1
        if n >= MIN_SHARED and len(run) < batch_size:
            run.append(i)
            shared = n
        else:
            runs.append(run)
            run, shared = [i], len(ctxs[i])
    runs.append(run)
    alone = {i for r in runs if len(r) == 1 for i in r}
    lonely = [i for i in by_length if i in alone]
    return [r for r in runs if len(r) > 1] + [lonely[s: s + batch_size] for s in range(0, len(lonely), batch_size)]


def _token_logprobs(pred_logits: jax.Array, targets: jax.Array):
    """(log p(target) float32 [..., t], target is the argmax bool [..., t]) from logits [..., t, vocab]."""
    logp = jax.nn.log_softmax(pred_logits.astype(jnp.float32), axis=-1)
    lp = jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
    return lp, jnp.argmax(pred_logits, axis=-1) == targets


def _left_padded(tokens_len: jax.Array, width: int, start: jax.Array | int = 0):
    """(positions, valid) [b, width] for rows of `tokens_len` real tokens right-aligned in `width`
    columns, the first real token at position `start`."""
    cols = jnp.arange(width)[None, :]
    offset = width - tokens_len[:, None]
    return start + jnp.maximum(cols - offset, 0), cols >= offset


@functools.partial(jax.jit, static_argnames=("config",))
def _read_prefix(params, prefix, prefix_len, *, config: ModelConfig) -> Segment:
    """The shared prefix int32 [1, P] (left-padded, prefix_len real tokens) as a one-row segment."""
    pos, valid = _left_padded(prefix_len[None], prefix.shape[1])
    return run(params, config, prefix, pos, valid, logits="none")[1]


@functools.partial(jax.jit, static_argnames=("config",))
def _read_rows(params, rows, rows_len, start, segments, *, config: ModelConfig):
    """Each row's context (or its rest after a shared prefix of `start` tokens): rows int32 [b, W]
    left-padded, rows_len [b]. Returns (last logits float32 [b, vocab], the rows' segment)."""
    pos, valid = _left_padded(rows_len, rows.shape[1], start)
    return run(params, config, rows, pos, valid, segments, logits="last")


@functools.partial(jax.jit, static_argnames=("config",))
def _score_choices(params, segments, last, ctx_len, cont, cont_len, *, config: ModelConfig):
    """Continuations cont int32 [b, K, T] (right-padded, cont_len [b, K]) after contexts already read
    into `segments`, whose last logits are `last` [b, vocab] and lengths ctx_len [b].

    Returns (summed log-probs float32 [b, K], all-greedy bool [b, K]).
    """
    t = cont.shape[2]
    steps = jnp.arange(t)[None, :]

    def choice(args):
        toks, n = args  # [b, T], [b]
        keep = steps < n[:, None]
        if t == 1:  # single-token continuations: the context's last logits are all we need
            pred = last[:, None]
        else:
            logits, _ = run(params, config, toks, ctx_len[:, None] + steps, keep, segments)
            pred = jnp.concatenate([last[:, None], logits[:, :-1]], axis=1)
        lp, greedy = _token_logprobs(pred, toks)
        return jnp.sum(jnp.where(keep, lp, 0.0), axis=1), jnp.all(greedy | ~keep, axis=1)

    lps, greedy = jax.lax.map(choice, (jnp.swapaxes(cont, 0, 1), cont_len.T))  # [K, b]
    return lps.T, greedy.T


def _check_request(i: int, ctx: Sequence[int], conts: Sequence[Sequence[int]], config: ModelConfig):
    if not len(ctx):
        raise ValueError(f"request {i} has an empty context; give at least one token (e.g. a BOS token)")
    if not conts or any(not len(c) for c in conts):
        raise ValueError(f"request {i} needs one or more non-empty continuations")
    longest = max(map(len, conts))
    if longest >= config.context_length:
        raise ValueError(f"request {i} has a {longest}-token continuation; it must be shorter than "
                         f"context_length={config.context_length}")
    ids = [*ctx, *(t for c in conts for t in c)]
    if min(ids) < 0 or max(ids) >= config.vocab_size:
        raise ValueError(f"request {i} has a token id outside the vocabulary [0, {config.vocab_size})")


def score_continuations(params, config: ModelConfig, requests: Sequence[Request], batch_size: int = 8,
                        progress: bool = False, desc: str = "scoring",
                        share_prefix: bool = True) -> list[list[tuple[float, int, bool]]]:
    """For each (context, continuations) request, one (log-prob sum, token count, greedy) per continuation.

    `greedy` says every continuation token was the model's argmax. Results come
    back in the input order. With `share_prefix`, requests are batched in token
    order and the tokens all contexts of a batch start with are read once;
    otherwise they are batched by length. Both give the same numbers.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for i, (ctx, conts) in enumerate(requests):
        _check_request(i, ctx, conts, config)
    # Truncation depends on the request alone, never on its batch-mates.
    ctxs = [list(ctx)[-(config.context_length - max(map(len, conts))):] for ctx, conts in requests]
    # Sorted by their tokens, neighbours share prefixes (k-shot examples); else by length, for less padding.
    out: list = [None] * len(requests)
    bar = _progress(len(requests), progress, desc)
    for idx in _plan(ctxs, batch_size, share_prefix):
        k = max(len(requests[i][1]) for i in idx)
        longest = max(len(c) for i in idx for c in requests[i][1])
        t = 1 if longest == 1 else _bucket(longest, 8)
        cont = np.zeros((batch_size, k, t), np.int32)  # a fixed batch size: a short last batch reuses programs
        cont_len = np.ones((batch_size, k), np.int32)
        for r, i in enumerate(idx):
            for j, cj in enumerate(requests[i][1]):
                cont[r, j, : len(cj)], cont_len[r, j] = cj, len(cj)
        rows = [ctxs[i] for i in idx]
        shared = _common_prefix(rows) if share_prefix else 0
        shared = shared if shared >= MIN_SHARED else 0
        segments = ()
        if shared:
            prefix = np.zeros((1, _round_up(shared, 2)), np.int32)  # read once: coarse sizes cost little
            prefix[0, prefix.shape[1] - shared:] = rows[0][:shared]
            segments = (_read_prefix(params, prefix, np.int32(shared), config=config),)
        width = _round_up(max(len(c) for c in rows) - shared)
        rest = np.zeros((batch_size, width), np.int32)
        rest_len = np.ones(batch_size, np.int32)
        for r, c in enumerate(rows):
            rest[r, width - len(c) + shared:], rest_len[r] = c[shared:], len(c) - shared
        last, own = _read_rows(params, rest, rest_len, np.int32(shared), segments, config=config)
        lps, greedy = _score_choices(params, (*segments, own), last, shared + rest_len, cont, cont_len,
                                     config=config)
        lps, greedy = jax.device_get((lps, greedy))
        for r, i in enumerate(idx):
            n = len(requests[i][1])
            out[i] = [(float(lps[r, j]), int(cont_len[r, j]), bool(greedy[r, j])) for j in range(n)]
        bar.update(len(idx))
    bar.close()
    return out


@functools.partial(jax.jit, static_argnames=("config",))
def window_nll(params, config: ModelConfig, tokens, valid, scored):
    """Per-row (summed negative log-likelihood float32 [b], scored targets int32 [b]).

    tokens int32 [b, s] (right-padded, each row starting at position 0); valid
    bool [b, s] marks real tokens; scored bool [b, s] marks the targets to count
    (token j is predicted from tokens < j, so column 0 is never a target).
    """
    positions = jnp.broadcast_to(jnp.arange(tokens.shape[1], dtype=jnp.int32), tokens.shape)
    logits = forward(params, tokens, config, positions=positions, k_valid=valid)
    lp, _ = _token_logprobs(logits[:, :-1], tokens[:, 1:])
    mask = scored[:, 1:] & valid[:, 1:]
    return -jnp.sum(jnp.where(mask, lp, 0.0), axis=1), jnp.sum(mask, axis=1, dtype=jnp.int32)


def _progress(total: int, enabled: bool, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled, desc=desc, unit="ex", dynamic_ncols=True)
