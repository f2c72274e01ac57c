"""Multiple-choice scoring by the log-likelihood of each answer given the prompt.

    ex = Choice(prompt="Question: 2 + 2 =\\nAnswer:", choices=[" 3", " 4"], gold=1)
    result = evaluate_choices(params, config, tokenizer, [ex])
    result["acc"], result["acc_norm"], result["records"][0]["pred"]

`acc` picks the answer with the highest total log-probability; `acc_norm`
divides each answer's log-probability by its length in characters first, not
counting the space that separates it from the prompt, as lm-evaluation-harness
0.4's acc_norm does (`len(choice)` of the choice before its `target_delimiter`
is put in front; its byte-normalised pick is a separate `acc_bytes`), so that
long answers are not penalised for having more tokens. The answer's tokens are those of prompt +
answer encoded together, after the prompt's own tokens, as in
lm-evaluation-harness.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from lm.eval.scoring import score_continuations
from lm.eval.tokens import encode
from lm.model import ModelConfig


@dataclasses.dataclass(frozen=True)
class Choice:
    """One multiple-choice example: a prompt, the answer texts, the index of the right one."""

    prompt: str
    choices: tuple[str, ...]
    gold: int
    meta: dict = dataclasses.field(default_factory=dict, hash=False, compare=False)
    shared: str = ""  # the start of `prompt` other examples share (a k-shot header), read once for them all

    def __post_init__(self):
        object.__setattr__(self, "choices", tuple(self.choices))
        if len(self.choices) < 2:
            raise ValueError(f"a multiple-choice example needs at least 2 choices, got {len(self.choices)}")
        if not 0 <= self.gold < len(self.choices):
            raise ValueError(f"gold index {self.gold} is outside the {len(self.choices)} choices")
        if not self.prompt.startswith(self.shared):
            raise ValueError("the shared text must be the start of the prompt")


def pick(logprobs: Sequence[float], lengths: Sequence[int] | None = None) -> int:
    """Index of the best choice (log-probs divided by lengths if given); ties go to the first."""
    scores = np.asarray(logprobs, np.float64)
    if lengths is not None:
        scores = scores / np.maximum(np.asarray(lengths, np.float64), 1)
    return int(np.argmax(scores))


def norm_length(choice: str) -> int:
    """The length acc_norm divides by: the answer's characters without the one leading space that separates it
    from the prompt (lm-evaluation-harness's target_delimiter, which its `len(choice)` does not see)."""
    return len(choice[1:] if choice.startswith(" ") else choice)


def choice_requests(tokenizer, examples: Sequence[Choice]) -> tuple[list, list[int]]:
    """(scoring requests, shared prefix lengths in tokens) for the examples. An example's shared length is
    where the tokens of its `shared` text and of its prompt part: a function of the example alone."""
    requests, shared = [], []
    header: dict[str, list[int]] = {}  # a k-shot header is shared by many examples: encoded once
    for i, ex in enumerate(examples):
        ctx = encode(tokenizer, ex.prompt)
        conts = [_continuation(tokenizer, ex.prompt, ctx, c) for c in ex.choices]
        if not ctx or any(not c for c in conts):
            raise ValueError(f"example {i}: the prompt and every choice must encode to at least one token")
        requests.append((ctx, conts))
        if ex.shared and ex.shared not in header:
            header[ex.shared] = encode(tokenizer, ex.shared)
        shared.append(min(_lcp(header[ex.shared], ctx), len(ctx) - 1) if ex.shared else 0)
    return requests, shared


def _continuation(tokenizer, prompt: str, ctx: list[int], choice: str) -> list[int]:
    """The choice's tokens as lm-evaluation-harness takes them: prompt + choice encoded whole, the prompt's
    tokens cut off the front (so a merge across the boundary is the whole text's); the choice encoded alone
    where the whole text does not start with the prompt's tokens."""
    whole = encode(tokenizer, prompt + choice)
    if whole[: len(ctx)] == ctx and len(whole) > len(ctx):
        return whole[len(ctx):]
    return encode(tokenizer, choice, add_special_tokens=False)


def _lcp(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def evaluate_choices(params, config: ModelConfig, tokenizer, examples: Sequence[Choice], batch_size: int = 8,
                     progress: bool = False, desc: str = "multiple choice", encoded: tuple | None = None,
                     prefix_cache: dict | None = None) -> dict:
    """Score every choice of every example; returns {"acc", "acc_norm", "n", "records"}.

    Each record: prompt, choices, gold, pred, pred_norm, correct, correct_norm, logprobs, tokens. An
    example's numbers depend on it alone, not on the others evaluated with it (`lm.eval.scoring`) when
    the examples say what they share (`Choice.shared`); else shared prefixes are found over the set.
    `encoded`: choice_requests(tokenizer, examples) if the caller has it already; `prefix_cache`: see
    `score_continuations`.
    """
    if not examples:
        raise ValueError("no examples to evaluate")
    requests, shared = encoded if encoded is not None else choice_requests(tokenizer, examples)
    if len(requests) != len(examples) or len(shared) != len(examples):
        raise ValueError(f"encoded holds {len(requests)} requests for {len(examples)} examples")
    explicit = any(ex.shared for ex in examples)
    scores = score_continuations(params, config, requests, batch_size, progress, desc,
                                 shared_lens=shared if explicit else None, prefix_cache=prefix_cache)
    records = []
    for ex, sc in zip(examples, scores):
        lps = [s[0] for s in sc]
        pred = pick(lps)
        pred_norm = pick(lps, [norm_length(c) for c in ex.choices])
        records.append({**ex.meta, "prompt": ex.prompt, "choices": list(ex.choices), "gold": ex.gold,
                        "pred": pred, "pred_norm": pred_norm, "correct": pred == ex.gold,
                        "correct_norm": pred_norm == ex.gold, "logprobs": lps, "tokens": [s[1] for s in sc]})
    n = len(records)
    return {"acc": sum(r["correct"] for r in records) / n, "acc_norm": sum(r["correct_norm"] for r in records) / n,
            "n": n, "records": records}
