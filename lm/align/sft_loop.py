"""SFT on the training driver: task problems -> (prompt, target) token rows -> `lm.trainer.fit`.

    result = train_sft(params, model_config, tokenizer, ARITHMETIC_QA, train_problems, SFTConfig(),
                       run_dir="runs/sft", eval_problems=held_out)
    result.params, result.history, evals(result.history)     # result.params: the tuned model

With `SFTConfig.lora`, only LoRA adapters train (`lm.trainer.fine_tune_plan`): the state and the
checkpoints hold the adapters and their optimizer state, the run directory keeps the frozen base
once (`lm.train.lora`), and `result.params` (like `lm.inference.load_run` of the run) is the merged model.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lm.align.config import SFTConfig
from lm.align.data import bucketed_width, pack_examples, tokenize_pairs
from lm.align.evaluate import evaluate_task
from lm.align.sft import sft_train_step
from lm.align.tasks import Task
from lm.config import to_dict
from lm.model import ModelConfig
from lm.trainer import FineTuneResult, Loop, RunOptions, data_fingerprint, fine_tune_plan, fit
from lm.trainer.fine_tune import lora_record


def sft_examples(tokenizer, task: Task, problems: Sequence[dict]):
    """(prompt ids, target ids) per problem."""
    prompts = [task.prompt_ids(tokenizer, p) for p in problems]
    targets = [task.target_ids(tokenizer, p) for p in problems]
    return prompts, targets


def sft_rows(tokenizer, task: Task, problems: Sequence[dict], model: ModelConfig, config: SFTConfig,
             truncate: bool = False) -> dict:
    """The training rows {"input_ids", "labels", "response_mask"} [rows, width]. Without packing, every
    row is padded to one width (the longest example, rounded up to a multiple of 16), so one program
    is compiled; with `config.pack`, the examples are packed into rows of the context length."""
    prompts, targets = sft_examples(tokenizer, task, problems)
    if config.pack:
        return pack_examples(prompts, targets, model.context_length)
    width = bucketed_width(prompts, targets, model.context_length)
    return tokenize_pairs(prompts, targets, model.context_length, pad_to=width, truncate=truncate)


def random_rows(n_rows: int, batch_size: int, seed: int, start: int):
    """Row indices of the batches of steps start, start + 1, ...: each drawn from its own step's seed,
    so a resumed run draws exactly the batches an uninterrupted one would."""
    step = start
    while True:
        yield np.random.default_rng((seed, step)).integers(0, n_rows, batch_size)
        step += 1


def evals(history: list[dict]) -> list[dict]:
    """The held-out evaluations in a history: [{"step", "accuracy", "n"}]."""
    return [{"step": h["step"], "accuracy": h["eval_accuracy"], "n": int(h["eval_n"])}
            for h in history if "eval_accuracy" in h]


def train_sft(params, model: ModelConfig, tokenizer, task: Task, problems: Sequence[dict],
              config: SFTConfig = SFTConfig(), run_dir: str | Path | None = None, *,
              eval_problems: Sequence[dict] = (), max_new_tokens: int = 16, eval_batch_size: int = 64,
              truncate: bool = False, options: RunOptions = RunOptions(),
              record: dict | None = None) -> FineTuneResult:
    """`config.train.steps` SFT steps on random batches of `problems` through `lm.trainer.fit`.

    Evaluates held-out accuracy on `eval_problems` (if any) before training, every
    `config.train.eval_every` steps and at the end. With `run_dir`: metrics.jsonl, checkpoints
    (resumable with `options.resume`) and run.json there.
    """
    data = sft_rows(tokenizer, task, problems, model, config, truncate)
    n_rows = data["input_ids"].shape[0]
    tc = config.train_config(model)
    plan = fine_tune_plan(functools.partial(sft_train_step, config=tc, length_norm=config.length_norm,
                                            norm_constant=config.norm_constant), tc, params, lora=config.lora)

    def batches(start: int):
        return (plan.put_batch({k: v[idx] for k, v in data.items()})
                for idx in random_rows(n_rows, tc.batch_size, tc.seed, start))

    def evaluate(state) -> dict:
        r = evaluate_task(plan.policy(state.params), model, tokenizer, task, eval_problems, max_new_tokens,
                          eval_batch_size)
        return {"eval_accuracy": r["accuracy"], "eval_n": r["n"]}

    loop = Loop(plan.train_step, batches, evaluate if eval_problems else None, "sft",
                tokens_per_step=tc.batch_size * data["input_ids"].shape[1], bar_keys=("loss", "tokens_per_s"),
                eval_at_start=bool(eval_problems) and tc.eval_every > 0, metrics_file="sft_metrics.jsonl")
    record = lora_record(record or {"train": to_dict(tc)}, config.lora, run_dir, params, options)
    result = fit(loop, plan.init(params), tc, run_dir, record=record,
                 data=data_fingerprint(f"task {task.name}", problems), options=options)
    return FineTuneResult.of(result, plan)

