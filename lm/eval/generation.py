"""Batched generation until a stop string, through the inference engine (`lm.inference.stream_ids`).

    texts = generate_until(params, config, tokenizer, prompts, SamplingConfig(temperature=0),
                           stop=("Question:", "\\n\\n"), batch_size=16)

Prompts are batched in order of length (left-padded by the engine, so padding
never changes a row's tokens) and each batch decodes on the device a `chunk`
of tokens at a time; between chunks the host checks the stop strings and ends
the batch as soon as every row has stopped. A row also ends at any of the
tokenizer's special tokens (end of text, end of turn, ...). Each text is cut
before its first stop string. Batch i samples with seed `sampling.seed + i`,
so the same seed and batch size give the same texts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from lm.eval.scoring import _progress
from lm.eval.tokens import special_ids
from lm.inference.generate import stop_ids_for, stream_ids
from lm.inference.sampling import SamplingConfig
from lm.model import ModelConfig


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """(text before the first stop string, whether one was found)."""
    cuts = [i for i in (text.find(s) for s in stop if s) if i >= 0]
    return (text[: min(cuts)], True) if cuts else (text, False)


def generate_until(params, config: ModelConfig, tokenizer, prompts: Sequence[Sequence[int]],
                   sampling: SamplingConfig, stop: Sequence[str] = (), batch_size: int = 8, chunk: int = 16,
                   progress: bool = False, desc: str = "generating") -> list[str]:
    """Completion text for each prompt (token ids), cut at the first stop string."""
    if batch_size < 1 or chunk < 1:
        raise ValueError(f"batch_size and chunk must be >= 1, got {batch_size} and {chunk}")
    stops = (*stop_ids_for(tokenizer, sampling).stop_ids, *sorted(special_ids(tokenizer)))
    sampling = dataclasses.replace(sampling, stop_ids=tuple(dict.fromkeys(stops)))  # any special token ends a row
    keep = config.context_length - 1  # the engine needs room for at least one new token
    prompts = [list(p)[-keep:] for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out = [""] * len(prompts)
    bar = _progress(len(prompts), progress, desc)
    for b, s in enumerate(range(0, len(order), batch_size)):
        idx = order[s: s + batch_size]
        ids: list[list[int]] = [[] for _ in idx]
        rows_sampling = dataclasses.replace(sampling, seed=sampling.seed + b)
        rows = [prompts[i] for i in idx]
        rows += [rows[-1]] * (batch_size - len(rows))  # a full last batch reuses the compiled programs
        ended = [False] * len(idx) + [True] * (batch_size - len(idx))
        ids += [[] for _ in range(batch_size - len(idx))]
        for step, new in enumerate(stream_ids(params, config, rows, rows_sampling, chunk)):
            for r, toks in enumerate(new):
                ids[r] += toks
                ended[r] |= len(toks) < (1 if step == 0 else chunk)  # a live row gets a full chunk
            if stop and all(e or cut_at_stop(tokenizer.decode(x), stop)[1] for e, x in zip(ended, ids)):
                break
        for r, i in enumerate(idx):
            out[i] = cut_at_stop(tokenizer.decode(ids[r]), stop)[0]
        bar.update(len(idx))
    bar.close()
    return out
