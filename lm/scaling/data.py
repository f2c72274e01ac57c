"""Scaling-law observations: one (N, D, C, loss) row per finished training run.

Every fit in `lm.scaling` takes a `Runs`; building one is where bad input is
caught (non-positive sizes, NaN losses, ragged columns), so the fits can assume
clean float64 arrays.
"""

from __future__ import annotations

import dataclasses

import numpy as np


def _column(name: str, values) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence of numbers, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        bad = int(np.flatnonzero(~np.isfinite(arr))[0])
        raise ValueError(f"{name} must be finite; row {bad} is {arr[bad]}")
    if np.any(arr <= 0):
        bad = int(np.flatnonzero(arr <= 0)[0])
        raise ValueError(f"{name} must be positive (scaling laws live in log space); row {bad} is {arr[bad]:g}")
    return arr


@dataclasses.dataclass(frozen=True, eq=False)
class Runs:
    """Training runs as columns, all shape (n,), float64.

    n_params: N, parameters; n_tokens: D, training tokens; compute: C, training
    FLOPs (the budget the run was planned for, which labels IsoFLOP profiles);
    loss: final loss in nats/token.
    """

    n_params: np.ndarray
    n_tokens: np.ndarray
    compute: np.ndarray
    loss: np.ndarray

    def __post_init__(self):
        cols = {}
        for name in ("n_params", "n_tokens", "compute", "loss"):
            cols[name] = _column(name, getattr(self, name))
            object.__setattr__(self, name, cols[name])
        lengths = {name: len(v) for name, v in cols.items()}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"columns must have the same length, got {lengths}")
        if not lengths["loss"]:
            raise ValueError("no runs: need at least one (N, D, C, loss) row")

    @classmethod
    def from_arrays(cls, n_params, loss, *, n_tokens=None, compute=None) -> "Runs":
        """Give N, loss and one of D or C; the other follows from C = 6 N D,
        the convention of both published data sets (and of Hoffmann et al.)."""
        if n_tokens is None and compute is None:
            raise ValueError("give n_tokens (D) or compute (C); the other is derived as C = 6 N D")
        n = _column("n_params", n_params)
        if n_tokens is None:
            n_tokens = _column("compute", compute) / (6.0 * n)
        if compute is None:
            compute = 6.0 * n * _column("n_tokens", n_tokens)
        return cls(n, n_tokens, compute, loss)

    def __len__(self) -> int:
        return len(self.loss)

    def take(self, index) -> "Runs":
        """Rows `index` (an int array or boolean mask), e.g. a bootstrap resample."""
        return Runs(self.n_params[index], self.n_tokens[index], self.compute[index], self.loss[index])

    def budgets(self, rtol: float = 1e-6) -> np.ndarray:
        """Distinct compute budgets, ascending, shape (k,). Budgets within `rtol`
        are one budget, because planned budgets round-trip through text files."""
        out: list[float] = []
        for c in np.sort(self.compute):
            if not out or c > out[-1] * (1 + rtol):
                out.append(float(c))
        return np.array(out)

    def budget_index(self, rtol: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
        """(budgets (k,), index (n,) of each run's budget in `budgets`)."""
        budgets = self.budgets(rtol)
        index = np.searchsorted(budgets * (1 + rtol), self.compute)
        return budgets, index
