"""DPO on the training driver: preference pairs (with the frozen reference's log-probs) -> `lm.trainer.fit`.

    data = preference_batch(pairs, context_length, width)     # + "ref_chosen", "ref_rejected" [pairs]
    result = train_dpo(params, model_config, data, eval_data, DPOConfig(), run_dir="runs/dpo")
    result.state.params, result.history      # held-out loss and implicit-reward accuracy every train.eval_every
"""

from __future__ import annotations

import functools
from pathlib import Path

import jax

from lm.align.config import DPOConfig
from lm.align.dpo import dpo_batch_loss, dpo_train_step
from lm.align.preferences import take
from lm.align.sft_loop import random_rows
from lm.model import ModelConfig
from lm.trainer import Loop, RunOptions, TrainResult, fine_tune_plan, fit


def train_dpo(params, model: ModelConfig, data: dict, eval_data: dict, config: DPOConfig = DPOConfig(),
              run_dir: str | Path | None = None, *, fingerprint: dict | None = None,
              options: RunOptions = RunOptions(), record: dict | None = None) -> TrainResult:
    """`config.train.steps` DPO steps on random batches of the pairs in `data`; held-out DPO loss and
    implicit-reward accuracy on `eval_data` every `train.eval_every` steps and at the end."""
    tc = config.train_config(model)
    plan = fine_tune_plan(functools.partial(dpo_train_step, config=tc, beta=config.beta), tc, params)
    n_pairs = data["ref_chosen"].shape[0]
    heldout = jax.jit(lambda p, b: dpo_batch_loss(p, b, tc, config.beta))

    def batches(start: int):
        return (plan.put_batch(take(data, idx)) for idx in random_rows(n_pairs, tc.batch_size, tc.seed, start))

    def evaluate(state) -> dict:
        loss, m = heldout(state.params, eval_data)
        return {"heldout_loss": loss, "heldout_reward_accuracy": m["reward_accuracy"]}

    loop = Loop(plan.train_step, batches, evaluate, "dpo", bar_keys=("loss", "reward_accuracy"),
                metrics_file="dpo_metrics.jsonl")
    return fit(loop, plan.init(params), tc, run_dir, record=record, data=fingerprint, options=options)
