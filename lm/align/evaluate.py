"""Accuracy on a verifiable task: greedy (or sampled) answers to held-out problems, scored by the task's verifier.

    result = evaluate_task(params, config, tokenizer, ARITHMETIC_QA, problems, max_new_tokens=8)
    result["accuracy"], result["n"], result["samples"][:3]
"""

from __future__ import annotations

from collections.abc import Sequence

from tqdm.auto import tqdm

from lm.align.tasks import Task
from lm.inference import SamplingConfig, generate_ids
from lm.model import ModelConfig


def evaluate_task(params, config: ModelConfig, tokenizer, task: Task, problems: Sequence[dict],
                  max_new_tokens: int = 16, batch_size: int = 64, temperature: float = 0.0, seed: int = 0,
                  keep_samples: int = 8, progress: bool = False) -> dict:
    """{"accuracy", "n", "correct", "stopped" (share that emitted the end token), "samples"}.

    Every batch has `batch_size` rows (the last is padded with repeats and trimmed), so one
    compiled program serves the whole set.
    """
    if not problems:
        raise ValueError("no problems to evaluate")
    stop = task.stop_id(tokenizer)
    sampling = SamplingConfig(temperature=temperature, max_new_tokens=max_new_tokens, stop_ids=(stop,), seed=seed)
    prompts = [task.prompt_ids(tokenizer, p) for p in problems]
    records = []
    for start in tqdm(range(0, len(prompts), batch_size), desc=f"eval {task.name}", disable=not progress):
        chunk = prompts[start: start + batch_size]
        padded = chunk + [chunk[0]] * (batch_size - len(chunk))
        tokens, lengths = generate_ids(params, config, padded, sampling)
        for j in range(len(chunk)):
            problem = problems[start + j]
            text = tokenizer.decode(tokens[j, : lengths[j]].tolist())
            records.append({"prompt": task.prompt_text(problem), "completion": text,
                            "gold": problem.get("answer", problem.get("target")),
                            "correct": bool(task.score(text, problem)),
                            "stopped": bool(lengths[j] < min(max_new_tokens,
                                                             config.context_length - len(chunk[j]) + 1))})
    correct = sum(r["correct"] for r in records)
    return {"accuracy": correct / len(records), "n": len(records), "correct": correct,
            "stopped": sum(r["stopped"] for r in records) / len(records), "samples": records[:keep_samples]}
