"""Prompt/response pairs -> model inputs with a response mask, padded or packed.

    batch = tokenize_pairs(prompt_ids, response_ids, context_length=128, pad_id=0)
    batch["input_ids"], batch["labels"], batch["response_mask"]      # int32, int32, bool [n, seq]
    packed = pack_examples(prompt_ids, response_ids, seq_len=128, pad_id=0)

`labels[:, t]` is the token that follows `input_ids[:, t]`, and
`response_mask[:, t]` is true exactly where that label is a response token, so
losses see the response only and prompts condition without being trained on.
Everything here is host-side NumPy; the arrays go to jitted steps as they are.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _as_ids(seqs: Sequence[Sequence[int]], what: str) -> list[list[int]]:
    if isinstance(seqs, (str, bytes)):
        raise TypeError(f"{what} must be a list of token-id lists, not a string; encode the text first")
    return [[int(t) for t in s] for s in seqs]


def check_pairs(prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]],
                context_length: int) -> tuple[list[list[int]], list[list[int]]]:
    """The pairs as lists, or a ValueError naming the first bad example."""
    prompts, responses = _as_ids(prompts, "prompts"), _as_ids(responses, "responses")
    if len(prompts) != len(responses):
        raise ValueError(f"got {len(prompts)} prompts but {len(responses)} responses; give one response per prompt")
    if not prompts:
        raise ValueError("no examples: give at least one prompt/response pair")
    for i, (p, r) in enumerate(zip(prompts, responses)):
        if not p:
            raise ValueError(f"example {i}: the prompt is empty; a response needs at least one token to follow")
        if not r:
            raise ValueError(f"example {i}: the response is empty, so there is nothing to train on; "
                             "drop the example or give a response (e.g. just the end-of-text token)")
        if len(p) >= context_length:
            raise ValueError(f"example {i}: the prompt has {len(p)} tokens but the context is {context_length}, "
                             "leaving no room for the response; shorten the prompt or use a longer context")
    return prompts, responses


def bucketed_width(prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], context_length: int,
                   multiple: int = 16) -> int:
    """The model-input width that fits the longest prompt + response, rounded up to `multiple` (so
    batches of similar lengths share one compiled program) and capped at the context length."""
    longest = max(len(p) + len(r) for p, r in zip(prompts, responses)) - 1
    return min(-(-longest // multiple) * multiple, context_length)


def tokenize_pairs(prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], context_length: int,
                   pad_id: int = 0, pad_to: int | None = None, truncate: bool = False) -> dict[str, np.ndarray]:
    """Right-padded {"input_ids", "labels", "response_mask"} [n, seq] for token-id pairs.

    seq = the longest prompt + response minus one (or `pad_to`). A pair longer
    than `context_length` + 1 tokens is an error unless `truncate`, which cuts
    the response's tail (the prompt is never cut).
    """
    prompts, responses = check_pairs(prompts, responses, context_length)
    full, starts = [], []
    for i, (p, r) in enumerate(zip(prompts, responses)):
        seq = p + r
        if len(seq) > context_length + 1:
            if not truncate:
                raise ValueError(f"example {i}: prompt + response is {len(seq)} tokens, more than the context "
                                 f"{context_length} + 1; shorten it or pass truncate=True to cut the response")
            seq = seq[: context_length + 1]
        full.append(seq)
        starts.append(len(p))
    width = max(len(s) for s in full) - 1
    if pad_to is not None:
        if pad_to < width:
            raise ValueError(f"pad_to={pad_to} is shorter than the longest example ({width} input tokens)")
        width = pad_to
    n = len(full)
    input_ids = np.full((n, width), pad_id, np.int32)
    labels = np.full((n, width), pad_id, np.int32)
    mask = np.zeros((n, width), bool)
    for i, (seq, start) in enumerate(zip(full, starts)):
        L = len(seq) - 1
        input_ids[i, :L] = seq[:-1]
        labels[i, :L] = seq[1:]
        mask[i, start - 1: L] = True  # label j is seq[j + 1]: a response token from j = len(prompt) - 1 on
    return {"input_ids": input_ids, "labels": labels, "response_mask": mask}


def pack_examples(prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], seq_len: int,
                  pad_id: int = 0) -> dict[str, np.ndarray]:
    """Examples laid end to end in rows of `seq_len` input tokens, {"input_ids", "labels", "response_mask"}.

    Examples are kept whole and placed greedily in order: one starts a new row
    when it does not fit in the current one, and the rest of the row is padding
    (masked out). Attention is causal over the whole row, as in pretraining on
    concatenated documents, so end each response with an end-of-text token.
    Far fewer padding tokens than `tokenize_pairs` when lengths vary.
    """
    prompts, responses = check_pairs(prompts, responses, seq_len)
    rows: list[tuple[list[int], list[bool]]] = []
    cur: list[int] = []
    cur_mask: list[bool] = []  # per token: it is a response token
    for i, (p, r) in enumerate(zip(prompts, responses)):
        ex, ex_mask = p + r, [False] * len(p) + [True] * len(r)
        if len(ex) > seq_len + 1:
            raise ValueError(f"example {i} has {len(ex)} tokens, more than seq_len + 1 = {seq_len + 1}; "
                             "raise seq_len or shorten it")
        if cur and len(cur) + len(ex) > seq_len + 1:
            rows.append((cur, cur_mask))
            cur, cur_mask = [], []
        cur, cur_mask = cur + ex, cur_mask + ex_mask
    rows.append((cur, cur_mask))
    n = len(rows)
    input_ids = np.full((n, seq_len), pad_id, np.int32)
    labels = np.full((n, seq_len), pad_id, np.int32)
    mask = np.zeros((n, seq_len), bool)
    for i, (seq, is_resp) in enumerate(rows):
        L = len(seq) - 1
        input_ids[i, :L] = seq[:-1]
        labels[i, :L] = seq[1:]
        mask[i, :L] = is_resp[1:]
    return {"input_ids": input_ids, "labels": labels, "response_mask": mask}
