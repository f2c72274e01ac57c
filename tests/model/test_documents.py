"""Packed documents: a window holding A | B gives B exactly what B alone gives, for every attention impl."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm.model import ModelConfig, attention, forward
from lm.model.attention import _cudnn
from lm.model.documents import document_positions, first_token_mask, segment_ids
from lm.train.config import TrainConfig
from lm.train.step import eval_step
from tests.inference.tiny import random_params

EOT = 0
fwd = jax.jit(forward, static_argnames="config")
TOL = dict(rtol=2e-5, atol=2e-5)  # float32: the packed and the lone runs sum in different orders


def _qkv(t, heads=4, kv=2, hd=16, seed=0):
    ks = jax.random.split(jax.random.PRNGKey(seed), 3)
    return (jax.random.normal(ks[0], (2, t, heads, hd)), jax.random.normal(ks[1], (2, t, kv, hd)),
            jax.random.normal(ks[2], (2, t, kv, hd)))


def test_segment_ids_and_positions():
    tokens = jnp.array([[5, 6, EOT, 7, 8, 9, EOT, EOT, 3]])
    seg = segment_ids(tokens, EOT)
    np.testing.assert_array_equal(seg, [[0, 0, 0, 1, 1, 1, 1, 2, 3]])  # end-of-text closes its document
    np.testing.assert_array_equal(document_positions(seg), [[0, 1, 2, 0, 1, 2, 3, 0, 0]])
    np.testing.assert_array_equal(first_token_mask(tokens, EOT), [[1, 1, 0, 1, 1, 1, 0, 0, 1]])


# Lengths that cross the blocked path's 64-row query blocks and the kernel's blocks.
@pytest.mark.parametrize("impl", ["xla", "blocked", "pallas", "cudnn-args"])
@pytest.mark.parametrize("window", [0, 40])
def test_attention_keeps_documents_apart(impl, window):
    la, lb = 70, 81
    t = la + lb
    q, k, v = _qkv(t)
    seg = jnp.broadcast_to((jnp.arange(t) >= la).astype(jnp.int32), (2, t))
    if impl == "cudnn-args":  # the cuDNN call's mask arguments, run by XLA (no GPU here)
        def run(q, k, v, **kw):
            return _cudnn(q, k, v, None, None, kw.get("q_segments"), kw.get("k_segments"), None, window, True, 0.0,
                          implementation=None)
    else:
        def run(q, k, v, **kw):
            return attention(q, k, v, window=window, impl=impl, **kw)
    # Eager dispatch of these small ops costs more than compiling them once.
    packed = jax.jit(lambda q, k, v, seg: run(q, k, v, q_segments=seg, k_segments=seg))(q, k, v, seg)
    # Index positions keep counting through B; that is fine for attention alone (no RoPE here), and a
    # window/causal mask by index within one document equals the one by document position.
    alone = jax.jit(run)
    np.testing.assert_allclose(packed[:, la:], alone(q[:, la:], k[:, la:], v[:, la:]), **TOL)
    np.testing.assert_allclose(packed[:, :la], alone(q[:, :la], k[:, :la], v[:, :la]), **TOL)


def _model(impl, **kw):
    return ModelConfig(vocab_size=64, context_length=96, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=64,
                       attention_impl=impl, **kw)


@pytest.mark.parametrize("impl", ["xla", "blocked", "pallas"])
def test_model_reads_each_document_as_if_alone(impl):
    """Logits of B inside [A, EOT, B] equal B's own logits (positions restart; nothing crosses)."""
    c = _model(impl, sliding_window=9)
    params = random_params(c, 0)
    rng = np.random.default_rng(0)
    a, b = rng.integers(1, 64, 40), rng.integers(1, 64, 30)
    window = jnp.asarray(np.concatenate([a, [EOT], b])[None])
    packed = fwd(params, window, config=c, segments=segment_ids(window, EOT))
    alone_b = fwd(params, jnp.asarray(b[None]), config=c)
    alone_a = fwd(params, jnp.asarray(np.concatenate([a, [EOT]])[None]), config=c)
    np.testing.assert_allclose(packed[:, len(a) + 1:], alone_b, **TOL)
    np.testing.assert_allclose(packed[:, :len(a) + 1], alone_a, **TOL)
    # Without the segments the window is one sequence, and B sees A.
    assert np.abs(np.asarray(fwd(params, window, config=c)[:, len(a) + 1:] - alone_b)).max() > 1e-2


def test_loss_never_predicts_a_document_from_the_previous_one():
    """The packed window's summed loss is A's (ending in EOT) plus B's, over one target fewer than the window."""
    c = _model("auto")
    params = random_params(c, 1)
    rng = np.random.default_rng(1)
    a, b = rng.integers(1, 64, 30), rng.integers(1, 64, 25)
    config = TrainConfig(model=c, eot_token=EOT)
    step = jax.jit(lambda p, x, cfg: eval_step(p, x, cfg), static_argnums=2)
    packed = step(params, jnp.asarray(np.concatenate([a, [EOT], b])[None]), config)
    parts = [step(params, jnp.asarray(x[None]), config) for x in (np.concatenate([a, [EOT]]), b)]
    assert float(packed["tokens"]) == len(a) + len(b) - 1 == sum(float(p["tokens"]) for p in parts)
    np.testing.assert_allclose(float(packed["nll_sum"]), sum(float(p["nll_sum"]) for p in parts), rtol=1e-5)
    window = jnp.asarray(np.concatenate([a, [EOT], b])[None])
    off = step(params, window, dataclasses.replace(config, document_mask=False))
    assert float(off["tokens"]) == len(a) + len(b)  # one sequence: every next token is a target
