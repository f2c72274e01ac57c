"""A PyTorch twin of `lm.model.Transformer`, for speed comparisons and the end-to-end check.

Same architecture (pre-norm RMSNorm, half-split RoPE, SwiGLU, untied head),
same initialisation scheme, and `load_params` copies a JAX parameter tree in,
so both frameworks can start from identical weights. Written the way a
PyTorch user would: `nn.Linear` projections and `F.scaled_dot_product_attention`.
Only the configurations the benchmarks use are supported; anything else raises.
"""

from __future__ import annotations

import math

import jax
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lm.model.config import ModelConfig


def _check_supported(c: ModelConfig) -> None:
    wanted = dict(norm="rmsnorm", norm_position="pre", activation="swiglu", positions="rope",
                  tie_embeddings=False, sliding_window=0, n_experts=0)
    bad = {k: getattr(c, k) for k, v in wanted.items() if getattr(c, k) != v}
    if bad:
        raise ValueError(f"the PyTorch twin only covers {wanted}; this config has {bad}")


def _trunc_normal_(w: torch.Tensor, std: float) -> None:
    nn.init.trunc_normal_(w, 0.0, std, -3 * std, 3 * std)


class RMSNorm(nn.Module):
    def __init__(self, d: int, eps: float):
        super().__init__()
        self.eps = eps
        self.scale = nn.Parameter(torch.ones(d))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.scale


def _linear(d_in: int, d_out: int) -> nn.Linear:
    layer = nn.Linear(d_in, d_out, bias=False)
    _trunc_normal_(layer.weight, math.sqrt(2.0 / (d_in + d_out)))
    return layer


class Block(nn.Module):
    def __init__(self, c: ModelConfig):
        super().__init__()
        d, h, g, hd = c.d_model, c.n_heads, c.kv_heads, c.head_dim
        self.h, self.g, self.hd = h, g, hd
        self.attn_norm, self.mlp_norm = RMSNorm(d, c.norm_eps), RMSNorm(d, c.norm_eps)
        self.wq, self.wk, self.wv = _linear(d, h * hd), _linear(d, g * hd), _linear(d, g * hd)
        self.wo = _linear(h * hd, d)
        self.w1, self.w3, self.w2 = _linear(d, c.d_ff), _linear(d, c.d_ff), _linear(c.d_ff, d)

    def forward(self, x, cos, sin):
        b, s, _ = x.shape
        y = self.attn_norm(x)
        q = _rope(self.wq(y).view(b, s, self.h, self.hd).transpose(1, 2), cos, sin)
        k = _rope(self.wk(y).view(b, s, self.g, self.hd).transpose(1, 2), cos, sin)
        v = self.wv(y).view(b, s, self.g, self.hd).transpose(1, 2)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=self.g != self.h)
        x = x + self.wo(a.transpose(1, 2).reshape(b, s, self.h * self.hd))
        y = self.mlp_norm(x)
        return x + self.w2(F.silu(self.w1(y)) * self.w3(y))


def _rope(x, cos, sin):
    """x [batch, heads, seq, head_dim], half-split pairs as in lm.model.layers.apply_rope."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


class TorchTransformer(nn.Module):
    def __init__(self, c: ModelConfig):
        super().__init__()
        _check_supported(c)
        self.config = c
        self.embed = nn.Embedding(c.vocab_size, c.d_model)
        _trunc_normal_(self.embed.weight, 1.0)
        self.blocks = nn.ModuleList(Block(c) for _ in range(c.n_layers))
        self.final_norm = RMSNorm(c.d_model, c.norm_eps)
        self.head = _linear(c.d_model, c.vocab_size)
        inv_freq = 1.0 / (c.rope_theta ** (torch.arange(0, c.head_dim, 2, dtype=torch.float32) / c.head_dim))
        angles = torch.arange(c.context_length, dtype=torch.float32)[:, None] * inv_freq
        self.register_buffer("cos", torch.cos(angles), persistent=False)
        self.register_buffer("sin", torch.sin(angles), persistent=False)

    def forward(self, tokens):
        """tokens int64 [batch, seq] -> logits float32 [batch, seq, vocab]."""
        s = tokens.shape[1]
        cos, sin = self.cos[:s], self.sin[:s]
        x = self.embed(tokens)
        for block in self.blocks:
            x = block(x, cos, sin)
        return self.head(self.final_norm(x))


def load_params(model: TorchTransformer, params: dict) -> None:
    """Copy a JAX parameter tree (`lm.model.init`) into `model`, in place."""
    c = model.config

    def t(a, shape=None):
        a = np.array(a, np.float32)  # a writable copy: torch refuses read-only buffers
        return torch.from_numpy(np.ascontiguousarray(a.reshape(shape) if shape else a))

    d = c.d_model
    with torch.no_grad():
        model.embed.weight.copy_(t(params["embed"]["embedding"]))
        model.head.weight.copy_(t(params["head"]["kernel"]).T)
        model.final_norm.scale.copy_(t(params["final_norm"]["scale"]))
        for i, blk in enumerate(model.blocks):
            p = jax.tree.map(lambda a: a[i], params["blocks"])  # layer i of the stacked layers
            blk.attn_norm.scale.copy_(t(p["attn_norm"]["scale"]))
            blk.mlp_norm.scale.copy_(t(p["mlp_norm"]["scale"]))
            blk.wq.weight.copy_(t(p["attn"]["wq"], (d, -1)).T)
            blk.wk.weight.copy_(t(p["attn"]["wk"], (d, -1)).T)
            blk.wv.weight.copy_(t(p["attn"]["wv"], (d, -1)).T)
            blk.wo.weight.copy_(t(p["attn"]["wo"], (-1, d)).T)
            for name in ("w1", "w2", "w3"):
                getattr(blk, name).weight.copy_(t(p["mlp"][name]["kernel"]).T)


def make_optimizer(model: TorchTransformer, lr: float, b1: float, b2: float, eps: float, weight_decay: float):
    """torch AdamW with our weight-decay rule: no decay on norm gains (the 1-D parameters)."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(b1, b2), eps=eps)


def cosine_lr(step: int, peak: float, total: int, warmup: int, min_ratio: float) -> float:
    """lm.optim.schedules.cosine_schedule, in plain Python."""
    if step < warmup:
        return peak * step / warmup
    progress = min(max((step - warmup) / max(total - warmup, 1), 0.0), 1.0)
    low = min_ratio * peak
    return low + 0.5 * (peak - low) * (1 + math.cos(math.pi * progress))
