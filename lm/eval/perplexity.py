"""Perplexity and bits per byte of a token stream, with a sliding window for long texts.

    plan = sliding_windows(n_tokens, context=128, stride=64)     # [(start, end, first_scored), ...]
    r = perplexity(params, config, ids, stride=64, n_bytes=len(text.encode()))
    r["perplexity"], r["bits_per_byte"], r["tokens"]

Token t (t >= 1) is predicted from the tokens before it. Windows hold at most
`context` tokens; after the first, each window ends `stride` tokens further on
and scores only the tokens that no earlier window scored, so every target is
scored exactly once (n_tokens - 1 targets in all) and each one, past the first
window, sees at least `context - stride` tokens of context. Stride 1 gives
every token its full context (slowest); stride = context - 1 cuts the text
into back-to-back windows that share one token (fastest, least context).

Perplexity is exp(total NLL / scored tokens). Bits per byte is total NLL /
ln 2 / bytes of the scored text: a tokenizer-independent number, comparable
between models with different vocabularies when `n_bytes` counts the bytes of
exactly the scored tokens.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import numpy as np

from lm.eval.scoring import _progress, window_nll
from lm.model import ModelConfig


def sliding_windows(n_tokens: int, context: int, stride: int) -> list[tuple[int, int, int]]:
    """Windows (start, end, first_scored) over tokens [0, n_tokens): the window reads tokens
    [start, end) and scores targets [first_scored, end). Targets 1 .. n_tokens - 1 are each
    scored by exactly one window."""
    if context < 2:
        raise ValueError(f"context must be >= 2 tokens to predict anything, got {context}")
    if not 1 <= stride < context:
        raise ValueError(f"stride must be in [1, context - 1 = {context - 1}] (a window also holds the token "
                         f"before its first target), got {stride}")
    if n_tokens < 2:
        raise ValueError(f"need at least 2 tokens (one to predict from, one to predict), got {n_tokens}")
    end = min(context, n_tokens)
    windows = [(0, end, 1)]
    while end < n_tokens:
        new_end = min(end + stride, n_tokens)
        windows.append((max(new_end - context, 0), new_end, end))
        end = new_end
    return windows


def perplexity(params, config: ModelConfig, ids: Sequence[int] | np.ndarray, stride: int | None = None,
               batch_size: int = 4, n_bytes: int | None = None, progress: bool = False,
               context: int | None = None) -> dict:
    """Score `ids` with sliding windows of `context` tokens (default: the model's context length).

    stride: new tokens scored per window (default: half the context). n_bytes: bytes of
    the scored text, for bits per byte (None leaves it out). Returns {"nll" (total, nats),
    "tokens" (scored), "mean_nll", "perplexity", "bits_per_byte", "windows", "stride", "context"}.
    """
    ids = np.asarray(ids, dtype=np.int64)
    if ids.ndim != 1:
        raise ValueError(f"ids must be one flat token sequence, got shape {ids.shape}")
    if len(ids) and (ids.min() < 0 or ids.max() >= config.vocab_size):
        raise ValueError(f"token ids must lie in [0, {config.vocab_size}) for this model; "
                         f"got range [{ids.min()}, {ids.max()}] (wrong tokenizer?)")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if context is not None and not 2 <= context <= config.context_length:
        raise ValueError(f"context must be in [2, {config.context_length}] for this model, got {context}")
    context = context or config.context_length
    stride = context // 2 if stride is None else stride
    plan = sliding_windows(len(ids), context, stride)
    width = min(context, len(ids))
    total, count = 0.0, 0
    bar = _progress(len(plan), progress, "perplexity")
    for s in range(0, len(plan), batch_size):
        chunk = plan[s: s + batch_size]
        tokens = np.zeros((batch_size, width), np.int32)
        valid = np.zeros((batch_size, width), bool)
        scored = np.zeros((batch_size, width), bool)
        for r, (a, e, first) in enumerate(chunk):
            tokens[r, : e - a] = ids[a:e]
            valid[r, : e - a] = True
            scored[r, first - a: e - a] = True
        nll, n = jax.device_get(window_nll(params, config, tokens, valid, scored))
        total += float(np.sum(nll, dtype=np.float64))
        count += int(np.sum(n))
        bar.update(len(chunk))
    bar.close()
    if count != len(ids) - 1:  # a planning bug would silently bias the number; refuse instead
        raise AssertionError(f"scored {count} targets, expected {len(ids) - 1}")
    mean = total / count
    return {"nll": total, "tokens": count, "mean_nll": mean, "perplexity": math.exp(mean),
            "bits_per_byte": total / math.log(2) / n_bytes if n_bytes else None,
            "bytes": n_bytes, "windows": len(plan), "stride": stride, "context": context}
