"""The train state and the jit-compiled train and eval steps.

The state is a `TrainState` (lm.train.state): step, params, opt_state. Parameters and
optimizer state stay float32; the model config's `dtype` sets compute
precision (bf16 mixed precision is `ModelConfig(dtype="bfloat16")`).
"""

from __future__ import annotations

import functools
import jax
import jax.numpy as jnp
import optax

from lm.model import bind, init
from lm.model.documents import first_token_mask, segment_ids
from lm.optim import build_optimizer, global_norm
from lm.train.config import TrainConfig
from lm.train.loss import cross_entropy, linear_cross_entropy
from lm.train.state import TrainState



def make_optimizer(config: TrainConfig) -> optax.GradientTransformation:
    return build_optimizer(config.optim, config.steps)


def init_state(config: TrainConfig, key: jax.Array) -> TrainState:
    """Fresh parameters and optimizer state. `key` is a raw uint32 PRNG key."""
    init_key, _ = jax.random.split(key)  # the split keeps a seed's parameters what they have always been
    params = init(config.model, init_key)
    return TrainState(jnp.zeros([], jnp.int32), params, make_optimizer(config).init(params))


def fine_tune_state(params, config: TrainConfig) -> TrainState:
    """A train state around a copy of existing `params` (a fine-tuning start) with fresh optimizer state.
    The copy matters under jit: an output that is an input unchanged comes back as the same buffer,
    which the first (donating) step would then free under the caller."""
    params = jax.tree.map(jnp.copy, params)
    return TrainState(jnp.zeros([], jnp.int32), params, make_optimizer(config).init(params))


def head_loss(model, hidden, targets: jax.Array, config: TrainConfig, z_loss: float, mask=None):
    """(loss, metrics) of a bound Transformer's final hidden states [batch, seq, d_model] (after the
    final norm): the output projection fused with the loss over chunks (`linear_cross_entropy`),
    or, with `config.loss_chunk` 0, the full logits and then the loss. mask bool [batch, seq]:
    which targets count."""
    if config.loss_chunk:
        w, vocab_major = model.output_projection()
        return linear_cross_entropy(hidden, w, targets, mask, z_loss=z_loss, vocab_major=vocab_major,
                                    chunk_tokens=config.loss_chunk)
    return cross_entropy(model.project(hidden), targets, mask, z_loss=z_loss)


def documents(inputs: jax.Array, config: TrainConfig):
    """(segment ids int [batch, seq] or None, loss mask bool [batch, seq] or None) of input windows."""
    if not config.documents:
        return None, None
    return segment_ids(inputs, config.eot_token), first_token_mask(inputs, config.eot_token)


def _token_loss(params, inputs, targets, config: TrainConfig, z_loss: float):
    """(loss, metrics, MoE aux loss) of next-token targets."""
    model = bind(params, config.model)
    segments, mask = documents(inputs, config)
    hidden, moe_aux = model(inputs, segments=segments, hidden_only=True)
    loss, metrics = head_loss(model, hidden, targets, config, z_loss, mask)
    return loss, metrics, moe_aux


def loss_fn(params, tokens: jax.Array, config: TrainConfig):
    """Mean next-token loss of int32 tokens [batch, seq + 1] and its aux metrics."""
    loss, metrics, moe_aux = _token_loss(params, tokens[:, :-1], tokens[:, 1:], config, config.z_loss)
    if config.model.n_experts:
        loss = loss + config.moe_aux_weight * moe_aux
        metrics["moe_aux_loss"] = moe_aux
    return loss, metrics


def compute_grads(params, batch, config: TrainConfig):
    """(loss, metrics, grads) averaged over `grad_accum` microbatches, run one after another."""
    grad_fn = jax.value_and_grad(functools.partial(loss_fn, config=config), has_aux=True)
    if config.grad_accum == 1:
        (loss, metrics), grads = grad_fn(params, batch)
        return loss, metrics, grads
    micro = batch.reshape(config.grad_accum, -1, batch.shape[-1])

    def body(carry, mb):
        (loss, metrics), grads = grad_fn(params, mb)
        acc = jax.tree.map(jnp.add, carry, (loss, metrics, grads))
        return acc, None

    (loss0, metrics0), grads0 = jax.eval_shape(grad_fn, params, micro[0])
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), (loss0, metrics0, grads0))
    total, _ = jax.lax.scan(body, zeros, micro)
    return jax.tree.map(lambda x: x / config.grad_accum, total)


def train_step(state: TrainState, batch: jax.Array, config: TrainConfig) -> tuple[TrainState, dict]:
    """One optimizer step on int32 batch [batch_size, context_length + 1]."""
    loss, metrics, grads = compute_grads(state.params, batch, config)
    return apply_gradients(state, grads, loss, metrics, config)


def apply_gradients(state: TrainState, grads, loss, metrics: dict, config: TrainConfig) -> tuple[TrainState, dict]:
    """The optimizer update and the step's metrics (lm.parallel calls it after its own collectives)."""
    optimizer = make_optimizer(config)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    # The loss certifies the old params only; the new params' norm certifies what gets saved.
    metrics = dict(metrics, loss=loss, grad_norm=global_norm(grads), param_norm=global_norm(params))
    return TrainState(state.step + 1, params, opt_state), metrics


def eval_step(params, batch: jax.Array, config: TrainConfig) -> dict:
    """Summed loss and token count of a validation batch (sums, so batches add up)."""
    _, aux, _ = _token_loss(params, batch[:, :-1], batch[:, 1:], config, z_loss=0.0)
    return {"nll_sum": aux["nll"] * aux["num_tokens"], "tokens": aux["num_tokens"]}


@functools.lru_cache(maxsize=8)
def compiled_steps(config: TrainConfig):
    """(train_step, eval_step) jitted for `config`; the train state buffer is donated."""
    train = jax.jit(functools.partial(train_step, config=config), donate_argnums=0)
    evaluate = jax.jit(functools.partial(eval_step, config=config))
    return train, evaluate
