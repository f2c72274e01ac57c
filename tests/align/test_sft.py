import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm.align.config import SFTConfig
from lm.align.data import tokenize_pairs
from lm.align.sft import init_train_state, sft_loss, sft_train_step
from lm.align.step import accumulate, loss_weights
from lm.optim import OptimizerConfig
from lm.train import TrainConfig
from lm.train.loss import cross_entropy
from tests.align import tiny

PROMPTS = [[10, 11, 12, 13, 14], [20, 21], [30, 31, 32, 33, 34, 35, 36], [40, 41, 42]]
RESPONSES = [[50, 51, 256], [60, 61, 62, 63, 256], [70, 256], [80, 81, 82, 256]]


def batch():
    b = tokenize_pairs(PROMPTS, RESPONSES, tiny.CONFIG.context_length)
    return {k: jnp.asarray(v) for k, v in b.items()}


def train_config(**kw):
    optim = OptimizerConfig(lr=1e-2, warmup_steps=0, schedule="constant", weight_decay=0.0)
    train = TrainConfig(**{"steps": 30, "batch_size": 4, "optim": optim, **kw})
    return SFTConfig(train=train).train_config(tiny.CONFIG)


def test_sft_loss_is_masked_cross_entropy():
    """The loss and its gradient equal lm.train's cross-entropy restricted to response tokens."""
    params, b = tiny.params(), batch()
    cfg = train_config()
    b_w = dict(b, weights=loss_weights(b["response_mask"]))
    loss, grads = jax.value_and_grad(lambda p: sft_loss(p, b_w, cfg)[0])(params)

    def reference(p):
        from lm.model import forward
        return cross_entropy(forward(p, b["input_ids"], cfg.model), b["labels"], mask=b["response_mask"])[0]

    ref_loss, ref_grads = jax.value_and_grad(reference)(params)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-6)
    jax.tree.map(lambda a, r: np.testing.assert_allclose(a, r, rtol=1e-4, atol=1e-7), grads, ref_grads)


def test_prompt_tokens_get_no_gradient():
    """Whatever the labels at prompt (and padding) positions say, loss and gradients are unchanged."""
    params, b = tiny.params(), batch()
    cfg = train_config()
    scrambled = dict(b, labels=jnp.where(b["response_mask"], b["labels"], (b["labels"] * 7 + 3) % 257))
    assert not np.array_equal(scrambled["labels"], b["labels"])

    def grads(bb):
        bb = dict(bb, weights=loss_weights(bb["response_mask"]))
        return jax.value_and_grad(lambda p: sft_loss(p, bb, cfg)[0])(params)

    (l1, g1), (l2, g2) = grads(b), grads(scrambled)
    assert float(l1) == float(l2)
    jax.tree.map(lambda a, c: np.testing.assert_array_equal(a, c), g1, g2)
    # And the gradient with respect to the logits is exactly zero at every prompt position.
    from lm.align.logprobs import gather_logprobs
    logits = jnp.asarray(np.random.default_rng(0).normal(size=(*b["labels"].shape, 257)), jnp.float32)
    w = loss_weights(b["response_mask"])
    g = jax.grad(lambda z: -jnp.sum(jnp.where(b["response_mask"], gather_logprobs(z, b["labels"]) * w, 0.0)))(logits)
    assert np.all(np.asarray(g)[~np.asarray(b["response_mask"])] == 0)
    assert np.all(np.abs(np.asarray(g)[np.asarray(b["response_mask"])]).sum(-1) > 0)


def test_sft_step_drives_response_loss_down():
    cfg = train_config(steps=30)
    state = init_train_state(tiny.params(), cfg)
    step = jax.jit(functools.partial(sft_train_step, config=cfg))
    b = batch()
    losses = []
    for _ in range(30):
        state, m = step(state, b)
        losses.append(float(m["loss"]))
    assert losses[-1] < 0.1 * losses[0], losses
    assert losses[0] > 4.0  # a random model: about log(257) = 5.5 nats per token
    assert int(state["step"]) == 30


def test_gradient_accumulation_matches_the_full_batch():
    """Microbatches with different response-token counts still give the exact full-batch gradient
    (weights are normalised over the whole batch before it is split)."""
    b = batch()
    cfg = train_config()
    bw = dict(b, weights=loss_weights(b["response_mask"]))
    params = tiny.params()
    loss_fn = lambda p, bb: sft_loss(p, bb, cfg)  # noqa: E731
    l1, _, g1 = accumulate(loss_fn, params, bw, 1)
    l2, _, g2 = accumulate(loss_fn, params, bw, 2)
    l4, _, g4 = accumulate(loss_fn, params, bw, 4)
    np.testing.assert_allclose([l2, l4], [l1, l1], rtol=1e-6)
    for g in (g2, g4):
        jax.tree.map(lambda a, c: np.testing.assert_allclose(a, c, rtol=1e-4, atol=1e-7), g, g1)
    with pytest.raises(ValueError, match="equal microbatches"):
        accumulate(loss_fn, params, bw, 3)


def test_sft_config_validation():
    with pytest.raises(ValueError, match="divisible by grad_accum"):
        SFTConfig(train=TrainConfig(batch_size=6, grad_accum=4))
    with pytest.raises(ValueError, match="length_norm"):
        SFTConfig(length_norm="per-word")
    with pytest.raises(ValueError, match="steps"):
        SFTConfig(train=TrainConfig(steps=0))
    assert dataclasses.replace(SFTConfig(), pack=True).pack
