"""Preference pairs for DPO from a verifiable task: the policy's own wrong answers are the rejected ones.

    pairs = sample_preference_pairs(params, config, tokenizer, task, problems, samples=4, seed=0)
    batch = preference_batch(pairs, config.context_length)      # {"chosen", "rejected"} model inputs
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np

from lm.align.data import tokenize_pairs
from lm.align.rollout import rollout
from lm.align.tasks import Task
from lm.inference import SamplingConfig
from lm.model import ModelConfig


def sample_preference_pairs(params, model: ModelConfig, tokenizer, task: Task, problems: Sequence[dict],
                            samples: int = 4, temperature: float = 1.0, max_new_tokens: int = 16,
                            seed: int = 0, batch_prompts: int = 64) -> list[dict]:
    """One pair per problem: chosen = the reference answer (task target), rejected = a sampled
    answer the verifier marks wrong. Problems the policy never gets wrong are skipped (nothing to
    prefer against). Returns [{"prompt": ids, "chosen": ids, "rejected": ids, "rejected_text"}]."""
    stop = task.stop_id(tokenizer)
    rng = random.Random(seed)
    pairs = []
    for start in range(0, len(problems), batch_prompts):
        chunk = problems[start: start + batch_prompts]
        prompts = [task.prompt_ids(tokenizer, p) for p in chunk]
        sampling = SamplingConfig(temperature=temperature, max_new_tokens=max_new_tokens, stop_ids=(stop,),
                                  seed=seed * 7919 + start)
        ro = rollout(params, model, prompts, samples, sampling)
        for i, p in enumerate(chunk):
            wrong = []
            for j in range(i * samples, (i + 1) * samples):
                r, stopped = ro["responses"][j], ro["stopped"][j]
                text = tokenizer.decode(r[:-1] if stopped else r)
                if not task.score(text, p):
                    wrong.append((r, text))
            if wrong:
                r, text = rng.choice(wrong)
                pairs.append({"prompt": prompts[i], "chosen": task.target_ids(tokenizer, p), "rejected": r,
                              "rejected_text": text, "problem": p})
    return pairs


def preference_batch(pairs: Sequence[dict], context_length: int, pad_to: int | None = None) -> dict[str, dict]:
    """{"chosen": ..., "rejected": ...}, each {"input_ids", "labels", "response_mask"} [pairs, seq] of one width."""
    prompts = [p["prompt"] for p in pairs]
    longest = max(len(p["prompt"]) + max(len(p["chosen"]), len(p["rejected"])) for p in pairs) - 1
    width = pad_to or longest
    chosen = tokenize_pairs(prompts, [p["chosen"] for p in pairs], context_length, pad_to=width, truncate=True)
    rejected = tokenize_pairs(prompts, [p["rejected"] for p in pairs], context_length, pad_to=width, truncate=True)
    return {"chosen": chosen, "rejected": rejected}


def take(batch: dict, idx: np.ndarray) -> dict:
    """Rows `idx` of every array in a (nested) batch."""
    return {k: take(v, idx) if isinstance(v, dict) else v[idx] for k, v in batch.items()}
