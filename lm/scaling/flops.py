"""FLOP accounting: the C = 6ND rule of thumb next to the exact count of our model.

6ND counts one multiply-add (2 FLOPs) per parameter per token forward and twice
that backward. It leaves out attention's score and value products, which grow
with the context length, and counts embedding lookups that are not matmuls.
`ModelConfig.flops_per_token()` counts the matmuls exactly, attention included,
so showing both says how far the rule is off for a given shape (far, for the
tiny models we can train on a CPU).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only its methods are used; importing lm.model would pull in JAX
    from lm.model import ModelConfig


def flops_6nd(n_params: float, n_tokens: float) -> float:
    """C = 6 N D, in FLOPs, for N parameters trained on D tokens."""
    if n_params <= 0 or n_tokens <= 0:
        raise ValueError(f"N and D must be positive, got N={n_params:g}, D={n_tokens:g}")
    return 6.0 * n_params * n_tokens


def tokens_for_budget(compute: float, n_params: float) -> float:
    """D = C / (6 N): the tokens a budget of C FLOPs buys an N-parameter model under 6ND."""
    if compute <= 0 or n_params <= 0:
        raise ValueError(f"C and N must be positive, got C={compute:g}, N={n_params:g}")
    return compute / (6.0 * n_params)


def scaling_params(config: ModelConfig) -> int:
    """The N we put into scaling laws: parameters without the input embedding.

    The input embedding is a table lookup (no FLOPs) and, at our tiny sizes, a
    large share of all parameters; counting it bends small-model curves (Kaplan
    et al. 2020, Fig. 6). The untied output head is a real matmul and stays in.
    With this N, 6 N per token matches the matmul part of the exact count."""
    return config.num_params(include_embeddings=False)


@dataclasses.dataclass(frozen=True)
class FlopCount:
    """Training FLOPs of one model on `n_tokens` tokens, both ways (all in FLOPs)."""

    n_params: int  # N as `scaling_params` defines it
    n_params_total: int  # everything, input embedding included
    n_tokens: float
    flops_per_token: int  # exact: 6 x matmul parameters + attention (forward + backward)
    flops_per_token_6n: float  # the rule of thumb, 6 N
    attention_flops_per_token: int  # the part 6N leaves out: 12 * layers * context * d_model

    @property
    def exact(self) -> float:
        return float(self.flops_per_token) * self.n_tokens

    @property
    def approx_6nd(self) -> float:
        return self.flops_per_token_6n * self.n_tokens

    @property
    def ratio(self) -> float:
        """exact / 6ND; above 1 when attention matters (long contexts, narrow models)."""
        return self.exact / self.approx_6nd

    def __str__(self) -> str:
        return (f"N={self.n_params:,} (total {self.n_params_total:,}), D={self.n_tokens:,.0f}: "
                f"6ND={self.approx_6nd:.4g} FLOPs, exact={self.exact:.4g} FLOPs "
                f"(attention {self.attention_flops_per_token / self.flops_per_token:.1%} of it), "
                f"exact/6ND={self.ratio:.3f}")


def count_flops(config: ModelConfig, n_tokens: float) -> FlopCount:
    """Both FLOP counts for training `config` on `n_tokens` tokens."""
    if n_tokens <= 0:
        raise ValueError(f"n_tokens must be positive, got {n_tokens:g}")
    n = scaling_params(config)
    attention = 12 * config.n_layers * config.context_length * config.d_model
    return FlopCount(n_params=n, n_params_total=config.num_params(), n_tokens=float(n_tokens),
                     flops_per_token=config.flops_per_token(), flops_per_token_6n=6.0 * n,
                     attention_flops_per_token=attention)


def tokens_for_budget_exact(config: ModelConfig, compute: float) -> float:
    """D such that the exact count `config.flops_per_token() * D` equals `compute`."""
    if compute <= 0:
        raise ValueError(f"compute must be positive, got {compute:g}")
    return compute / config.flops_per_token()
