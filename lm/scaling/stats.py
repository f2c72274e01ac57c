"""Small statistics shared by the fits: power laws in log-log space, the Huber
loss, and percentile bootstrap intervals."""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class PowerLaw:
    """y = coefficient * x ** exponent."""

    coefficient: float
    exponent: float

    def __call__(self, x):
        return self.coefficient * np.asarray(x, dtype=np.float64) ** self.exponent

    def __str__(self) -> str:
        return f"{self.coefficient:.5g} * C^{self.exponent:.5f}"


def fit_power_law(x, y) -> PowerLaw:
    """Least squares of log y on log x, shapes (n,), n >= 2, all positive.

    A straight line in log-log space weights every budget equally; a fit in
    linear space would be dominated by the largest budget."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"x and y must be 1-D of the same length, got {x.shape} and {y.shape}")
    if len(x) < 2:
        raise ValueError(f"a power law needs at least 2 points, got {len(x)}")
    if np.any(x <= 0) or np.any(y <= 0):
        raise ValueError("a power law is fitted in log space: x and y must be positive")
    if np.ptp(np.log(x)) == 0:
        raise ValueError("a power law needs at least 2 distinct x values")
    slope, intercept = np.polyfit(np.log(x), np.log(y), 1)
    return PowerLaw(float(np.exp(intercept)), float(slope))


def huber(r: np.ndarray, delta: float) -> np.ndarray:
    """Elementwise Huber loss: r^2/2 within delta, delta*(|r| - delta/2) beyond
    (the same as scipy.special.huber(delta, r))."""
    a = np.abs(r)
    return np.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))


def huber_grad(r: np.ndarray, delta: float) -> np.ndarray:
    """d huber / d r: r clipped to [-delta, delta]."""
    return np.clip(r, -delta, delta)


@dataclasses.dataclass(frozen=True)
class Interval:
    """A two-sided percentile bootstrap interval at `level` (0.95 = 2.5th to 97.5th percentiles)."""

    low: float
    high: float
    level: float

    def __contains__(self, x) -> bool:
        return self.low <= x <= self.high

    def __str__(self) -> str:
        return f"({self.low:.4g}, {self.high:.4g})"


def percentile_interval(samples, level: float = 0.95) -> Interval:
    """Percentile interval of bootstrap `samples` (shape (b,)); NaN samples
    (resamples whose fit failed) are left out."""
    s = np.asarray(samples, dtype=np.float64)
    s = s[np.isfinite(s)]
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if not len(s):
        return Interval(float("nan"), float("nan"), level)
    lo, hi = np.percentile(s, [50 * (1 - level), 50 * (1 + level)])
    return Interval(float(lo), float(hi), level)
