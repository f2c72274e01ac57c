"""GRPO on the training driver: rollouts -> verifier rewards -> group advantages -> several epochs.

    result = train_grpo(params, model_config, tokenizer, ARITHMETIC_QA, train_problems, GRPOConfig(),
                        run_dir="runs/grpo", eval_problems=held_out)
    result.state.params, result.history     # one record per rollout step: reward, KL, entropy, accuracy, ...

Each driver step is one rollout step (sample, score, then `epochs` passes of optimizer steps over
the rollout batch). Its prompts, sampling seed and minibatch order come from the step index, so a
resumed run repeats exactly what an uninterrupted one would do.
"""

from __future__ import annotations

import dataclasses
import functools
import random
import time
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from lm.align.config import GRPOConfig
from lm.align.data import bucketed_width, tokenize_pairs
from lm.align.evaluate import evaluate_task
from lm.align.grpo import batch_logprobs, grpo_train_step
from lm.align.logprobs import masked_mean
from lm.align.policy_gradient import group_advantages, kl_penalty
from lm.align.rollout import rollout
from lm.align.tasks import Task
from lm.inference import SamplingConfig
from lm.config import to_dict
from lm.model import ModelConfig
from lm.trainer import Loop, RunOptions, TrainResult, data_fingerprint, fine_tune_plan, fit


def build_batch(params, ref_params, model: ModelConfig, config: GRPOConfig, ro: dict, rewards: np.ndarray) -> dict:
    """Tokenised rollouts with rewards, advantages, old-policy and reference log-probs (all [n*G] first)."""
    width = bucketed_width(ro["prompts"], ro["responses"], model.context_length)
    data = tokenize_pairs(ro["prompts"], ro["responses"], model.context_length, pad_to=width, truncate=True)
    adv, stats = group_advantages(jnp.asarray(rewards), config.group_size, config.normalize_std, config.adv_eps)
    batch = {k: jnp.asarray(v) for k, v in data.items()}
    batch.update(raw_rewards=jnp.asarray(rewards, jnp.float32), advantages=adv)
    lp = _logprobs(params, batch, model, config)
    batch["old_log_probs"] = lp
    ref = _logprobs(ref_params, batch, model, config)
    if config.kl_coef:
        batch["ref_log_probs"] = ref
    # KL(current policy || reference), estimated on the policy's own samples before this step's update.
    stats["kl_to_ref"] = masked_mean(kl_penalty(lp, ref), batch["response_mask"])
    return batch, stats


def _logprobs(params, batch, model, config):
    return batch_logprobs(params, batch["input_ids"], batch["labels"], model=model, temperature=config.temperature)


def _rollout_step(state, step: int, *, plan, ref_params, model, tokenizer, task, problems, config: GRPOConfig):
    """One rollout step from `state`: (state after every optimizer step, the step's metrics)."""
    t0, seed = time.perf_counter(), config.train.seed
    chosen = random.Random(seed * 1_000_003 + step).sample(list(problems), config.prompts_per_step)
    sampling = SamplingConfig(temperature=config.temperature, top_p=config.top_p, max_new_tokens=config.max_new_tokens,
                              stop_ids=(task.stop_id(tokenizer),), seed=seed * 1_000_003 + step)
    ro = rollout(state.params, model, [task.prompt_ids(tokenizer, p) for p in chosen], config.group_size, sampling)
    texts = [tokenizer.decode(r[:-1] if s else r) for r, s in zip(ro["responses"], ro["stopped"])]
    rewards = np.array([task.score(t, chosen[i // config.group_size]) for i, t in enumerate(texts)], np.float32)
    batch, stats = build_batch(state.params, ref_params, model, config, ro, rewards)
    t_roll, metrics = time.perf_counter() - t0, []
    for epoch in range(config.epochs):
        key = jax.random.fold_in(jax.random.PRNGKey(seed), step * config.epochs + epoch)
        order = np.asarray(jax.random.permutation(key, config.rollout_size))
        for s in range(0, config.rollout_size, config.train.batch_size):
            rows = order[s: s + config.train.batch_size]
            state, m = plan.train_step(state, plan.put_batch(jax.tree.map(lambda x: np.asarray(x)[rows], batch)))
            metrics.append(m)
    m = {k: float(np.mean([float(x[k]) for x in metrics])) for k in metrics[0]}
    return state, {"reward": float(rewards.mean()), "stopped": float(ro["stopped"].mean()),
                   "response_tokens": float(np.mean([len(r) for r in ro["responses"]])),
                   **{k: float(v) for k, v in stats.items()}, **m,
                   "rollout_s": t_roll, "step_s": time.perf_counter() - t0}


def train_grpo(params, model: ModelConfig, tokenizer, task: Task, train_problems: Sequence[dict],
               config: GRPOConfig = GRPOConfig(), run_dir: str | Path | None = None, *,
               eval_problems: Sequence[dict] = (), ref_params=None, eval_batch_size: int = 64,
               options: RunOptions = RunOptions(), record: dict | None = None) -> TrainResult:
    """`config.train.steps` GRPO steps from `params` through `lm.trainer.fit`.

    The reference for the KL penalty and the KL metric is `ref_params` (default: the starting
    parameters). Held-out accuracy on `eval_problems` before training, every `train.eval_every`
    rollout steps and at the end; with `run_dir`, grpo_metrics.jsonl and checkpoints there.
    """
    if len(train_problems) < config.prompts_per_step:
        raise ValueError(f"{len(train_problems)} training problems, fewer than prompts_per_step="
                         f"{config.prompts_per_step}")
    tc = config.train_config(model)
    plan = fine_tune_plan(functools.partial(grpo_train_step, config=config, train_config=tc), tc, params)
    step = functools.partial(_rollout_step, plan=plan, ref_params=params if ref_params is None else ref_params,
                             model=model, tokenizer=tokenizer, task=task, problems=train_problems, config=config)

    def evaluate(state) -> dict:
        r = evaluate_task(state.params, model, tokenizer, task, eval_problems, config.max_new_tokens,
                          eval_batch_size)
        return {"eval_accuracy": r["accuracy"], "eval_n": r["n"]}

    loop = Loop(step, lambda start: iter(range(start, config.train.steps)), evaluate if eval_problems else None,
                "grpo", bar_keys=("reward", "kl_to_ref"), eval_at_start=bool(eval_problems),
                metrics_file="grpo_metrics.jsonl")
    driver = dataclasses.replace(tc, steps=config.train.steps)  # the driver counts rollout steps
    return fit(loop, plan.init(params), driver, run_dir, record=record or {"train": to_dict(tc)},
               data=data_fingerprint(f"task {task.name}", train_problems), options=options)
