"""Planning an IsoFLOP sweep: which model shapes to train, for how many steps, at each budget.

Pure: it returns configs and step counts; `experiments/scaling.py` trains them.
Budgets follow the published data's convention C = 6 N D (N from
`flops.scaling_params`), so our fits, the published fits and the predictions
all speak the same units; the exact FLOPs of each run are recorded beside it.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from lm.scaling.flops import count_flops, scaling_params

if TYPE_CHECKING:
    from lm.model import ModelConfig

# (d_model, n_layers, n_heads): a ladder of shapes small enough for a CPU,
# depth and width growing together; d_ff = 3 d_model below. With a 1024-token
# vocabulary N runs from ~20k to ~4M parameters, which brackets the
# compute-optimal size (~sqrt(C / 120) by Chinchilla's 20 tokens per parameter)
# for budgets of 1e11 to 1e13 FLOPs.
DEFAULT_SHAPES: tuple[tuple[int, int, int], ...] = (
    (16, 1, 2), (24, 1, 2), (32, 1, 2), (48, 1, 2), (64, 1, 2), (64, 2, 2), (80, 2, 2), (96, 2, 4), (96, 3, 4),
    (112, 3, 4), (128, 3, 4), (144, 4, 4), (192, 4, 6), (224, 6, 8),
)  # N grows ~1.3-2x a step, so a decade of N (the D/N window below) holds 5 or more sizes


@dataclasses.dataclass(frozen=True)
class PlannedRun:
    """One run of the sweep. `compute` is the planned budget in FLOPs (6ND convention);
    `n_tokens` is what `steps` batches actually feed (steps are whole, so
    6 * n_params * n_tokens is within half a step of the budget)."""

    name: str
    compute: float
    model: "ModelConfig"
    steps: int
    n_params: int
    n_tokens: int
    exact_flops: float  # model.flops_per_token() * n_tokens: attention included

    @property
    def flops_6nd(self) -> float:
        return 6.0 * self.n_params * self.n_tokens


def shape_config(base: "ModelConfig", d_model: int, n_layers: int, n_heads: int) -> "ModelConfig":
    """`base` with a new width/depth; d_ff = 3 d_model (SwiGLU at ~8/3, rounded to keep sizes simple)."""
    return dataclasses.replace(base, d_model=d_model, n_layers=n_layers, n_heads=n_heads, d_ff=3 * d_model)


def run_name(compute: float, model: "ModelConfig", steps: int) -> str:
    """A stable name from the budget, the shape and the step count: resuming a sweep
    finds finished runs by it, and a changed plan (batch size, context) gets new names."""
    return f"C{compute:.2e}-d{model.d_model}-L{model.n_layers}-h{model.n_heads}-s{steps}".replace("+", "")


def plan_run(compute: float, model: "ModelConfig", batch_size: int) -> PlannedRun:
    """Steps for `model` to spend `compute` FLOPs (6ND) with `batch_size` sequences a step."""
    if compute <= 0 or batch_size <= 0:
        raise ValueError(f"compute and batch_size must be positive, got {compute:g}, {batch_size}")
    n = scaling_params(model)
    tokens_per_step = batch_size * model.context_length
    steps = max(1, round(compute / (6.0 * n * tokens_per_step)))
    tokens = steps * tokens_per_step
    return PlannedRun(run_name(compute, model, steps), float(compute), model, steps, n, tokens,
                      count_flops(model, tokens).exact)


def plan_sweep(budgets, base: "ModelConfig", shapes=DEFAULT_SHAPES, batch_size: int = 16,
               min_steps: int = 30, max_steps: int = 20_000, min_sizes: int = 4,
               tokens_per_param: tuple[float, float] = (2.0, 200.0)) -> list[PlannedRun]:
    """Every (budget, shape) pair with min_steps <= steps <= max_steps and D/N within
    `tokens_per_param`.

    The D/N window (a decade either side of Chinchilla's 20) keeps each profile
    around its likely minimum instead of spending CPU hours on sizes far from
    it; too few steps and a model has not left warm-up. Raises ValueError naming
    the budget when fewer than `min_sizes` shapes fit it (an IsoFLOP profile
    needs sizes on both sides of its minimum)."""
    budgets = sorted(float(c) for c in budgets)
    if not budgets:
        raise ValueError("give at least one compute budget")
    lo, hi = tokens_per_param
    if not 0 < lo < hi:
        raise ValueError(f"tokens_per_param must be (low, high) with 0 < low < high, got {tokens_per_param}")
    plan: list[PlannedRun] = []
    for c in budgets:
        runs = [plan_run(c, shape_config(base, *s), batch_size) for s in shapes]
        fitting = [r for r in runs if min_steps <= r.steps <= max_steps and lo <= r.n_tokens / r.n_params <= hi]
        if len(fitting) < min_sizes:
            table = ", ".join(f"d{r.model.d_model}-L{r.model.n_layers}: {r.steps} steps, "
                              f"D/N {r.n_tokens / r.n_params:.3g}" for r in runs)
            raise ValueError(f"budget C={c:.3g} fits {len(fitting)} model shape(s) with {min_steps}..{max_steps} "
                             f"steps and D/N in [{lo:g}, {hi:g}], need {min_sizes} ({table}). "
                             "Change the budget or the shapes.")
        plan.extend(fitting)
    return plan


def nearest_shape(n_target: float, base: "ModelConfig", shapes=DEFAULT_SHAPES) -> "ModelConfig":
    """The shape whose N (scaling_params) is closest to `n_target` on a log scale."""
    import math

    configs = [shape_config(base, *s) for s in shapes]
    return min(configs, key=lambda m: abs(math.log(scaling_params(m) / n_target)))
