"""Direct Preference Optimization (Rafailov et al. 2023).

    loss = -log sigmoid(beta * [(log pi(y_w|x) - log ref(y_w|x)) - (log pi(y_l|x) - log ref(y_l|x))])

log-probabilities are summed over response tokens. The reference model is
frozen, so its log-probabilities are computed once per batch (`sequence_logprobs`
with the reference parameters) and passed in.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from lm.align.logprobs import sequence_logprobs
from lm.align.step import accumulate
from lm.train.config import TrainConfig
from lm.train.step import apply_gradients


def dpo_loss(policy_chosen: jax.Array, policy_rejected: jax.Array, ref_chosen: jax.Array, ref_rejected: jax.Array,
             beta: float) -> tuple[jax.Array, dict]:
    """Mean DPO loss over pairs and metrics. Inputs: summed response log-probs [pairs].

    metrics: chosen/rejected implicit rewards beta * (log pi - log ref), their margin, and
    the share of pairs where the chosen response has the higher implicit reward.
    """
    chosen = beta * (policy_chosen - ref_chosen)
    rejected = beta * (policy_rejected - ref_rejected)
    margin = chosen - rejected
    loss = -jnp.mean(jax.nn.log_sigmoid(margin))
    return loss, {"chosen_reward": jnp.mean(chosen), "rejected_reward": jnp.mean(rejected),
                  "reward_margin": jnp.mean(margin), "reward_accuracy": jnp.mean((margin > 0).astype(jnp.float32))}


def dpo_batch_loss(params, batch: dict, config: TrainConfig, beta: float):
    """DPO loss of a batch {"chosen": pairs-batch, "rejected": pairs-batch, "ref_chosen": [n], "ref_rejected": [n]}
    where each pairs-batch holds input_ids, labels, response_mask [n, seq] (same seq for both)."""
    both = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), batch["chosen"], batch["rejected"])
    logps = sequence_logprobs(params, config.model, both)  # one forward pass for both halves
    n = batch["ref_chosen"].shape[0]
    return dpo_loss(logps[:n], logps[n:], batch["ref_chosen"], batch["ref_rejected"], beta)


def dpo_train_step(state: dict, batch: dict, config: TrainConfig, beta: float = 0.1) -> tuple[dict, dict]:
    """One optimizer step over `config.batch_size` preference pairs in `config.grad_accum` microbatches."""
    k = config.grad_accum

    def loss_fn(p, b):  # equal-sized microbatches: the mean of their means is the full mean
        loss, metrics = dpo_batch_loss(p, b, config, beta)
        return loss / k, metrics

    loss, metrics, grads = accumulate(loss_fn, state.params, batch, k)
    return apply_gradients(state, grads, loss, metrics, config)
