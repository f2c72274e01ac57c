"""Transformer layers: thin Flax NNX modules over the pure functions of `lm.nn`, plus the
position encodings.

Each parameter carries its logical axis names (`embed`, `mlp`, `heads`, ...)
as metadata; `lm.model.logical_axes` reads them and the parallelism rules
table maps them to mesh axes. Norms and softmax run in float32 whatever the
compute dtype, because their reductions lose too much in bf16.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from lm.model.config import ModelConfig
from lm.model.sharding import constrain
from lm.nn import embedding, linear, rms_norm, silu, softmax


def _param(value: jax.Array, axes: tuple) -> nnx.Param:
    # eager_sharding=False: sharding is applied by lm/parallel from the names, not at creation.
    return nnx.Param(value, out_sharding=axes, eager_sharding=False)


def truncated_normal(key: jax.Array, shape, std: float, dtype) -> jax.Array:
    """Normal(0, std^2) truncated at +-3 std (CS336's initialisation)."""
    return (std * jax.random.truncated_normal(key, -3.0, 3.0, shape, jnp.float32)).astype(dtype)


# ----------------------------------------------------------------- pure functions (more in lm.nn)
def layer_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, eps: float = 1e-5) -> jax.Array:
    xf = x.astype(jnp.float32)
    mean = jnp.mean(xf, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(xf - mean), axis=-1, keepdims=True)
    y = (xf - mean) * jax.lax.rsqrt(var + eps)
    return (y * scale.astype(jnp.float32) + bias.astype(jnp.float32)).astype(x.dtype)


def rope_angles(positions: jax.Array, head_dim: int, theta: float) -> tuple[jax.Array, jax.Array]:
    """cos, sin [batch, seq, head_dim // 2] for integer positions [batch, seq]."""
    inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
    angles = positions.astype(jnp.float32)[..., None] * inv_freq
    return jnp.cos(angles), jnp.sin(angles)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array, layout: str = "half") -> jax.Array:
    """Rotate x [batch, seq, heads, head_dim] by position; cos, sin [batch, seq, head_dim // 2].

    layout "half" pairs dimension i with i + head_dim/2 (Llama, GPT-NeoX and Hugging Face
    checkpoints); "interleaved" pairs 2i with 2i + 1 (the RoFormer paper and CS336's handout).
    Pair i turns by the same angle in both, so the layouts differ only by a fixed permutation
    of q's and k's head dimensions (see lm.interop.hf for the export).
    """
    c, s = cos[:, :, None, :], sin[:, :, None, :]
    xf = x.astype(jnp.float32)
    if layout == "interleaved":
        x1, x2 = xf[..., 0::2], xf[..., 1::2]
        return jnp.stack([x1 * c - x2 * s, x2 * c + x1 * s], axis=-1).reshape(x.shape).astype(x.dtype)
    half = x.shape[-1] // 2
    x1, x2 = xf[..., :half], xf[..., half:]
    return jnp.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], axis=-1).astype(x.dtype)


def sinusoidal_positions(positions: jax.Array, d_model: int) -> jax.Array:
    """Vaswani et al.'s fixed embeddings [batch, seq, d_model]."""
    i = jnp.arange(d_model // 2, dtype=jnp.float32)
    angles = positions.astype(jnp.float32)[..., None] / (10000.0 ** (2 * i / d_model))
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


def activation_fn(name: str):
    return {"gelu": jax.nn.gelu, "relu": jax.nn.relu, "relu2": lambda x: jnp.square(jax.nn.relu(x)),
            "swiglu": silu}[name]


# ----------------------------------------------------------------- modules
class Linear(nnx.Module):
    """y = x @ kernel, kernel [in, out] ~ truncated normal, std sqrt(2 / (in + out))."""

    def __init__(self, d_in: int, d_out: int, axes: tuple, key: jax.Array, dtype=jnp.float32):
        std = math.sqrt(2.0 / (d_in + d_out))
        self.kernel = _param(truncated_normal(key, (d_in, d_out), std, dtype), axes)

    def __call__(self, x: jax.Array) -> jax.Array:
        return linear(x, self.kernel[...], layout="in_out")


class Embedding(nnx.Module):
    """Lookup table [vocab, embed] ~ truncated normal, std 1."""

    def __init__(self, vocab: int, d: int, key: jax.Array, dtype=jnp.float32):
        self.embedding = _param(truncated_normal(key, (vocab, d), 1.0, dtype), ("vocab", "embed"))

    def __call__(self, ids: jax.Array) -> jax.Array:
        return embedding(ids, self.embedding[...])

    def attend(self, x: jax.Array) -> jax.Array:
        """Tied output projection: x [..., d] -> logits [..., vocab] (the table is [out, in])."""
        return linear(x, self.embedding[...])


class Norm(nnx.Module):
    """RMSNorm or LayerNorm; `config.norm_impl` picks XLA or a fused kernel (RMSNorm only) from lm/kernels/."""

    def __init__(self, config: ModelConfig):
        self.kind, self.eps, self.impl = config.norm, config.norm_eps, config.norm_impl
        self.scale = _param(jnp.ones(config.d_model, jnp.float32), ("embed",))
        if config.norm == "layernorm":
            self.bias = _param(jnp.zeros(config.d_model, jnp.float32), ("embed",))

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.kind == "layernorm":
            return layer_norm(x, self.scale[...], self.bias[...], self.eps)
        if self.impl == "pallas":
            from lm.kernels.rms_norm import rms_norm_pallas

            return rms_norm_pallas(x, self.scale[...], self.eps)
        if self.impl == "triton":
            from lm.kernels.rms_norm import rms_norm_triton

            return rms_norm_triton(x, self.scale[...], self.eps)
        return rms_norm(x, self.scale[...], self.eps)


class MLP(nnx.Module):
    """SwiGLU (w2(silu(w1 x) * w3 x)) or a plain two-layer MLP with gelu, relu or relu^2."""

    def __init__(self, config: ModelConfig, key: jax.Array):
        k1, k2, k3 = jax.random.split(key, 3)
        d, f, pd = config.d_model, config.d_ff, jnp.dtype(config.param_dtype)
        self.act = config.activation
        self.w1 = Linear(d, f, ("embed", "mlp"), k1, pd)
        self.w2 = Linear(f, d, ("mlp", "embed"), k2, pd)
        if self.act == "swiglu":
            self.w3 = Linear(d, f, ("embed", "mlp"), k3, pd)

    def __call__(self, x: jax.Array) -> jax.Array:
        # lm.nn.swiglu's arithmetic, with the hidden layer's sharding constraint in the middle
        h = activation_fn(self.act)(self.w1(x))
        if self.act == "swiglu":
            h = h * self.w3(x)
        return self.w2(constrain(h, ("batch", "seq", "mlp")))


class MoE(nnx.Module):
    """Top-k routed mixture of expert MLPs with a Switch-style load-balancing loss.

    Every expert runs on every token and unselected outputs get weight zero:
    exact and simple, and fine at the sizes this runs on; a dispatching
    implementation would be the next step for large expert counts.
    """

    def __init__(self, config: ModelConfig, key: jax.Array):
        kr, k1, k2, k3 = jax.random.split(key, 4)
        e, d, f, pd = config.n_experts, config.d_model, config.d_ff, jnp.dtype(config.param_dtype)
        self.k, self.act = config.experts_per_token, config.activation
        self.router = Linear(d, e, ("embed", None), kr, pd)
        std_in, std_out = math.sqrt(2.0 / (d + f)), math.sqrt(2.0 / (d + f))
        self.w1 = _param(truncated_normal(k1, (e, d, f), std_in, pd), ("experts", "embed", "mlp"))
        self.w2 = _param(truncated_normal(k2, (e, f, d), std_out, pd), ("experts", "mlp", "embed"))
        if self.act == "swiglu":
            self.w3 = _param(truncated_normal(k3, (e, d, f), std_in, pd), ("experts", "embed", "mlp"))

    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """x [batch, seq, d] -> (y [batch, seq, d], scalar load-balancing loss)."""
        probs = softmax(self.router(x).astype(jnp.float32))  # [b, s, e]
        top_p, top_i = jax.lax.top_k(probs, self.k)
        n_exp = probs.shape[-1]
        chosen = jax.nn.one_hot(top_i, n_exp, dtype=jnp.float32)  # [b, s, k, e]
        gates = jnp.einsum("bsk,bske->bse", top_p / jnp.sum(top_p, -1, keepdims=True), chosen)
        h = activation_fn(self.act)(jnp.einsum("bsd,edf->bsef", x, self.w1[...].astype(x.dtype)))
        if self.act == "swiglu":
            h = h * jnp.einsum("bsd,edf->bsef", x, self.w3[...].astype(x.dtype))
        y = jnp.einsum("bsef,efd,bse->bsd", h, self.w2[...].astype(x.dtype), gates.astype(x.dtype))
        # Switch Transformer: E * sum_e (share of routed slots) * (mean router probability).
        load = jnp.mean(jnp.sum(chosen, axis=2), axis=(0, 1)) / self.k
        importance = jnp.mean(probs, axis=(0, 1))
        return y, n_exp * jnp.sum(load * importance)
