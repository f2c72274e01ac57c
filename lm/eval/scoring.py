"""Log-likelihood scoring: the one place the harness runs the model to score tokens.

    out = score_continuations(params, config, [(context_ids, [cont_a, cont_b, ...]), ...])
    out[i][j] -> (log p(cont_j | context_i) summed over its tokens, tokens, every token greedy)
    nll, count = window_nll(params, config, tokens, valid, scored)   # perplexity windows

Each request's context is read once: contexts are left-padded into a batch and
prefilled into a KV cache (`lm.inference.cache.extend`, each row with its own
positions and padding mask), and then every choice's continuation is run on
top of that cache. So a 4-way multiple-choice question costs one context pass
plus four short continuation passes, and padding never changes a score: pad
slots are masked out of attention and real tokens keep positions 0, 1, ...
Contexts too long for the model lose tokens from the left (as in
lm-evaluation-harness), so that context + continuation fits the context length.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lm.inference.cache import extend, init_cache
from lm.model import ModelConfig, forward

Request = tuple[Sequence[int], Sequence[Sequence[int]]]  # (context ids, [continuation ids per choice])


def _bucket(n: int, multiple: int) -> int:
    return max(multiple, -(-n // multiple) * multiple)


def _token_logprobs(pred_logits: jax.Array, targets: jax.Array):
    """(log p(target) float32 [..., t], target is the argmax bool [..., t]) from logits [..., t, vocab]."""
    logp = jax.nn.log_softmax(pred_logits.astype(jnp.float32), axis=-1)
    lp = jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
    return lp, jnp.argmax(pred_logits, axis=-1) == targets


@functools.partial(jax.jit, static_argnames=("config",))
def _score_batch(params, ctx, ctx_len, cont, cont_len, *, config: ModelConfig):
    """ctx int32 [b, W] left-padded, ctx_len [b]; cont int32 [b, K, T] right-padded, cont_len [b, K].

    Returns (summed log-probs float32 [b, K], all-greedy bool [b, K]).
    """
    b, width = ctx.shape
    t = cont.shape[2]
    cols = jnp.arange(width)[None, :]
    offset = width - ctx_len[:, None]
    positions, valid = jnp.maximum(cols - offset, 0), cols >= offset
    cache = init_cache(config, b, width + t)
    last, cache = extend(params, config, cache, ctx, positions, valid, fresh=True, last_only=True)  # [b, vocab]
    steps = jnp.arange(t)[None, :]

    def choice(args):
        toks, n = args  # [b, T], [b]
        keep = steps < n[:, None]
        if t == 1:  # single-token continuations: the context's last logits are all we need
            pred = last[:, None]
        else:
            logits, _ = extend(params, config, cache, toks, ctx_len[:, None] + steps, keep)
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
                        progress: bool = False, desc: str = "scoring") -> list[list[tuple[float, int, bool]]]:
    """For each (context, continuations) request, one (log-prob sum, token count, greedy) per continuation.

    `greedy` says every continuation token was the model's argmax. Requests are
    batched in order of context length (fewer pad tokens, fewer compiled
    shapes); results come back in the input order.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for i, (ctx, conts) in enumerate(requests):
        _check_request(i, ctx, conts, config)
    order = sorted(range(len(requests)), key=lambda i: len(requests[i][0]))
    out: list = [None] * len(requests)
    bar = _progress(len(requests), progress, desc)
    for s in range(0, len(order), batch_size):
        idx = order[s: s + batch_size]
        k = max(len(requests[i][1]) for i in idx)
        longest = max(len(c) for i in idx for c in requests[i][1])
        t = 1 if longest == 1 else _bucket(longest, 8)
        # Truncation depends on the request alone, never on its batch-mates.
        ctxs = [list(requests[i][0])[-(config.context_length - max(map(len, requests[i][1]))):] for i in idx]
        width = _bucket(max(map(len, ctxs)), 64)
        rows = batch_size  # a fixed batch shape: the last, short batch reuses the compiled program
        ctx = np.zeros((rows, width), np.int32)
        ctx_len = np.ones(rows, np.int32)
        cont = np.zeros((rows, k, t), np.int32)
        cont_len = np.ones((rows, k), np.int32)
        for r, (i, c) in enumerate(zip(idx, ctxs)):
            ctx[r, width - len(c):], ctx_len[r] = c, len(c)
            for j, cj in enumerate(requests[i][1]):
                cont[r, j, : len(cj)], cont_len[r, j] = cj, len(cj)
        lps, greedy = jax.device_get(_score_batch(params, ctx, ctx_len, cont, cont_len, config=config))
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
