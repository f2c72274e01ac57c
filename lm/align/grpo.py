"""GRPO's train step: a policy-gradient loss over a scored rollout batch, with optional KL to a reference.

    batch = {"input_ids", "labels", "response_mask"  [b, s],          # lm.align.data.tokenize_pairs
             "raw_rewards", "advantages"             [b],             # lm.align.policy_gradient.group_advantages
             "old_log_probs"                         [b, s],          # the sampling policy's log-probs
             "ref_log_probs"                         [b, s]}          # only when config.kl_coef > 0
    state, metrics = grpo_train_step(state, batch, config, train_config)

The rollout loop that builds these batches is `lm.align.grpo_loop.train_grpo`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from lm.align.config import GRPOConfig
from lm.align.logprobs import masked_mean, response_logprobs
from lm.align.policy_gradient import kl_penalty, policy_gradient_loss
from lm.align.step import accumulate, loss_weights
from lm.model import ModelConfig
from lm.train.config import TrainConfig
from lm.train.step import apply_gradients


def grpo_loss(params, batch: dict, config: GRPOConfig, model: ModelConfig):
    """(sum of per-token loss * batch["weights"], metrics) for one (micro)batch."""
    out = response_logprobs(params, model, batch["input_ids"], batch["labels"], with_entropy=True,
                            temperature=config.temperature)
    lp, mask = out["log_probs"], batch["response_mask"]
    per_token, diag = policy_gradient_loss(lp, config.loss_type, batch.get("raw_rewards"), batch.get("advantages"),
                                           batch.get("old_log_probs"), config.cliprange)
    metrics = {"entropy": masked_mean(out["entropy"], mask)}
    if config.kl_coef:
        kl = kl_penalty(lp, batch["ref_log_probs"])
        per_token = per_token + config.kl_coef * kl
        metrics["kl_penalty"] = masked_mean(kl, mask)
    if "clipped" in diag:
        metrics["clip_fraction"] = masked_mean(diag["clipped"].astype(jnp.float32), mask)
        metrics["ratio"] = masked_mean(diag["ratio"], mask)
    loss = jnp.sum(jnp.where(mask, per_token * batch["weights"], 0.0))
    return loss, metrics


def grpo_train_step(state: dict, batch: dict, config: GRPOConfig, train_config: TrainConfig) -> tuple[dict, dict]:
    """One optimizer step over the batch, in `config.grad_accum` microbatches."""
    constant = float(config.max_new_tokens)
    batch = dict(batch, weights=loss_weights(batch["response_mask"], config.length_norm, constant))
    loss, metrics, grads = accumulate(lambda p, b: grpo_loss(p, b, config, train_config.model), state["params"],
                                      batch, config.grad_accum)
    return apply_gradients(state, grads, loss, metrics, train_config)


@functools.lru_cache(maxsize=8)
def compiled_grpo_step(config: GRPOConfig, train_config: TrainConfig):
    return jax.jit(functools.partial(grpo_train_step, config=config, train_config=train_config), donate_argnums=0)


@functools.partial(jax.jit, static_argnames=("model", "temperature"))
def batch_logprobs(params, input_ids, labels, *, model: ModelConfig, temperature: float = 1.0):
    """Per-token log-probs [b, s] under `params` (for the old policy and the reference), no gradient."""
    return response_logprobs(params, model, input_ids, labels, temperature=temperature)["log_probs"]
