"""GRPO's train step: a policy-gradient loss over a scored rollout batch, with optional KL to a reference.

    batch = {"input_ids", "labels", "response_mask"  [b, s],          # lm.align.data.tokenize_pairs
             "raw_rewards", "advantages"             [b],             # lm.align.policy_gradient.group_advantages
             "old_log_probs"                         [b, s],          # the sampling policy's log-probs
             "ref_log_probs"                         [b, s],          # only when the KL coefficient > 0
             "truncated"                             [b]}             # only for truncation="mask": cut rows
    state, metrics = grpo_train_step(state, batch, config, train_config)

The loss options are `config.loss` (a `lm.align.policy_gradient.PGLossConfig`; `GRPOConfig(preset="dapo")`
picks a published recipe). The rollout loop that builds these batches is `lm.align.grpo_loop.train_grpo`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from lm.align.config import GRPOConfig
from lm.align.logprobs import masked_mean, response_logprobs
from lm.align.policy_gradient import kl_penalty, policy_gradient_loss, truncation_mask
from lm.align.step import accumulate, loss_weights
from lm.model import ModelConfig
from lm.train.config import TrainConfig
from lm.train.step import apply_gradients


def grpo_loss(params, batch: dict, config: GRPOConfig, model: ModelConfig):
    """(sum of per-token loss * batch["weights"], metrics) for one (micro)batch, under config.loss."""
    loss = config.loss
    out = response_logprobs(params, model, batch["input_ids"], batch["labels"], with_entropy=True,
                            temperature=config.temperature)
    lp, mask = out["log_probs"], batch["response_mask"]
    per_token, diag = policy_gradient_loss(lp, loss.loss_type, batch.get("raw_rewards"), batch.get("advantages"),
                                           batch.get("old_log_probs"), cliprange_low=loss.cliprange_low,
                                           cliprange_high=loss.cliprange_high, response_mask=mask)
    metrics = {"entropy": masked_mean(out["entropy"], mask)}
    if loss.kl_coef:
        kl = kl_penalty(lp, batch["ref_log_probs"])
        per_token = per_token + loss.kl_coef * kl
        metrics["kl_penalty"] = masked_mean(kl, mask)
    if "clipped" in diag:
        metrics["clip_fraction"] = masked_mean(diag["clipped"].astype(jnp.float32), mask)
        metrics["ratio"] = masked_mean(diag["ratio"], mask)
    return jnp.sum(jnp.where(mask, per_token * batch["weights"], 0.0)), metrics


def weighted_batch(batch: dict, config: GRPOConfig) -> dict:
    """The batch with "weights" [b, s] that normalise the loss over the WHOLE batch (so microbatches sum to
    it), after truncated rows lose their response tokens when config.loss.truncation == "mask"."""
    loss = config.loss
    if loss.truncation == "mask":
        if "truncated" not in batch:
            raise ValueError("truncation='mask' needs batch['truncated'] (bool [b]: the response hit the length "
                             "limit, i.e. the rollout's ~stopped)")
        batch = dict(batch, response_mask=truncation_mask(batch["response_mask"], batch["truncated"]))
    constant = float(loss.norm_constant or config.max_new_tokens)
    return dict(batch, weights=loss_weights(batch["response_mask"], loss.length_norm, constant))


def grpo_train_step(state: dict, batch: dict, config: GRPOConfig, train_config: TrainConfig,
                    params_view=None) -> tuple[dict, dict]:
    """One optimizer step over the batch, in `config.grad_accum` microbatches. `params_view`: the trained
    params -> the model's (LoRA's merge into the frozen base, `lm.trainer.fine_tune_plan`); default identity."""
    batch = weighted_batch(batch, config)
    view = params_view or (lambda p: p)
    total, metrics, grads = accumulate(lambda p, b: grpo_loss(view(p), b, config, train_config.model),
                                       state.params, batch, config.grad_accum)
    return apply_gradients(state, grads, total, metrics, train_config)


@functools.lru_cache(maxsize=8)
def compiled_grpo_step(config: GRPOConfig, train_config: TrainConfig):
    return jax.jit(functools.partial(grpo_train_step, config=config, train_config=train_config),
                   donate_argnums=0)


@functools.partial(jax.jit, static_argnames=("model", "temperature"))
def batch_logprobs(params, input_ids, labels, *, model: ModelConfig, temperature: float = 1.0):
    """Per-token log-probs [b, s] under `params` (for the old policy and the reference), no gradient."""
    return response_logprobs(params, model, input_ids, labels, temperature=temperature)["log_probs"]
