"""The model with attention_impl="pallas" and norm_impl="pallas" against the XLA paths."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm.model import ModelConfig, forward, get_preset, init
from lm.optim import OptimizerConfig
from lm.train.config import TrainConfig
from lm.train.step import init_state, train_step
from tests.kernels.helpers import FAST_COMPILE

SMALL = get_preset("tiny", vocab_size=64, context_length=32, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=128)


def _pallas(c: ModelConfig) -> ModelConfig:
    return dataclasses.replace(c, attention_impl="pallas", norm_impl="pallas")


def _losses(model: ModelConfig, steps: int, batches) -> list[float]:
    config = TrainConfig(model=model, optim=OptimizerConfig(lr=3e-3, warmup_steps=0), steps=steps, batch_size=4)
    state = init_state(config, jax.random.PRNGKey(0))
    step = jax.jit(lambda s, b: train_step(s, b, config)).lower(state, batches[0]).compile(FAST_COMPILE)
    out = []
    for b in batches:
        state, metrics = step(state, b)
        out.append(float(metrics["loss"]))
    return out


def test_training_loss_curve_matches_xla():
    steps = 6
    # Repeating sequences, so the loss has something to learn quickly.
    start = jax.random.randint(jax.random.PRNGKey(1), (steps, 4, 1), 0, 64)
    batches = list((start + jnp.arange(SMALL.context_length + 1) * 3) % 64)
    xla, pallas = _losses(SMALL, steps, batches), _losses(_pallas(SMALL), steps, batches)
    assert xla[-1] < xla[0] - 0.1, xla  # it learns, so the curve is a real comparison
    np.testing.assert_allclose(pallas, xla, rtol=2e-4)


def test_padded_positions_and_sliding_window_match_xla():
    """Scoring-style inputs (explicit positions, left padding) and a sliding window, forward only."""
    c = dataclasses.replace(SMALL, sliding_window=5, n_layers=1)
    params = init(c, jax.random.PRNGKey(2))
    tokens = jax.random.randint(jax.random.PRNGKey(3), (2, 21), 0, 64)
    pad = jnp.array([[0], [6]])
    valid = jnp.arange(21)[None] >= pad
    pos = jnp.maximum(jnp.arange(21)[None] - pad, 0)

    def both(c):
        return forward(params, tokens, c), forward(params, tokens, c, positions=pos, k_valid=valid)

    (a1, a2), (b1, b2) = jax.jit(both, static_argnums=0)(c), jax.jit(both, static_argnums=0)(_pallas(c))
    np.testing.assert_allclose(b1, a1, atol=2e-5)
    # Padding queries see no key: XLA averages the hidden values, the kernel gives 0; compare real tokens.
    np.testing.assert_allclose(np.asarray(b2)[np.asarray(valid)], np.asarray(a2)[np.asarray(valid)], atol=2e-5)


def test_layernorm_rejects_fused_rmsnorm():
    with pytest.raises(ValueError, match="fused RMSNorm"):
        ModelConfig(norm="layernorm", norm_impl="pallas")
