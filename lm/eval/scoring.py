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
batch attends to, before each row's own rest. The layers run as one scanned
program, so the many shapes of a benchmark compile in seconds, not minutes.
Contexts too long for the model lose tokens from the left (as in
lm-evaluation-harness), so that context + continuation fits.

**A row's score never depends on its neighbours** (bitwise, on CPU): not on
the batch size, not on which other requests share its batch, not on their
lengths. Four things make that hold:
- every width a row is padded to (its shared prefix, its own rest, its
  continuations) is a function of that row alone, and rows are batched only
  with rows of the same widths; a float sum over 80 padded keys is not the
  same sum as over 96, even when the extra keys are masked out;
- where a row's shared prefix ends is given by the caller per request
  (`shared_lens`, e.g. the end of MMLU's k-shot header) or else found over
  the whole request set, never per batch;
- on CPU these programs compile without YNNPACK (XLA's own Eigen matmuls):
  YNNPACK picks its kernels by matrix size, so a row's rounding changed
  with the number of rows in its batch (measured: 1-2 rows vs 3+, and a
  one-row continuation pass vs eight). The speed is the same within noise;
- inside a program the rows run one at a time (`lax.map`), so every matmul
  has one row's shape: Eigen's blocking, too, depends on the matrix size,
  and at SmolLM2's widths a batch of 8 rows read as one [8 * t, d] matrix
  rounded differently from one row (1.3e-5 in a log-prob; at d_model 32 the
  two happened to agree, which is how the earlier test missed it). A pass
  over a batch of 8 costs about 5% more this way (one contended measurement).
Widths come in few sizes (prefix: four per octave from 256; rest: two per
octave from 64; continuations: powers of two from 8; rows: the batch size or
powers of two below it, `_batches`), so a benchmark compiles tens of shapes, not hundreds.
With and without shared prefixes the numbers agree to float rounding (~1e-6),
not bitwise: the prefix is summed as a separate part of each softmax.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from importlib import metadata

import jax
import jax.numpy as jnp
import numpy as np

from lm.inference.segments import Segment, run
from lm.model import ModelConfig, forward
from lm.xla_flags import default_flags

Request = tuple[Sequence[int], Sequence[Sequence[int]]]  # (context ids, [continuation ids per choice])


MIN_SHARED = 32  # a shorter common prefix is not worth a separate pass
# The one flag `lm.xla_flags` sets for CPU, emptied: no YNNPACK in these programs (see the module docstring).
_YNN_FUSION = ""


def _round_up(n: int, per_octave: int = 4, least: int = 64) -> int:
    """Pad widths to `per_octave` sizes per octave (4: 64, 80, 96, 112, 128, 160, ...; at least `least`):
    at most 25% padding with 4, 50% with 2, and few distinct shapes to compile for a large model."""
    if n <= least:
        return least
    step = 1 << max(n.bit_length() - 1 - (per_octave.bit_length() - 1), 0)
    return -(-n // step) * step


def _prefix_width(n: int) -> int:
    """Padded width of a shared prefix of n tokens: four sizes per octave from 256. Every row's tokens attend
    over the whole padded prefix, so its padding costs in every row (a 2,484-token MMLU header padded to a
    power of two, 4,096, made the rows of its subject 2.4x slower than a short header's); the few prefix
    widths a benchmark has add few shapes."""
    return _round_up(n, 4, least=256)


def _batches(n: int, batch_size: int) -> list[int]:
    """Sizes of the batches n requests of one shape are cut into: full batches of batch_size, then the rest
    as powers of two (13 at batch 8: 8, 4, 1). Rows run one at a time inside a program, so a padding row
    would cost as much as a real one; these sizes need none, and give few distinct shapes."""
    sizes = [batch_size] * (n // batch_size)
    rest = n % batch_size
    while rest:
        sizes.append(1 << (rest.bit_length() - 1))
        rest -= sizes[-1]
    return sizes


def _lcp(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def shared_lengths(ctxs: Sequence[Sequence[int]]) -> list[int]:
    """Per context, how many leading tokens it shares with its group, found over the whole set: contexts
    sorted by their tokens, runs of neighbours sharing >= MIN_SHARED tokens form a group, and the group
    shares the shortest common prefix along its run (0 for a context alone). Each context keeps at least
    one token of its own. Independent of batch size and order; not of the set (pass shared_lens for that)."""
    order = sorted(range(len(ctxs)), key=lambda i: list(ctxs[i]))
    out = [0] * len(ctxs)
    s = 0
    while s < len(order):
        e, shared = s + 1, len(ctxs[order[s]])
        while e < len(order):
            n = _lcp(ctxs[order[e - 1]], ctxs[order[e]])
            if min(n, shared) < MIN_SHARED:
                break
            shared, e = min(n, shared), e + 1
        if e - s > 1:
            for i in order[s:e]:
                out[i] = shared
        s = e
    return out


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


def _read_prefix(params, prefix, prefix_len, *, config: ModelConfig) -> Segment:
    """The shared prefix int32 [1, P] (left-padded, prefix_len real tokens) as a one-row segment."""
    pos, valid = _left_padded(prefix_len[None], prefix.shape[1])
    return run(params, config, prefix, pos, valid, logits="none")[1]


def _per_row(fn, xs, segments: tuple[Segment, ...]):
    """fn(row's xs, segments of that row alone) for each row, one row at a time (`lax.map`), so that every
    matmul has the shape of one row whatever the batch size: XLA's CPU kernels pick their blocking (and so
    their rounding) by matrix size, and a batch of 8 rows read as one [8 * t, d] matrix rounds differently
    from one row (measured: up to 1.3e-5 in a log-prob on SmolLM2-135M). Segments of one row are shared by
    every row; per-row segments [layers, b, ...] are sliced."""
    shared = tuple(i for i, seg in enumerate(segments) if seg.k.shape[1] == 1)
    own = [seg for i, seg in enumerate(segments) if i not in shared]
    own_xs = [(jnp.swapaxes(seg.k, 0, 1), jnp.swapaxes(seg.v, 0, 1), seg.pos, seg.valid) for seg in own]

    def one(args):
        x, parts = args
        it = iter(parts)
        segs = tuple(segments[i] if i in shared else
                     Segment(*(lambda k, v, p, m: (k[:, None], v[:, None], p[None], m[None]))(*next(it)))
                     for i in range(len(segments)))
        return fn(x, segs)

    return jax.lax.map(one, (xs, own_xs))


def _read_rows(params, rows, rows_len, start, segments, *, config: ModelConfig):
    """Each row's context (or its rest after a shared prefix of `start` tokens): rows int32 [b, W]
    left-padded, rows_len [b]. Returns (last logits float32 [b, vocab], the rows' segment)."""
    width = rows.shape[1]

    def one(x, segs):
        toks, n = x
        pos, valid = _left_padded(n[None], width, start)
        last, seg = run(params, config, toks[None], pos, valid, segs, logits="last")
        return last[0], seg

    last, seg = _per_row(one, (rows, rows_len), segments)  # seg fields [b, layers, 1, W, ...] / [b, 1, W]
    return last, Segment(jnp.swapaxes(seg.k[:, :, 0], 0, 1), jnp.swapaxes(seg.v[:, :, 0], 0, 1), seg.pos[:, 0],
                         seg.valid[:, 0])


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
            def one(x, segs):  # one row at a time, as in _read_rows
                tok, kp, m = x
                return run(params, config, tok[None], kp[None], m[None], segs)[0][0]

            logits = _per_row(one, (toks, ctx_len[:, None] + steps, keep), segments)
            pred = jnp.concatenate([last[:, None], logits[:, :-1]], axis=1)
        lp, greedy = _token_logprobs(pred, toks)
        return jnp.sum(jnp.where(keep, lp, 0.0), axis=1), jnp.all(greedy | ~keep, axis=1)

    lps, greedy = jax.lax.map(choice, (jnp.swapaxes(cont, 0, 1), cont_len.T))  # [K, b]
    return lps.T, greedy.T


def _compiler_options() -> dict | None:
    """No YNNPACK fusion, on CPU, for the jaxlib versions `lm.xla_flags` knows; else None."""
    known = default_flags(metadata.version("jaxlib"))
    if jax.default_backend() != "cpu" or "xla_cpu_experimental_ynn_fusion_type" not in known:
        return None
    return {"xla_cpu_experimental_ynn_fusion_type": _YNN_FUSION}


@functools.cache
def _programs() -> dict:
    """The jitted scoring programs, built on first use (the backend is known only then)."""
    opts = _compiler_options()
    return {f.__name__: jax.jit(f, static_argnames=("config",), compiler_options=opts)
            for f in (_read_prefix, _read_rows, _score_choices)}


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


def _cont_width(conts: Sequence[Sequence[int]]) -> int:
    longest = max(map(len, conts))
    return 1 if longest == 1 else _round_up(longest, 1, least=8)


def score_continuations(params, config: ModelConfig, requests: Sequence[Request], batch_size: int = 8,
                        progress: bool = False, desc: str = "scoring", share_prefix: bool = True,
                        shared_lens: Sequence[int] | None = None,
                        prefix_cache: dict | None = None) -> list[list[tuple[float, int, bool]]]:
    """For each (context, continuations) request, one (log-prob sum, token count, greedy) per continuation.

    `greedy` says every continuation token was the model's argmax. Results come
    back in the input order and do not depend on `batch_size` or on the other
    requests (see the module docstring). With `share_prefix`, the first
    `shared_lens[i]` tokens of context i (default: `shared_lengths` over all
    contexts) are read once for every context that starts with the same ones;
    a shared length under MIN_SHARED means none. `prefix_cache` (a dict the
    caller keeps for one model across calls) holds the last shared prefix
    read, so a caller scoring a subject's questions chunk by chunk reads its
    k-shot header once, not once per chunk (the same numbers: the same
    program on the same tokens).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if shared_lens is not None and len(shared_lens) != len(requests):
        raise ValueError(f"shared_lens has {len(shared_lens)} entries for {len(requests)} requests")
    for i, (ctx, conts) in enumerate(requests):
        _check_request(i, ctx, conts, config)
    # Truncation depends on the request alone, never on its batch-mates.
    ctxs = [list(ctx)[-(config.context_length - max(map(len, conts))):] for ctx, conts in requests]
    cut = [len(ctx) - len(c) for (ctx, _), c in zip(requests, ctxs)]
    if not share_prefix:
        shared = [0] * len(ctxs)
    elif shared_lens is None:
        shared = shared_lengths(ctxs)
    else:  # a prefix cut by truncation is no longer the one the caller meant
        shared = [min(max(s - k, 0), len(c) - 1) for s, k, c in zip(shared_lens, cut, ctxs)]
    shared = [s if s >= MIN_SHARED else 0 for s in shared]
    # Rows are batched only with rows of the same prefix and padded widths.
    groups: dict[tuple, list[int]] = {}
    for i, (c, s) in enumerate(zip(ctxs, shared)):
        conts = requests[i][1]
        key = (tuple(c[:s]), _round_up(len(c) - s, 2), _cont_width(conts), len(conts))
        groups.setdefault(key, []).append(i)
    programs = _programs()
    out: list = [None] * len(requests)
    bar = _progress(len(requests), progress, desc)
    prefix_key, segments = None, ()
    for key in sorted(groups, key=lambda k: (len(k[0]), k[0], k[1:])):  # one prefix's groups in a row
        prefix_ids, width, t, k = key
        if prefix_ids != prefix_key:
            prefix_key, segments = prefix_ids, ()
            cache_key = (id(params), config, prefix_ids)
            if prefix_ids and prefix_cache is not None and cache_key in prefix_cache:
                segments = prefix_cache[cache_key]
            elif prefix_ids:
                n = len(prefix_ids)
                prefix = np.zeros((1, _prefix_width(n)), np.int32)
                prefix[0, prefix.shape[1] - n:] = prefix_ids
                segments = (programs["_read_prefix"](params, prefix, np.int32(n), config=config),)
                if prefix_cache is not None:  # one entry: a k-shot header's key/values are tens of MB
                    prefix_cache.clear()
                    prefix_cache[cache_key] = segments
        start = len(prefix_ids)
        members = groups[key]
        s = 0
        for rows in _batches(len(members), batch_size):
            idx, s = members[s: s + rows], s + rows
            cont = np.zeros((rows, k, t), np.int32)
            cont_len = np.ones((rows, k), np.int32)
            rest = np.zeros((rows, width), np.int32)
            rest_len = np.ones(rows, np.int32)
            for r, i in enumerate(idx):
                for j, cj in enumerate(requests[i][1]):
                    cont[r, j, : len(cj)], cont_len[r, j] = cj, len(cj)
                own = ctxs[i][start:]
                rest[r, width - len(own):], rest_len[r] = own, len(own)
            last, seg = programs["_read_rows"](params, rest, rest_len, np.int32(start), segments, config=config)
            # Single-token answers need only `last`: no segments, so one compiled program serves every width.
            context = (*segments, seg) if t > 1 else ()
            lps, greedy = programs["_score_choices"](params, context, last, start + rest_len, cont, cont_len,
                                                     config=config)
            lps, greedy = jax.device_get((lps, greedy))
            for r, i in enumerate(idx):
                out[i] = [(float(lps[r, j]), int(cont_len[r, j]), bool(greedy[r, j]))
                          for j in range(len(requests[i][1]))]
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
