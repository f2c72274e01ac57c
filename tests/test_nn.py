"""lm.nn: each functional layer against float64 NumPy, CS336's conventions, and the modules using them."""

import ast
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import lm.nn as nn
from lm.model import ModelConfig, attention
from lm.model import layers as L

RNG = np.random.default_rng(0)
# jitted: one compile per call signature is several times faster here than op-by-op dispatch
linear = jax.jit(nn.linear, static_argnames="layout")
swiglu = jax.jit(nn.swiglu, static_argnames="layout")
softmax = jax.jit(nn.softmax, static_argnames="axis")
cross_entropy = jax.jit(nn.cross_entropy, static_argnames="reduction")
sdpa = jax.jit(nn.scaled_dot_product_attention, static_argnames=("softcap", "mask_value", "return_probs"))


def r(*shape, scale=1.0):
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def close(a, b, tol=1e-5):
    np.testing.assert_allclose(np.asarray(a, np.float64), b, rtol=tol, atol=tol)


def np_softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def np_silu(x):
    return x / (1 + np.exp(-x))


def f64(*arrays):
    return [np.asarray(a, np.float64) for a in arrays]


def test_linear_in_both_layouts_and_embedding():
    x, w, b = r(2, 3, 5), r(4, 5), r(4)
    x64, w64, b64 = f64(x, w, b)
    close(linear(jnp.asarray(x), jnp.asarray(w)), x64 @ w64.T)  # PyTorch / CS336: [d_out, d_in]
    close(linear(jnp.asarray(x), jnp.asarray(w.T), layout="in_out"), x64 @ w64.T)
    close(linear(jnp.asarray(x), jnp.asarray(w), jnp.asarray(b)), x64 @ w64.T + b64)
    with pytest.raises(ValueError, match=r"does not fit weight \(5, 4\) with layout 'out_in' \(\[d_out, d_in\]\)"):
        linear(jnp.asarray(x), jnp.asarray(w.T))
    with pytest.raises(ValueError, match="layout must be one of"):
        linear(jnp.asarray(x), jnp.asarray(w), layout="io")
    table, ids = r(10, 3), np.array([[1, 9], [0, 1]])
    np.testing.assert_array_equal(nn.embedding(jnp.asarray(ids), jnp.asarray(table)), table[ids])


def test_silu_swiglu_and_rms_norm():
    x = r(2, 3, 8, scale=3)
    close(nn.silu(jnp.asarray(x)), np_silu(f64(x)[0]))
    w1, w2, w3 = r(12, 8), r(8, 12), r(12, 8)
    x64, w1_, w2_, w3_ = f64(x, w1, w2, w3)
    want = (np_silu(x64 @ w1_.T) * (x64 @ w3_.T)) @ w2_.T
    close(swiglu(*map(jnp.asarray, (x, w1, w2, w3))), want, 1e-4)
    close(swiglu(*map(jnp.asarray, (x, w1.T, w2.T, w3.T)), layout="in_out"), want, 1e-4)
    g = r(8)
    want = x64 / np.sqrt(np.mean(x64 ** 2, -1, keepdims=True) + 1e-5) * f64(g)[0]
    close(nn.rms_norm(jnp.asarray(x), jnp.asarray(g)), want, 1e-5)
    half = nn.rms_norm(jnp.asarray(x, jnp.bfloat16), jnp.asarray(g))
    assert half.dtype == jnp.bfloat16  # computed in float32, returned in the input's dtype
    close(half.astype(jnp.float32), want, 3e-2)


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_softmax_over_any_axis(axis):
    x = r(3, 4, 5, scale=30)
    close(softmax(jnp.asarray(x), axis=axis), np_softmax(f64(x)[0], axis))
    assert np.isfinite(np.asarray(softmax(jnp.array([1e4, 0.0, -1e4])))).all()


def test_cross_entropy_conventions():
    logits, targets = r(2, 3, 4, 7, scale=5), RNG.integers(0, 7, (2, 3, 4))
    l64 = f64(logits)[0]
    per = np.log(np.exp(l64).sum(-1)) - np.take_along_axis(l64, targets[..., None], -1)[..., 0]
    args = (jnp.asarray(logits), jnp.asarray(targets))
    assert cross_entropy(*args).shape == ()
    close(cross_entropy(*args), per.mean())  # CS336: the mean over every leading position
    close(cross_entropy(*args, reduction="sum"), per.sum(), 1e-4)
    close(cross_entropy(*args, reduction="none"), per)
    close(cross_entropy(jnp.asarray([[1e4, 0.0]]), jnp.asarray([1])), [1e4])  # stable for huge logits
    with pytest.raises(ValueError, match=r"targets must be logits' leading shape \(2, 3, 4\)"):
        cross_entropy(args[0], args[1][:, :, :2])
    with pytest.raises(ValueError, match="reduction must be one of"):
        cross_entropy(*args, reduction="avg")


def np_sdpa(q, k, v, mask=None):
    s = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])
    if mask is not None:
        s = np.where(mask, s, -np.inf)
    return np_softmax(s) @ v


def test_scaled_dot_product_attention_over_any_leading_axes():
    # CS336's shapes: q [batch, queries, d_k], then more leading axes; mask True = attend, broadcast
    for lead in [(3,), (2, 3, 2)]:
        q, k, v = r(*lead, 5, 8), r(*lead, 6, 8), r(*lead, 6, 4)
        mask = RNG.random((*lead, 5, 6)) < 0.7
        mask[..., 0] = True  # every query sees a key (NumPy's -inf would give NaN otherwise)
        close(sdpa(*map(jnp.asarray, (q, k, v, mask))), np_sdpa(*f64(q, k, v), mask))
        close(sdpa(*map(jnp.asarray, (q, k, v))), np_sdpa(*f64(q, k, v)))
    causal = np.tril(np.ones((5, 6), bool))  # broadcast over every leading axis
    out, probs = sdpa(*map(jnp.asarray, (q, k, v, causal)), return_probs=True)
    close(out, np_sdpa(*f64(q, k, v), causal))
    close(probs.sum(-1), np.ones((2, 3, 2, 5)))
    hidden = sdpa(*map(jnp.asarray, (q, k, v)), jnp.zeros((5, 6), bool))
    close(hidden, np.broadcast_to(v.mean(-2, keepdims=True), hidden.shape))  # no visible key: mean of values
    with pytest.raises(ValueError, match=r"expected q \[..., queries, d_k\]"):
        sdpa(jnp.asarray(q), jnp.asarray(k[..., :4]), jnp.asarray(v))


def module(make):
    """A layer module with random parameters, built from shapes (no initialiser runs)."""
    m = nnx.eval_shape(make)
    for _, var in nnx.iter_graph(m):
        if isinstance(var, nnx.Param):
            var.set_value(jnp.asarray(r(*var.shape)))
    return m


def test_modules_compute_with_lm_nn():
    """One implementation: the model's layers give bit for bit what the functions give on their parameters."""
    c = ModelConfig(vocab_size=50, context_length=16, d_model=32, n_layers=1, n_heads=4, n_kv_heads=2, d_ff=64)
    x = jnp.asarray(r(2, 16, 32))
    mlp = module(lambda: L.MLP(c, jax.random.PRNGKey(0)))
    want = nn.swiglu(x, mlp.w1.kernel[...], mlp.w2.kernel[...], mlp.w3.kernel[...], layout="in_out")
    np.testing.assert_array_equal(mlp(x), want)
    norm = module(lambda: L.Norm(c))
    np.testing.assert_array_equal(norm(x), nn.rms_norm(x, norm.scale[...], c.norm_eps))
    emb = module(lambda: L.Embedding(50, 32, jax.random.PRNGKey(1)))
    table = emb.embedding[...]
    np.testing.assert_array_equal(emb.attend(x), nn.linear(x, table))  # tied head: the table is [out, in]
    np.testing.assert_array_equal(emb(jnp.arange(5)), nn.embedding(jnp.arange(5), table))
    # attention by the model (grouped heads, head-major) and by the function (heads repeated)
    q, k, v = jnp.asarray(r(2, 9, 4, 8)), jnp.asarray(r(2, 9, 2, 8)), jnp.asarray(r(2, 9, 2, 8))
    heads_first = [jnp.repeat(a, 4 // a.shape[2], axis=2).transpose(0, 2, 1, 3) for a in (q, k, v)]
    want = nn.scaled_dot_product_attention(*heads_first, jnp.tril(jnp.ones((9, 9), bool))).transpose(0, 2, 1, 3)
    close(jax.jit(lambda *a: attention(*a, impl="xla"))(q, k, v), np.asarray(want, np.float64), 1e-6)


def test_lm_nn_is_the_bottom_layer():
    tree = ast.parse(Path(nn.__file__).read_text())
    imported = {a.name for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert not [m for m in imported if m == "lm" or m.startswith("lm.")], imported
