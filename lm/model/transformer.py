"""The decoder-only Transformer and its pure-function interface.

    params = init(config, key)                      # nested dict of arrays
    logits = forward(params, tokens, config)        # [batch, seq, vocab] float32
    logits = forward(params, tokens, config, segments=doc_ids)   # packed documents kept apart
    axes = logical_axes(config)                     # same tree, PartitionSpecs of logical names

Flax NNX defines the modules; `init` and `forward` cross to plain pytrees with
nnx.split / nnx.merge, so training code holds nothing but arrays. The layers are
stored stacked, `params["blocks"]` with every leaf shaped [n_layers, ...] (logical
axis "layers"), and run as one `lax.scan` over a single Block program, so compile
time does not grow with depth; the KV-cache decoder, the segment scorer and the
pipeline stages run the same scan through `Transformer.scan`.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import PartitionSpec

from lm.model.attention import attention
from lm.model.config import ModelConfig
from lm.model.documents import document_positions
from lm.model.layers import (
    MLP,
    Embedding,
    Linear,
    MoE,
    Norm,
    _param,
    apply_rope,
    rope_angles,
    sinusoidal_positions,
    truncated_normal,
)
from lm.model.sharding import constrain
from lm.nn import rms_norm

# What `ModelConfig.remat` keeps from each layer's forward pass for the backward pass.
REMAT_POLICIES = {
    "dots": jax.checkpoint_policies.checkpoint_dots,  # matmul outputs; elementwise work is recomputed
    "full": jax.checkpoint_policies.nothing_saveable,  # only the layer's input; the layer runs twice
}


class Attention(nnx.Module):
    """Multi-head attention with RoPE, grouped-query heads and optional QK-norm."""

    def __init__(self, config: ModelConfig, key: jax.Array):
        kq, kk, kv, ko = jax.random.split(key, 4)
        d, h, g, hd = config.d_model, config.n_heads, config.kv_heads, config.head_dim
        pd = jnp.dtype(config.param_dtype)
        self.config = config
        std = math.sqrt(2.0 / (d + h * hd))
        self.wq = _param(truncated_normal(kq, (d, h, hd), std, pd), ("embed", "heads", "head_dim"))
        kv_std = math.sqrt(2.0 / (d + g * hd))
        self.wk = _param(truncated_normal(kk, (d, g, hd), kv_std, pd), ("embed", "kv_heads", "head_dim"))
        self.wv = _param(truncated_normal(kv, (d, g, hd), kv_std, pd), ("embed", "kv_heads", "head_dim"))
        self.wo = _param(truncated_normal(ko, (h, hd, d), std, pd), ("heads", "head_dim", "embed"))
        if config.qkv_bias:
            self.bq = _param(jnp.zeros((h, hd), pd), ("heads", "head_dim"))
            self.bk = _param(jnp.zeros((g, hd), pd), ("kv_heads", "head_dim"))
            self.bv = _param(jnp.zeros((g, hd), pd), ("kv_heads", "head_dim"))
        if config.qk_norm:
            self.q_norm = _param(jnp.ones(hd, jnp.float32), ("head_dim",))
            self.k_norm = _param(jnp.ones(hd, jnp.float32), ("head_dim",))

    def qkv(self, x: jax.Array, positions: jax.Array):
        """Projected (normed) and rotated q [b, s, heads, hd], k and v [b, s, kv_heads, hd]."""
        c, dt = self.config, x.dtype
        q = jnp.einsum("bsd,dhk->bshk", x, self.wq[...].astype(dt))
        k = jnp.einsum("bsd,dhk->bshk", x, self.wk[...].astype(dt))
        v = jnp.einsum("bsd,dhk->bshk", x, self.wv[...].astype(dt))
        if c.qkv_bias:
            q, k, v = q + self.bq[...].astype(dt), k + self.bk[...].astype(dt), v + self.bv[...].astype(dt)
        if c.qk_norm:
            q, k = rms_norm(q, self.q_norm[...], c.norm_eps), rms_norm(k, self.k_norm[...], c.norm_eps)
        if c.positions == "rope":
            cos, sin = rope_angles(positions, c.head_dim, c.rope_theta)
            q, k = apply_rope(q, cos, sin, c.rope_layout), apply_rope(k, cos, sin, c.rope_layout)
        kv = ("batch", "seq", "kv_heads", "head_dim")  # no-op unless lm.parallel is tracing
        return constrain(q, ("batch", "seq", "heads", "head_dim")), constrain(k, kv), constrain(v, kv)

    def output(self, attn: jax.Array) -> jax.Array:
        """attn [b, s, heads, hd] -> [b, s, d]."""
        return jnp.einsum("bshk,hkd->bsd", attn, self.wo[...].astype(attn.dtype))

    def __call__(self, x: jax.Array, positions: jax.Array, k_valid: jax.Array | None = None,
                 segments: jax.Array | None = None, index_mask: bool = False) -> jax.Array:
        """x [b, s, d] -> [b, s, d]. `positions` rotate q and k; the causal mask compares them too,
        unless `index_mask` (the mask is by index, so implementations may skip hidden key blocks).
        `segments` int [b, s]: document ids, no attention across them."""
        q, k, v = self.qkv(x, positions)
        c = self.config
        mask_pos = None if index_mask else positions
        out = attention(q, k, v, q_positions=mask_pos, k_positions=mask_pos, q_segments=segments,
                        k_segments=segments, k_valid=k_valid, window=c.sliding_window, impl=c.attention_impl,
                        softcap=c.logit_softcap)
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

    def __call__(self, x, positions, k_valid=None, segments=None, index_mask=False, attend=None):
        """x [batch, seq, d_model] -> (same shape, MoE load-balancing loss).

        `attend(h) -> [batch, seq, d_model]` replaces self-attention (the KV-cache decoder
        passes one that reads and writes its cache); everything else is unchanged.
        """
        if attend is None:
            def attend(h):
                return self.attn(h, positions, k_valid, segments, index_mask)
        if self.pre:
            x = x + attend(self.attn_norm(x))
            y, aux = self._mlp(self.mlp_norm(x))
            return x + y, aux
        x = self.attn_norm(x + attend(x))
        y, aux = self._mlp(x)
        return self.mlp_norm(x + y), aux


def scan_layers(blocks: nnx.Module, config: ModelConfig, fn, carry, xs=None, *, unroll: bool | None = None):
    """Run `fn(block, carry, x) -> (carry, y)` over the stacked layers; returns (carry, ys).

    `blocks` holds every layer's parameters on a leading axis; `fn` sees a Block bound to one
    layer's. xs and ys carry that leading axis too. One layer program is compiled, or unrolled
    when `unroll` (default: `not config.scan_layers`), and `config.remat` decides what the backward
    pass recomputes.
    """
    graphdef, state = nnx.split(blocks)

    def body(carry, inputs):
        layer, x = inputs
        return fn(nnx.merge(graphdef, layer), carry, x)

    if config.remat != "none":
        # prevent_cse=False is safe under scan and lets XLA share the recomputation's subexpressions.
        body = jax.checkpoint(body, policy=REMAT_POLICIES[config.remat], prevent_cse=False)
    unroll = not config.scan_layers if unroll is None else unroll
    return jax.lax.scan(body, carry, (state, xs), unroll=True if unroll else 1)


def _stacked_blocks(config: ModelConfig, keys: jax.Array) -> Block:
    """One Block whose parameters stack every layer's on a leading "layers" axis (as nnx.vmap would make).

    The layers are drawn one by one and stacked, rather than by vmapping the constructor: XLA
    compiles L copies of the same random draws once, but a vmapped (batched) draw costs about twice
    as long to compile, which every jitted init (every training run) would pay.
    """
    make = nnx.vmap(lambda k: Block(config, k), in_axes=0, out_axes=0,
                    transform_metadata={nnx.PARTITION_NAME: "layers"})
    graphdef, state = nnx.split(nnx.eval_shape(lambda: make(keys)))  # structure and axis names only
    layers = [nnx.to_pure_dict(nnx.split(Block(config, k))[1]) for k in keys]
    nnx.replace_by_pure_dict(state, jax.tree.map(lambda *xs: jnp.stack(xs), *layers))
    return nnx.merge(graphdef, state)


class Transformer(nnx.Module):
    def __init__(self, config: ModelConfig, key: jax.Array):
        # The same keys, in the same order, as the per-layer model before the layers were stacked, so a
        # seed gives the same initial parameters as it always did.
        keys = jax.random.split(key, config.n_layers + 3)
        k_embed, k_pos, k_head = keys[0], keys[1], keys[2]
        pd = jnp.dtype(config.param_dtype)
        self.config = config
        self.embed = Embedding(config.vocab_size, config.d_model, k_embed, pd)
        if config.positions == "learned":
            self.pos_embed = _param(truncated_normal(k_pos, (config.context_length, config.d_model), 0.02, pd),
                                    (None, "embed"))
        self.blocks = _stacked_blocks(config, keys[3:])
        if config.norm_position == "pre":
            self.final_norm = Norm(config)
        if not config.tie_embeddings:
            self.head = Linear(config.d_model, config.vocab_size, ("embed", "vocab"), k_head, pd)

    def __call__(self, tokens, positions=None, k_valid=None, segments=None, hidden_only=False):
        """tokens int [batch, seq] -> (logits float32 [batch, seq, vocab], MoE aux loss);
        with `hidden_only`, the final hidden states [batch, seq, d_model] instead of the logits.

        positions int [batch, seq]: default 0..seq-1, or each token's index within its document
        when `segments` (int [batch, seq] document ids) are given. k_valid bool [batch, seq]:
        False marks padding. Without explicit positions the causal mask is by index.
        """
        index_mask = positions is None
        if positions is None:
            positions = (document_positions(segments) if segments is not None else
                         jnp.broadcast_to(jnp.arange(tokens.shape[1], dtype=jnp.int32), tokens.shape))
        residual = ("batch", "seq", "embed")  # sharding constraint, a no-op unless lm.parallel is tracing
        x = constrain(self.embed_tokens(tokens, positions), residual)

        def layer(block, x, _):
            x, aux = block(x, positions, k_valid, segments, index_mask)
            return constrain(x, residual), aux

        x, aux = self.scan(layer, x)
        return (self.final_hidden(x) if hidden_only else self.logits(x)), jnp.mean(aux)

    def scan(self, fn, carry, xs=None, *, unroll: bool | None = None):
        """`scan_layers` over this model's blocks: fn(block, carry, x) -> (carry, y)."""
        return scan_layers(self.blocks, self.config, fn, carry, xs, unroll=unroll)

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


@functools.lru_cache(maxsize=64)
def _abstract(config: ModelConfig):
    """(graphdef, abstract state) of the model; built once per config, no arrays allocated."""
    return nnx.split(nnx.eval_shape(lambda: Transformer(config, jax.random.PRNGKey(0))))


def init(config: ModelConfig, key: jax.Array) -> dict:
    """Fresh parameters: a nested dict of arrays."""
    _, state = nnx.split(Transformer(config, key))
    return nnx.to_pure_dict(state)


def bind(params: dict, config: ModelConfig) -> Transformer:
    """A Transformer module over `params` (for callers that want the layers, e.g. a KV-cache decoder)."""
    graphdef, abstract = _abstract(config)
    state = jax.tree.map(lambda x: x, abstract)  # a fresh copy: the cached state must stay untouched
    nnx.replace_by_pure_dict(state, params)
    return nnx.merge(graphdef, state)


def forward(params: dict, tokens: jax.Array, config: ModelConfig, *, positions=None, k_valid=None,
            segments=None, return_aux: bool = False):
    """Logits float32 [batch, seq, vocab] for int tokens [batch, seq].

    positions: int [batch, seq] (default 0..seq-1, restarting in each document when `segments`
    int [batch, seq] are given); k_valid: bool [batch, seq] marking real (non-padding) tokens.
    With `return_aux`, also returns {"moe_aux_loss": scalar}.
    """
    logits, aux = bind(params, config)(tokens, positions, k_valid, segments)
    return (logits, {"moe_aux_loss": aux}) if return_aux else logits


def _axis_names(variable: nnx.Variable) -> tuple:
    # Flax has named this metadata `sharding`, then `sharding_names`, now `out_sharding`; read whichever
    # the installed version writes, so the GPU image's newer Flax needs no code change (benchmarks/GPU.md).
    meta = variable.get_metadata()
    for key in ("out_sharding", "sharding_names", "sharding"):
        if meta.get(key) is not None:
            return tuple(meta[key])
    raise ValueError(f"parameter of shape {variable.shape} carries no logical axis names (metadata keys: "
                     f"{sorted(meta)}); every lm parameter is created with them by lm.model.layers._param")


def logical_axes(config: ModelConfig) -> dict:
    """PartitionSpecs of logical axis names, in the same tree as `init`'s params."""
    _, abstract = _abstract(config)
    specs = jax.tree.map(lambda v: PartitionSpec(*_axis_names(v)), abstract,
                         is_leaf=lambda x: isinstance(x, nnx.Variable))
    return nnx.to_pure_dict(specs)
