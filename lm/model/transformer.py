"""The decoder-only Transformer and its pure-function interface.

    params = init(config, key)                      # nested dict of arrays
    logits = forward(params, tokens, config)        # [batch, seq, vocab] float32
    axes = logical_axes(config)                     # same tree, PartitionSpecs of logical names

Flax NNX defines the modules; `init` and `forward` cross to plain pytrees with
nnx.split / nnx.merge, so training code holds nothing but arrays.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import PartitionSpec

from lm.model.config import ModelConfig
from lm.model.sharding import constrain
from lm.model.layers import (
    MLP,
    Embedding,
    Linear,
    MoE,
    Norm,
    _param,
    apply_rope,
    attention_mask,
    blocked_causal_attention,
    dot_product_attention,
    rope_angles,
    sinusoidal_positions,
    truncated_normal,
)


class Attention(nnx.Module):
    """Multi-head attention with RoPE and grouped-query heads."""

    def __init__(self, config: ModelConfig, key: jax.Array):
        kq, kk, kv, ko = jax.random.split(key, 4)
        d, h, g, hd, pd = config.d_model, config.n_heads, config.kv_heads, config.head_dim, jnp.dtype(config.param_dtype)
        self.config = config
        std = math.sqrt(2.0 / (d + h * hd))
        self.wq = _param(truncated_normal(kq, (d, h, hd), std, pd), ("embed", "heads", "head_dim"))
        self.wk = _param(truncated_normal(kk, (d, g, hd), math.sqrt(2.0 / (d + g * hd)), pd), ("embed", "kv_heads", "head_dim"))
        self.wv = _param(truncated_normal(kv, (d, g, hd), math.sqrt(2.0 / (d + g * hd)), pd), ("embed", "kv_heads", "head_dim"))
        self.wo = _param(truncated_normal(ko, (h, hd, d), std, pd), ("heads", "head_dim", "embed"))
        if config.qkv_bias:
            self.bq = _param(jnp.zeros((h, hd), pd), ("heads", "head_dim"))
            self.bk = _param(jnp.zeros((g, hd), pd), ("kv_heads", "head_dim"))
            self.bv = _param(jnp.zeros((g, hd), pd), ("kv_heads", "head_dim"))

    def qkv(self, x: jax.Array, positions: jax.Array):
        """Projected and rotated q [b, s, heads, hd], k and v [b, s, kv_heads, hd]."""
        dt = x.dtype
        q = jnp.einsum("bsd,dhk->bshk", x, self.wq[...].astype(dt))
        k = jnp.einsum("bsd,dhk->bshk", x, self.wk[...].astype(dt))
        v = jnp.einsum("bsd,dhk->bshk", x, self.wv[...].astype(dt))
        if self.config.qkv_bias:
            q, k, v = q + self.bq[...].astype(dt), k + self.bk[...].astype(dt), v + self.bv[...].astype(dt)
        if self.config.positions == "rope":
            cos, sin = rope_angles(positions, self.config.head_dim, self.config.rope_theta)
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        kv = ("batch", "seq", "kv_heads", "head_dim")  # no-op unless lm.parallel is tracing
        return constrain(q, ("batch", "seq", "heads", "head_dim")), constrain(k, kv), constrain(v, kv)

    def output(self, attn: jax.Array) -> jax.Array:
        """attn [b, s, heads, hd] -> [b, s, d]."""
        return jnp.einsum("bshk,hkd->bsd", attn, self.wo[...].astype(attn.dtype))

    def __call__(self, x: jax.Array, positions: jax.Array, k_valid: jax.Array | None = None,
                 index_causal: bool = False) -> jax.Array:
        """x [b, s, d] -> [b, s, d]. `index_causal`: positions are 0..s-1, so key blocks can be skipped."""
        q, k, v = self.qkv(x, positions)
        impl = self.config.attention_impl
        if impl == "pallas":
            from kernels.flash_attention import flash_attention  # imports Pallas only when asked for

            # Index positions let the kernel skip hidden key blocks; explicit ones are masked as given.
            pos = None if index_causal else positions
            out = flash_attention(q, k, v, causal=True, window=self.config.sliding_window, k_valid=k_valid,
                                  q_positions=pos, k_positions=pos)
        elif impl == "cudnn":
            out = jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation="cudnn",
                                               local_window_size=(self.config.sliding_window - 1, 0)
                                               if self.config.sliding_window else None)
        elif index_causal:
            out = blocked_causal_attention(q, k, v, self.config.sliding_window, k_valid)
        else:
            mask = attention_mask(positions, positions, self.config.sliding_window, k_valid)
            out = dot_product_attention(q, k, v, mask)
        return self.output(out)


class Block(nnx.Module):
    def __init__(self, config: ModelConfig, key: jax.Array):
        ka, km = jax.random.split(key)
        self.pre = config.norm_position == "pre"
        self.attn_norm, self.mlp_norm = Norm(config), Norm(config)
        self.attn = Attention(config, ka)
        self.moe = bool(config.n_experts)
        self.mlp = MoE(config, km) if self.moe else MLP(config, km)

    def _mlp(self, x):
        return self.mlp(x) if self.moe else (self.mlp(x), jnp.zeros([], jnp.float32))

    def __call__(self, x, positions, k_valid=None, index_causal=False, attend=None):
        """x [batch, seq, d_model] -> (same shape, MoE load-balancing loss).

        `attend(h) -> [batch, seq, d_model]` replaces self-attention (the KV-cache decoder
        passes one that reads and writes its cache); everything else is unchanged.
        """
        if attend is None:
            def attend(h):
                return self.attn(h, positions, k_valid, index_causal)
        if self.pre:
            x = x + attend(self.attn_norm(x))
            y, aux = self._mlp(self.mlp_norm(x))
            return x + y, aux
        x = self.attn_norm(x + attend(x))
        y, aux = self._mlp(x)
        return self.mlp_norm(x + y), aux


class Transformer(nnx.Module):
    def __init__(self, config: ModelConfig, key: jax.Array):
        keys = jax.random.split(key, config.n_layers + 3)
        pd = jnp.dtype(config.param_dtype)
        self.config = config
        self.embed = Embedding(config.vocab_size, config.d_model, keys[0], pd)
        if config.positions == "learned":
            self.pos_embed = _param(truncated_normal(keys[1], (config.context_length, config.d_model), 0.02, pd),
                                    (None, "embed"))
        # Named attributes (not a list) keep every params key a string, which orbax and path rules like.
        for i in range(config.n_layers):
            setattr(self, f"block_{i}", Block(config, keys[3 + i]))
        if config.norm_position == "pre":
            self.final_norm = Norm(config)
        if not config.tie_embeddings:
            self.head = Linear(config.d_model, config.vocab_size, ("embed", "vocab"), keys[2], pd)

    def __call__(self, tokens, positions=None, k_valid=None, hidden_only=False):
        """tokens int [batch, seq] -> (logits float32 [batch, seq, vocab], MoE aux loss);
        with `hidden_only`, the final hidden states [batch, seq, d_model] instead of the logits."""
        c = self.config
        index_causal = positions is None
        if positions is None:
            positions = jnp.broadcast_to(jnp.arange(tokens.shape[1], dtype=jnp.int32), tokens.shape)
        residual = ("batch", "seq", "embed")  # sharding constraint, a no-op unless lm.parallel is tracing
        x = constrain(self.embed_tokens(tokens, positions), residual)
        aux = jnp.zeros([], jnp.float32)
        for i in range(c.n_layers):
            x, a = getattr(self, f"block_{i}")(x, positions, k_valid, index_causal)
            x, aux = constrain(x, residual), aux + a
        return (self.final_hidden(x) if hidden_only else self.logits(x)), aux / c.n_layers

    def embed_tokens(self, tokens, positions):
        """tokens int [batch, seq] -> [batch, seq, d_model] in the compute dtype, positions added."""
        c = self.config
        x = self.embed(tokens).astype(jnp.dtype(c.dtype))
        if c.positions == "learned":
            x = x + jnp.take(self.pos_embed[...], positions, axis=0).astype(x.dtype)
        elif c.positions == "sinusoidal":
            x = x + sinusoidal_positions(positions, c.d_model).astype(x.dtype)
        return x

    def final_hidden(self, x):
        """The final norm of pre-norm models (identity for post-norm ones): [..., d_model]."""
        return self.final_norm(x) if self.config.norm_position == "pre" else x

    def output_projection(self):
        """(w, vocab_major): the head [d_model, vocab], or the tied embedding [vocab, d_model]."""
        return (self.embed.embedding[...], True) if self.config.tie_embeddings else (self.head.kernel[...], False)

    def project(self, x):
        """The output projection alone: final hidden states [..., d_model] -> float32 [..., vocab]."""
        out = self.embed.attend(x) if self.config.tie_embeddings else self.head(x)
        return out.astype(jnp.float32)

    def logits(self, x):
        """Final norm (pre-norm models) and output projection: [..., d_model] -> float32 [..., vocab]."""
        return self.project(self.final_hidden(x))


def _abstract(config: ModelConfig, module: type | None = None):
    """(graphdef, abstract state) of the model (or of one `module` class of it, e.g. Block); built once
    per config, no arrays allocated."""
    return _abstract_of(config, module or Transformer)


@functools.lru_cache(maxsize=64)
def _abstract_of(config: ModelConfig, module: type):
    return nnx.split(nnx.eval_shape(lambda: module(config, jax.random.PRNGKey(0))))


def init(config: ModelConfig, key: jax.Array) -> dict:
    """Fresh parameters: a nested dict of arrays."""
    _, state = nnx.split(Transformer(config, key))
    return nnx.to_pure_dict(state)


def bind(params: dict, config: ModelConfig, module: type | None = None) -> nnx.Module:
    """A Transformer module over `params` (for callers that want the layers, e.g. a KV-cache decoder);
    with `module` (e.g. Block), that one part of the model over its own params."""
    graphdef, abstract = _abstract(config, module)
    state = jax.tree.map(lambda x: x, abstract)  # a fresh copy: the cached state must stay untouched
    nnx.replace_by_pure_dict(state, params)
    return nnx.merge(graphdef, state)


def forward(params: dict, tokens: jax.Array, config: ModelConfig, *, positions=None, k_valid=None,
            return_aux: bool = False):
    """Logits float32 [batch, seq, vocab] for int tokens [batch, seq].

    positions: int [batch, seq] (default 0..seq-1); k_valid: bool [batch, seq]
    marking real (non-padding) tokens. With `return_aux`, also returns
    {"moe_aux_loss": scalar}.
    """
    logits, aux = bind(params, config)(tokens, positions, k_valid)
    return (logits, {"moe_aux_loss": aux}) if return_aux else logits


def logical_axes(config: ModelConfig) -> dict:
    """PartitionSpecs of logical axis names, in the same tree as `init`'s params."""
    _, abstract = _abstract(config)
    specs = jax.tree.map(lambda v: PartitionSpec(*v.get_metadata()["out_sharding"]), abstract,
                         is_leaf=lambda x: isinstance(x, nnx.Variable))
    return nnx.to_pure_dict(specs)
