"""The scanned core: stacked layers, remat, GPU presets that compile on a CPU, and FLOPs XLA agrees with."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm.model import GPU_PRESETS, forward, get_preset, init, logical_axes
from lm.train.config import TrainConfig
from lm.train.report import xla_flops_per_token
from lm.trainer.report import plan_report
from lm.train.step import init_state, loss_fn, train_step
from tests.inference.tiny import random_params

SMALL = get_preset("tiny", vocab_size=97, d_model=32, n_layers=3, n_heads=4, n_kv_heads=2, d_ff=48, context_length=32,
                   scan_layers=True)


def test_layers_are_stacked_on_a_leading_axis():
    p = jax.eval_shape(functools.partial(init, SMALL), jax.random.PRNGKey(0))
    assert set(p) == {"embed", "blocks", "final_norm", "head"}
    assert all(x.shape[0] == SMALL.n_layers for x in jax.tree.leaves(p["blocks"]))
    specs = jax.tree.leaves(logical_axes(SMALL)["blocks"], is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
    assert all(s[0] == "layers" for s in specs)


def test_unrolled_layers_compute_the_same_model():
    params = random_params(SMALL, 0)
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, 97, (2, 32)))
    fwd = jax.jit(forward, static_argnames="config")
    scanned = fwd(params, tokens, config=SMALL)
    unrolled = fwd(params, tokens, config=dataclasses.replace(SMALL, scan_layers=False))
    np.testing.assert_allclose(scanned, unrolled, rtol=1e-5, atol=1e-5)


def test_remat_keeps_the_loss_and_gradients():
    params = random_params(SMALL, 1)
    batch = jnp.asarray(np.random.default_rng(1).integers(0, 97, (4, 33)))

    @functools.partial(jax.jit, static_argnums=1)
    def grads(params, config):
        return jax.value_and_grad(loss_fn, has_aux=True)(params, batch, config)

    (ref_loss, _), ref = grads(params, TrainConfig(model=SMALL))
    for remat in ("dots", "full"):
        (loss, _), g = grads(params, TrainConfig(model=dataclasses.replace(SMALL, remat=remat)))
        assert float(loss) == pytest.approx(float(ref_loss), rel=1e-6), remat
        for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(ref)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=remat)


def test_full_remat_cuts_train_step_temporaries_3x():
    """XLA's memory analysis of the compiled 12-layer train step (nothing allocated)."""
    def temp(remat):
        model = get_preset("bench", n_layers=12, d_model=64, n_heads=4, d_ff=256, vocab_size=512, context_length=128,
                           remat=remat, scan_layers=True)
        return plan_report(TrainConfig(model=model, batch_size=8), xla_flops=False)["memory"]["temp"]

    none, full = temp("none"), temp("full")
    assert none / full >= 3.0, (none, full)  # measured 152 MB / 29 MB = 5.2x (benchmarks/RESULTS.md: d 256)


@pytest.mark.parametrize("name", GPU_PRESETS)
def test_gpu_presets_lower_on_cpu(name):
    """Each GPU preset validates, counts its parameters exactly, and its train step lowers from shapes alone."""
    c = get_preset(name)
    config = TrainConfig(model=c, batch_size=2)
    state = jax.eval_shape(functools.partial(init_state, config), jax.ShapeDtypeStruct((2,), np.uint32))
    assert sum(x.size for x in jax.tree.leaves(state["params"])) == c.num_params()
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(state["params"]))  # bf16 compute, f32 params
    batch = jax.ShapeDtypeStruct((2, c.context_length + 1), np.int32)
    lowered = jax.jit(functools.partial(train_step, config=config)).lower(state, batch)
    assert "stablehlo.while" in lowered.as_text()[:10**9]  # the layers are one scanned program
    assert c.flops_per_token() > 6 * c.num_params(include_embeddings=False)


@pytest.mark.parametrize("name", ["tiny", "gpt2-small"])
def test_config_flops_agree_with_xla(name):
    c = get_preset(name)
    ratio = xla_flops_per_token(TrainConfig(model=c, batch_size=2)) / c.flops_per_token()
    assert 0.95 < ratio < 1.05, ratio


@pytest.mark.parametrize("backend,dtype,softcap,want", [
    ("cpu", jnp.bfloat16, 0.0, "blocked"), ("gpu", jnp.bfloat16, 0.0, "cudnn"), ("gpu", jnp.float32, 0.0, "xla"),
    ("gpu", jnp.bfloat16, 30.0, "xla"), ("tpu", jnp.bfloat16, 0.0, "xla")])
def test_auto_attention_picks_by_backend(monkeypatch, backend, dtype, softcap, want):
    from lm.model.attention import resolve_impl

    monkeypatch.setattr(jax, "default_backend", lambda: backend)
    assert resolve_impl("auto", dtype, index_positions=True, softcap=softcap) == want
    # Explicit positions (a cache, the scorer) cannot skip blocks by index: blocked falls back to xla.
    assert resolve_impl("blocked", dtype, index_positions=False) == "xla"
