"""What a fitted scaling law says about one compute budget."""

from __future__ import annotations

import dataclasses

from lm.scaling.stats import Interval


@dataclasses.dataclass(frozen=True)
class Prediction:
    """Compute-optimal allocation at `compute` FLOPs (6ND convention).

    n_opt in parameters, d_opt in tokens, loss in nats/token (only a parametric
    law predicts a loss); intervals are bootstrap percentiles, None without a bootstrap."""

    compute: float
    n_opt: float
    d_opt: float
    loss: float | None = None
    n_opt_ci: Interval | None = None
    d_opt_ci: Interval | None = None
    loss_ci: Interval | None = None
    source: str = ""

    @property
    def tokens_per_param(self) -> float:
        return self.d_opt / self.n_opt

    def __str__(self) -> str:
        def ci(x):
            return f" {x}" if x is not None else ""

        loss = f", loss {self.loss:.4f}{ci(self.loss_ci)}" if self.loss is not None else ""
        return (f"C={self.compute:.3g}: N_opt {self.n_opt:.3g}{ci(self.n_opt_ci)}, "
                f"D_opt {self.d_opt:.3g}{ci(self.d_opt_ci)}, D/N {self.tokens_per_param:.1f}{loss}"
                + (f"  [{self.source}]" if self.source else ""))
