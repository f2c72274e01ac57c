"""GRPO on the training driver: rollouts -> verifier rewards -> group advantages -> several epochs.

    result = train_grpo(params, model_config, tokenizer, ARITHMETIC_QA, train_problems, GRPOConfig(),
                        run_dir="runs/grpo", eval_problems=held_out)
    result.state.params, result.history     # one record per rollout step: reward, KL, entropy, accuracy, ...

Each driver step is one rollout step: sample (one round, or with `loss.dynamic_sampling` rounds of
fresh prompts until the batch holds `prompts_per_step` groups whose rewards differ), score, shape
the rewards (`loss.truncation="penalty"`), take group advantages, then `epochs` passes of optimizer
steps over the rollout batch. Every round's prompts and sampling seed come from (train.seed, step,
round) and the minibatch order from (train.seed, step, epoch), so a resumed run repeats exactly what
an uninterrupted one would do. What a checkpoint holds: the policy and optimizer state (the driver's
TrainState), the next step index, and with `max_staleness` k > 0 the k behaviour-policy snapshots
the next steps sample with. The KL reference is the run's starting parameters (or `ref_params`): it
is not saved, but its SHA-1 is part of the run's data fingerprint, so a resume from other starting
parameters is refused by name.

Staleness (`GRPOConfig.max_staleness` = k): step t's rollouts are sampled by P[max(t - k, 0)], P[j]
being the parameters at the start of step j, and `old_log_probs` (the ratio's denominator) are that
behaviour policy's. With `async_rollouts` the rollout of step t + 1 runs in a background thread
while step t trains; which parameters it uses is fixed by the step index, so the thread changes
timings only. On a 2-core CPU the two compete for the same cores (XLA already spreads one step
over both), so the overlap buys little there: on the arithmetic policy (d_model 64, 16 x 16
rollouts, k = 1, a shared machine at load ~14) the rollout wait went from 0.10-0.15 s to 0 and the
median step from 0.55 s to 0.45 s, but the two repetitions gave ratios 0.70 and 0.96, inside the
noise. It pays when rollouts and training have their own devices or when rollouts wait on the host.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import random
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from lm.align.config import GRPOConfig
from lm.align.data import bucketed_width, tokenize_pairs
from lm.align.dynamic_sampling import fill_groups
from lm.align.evaluate import evaluate_task
from lm.align.grpo import batch_logprobs, grpo_train_step
from lm.align.logprobs import masked_mean
from lm.align.policy_gradient import group_advantages, kl_penalty, shape_rewards
from lm.align.rollout import engine_rollout, rollout
from lm.align.tasks import Task
from lm.inference import SamplingConfig
from lm.config import to_dict
from lm.model import ModelConfig
from lm.trainer import FineTuneResult, Loop, RunOptions, data_fingerprint, fine_tune_plan, fit
from lm.trainer.fine_tune import lora_record


def round_seed(seed: int, step: int, attempt: int) -> int:
    """The seed of rollout round `attempt` of `step` (its prompt choice and its samples). Round 0 keeps
    the derivation runs had before dynamic sampling existed; later rounds mix all three numbers."""
    if attempt == 0:
        return seed * 1_000_003 + step
    return int(np.random.SeedSequence([seed, step, attempt]).generate_state(1)[0])


def sample_round(params, step: int, attempt: int, *, model: ModelConfig, tokenizer, task: Task,
                 problems: Sequence[dict], config: GRPOConfig) -> dict:
    """One rollout round as a group batch (row-aligned, n * G rows grouped by prompt): "prompts",
    "responses" (id lists), "stopped" bool, "scores" (the task's rewards), "rewards" (scores shaped by
    config.loss.truncation="penalty"; what the advantages and dynamic sampling use)."""
    s = round_seed(config.train.seed, step, attempt)
    chosen = random.Random(s).sample(list(problems), config.prompts_per_step)
    sampling = SamplingConfig(temperature=config.temperature, top_p=config.top_p, max_new_tokens=config.max_new_tokens,
                              stop_ids=(task.stop_id(tokenizer),), seed=s)
    generate = engine_rollout if config.rollout_backend == "engine" else rollout
    ro = generate(params, model, [task.prompt_ids(tokenizer, p) for p in chosen], config.group_size, sampling)
    ro.pop("engine_stats", None)  # a group batch holds row-aligned entries only
    texts = [tokenizer.decode(r[:-1] if stop else r) for r, stop in zip(ro["responses"], ro["stopped"])]
    scores = np.array([task.score(t, chosen[i // config.group_size]) for i, t in enumerate(texts)], np.float32)
    lengths = np.array([len(r) for r in ro["responses"]])
    return {**ro, "scores": scores, "rewards": shape_rewards(scores, lengths, config.loss, config.max_new_tokens)}


def collect(params, step: int, **kw) -> tuple[dict, dict]:
    """The rows of one rollout step sampled by `params` and their stats: one round, or with
    loss.dynamic_sampling up to loss.max_sampling_tries rounds (`fill_groups`)."""
    config: GRPOConfig = kw["config"]
    rounds = []

    def round_(attempt):
        rounds.append(sample_round(params, step, attempt, **kw))
        return rounds[-1]

    # "sampled_tokens": every response token generated this step, dropped rounds included (the budget
    # an equal-cost comparison counts); "reward": the first round's mean score, the policy's reward on
    # fresh prompts (kept rows are biased toward groups that are neither all right nor all wrong).
    if not config.loss.dynamic_sampling:
        rows, stats = round_(0), {}
    else:
        rows, stats = fill_groups(round_, config.prompts_per_step, config.group_size, config.loss.max_sampling_tries)
        stats = {**stats, "reward_kept": float(rows["scores"].mean())}
    sampled = sum(len(r) for one in rounds for r in one["responses"])
    return rows, {"reward": float(rounds[0]["scores"].mean()), "sampled_tokens": float(sampled),
                  **{k: float(v) for k, v in stats.items()}}


def build_batch(params, ref_params, model: ModelConfig, config: GRPOConfig, ro: dict, rewards: np.ndarray) -> dict:
    """Tokenised rollouts with rewards, advantages, the sampling (behaviour) policy's log-probs as
    old_log_probs, the reference's when loss.kl_coef > 0 and "truncated" when loss.truncation == "mask"
    (all [n*G] first)."""
    width = bucketed_width(ro["prompts"], ro["responses"], model.context_length)
    data = tokenize_pairs(ro["prompts"], ro["responses"], model.context_length, pad_to=width, truncate=True)
    adv, stats = group_advantages(jnp.asarray(rewards), config.group_size, config.loss.normalize_std, config.adv_eps)
    batch = {k: jnp.asarray(v) for k, v in data.items()}
    batch.update(raw_rewards=jnp.asarray(rewards, jnp.float32), advantages=adv)
    if config.loss.truncation == "mask":
        batch["truncated"] = jnp.asarray(~np.asarray(ro["stopped"], bool))
    lp = _logprobs(params, batch, model, config)
    batch["old_log_probs"] = lp
    ref = _logprobs(ref_params, batch, model, config)
    if config.loss.kl_coef:
        batch["ref_log_probs"] = ref
    # KL(sampling policy || reference), estimated on the policy's own samples before this step's update.
    stats["kl_to_ref"] = masked_mean(kl_penalty(lp, ref), batch["response_mask"])
    return batch, stats


def _logprobs(params, batch, model, config):
    return batch_logprobs(params, batch["input_ids"], batch["labels"], model=model, temperature=config.temperature)


def _prepare(params, step: int, *, ref_params, **kw) -> tuple[dict, dict]:
    """Step `step`'s training batch sampled by `params` and its metrics (host numbers)."""
    t0 = time.perf_counter()
    ro, metrics = collect(params, step, **kw)
    batch, stats = build_batch(params, ref_params, kw["model"], kw["config"], ro, ro["rewards"])
    metrics.update({k: float(v) for k, v in stats.items()}, stopped=float(ro["stopped"].mean()),
                   response_tokens=float(np.mean([len(r) for r in ro["responses"]])))
    if kw["config"].loss.truncation == "penalty":
        metrics["reward_shaped"] = float(np.mean(ro["rewards"]))
    return batch, {**metrics, "rollout_s": time.perf_counter() - t0}


def _optimize(state, batch, step: int, plan, config: GRPOConfig) -> tuple:
    metrics = []
    for epoch in range(config.epochs):
        key = jax.random.fold_in(jax.random.PRNGKey(config.train.seed), step * config.epochs + epoch)
        order = np.asarray(jax.random.permutation(key, config.rollout_size))
        for s in range(0, config.rollout_size, config.train.batch_size):
            rows = order[s: s + config.train.batch_size]
            state, m = plan.train_step(state, plan.put_batch(jax.tree.map(lambda x: np.asarray(x)[rows], batch)))
            metrics.append(m)
    return state, {k: float(np.mean([float(x[k]) for x in metrics])) for k in metrics[0]}


class _Rollouts:
    """The rollout of each step, prepared on demand or (async_rollouts) one step ahead in a thread.

    `get(step, params)` returns step's (batch, metrics) sampled by `params`; `ahead(step, params)`
    starts preparing it in the background. Which params a step uses is decided by the caller from
    the step index alone, so the results do not depend on the thread's timing."""

    def __init__(self, prepare, use_thread: bool):
        self.prepare = prepare
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="grpo-rollout") if use_thread else None
        self.pending: dict[int, object] = {}

    def get(self, step: int, params) -> tuple[dict, dict]:
        t0 = time.perf_counter()
        future = self.pending.pop(step, None)
        batch, metrics = future.result() if future is not None else self.prepare(params, step)
        return batch, {**metrics, "rollout_wait_s": time.perf_counter() - t0}

    def ahead(self, step: int, params) -> None:
        if self.pool is not None:
            self.pending[step] = self.pool.submit(self.prepare, params, step)

    def close(self) -> None:
        if self.pool is not None:
            for future in self.pending.values():
                future.cancel()
            self.pool.shutdown(wait=True)


def _copy(params):
    return jax.tree.map(jnp.copy, params)  # a snapshot that survives the train step's donation of the state


def _rollout_step(state, step: int, *, plan, rollouts: _Rollouts, config: GRPOConfig):
    """One rollout step: (state after every optimizer step, the step's metrics).

    `state` is the driver's TrainState when max_staleness is 0, else {"train": TrainState, "behaviour":
    (P[t - k], ..., P[t - 1])}, the snapshots (clamped at P[0]) the next k steps sample with."""
    t0 = time.perf_counter()
    if config.max_staleness == 0:
        batch, metrics = rollouts.get(step, state.params)
        train, queue = state, None
    else:
        train, queue = state["train"], tuple(state["behaviour"])
        batch, metrics = rollouts.get(step, queue[0])  # P[max(step - k, 0)]
        queue = queue[1:] + (_copy(train.params),)  # P[step] joins; step + 1 samples with queue[0]
        if step + 1 < config.train.steps:
            rollouts.ahead(step + 1, queue[0])
    train, m = _optimize(train, batch, step, plan, config)
    out = train if queue is None else {"train": train, "behaviour": queue}
    return out, {**metrics, **m, "step_s": time.perf_counter() - t0}


def params_sha1(params) -> str:
    """SHA-1 of a params tree's values (leaf order, dtypes, shapes and bytes)."""
    h = hashlib.sha1()
    for leaf in jax.tree.leaves(params):
        a = np.asarray(jax.device_get(leaf))
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def train_grpo(params, model: ModelConfig, tokenizer, task: Task, train_problems: Sequence[dict],
               config: GRPOConfig = GRPOConfig(), run_dir: str | Path | None = None, *,
               eval_problems: Sequence[dict] = (), ref_params=None, eval_batch_size: int = 64,
               options: RunOptions = RunOptions(), record: dict | None = None) -> FineTuneResult:
    """`config.train.steps` GRPO steps from `params` through `lm.trainer.fit`.

    The reference for the KL penalty and the KL metric is `ref_params` (default: the starting
    parameters). Held-out accuracy on `eval_problems` before training, every `train.eval_every`
    rollout steps and at the end; with `run_dir`, grpo_metrics.jsonl and checkpoints there.
    `result.state` is the TrainState whatever max_staleness is.
    """
    if len(train_problems) < config.prompts_per_step:
        raise ValueError(f"{len(train_problems)} training problems, fewer than prompts_per_step="
                         f"{config.prompts_per_step}")
    tc = config.train_config(model)
    plan = fine_tune_plan(functools.partial(grpo_train_step, config=config, train_config=tc), tc, params,
                          lora=config.lora)
    ref_params = params if ref_params is None else ref_params
    prepare = functools.partial(_prepare, ref_params=ref_params, model=model, tokenizer=tokenizer, task=task,
                                problems=train_problems, config=config)
    # With LoRA the state's params are adapters: rollouts sample with the merged policy.
    rollouts = _Rollouts(lambda p, step: prepare(plan.policy(p), step), config.async_rollouts)
    step = functools.partial(_rollout_step, plan=plan, rollouts=rollouts, config=config)

    def evaluate(state) -> dict:
        state = state if config.max_staleness == 0 else state["train"]
        r = evaluate_task(plan.policy(state.params), model, tokenizer, task, eval_problems, config.max_new_tokens,
                          eval_batch_size)
        return {"eval_accuracy": r["accuracy"], "eval_n": r["n"]}

    loop = Loop(step, lambda start: iter(range(start, config.train.steps)), evaluate if eval_problems else None,
                "grpo", bar_keys=("reward", "kl_to_ref"), eval_at_start=bool(eval_problems),
                metrics_file="grpo_metrics.jsonl")
    driver = dataclasses.replace(tc, steps=config.train.steps)  # the driver counts rollout steps
    state = plan.init(params)
    if config.max_staleness:
        state = {"train": state, "behaviour": tuple(_copy(state.params) for _ in range(config.max_staleness))}
    data = {**data_fingerprint(f"task {task.name}", train_problems), "reference_sha1": params_sha1(ref_params)}
    try:
        record = lora_record(record or {"train": to_dict(tc)}, config.lora, run_dir, params, options)
        result = fit(loop, state, driver, run_dir, record=record, data=data,
                     options=options)
    finally:
        rollouts.close()
    if config.max_staleness:
        result.state = result.state["train"] if isinstance(result.state, dict) else result.state
    return FineTuneResult.of(result, plan)

