"""Model configuration: a frozen, validated, hashable description of the architecture."""

from __future__ import annotations

import dataclasses

NORMS = ("rmsnorm", "layernorm")
NORM_POSITIONS = ("pre", "post")
ACTIVATIONS = ("swiglu", "gelu", "relu", "relu2")
POSITIONS = ("rope", "sinusoidal", "learned", "none")
ATTENTION_IMPLS = ("auto", "xla", "blocked", "pallas", "cudnn")  # see lm.model.attention
NORM_IMPLS = ("xla", "pallas", "triton")
DTYPES = ("float32", "bfloat16")
REMATS = ("none", "dots", "full")
ROPE_LAYOUTS = ("half", "interleaved")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """A decoder-only Transformer. `n_kv_heads=0` means as many as `n_heads` (no GQA);
    `sliding_window=0` means full causal attention; `n_experts=0` means a dense MLP.

    The layers are one program scanned over parameters stacked on a leading `layers` axis.
    `remat` recomputes each layer's activations in the backward pass instead of storing them:
    "dots" keeps the matmul outputs and recomputes the elementwise work, "full" keeps only the
    layer's input. `scan_layers=False` unrolls the same stacked layers (faster compiled code on
    some backends, compile time growing with depth).
    """

    vocab_size: int = 4096
    context_length: int = 128
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    n_kv_heads: int = 0
    d_ff: int = 384
    rope_theta: float = 10000.0
    norm: str = "rmsnorm"
    norm_position: str = "pre"
    norm_eps: float = 1e-5
    activation: str = "swiglu"
    positions: str = "rope"
    tie_embeddings: bool = False
    qkv_bias: bool = False  # biases on the q, k, v projections (Qwen2)
    dtype: str = "float32"  # compute dtype; "bfloat16" is mixed precision over float32 params
    param_dtype: str = "float32"
    attention_impl: str = "auto"
    norm_impl: str = "xla"
    sliding_window: int = 0
    n_experts: int = 0
    experts_per_token: int = 2
    qk_norm: bool = False  # RMSNorm over each head's q and k before RoPE (OLMo-2, Qwen3, nanochat)
    rope_layout: str = "half"  # "half": pairs (i, i + head_dim/2) as Llama/HF; "interleaved": (2i, 2i+1)
    logit_softcap: float = 0.0  # > 0: attention scores become cap * tanh(scores / cap) (Gemma 2)
    remat: str = "none"
    scan_layers: bool = True

    def __post_init__(self):
        choices = [("norm", NORMS), ("norm_position", NORM_POSITIONS), ("activation", ACTIVATIONS),
                   ("positions", POSITIONS), ("attention_impl", ATTENTION_IMPLS), ("norm_impl", NORM_IMPLS),
                   ("dtype", DTYPES), ("param_dtype", DTYPES), ("remat", REMATS), ("rope_layout", ROPE_LAYOUTS)]
        for name, allowed in choices:
            if getattr(self, name) not in allowed:
                raise ValueError(f"ModelConfig.{name}={getattr(self, name)!r} is not one of {allowed}")
        if not isinstance(self.n_kv_heads, int) or self.n_kv_heads < 0:
            raise ValueError(f"ModelConfig.n_kv_heads must be >= 0 (0 = n_heads), got {self.n_kv_heads!r}")
        for name in ("vocab_size", "context_length", "d_model", "n_layers", "n_heads", "d_ff"):
            v = getattr(self, name)
            if not isinstance(v, int) or v <= 0:
                raise ValueError(f"ModelConfig.{name} must be a positive integer, got {v!r}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} must be divisible by n_heads={self.n_heads}")
        if self.n_heads % self.kv_heads:
            raise ValueError(f"n_heads={self.n_heads} must be divisible by n_kv_heads={self.kv_heads} (GQA groups)")
        if self.positions == "rope" and self.head_dim % 2:
            raise ValueError(f"RoPE needs an even head_dim, got {self.head_dim}; change d_model or n_heads")
        if self.sliding_window < 0 or self.n_experts < 0:
            raise ValueError("sliding_window and n_experts must be >= 0 (0 disables them)")
        if self.norm_impl != "xla" and self.norm != "rmsnorm":
            raise ValueError(f"norm_impl={self.norm_impl!r} is a fused RMSNorm kernel; use norm_impl='xla' "
                             f"with norm={self.norm!r}")
        if self.logit_softcap < 0:
            raise ValueError(f"ModelConfig.logit_softcap must be >= 0 (0 disables it), got {self.logit_softcap}")
        if self.logit_softcap and self.attention_impl == "cudnn":
            raise ValueError("cuDNN attention has no score softcap; use attention_impl='auto', 'xla' or 'pallas' "
                             "with logit_softcap")
        if self.attention_impl == "cudnn" and self.dtype != "bfloat16":
            raise ValueError("attention_impl='cudnn' needs dtype='bfloat16' (cuDNN's fused attention has no "
                             "float32 kernel); use attention_impl='auto' to fall back to XLA in float32")
        if self.n_experts and not 1 <= self.experts_per_token <= self.n_experts:
            raise ValueError(f"experts_per_token={self.experts_per_token} must be in [1, n_experts={self.n_experts}]")

    @property
    def kv_heads(self) -> int:
        """Key/value heads actually used (n_kv_heads, or n_heads when it is 0)."""
        return self.n_kv_heads or self.n_heads

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def _mlp_params(self) -> int:
        return (3 if self.activation == "swiglu" else 2) * self.d_model * self.d_ff

    def _norm_params(self) -> int:
        return self.d_model * (2 if self.norm == "layernorm" else 1)

    def num_params(self, include_embeddings: bool = True) -> int:
        """Exact parameter count of `init(self, key)`."""
        d, hd = self.d_model, self.head_dim
        attn = d * self.n_heads * hd * 2 + d * self.kv_heads * hd * 2
        attn += (self.n_heads + 2 * self.kv_heads) * hd if self.qkv_bias else 0
        mlp = self._mlp_params() if not self.n_experts else self.n_experts * self._mlp_params() + d * self.n_experts
        per_layer = attn + mlp + 2 * self._norm_params() + (2 * hd if self.qk_norm else 0)
        total = self.n_layers * per_layer + (self._norm_params() if self.norm_position == "pre" else 0)
        if include_embeddings:
            total += self.vocab_size * d * (1 if self.tie_embeddings else 2)
            total += self.context_length * d if self.positions == "learned" else 0
        elif not self.tie_embeddings:
            total += self.vocab_size * d  # the output head is a real matmul
        return total

    def flops_per_token(self) -> int:
        """Training FLOPs per token (forward + backward = 3x forward), PaLM-style:
        6 * (matmul parameters that touch the token, active experts only)
        + 12 * n_layers * context_length * d_model for attention scores and values."""
        d, hd = self.d_model, self.head_dim
        attn = d * self.n_heads * hd * 2 + d * self.kv_heads * hd * 2
        mlp = self._mlp_params() * (self.experts_per_token if self.n_experts else 1)
        router = d * self.n_experts
        matmul = self.n_layers * (attn + mlp + router) + self.vocab_size * d
        return 6 * matmul + 12 * self.n_layers * self.context_length * d


PRESETS: dict[str, ModelConfig] = {
    # The CPU presets unroll their four layers (the same stacked parameters and Block program): XLA's CPU
    # loop zero-fills and copies the scan's stacked activation buffers every step, which made the scanned
    # train step about 10% slower here (benchmarks/RESULTS.md, train step), while four layers compile fast.
    # Small enough to learn something in a few minutes on a 2-core CPU.
    "tiny": ModelConfig(scan_layers=False),
    # The CS336 TinyStories model.
    "tinystories": ModelConfig(vocab_size=10_000, context_length=256, d_model=512, n_layers=4, n_heads=16, d_ff=1344,
                               scan_layers=False),
    # The training-step benchmark model.
    "bench": ModelConfig(vocab_size=10_000, context_length=256, d_model=256, n_layers=4, n_heads=8, d_ff=1024,
                         scan_layers=False),
    # GPU presets: bf16 compute over float32 params and optimizer state; attention picked for the device.
    # GPT-2 small, 124M (learned positions, LayerNorm, GELU, tied head; vocab padded to a multiple of 128).
    "gpt2-small": ModelConfig(vocab_size=50_304, context_length=1024, d_model=768, n_layers=12, n_heads=12,
                              d_ff=3072, norm="layernorm", activation="gelu", positions="learned",
                              tie_embeddings=True, dtype="bfloat16"),
    # nanochat's depth-12 model: head_dim 128, QK-norm, ReLU^2, untied head.
    "d12": ModelConfig(vocab_size=32_768, context_length=2048, d_model=768, n_layers=12, n_heads=6, d_ff=3072,
                       activation="relu2", qk_norm=True, dtype="bfloat16"),
    # Llama-style with grouped-query attention.
    "350m": ModelConfig(vocab_size=32_768, context_length=2048, d_model=1024, n_layers=24, n_heads=16,
                        n_kv_heads=4, d_ff=2816, rope_theta=500_000.0, dtype="bfloat16"),
    "1b": ModelConfig(vocab_size=32_768, context_length=2048, d_model=2048, n_layers=16, n_heads=32, n_kv_heads=8,
                      d_ff=8192, rope_theta=500_000.0, tie_embeddings=True, dtype="bfloat16", remat="dots"),
}
GPU_PRESETS = ("gpt2-small", "d12", "350m", "1b")


def get_preset(name: str, **overrides) -> ModelConfig:
    """A preset by name, with field overrides."""
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; choose one of {sorted(PRESETS)}")
    return dataclasses.replace(PRESETS[name], **overrides)
