"""Supervised fine-tuning: next-token loss on response tokens only, with gradient accumulation.

    state = init_train_state(params, train_config)       # lm.train's TrainState around params
    step = jax.jit(functools.partial(sft_train_step, config=train_config), donate_argnums=0)
    state, metrics = step(state, batch)                   # batch from lm.align.data (tokenize_pairs / pack_examples)

The state is lm.train's TrainState and the optimizer is lm.optim's, built from a
`TrainConfig` (`batch_size` rows per step, `grad_accum` microbatches). The loop that runs
the step on a mesh is `lm.align.sft_loop.train_sft`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp

from lm.align.logprobs import masked_mean, response_logprobs
from lm.align.step import accumulate, loss_weights
from lm.train.config import TrainConfig
from lm.train.state import TrainState
from lm.train.step import apply_gradients, fine_tune_state


def init_train_state(params, config: TrainConfig) -> TrainState:
    """lm.train's TrainState around existing `params` (a fine-tuning start), with fresh optimizer state.
    Built under jit so every leaf is a new committed device array (the steps donate the state; the
    caller keeps its params, and the steps compile once)."""
    return jax.jit(functools.partial(fine_tune_state, config=config))(params)


def sft_loss(params, batch: dict, config: TrainConfig, with_entropy: bool = True):
    """(sum of response-token NLL * batch["weights"], metrics). batch: input_ids, labels,
    response_mask [b, s] and weights [b, s] (see `lm.align.step.loss_weights`)."""
    out = response_logprobs(params, config.model, batch["input_ids"], batch["labels"], with_entropy=with_entropy)
    nll = -out["log_probs"]
    loss = jnp.sum(jnp.where(batch["response_mask"], nll * batch["weights"], 0.0))
    metrics = {"response_nll": masked_mean(nll, batch["response_mask"])}
    if with_entropy:
        metrics["response_entropy"] = masked_mean(out["entropy"], batch["response_mask"])
    return loss, metrics


def sft_train_step(state: dict, batch: dict, config: TrainConfig, length_norm: str = "token",
                   norm_constant: float = 0.0, params_view: Callable | None = None) -> tuple[dict, dict]:
    """One optimizer step on {"input_ids", "labels", "response_mask"} [batch_size, seq], in
    `config.grad_accum` microbatches. Prompt and padding tokens contribute no loss and no gradient.
    `params_view` maps the trained params to the model's (LoRA: the frozen base with the adapters
    merged, `lm.trainer.fine_tune_plan`); gradients are taken with respect to `state.params`."""
    batch = dict(batch, weights=loss_weights(batch["response_mask"], length_norm, norm_constant))
    view = params_view or (lambda p: p)
    loss, metrics, grads = accumulate(lambda p, b: sft_loss(view(p), b, config), state.params, batch,
                                      config.grad_accum)
    return apply_gradients(state, grads, loss, metrics, config)
