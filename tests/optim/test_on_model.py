"""Our optimizers on the real transformer: AdamW vs optax, Muon orthogonalisation, schedules."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lm.model import forward, get_preset, init
from lm.optim import (OptimizerConfig, adamw, build_optimizer, cosine_schedule, newton_schulz, weight_decay_mask,
                      wsd_schedule)
from lm.train.loss import cross_entropy

CONFIG = get_preset("tiny", vocab_size=64, d_model=32, n_layers=2, n_heads=2, d_ff=48, context_length=16)


def _loss(params, tokens):
    return cross_entropy(forward(params, tokens[:, :-1], CONFIG), tokens[:, 1:])[0]


def _run(opt, steps=100):
    params = init(CONFIG, jax.random.PRNGKey(0))
    tokens = jax.random.randint(jax.random.PRNGKey(1), (8, 17), 0, 64)

    def body(carry, _):
        p, s = carry
        loss, g = jax.value_and_grad(_loss)(p, tokens)
        u, s = opt.update(g, s, p)
        return (optax.apply_updates(p, u), s), loss

    (params, _), losses = jax.jit(lambda p: jax.lax.scan(body, (p, opt.init(p)), None, length=steps))(params)
    return params, losses


def test_adamw_matches_optax_on_the_transformer_over_100_steps():
    sched = cosine_schedule(3e-3, 100, warmup_steps=10)
    mask = weight_decay_mask(init(CONFIG, jax.random.PRNGKey(0)))
    ours, loss_ours = _run(adamw(sched, b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.1, mask=mask))
    ref, loss_ref = _run(optax.adamw(sched, b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.1, mask=mask))
    diff = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(ref)))
    assert diff < 1e-6, diff
    assert float(loss_ours[-1]) < float(loss_ours[0]) - 1.0


def test_weight_decay_mask_skips_norms():
    mask = weight_decay_mask(init(CONFIG, jax.random.PRNGKey(0)))
    assert mask["blocks"]["attn_norm"]["scale"] is False or not mask["blocks"]["attn_norm"]["scale"]
    assert mask["blocks"]["mlp"]["w1"]["kernel"]
    assert not mask["final_norm"]["scale"] and mask["head"]["kernel"]


@pytest.mark.parametrize("shape", [(32, 8), (8, 32), (16, 16)])
def test_newton_schulz_orthogonalises(shape):
    g = jax.random.normal(jax.random.PRNGKey(0), shape)
    s = np.linalg.svd(np.asarray(newton_schulz(g)), compute_uv=False)
    assert s.min() > 0.5 and s.max() < 1.5


def test_muon_trains_the_transformer():
    opt = build_optimizer(OptimizerConfig(name="muon", lr=3e-3, muon_lr=0.02, warmup_steps=5), 60)
    _, losses = _run(opt, 60)
    assert float(losses[-1]) < float(losses[0]) - 1.0


def test_schedules():
    cos = cosine_schedule(1.0, 100, warmup_steps=10, min_lr_ratio=0.1)
    assert float(cos(0)) < 0.2 and float(cos(10)) == pytest.approx(1.0) and float(cos(100)) == pytest.approx(0.1)
    assert all(float(cos(i)) >= float(cos(i + 1)) for i in range(10, 100))
    wsd = wsd_schedule(1.0, 100, warmup_steps=10, decay_fraction=0.2)
    assert float(wsd(50)) == 1.0 and float(wsd(79)) == 1.0 and float(wsd(100)) == pytest.approx(0.0)


def test_optimizer_config_errors():
    with pytest.raises(ValueError, match="name"):
        OptimizerConfig(name="sgd")
    with pytest.raises(ValueError, match="lr"):
        OptimizerConfig(lr=-1.0)


def test_muon_covers_attention_projections():
    """Per-head [embed, heads, head_dim] kernels are matrices to Muon; norms, embeddings and head are not."""
    from lm.model import get_preset, init
    from lm.optim.muon import matrix_shape, muon_labels

    params = init(get_preset("tiny", d_model=32, n_heads=4, n_layers=1, d_ff=48, vocab_size=50), jax.random.PRNGKey(0))
    labels = muon_labels(params)
    attn = labels["blocks"]["attn"]
    assert attn == {"wq": "muon", "wk": "muon", "wv": "muon", "wo": "muon"}
    assert labels["blocks"]["mlp"]["w1"]["kernel"] == "muon"
    assert labels["blocks"]["attn_norm"]["scale"] == "adamw"  # [layers, d]: a stack of vectors, not a matrix
    assert labels["embed"]["embedding"] == labels["head"]["kernel"] == labels["final_norm"]["scale"] == "adamw"
    assert matrix_shape(("attn", "wo"), (4, 8, 32)) == (32, 32) and matrix_shape(("attn", "wq"), (32, 4, 8)) == (32, 32)
    # Stacked layers: each layer's matrix on its own, the layers a batch axis.
    assert matrix_shape(("blocks", "attn", "wq"), (3, 32, 4, 8)) == (3, 32, 32)
    assert matrix_shape(("blocks", "mlp", "w1", "kernel"), (3, 32, 48)) == (3, 32, 48)
    assert matrix_shape(("blocks", "attn_norm", "scale"), (3, 32)) is None
