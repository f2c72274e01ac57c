"""The GRPO loop: rollouts -> verifier rewards -> group advantages -> several optimisation epochs.

    result = train_grpo(params, model_config, tokenizer, ARITHMETIC_QA, train_problems, GRPOConfig(),
                        eval_problems=held_out)
    result["params"], result["history"]     # one record per rollout step: reward, KL, entropy, accuracy, ...
    result["state"]                         # lm.train's state dict (params, opt_state, step, rng)
"""

from __future__ import annotations

import dataclasses
import json
import random
import time
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from lm.align.config import GRPOConfig
from lm.align.data import bucketed_width, tokenize_pairs
from lm.align.evaluate import evaluate_task
from lm.align.grpo import batch_logprobs, compiled_grpo_step
from lm.align.logprobs import masked_mean
from lm.align.policy_gradient import group_advantages, kl_penalty
from lm.align.rollout import rollout
from lm.align.sft import init_train_state
from lm.align.tasks import Task
from lm.inference import SamplingConfig
from lm.model import ModelConfig

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


def train_grpo(params, model: ModelConfig, tokenizer, task: Task, train_problems: Sequence[dict],
               config: GRPOConfig = GRPOConfig(), eval_problems: Sequence[dict] = (), ref_params=None,
               run_dir: str | Path | None = None, eval_batch_size: int = 64, progress: bool = True) -> dict:
    """Run `config.steps` GRPO steps from `params`; returns {"params", "history", "evals"}.

    The reference for the KL penalty and the KL metric is `ref_params` (default: the
    starting parameters). With `run_dir`, history goes to run_dir/grpo_metrics.jsonl as it is made.
    """
    if len(train_problems) < config.prompts_per_step:
        raise ValueError(f"{len(train_problems)} training problems, fewer than prompts_per_step="
                         f"{config.prompts_per_step}")
    ref_params = params if ref_params is None else ref_params
    train_config = config.train_config(model)
    state = init_train_state(params, train_config, config.seed)
    step_fn = compiled_grpo_step(config, train_config)
    stop = task.stop_id(tokenizer)
    rng = random.Random(config.seed)
    history, evals = [], []
    log_file = None
    if run_dir is not None:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        log_file = open(Path(run_dir) / "grpo_metrics.jsonl", "w")

    def evaluate(step: int) -> None:
        r = evaluate_task(state["params"], model, tokenizer, task, eval_problems, config.max_new_tokens,
                          eval_batch_size)
        evals.append({"step": step, "accuracy": r["accuracy"], "n": r["n"]})
        record({"step": step, "eval_accuracy": r["accuracy"], "eval_n": r["n"]})

    def record(rec: dict) -> None:
        history.append(rec)
        if log_file:
            log_file.write(json.dumps(rec) + "\n")
            log_file.flush()

    if eval_problems:
        evaluate(0)
    bar = tqdm(range(config.steps), desc="grpo", unit="step", disable=not progress, dynamic_ncols=True)
    for step in bar:
        t0 = time.perf_counter()
        problems = rng.sample(list(train_problems), config.prompts_per_step)
        sampling = SamplingConfig(temperature=config.temperature, top_p=config.top_p,
                                  max_new_tokens=config.max_new_tokens, stop_ids=(stop,),
                                  seed=config.seed * 1_000_003 + step)
        ro = rollout(state["params"], model, [task.prompt_ids(tokenizer, p) for p in problems], config.group_size,
                     sampling)
        texts = [tokenizer.decode(r[:-1] if s else r) for r, s in zip(ro["responses"], ro["stopped"])]
        rewards = np.array([task.score(t, problems[i // config.group_size]) for i, t in enumerate(texts)], np.float32)
        batch, stats = build_batch(state["params"], ref_params, model, config, ro, rewards)
        t_roll = time.perf_counter() - t0
        metrics = []
        n = config.rollout_size
        for _ in range(config.epochs):
            order = np.asarray(jax.random.permutation(jax.random.PRNGKey(rng.randrange(2**31)), n))
            for s in range(0, n, config.train_batch_size):
                idx = order[s: s + config.train_batch_size]
                state, m = step_fn(state, jax.tree.map(lambda x: x[idx], batch))
                metrics.append(m)
        m = {k: float(np.mean([float(x[k]) for x in metrics])) for k in metrics[0]}
        rec = {"step": step + 1, "reward": float(rewards.mean()), "stopped": float(ro["stopped"].mean()),
               "response_tokens": float(np.mean([len(r) for r in ro["responses"]])),
               **{k: float(v) for k, v in stats.items()}, **m,
               "rollout_s": t_roll, "step_s": time.perf_counter() - t0}
        if not np.isfinite(rec["loss"]):
            raise FloatingPointError(f"GRPO loss became {rec['loss']} at step {step + 1}; lower optim.lr")
        record(rec)
        bar.set_postfix(reward=f"{rec['reward']:.2f}", kl=f"{rec['kl_to_ref']:.3f}")
        if eval_problems and config.eval_every and (step + 1) % config.eval_every == 0 and step + 1 < config.steps:
            evaluate(step + 1)
    if eval_problems:
        evaluate(config.steps)
    if log_file:
        log_file.close()
    return {"params": state["params"], "state": state, "history": history, "evals": evals,
            "config": dataclasses.asdict(config)}
