"""Model configuration: a frozen, validated, hashable description of the architecture."""

from __future__ import annotations

import dataclasses

NORMS = ("rmsnorm", "layernorm")
NORM_POSITIONS = ("pre", "post")
ACTIVATIONS = ("swiglu", "gelu", "relu", "relu2")
POSITIONS = ("rope", "sinusoidal", "learned", "none")
ATTENTION_IMPLS = ("xla", "pallas", "cudnn")
NORM_IMPLS = ("xla", "pallas", "triton")
DTYPES = ("float32", "bfloat16")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """A decoder-only Transformer. `n_kv_heads=0` means as many as `n_heads` (no GQA);
    `sliding_window=0` means full causal attention; `n_experts=0` means a dense MLP."""

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
    attention_impl: str = "xla"
    norm_impl: str = "xla"
    sliding_window: int = 0
    n_experts: int = 0
    experts_per_token: int = 2

    def __post_init__(self):
        choices = [("norm", NORMS), ("norm_position", NORM_POSITIONS), ("activation", ACTIVATIONS),
                   ("positions", POSITIONS), ("attention_impl", ATTENTION_IMPLS), ("norm_impl", NORM_IMPLS),
                   ("dtype", DTYPES), ("param_dtype", DTYPES)]
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
        per_layer = attn + mlp + 2 * self._norm_params()
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
    # Small enough to learn something in a few minutes on a 2-core CPU.
    "tiny": ModelConfig(),
    # The CS336 TinyStories model.
    "tinystories": ModelConfig(vocab_size=10_000, context_length=256, d_model=512, n_layers=4, n_heads=16, d_ff=1344),
    # The training-step benchmark model.
    "bench": ModelConfig(vocab_size=10_000, context_length=256, d_model=256, n_layers=4, n_heads=8, d_ff=1024),
}


def get_preset(name: str, **overrides) -> ModelConfig:
    """A preset by name, with field overrides."""
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; choose one of {sorted(PRESETS)}")
    return dataclasses.replace(PRESETS[name], **overrides)
