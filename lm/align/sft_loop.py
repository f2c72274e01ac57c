"""The SFT loop: task problems -> (prompt, target) token pairs -> jitted steps, with held-out accuracy.

    result = train_sft(params, model_config, tokenizer, ARITHMETIC_QA, train_problems, SFTConfig(steps=200),
                       eval_problems=held_out)
    result["state"], result["history"]
"""

from __future__ import annotations

import functools
import json
import random
from collections.abc import Sequence
from pathlib import Path

import jax
import numpy as np
from tqdm.auto import tqdm

from lm.align.config import SFTConfig
from lm.align.data import bucketed_width, pack_examples, tokenize_pairs
from lm.align.evaluate import evaluate_task
from lm.align.sft import init_train_state, sft_train_step
from lm.align.tasks import Task
from lm.model import ModelConfig

def sft_examples(tokenizer, task: Task, problems: Sequence[dict]):
    """(prompt ids, target ids) per problem."""
    prompts = [task.prompt_ids(tokenizer, p) for p in problems]
    targets = [task.target_ids(tokenizer, p) for p in problems]
    return prompts, targets


def train_sft(params, model: ModelConfig, tokenizer, task: Task, problems: Sequence[dict],
              config: SFTConfig = SFTConfig(), eval_problems: Sequence[dict] = (), eval_every: int = 0,
              max_new_tokens: int = 16, eval_batch_size: int = 64, run_dir: str | Path | None = None,
              truncate: bool = False, progress: bool = True) -> dict:
    """`config.steps` SFT steps on random batches of `problems`; returns {"state", "history", "evals"}.

    Without packing, every batch is padded to one width (the longest example, rounded up to
    a multiple of 16), so one program is compiled. With `config.pack`, all examples are
    packed once into rows of the context length and batches are drawn from the rows.
    """
    prompts, targets = sft_examples(tokenizer, task, problems)
    if config.pack:
        data = pack_examples(prompts, targets, model.context_length)
    else:
        width = bucketed_width(prompts, targets, model.context_length)
        data = tokenize_pairs(prompts, targets, model.context_length, pad_to=width, truncate=truncate)
    n_rows = data["input_ids"].shape[0]
    train_config = config.train_config(model)
    state = init_train_state(params, train_config, config.seed)
    step_fn = jax.jit(functools.partial(sft_train_step, config=train_config, length_norm=config.length_norm,
                                        norm_constant=config.norm_constant), donate_argnums=0)
    rng = random.Random(config.seed)
    history, evals = [], []
    log = open(Path(run_dir) / "sft_metrics.jsonl", "w") if run_dir else None

    def record(rec):
        history.append(rec)
        if log:
            log.write(json.dumps(rec) + "\n")
            log.flush()

    def evaluate(step):
        r = evaluate_task(state["params"], model, tokenizer, task, eval_problems, max_new_tokens, eval_batch_size)
        evals.append({"step": step, "accuracy": r["accuracy"], "n": r["n"]})
        record({"step": step, "eval_accuracy": r["accuracy"], "eval_n": r["n"]})

    if run_dir:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
    if eval_problems and eval_every:
        evaluate(0)
    bar = tqdm(range(config.steps), desc="sft", unit="step", disable=not progress, dynamic_ncols=True)
    for step in bar:
        idx = np.array([rng.randrange(n_rows) for _ in range(config.batch_size)])
        state, m = step_fn(state, {k: v[idx] for k, v in data.items()})
        if (step + 1) % 10 == 0 or step + 1 == config.steps:
            m = {k: float(v) for k, v in jax.device_get(m).items()}
            if not np.isfinite(m["loss"]):
                raise FloatingPointError(f"SFT loss became {m['loss']} at step {step + 1}; lower optim.lr")
            record({"step": step + 1, **m})
            bar.set_postfix(loss=f"{m['loss']:.3f}")
        if eval_problems and eval_every and (step + 1) % eval_every == 0 and step + 1 < config.steps:
            evaluate(step + 1)
    if eval_problems:
        evaluate(config.steps)
    if log:
        log.close()
    return {"state": state, "history": history, "evals": evals, "train_config": train_config}
