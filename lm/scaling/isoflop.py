"""Approach 2 of Hoffmann et al. (2022): IsoFLOP profiles.

For each compute budget C the runs trade model size against tokens. Loss
against log N is roughly a parabola near its bottom; its vertex is the
compute-optimal size N_opt(C), and D_opt(C) = C / (6 N_opt). Straight lines in
log-log space through the optima give N_opt = a C^alpha and D_opt = b C^beta.
Because D_opt is defined from N_opt, alpha + beta = 1 exactly.

`method="argmin"` takes the best run per budget instead of the vertex (what the
CS336 handout recommends for its data); it is robust but quantised to the grid
of model sizes.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from lm.scaling.data import Runs
from lm.scaling.prediction import Prediction
from lm.scaling.stats import Interval, PowerLaw, fit_power_law, percentile_interval

METHODS = ("parabola", "argmin")
MIN_RUNS_PER_BUDGET = 3  # a parabola has 3 coefficients


@dataclasses.dataclass(frozen=True)
class IsoFlopProfile:
    """One budget's profile. `coeffs` are (c2, c1, c0) of loss = c2 x^2 + c1 x + c0
    with x = log10 N (None for argmin); n_opt in parameters, d_opt in tokens."""

    compute: float
    n_opt: float
    d_opt: float
    loss_opt: float  # the parabola's minimum (or the best run's loss)
    n_runs: int
    n_min: float  # the smallest and largest sizes trained at this budget
    n_max: float
    coeffs: tuple[float, float, float] | None

    @property
    def bracketed(self) -> bool:
        """Whether the optimum lies strictly inside the sampled sizes. An optimum at or
        beyond the edge is an extrapolation of the parabola (or just the edge run),
        and a power law through it says more about the grid than about the model."""
        return self.n_min < self.n_opt < self.n_max

    def parabola(self, n_params):
        """The fitted loss at sizes `n_params` (any shape)."""
        if self.coeffs is None:
            raise ValueError("argmin profiles have no parabola")
        return np.polyval(self.coeffs, np.log10(np.asarray(n_params, dtype=np.float64)))


@dataclasses.dataclass(frozen=True)
class IsoFlopFit:
    """Per-budget optima and the power laws through them, with bootstrap intervals
    (None when fitted with n_bootstrap=0)."""

    method: str
    profiles: tuple[IsoFlopProfile, ...]
    n_opt: PowerLaw  # N_opt(C) = a C^alpha
    d_opt: PowerLaw  # D_opt(C) = b C^beta
    n_bootstrap: int = 0
    dropped: tuple[IsoFlopProfile, ...] = ()  # profiles left out of the power laws (bracketed_only)
    alpha_ci: Interval | None = None
    beta_ci: Interval | None = None
    # Bootstrap power laws (coefficient, exponent) for N_opt and D_opt, shape (b, 2) each;
    # kept so predictions at any C can carry an interval.
    n_samples: np.ndarray | None = dataclasses.field(default=None, repr=False, compare=False)
    d_samples: np.ndarray | None = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def alpha(self) -> float:
        return self.n_opt.exponent

    @property
    def beta(self) -> float:
        return self.d_opt.exponent

    def predict(self, compute: float, level: float = 0.95) -> Prediction:
        """N_opt, D_opt at `compute` FLOPs, with percentile intervals when bootstrapped."""
        if compute <= 0:
            raise ValueError(f"compute must be positive, got {compute:g}")
        n_ci = d_ci = None
        if self.n_samples is not None and len(self.n_samples):
            n_ci = percentile_interval(self.n_samples[:, 0] * compute ** self.n_samples[:, 1], level)
            d_ci = percentile_interval(self.d_samples[:, 0] * compute ** self.d_samples[:, 1], level)
        return Prediction(compute, float(self.n_opt(compute)), float(self.d_opt(compute)), None, n_ci, d_ci,
                          source=f"IsoFLOP ({self.method})")


def fit_profile(n_params: np.ndarray, loss: np.ndarray, compute: float, method: str = "parabola") -> IsoFlopProfile:
    """The optimum of one IsoFLOP profile; n_params and loss of shape (k,), k >= 3."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    k = len(n_params)
    distinct = len(np.unique(n_params))
    if distinct < MIN_RUNS_PER_BUDGET:
        raise ValueError(f"budget C={compute:.3g} has {distinct} distinct model size(s) ({k} runs); "
                         f"an IsoFLOP profile needs at least {MIN_RUNS_PER_BUDGET}")
    if method == "argmin":
        i = int(np.argmin(loss))
        return IsoFlopProfile(compute, float(n_params[i]), compute / (6 * n_params[i]), float(loss[i]), k,
                              float(n_params.min()), float(n_params.max()), None)
    x = np.log10(n_params)
    c2, c1, c0 = np.polyfit(x, loss, 2)
    if c2 <= 0:
        raise ValueError(f"budget C={compute:.3g}: loss against log N curves downward (x^2 coefficient {c2:.3g}), "
                         "so the profile has no minimum; add model sizes on both sides of the optimum")
    x_opt = -c1 / (2 * c2)
    n_opt = 10.0 ** x_opt
    return IsoFlopProfile(compute, float(n_opt), compute / (6 * n_opt), float(np.polyval([c2, c1, c0], x_opt)), k,
                          float(n_params.min()), float(n_params.max()), (float(c2), float(c1), float(c0)))


def _profiles(runs: Runs, method: str) -> list[IsoFlopProfile]:
    budgets, index = runs.budget_index()
    return [fit_profile(runs.n_params[index == j], runs.loss[index == j], c, method) for j, c in enumerate(budgets)]


def _laws(profiles) -> tuple[PowerLaw, PowerLaw]:
    c = [p.compute for p in profiles]
    return fit_power_law(c, [p.n_opt for p in profiles]), fit_power_law(c, [p.d_opt for p in profiles])


def fit_isoflop(runs: Runs, method: str = "parabola", n_bootstrap: int = 1000, seed: int = 0,
                level: float = 0.95, bracketed_only: bool = False) -> IsoFlopFit:
    """Fit Approach 2 to runs grouped by compute budget (`runs.compute`).

    Needs 2 or more budgets of 3 or more model sizes each. The bootstrap resamples
    runs with replacement within each budget (so every budget keeps its size),
    refits every profile and both power laws; resamples in which a profile has
    fewer than 3 distinct sizes or no minimum are dropped, and their count is
    kept out of the percentiles rather than biasing them.

    `bracketed_only` leaves out, before fitting and bootstrapping, every budget
    whose optimum is not inside its sampled sizes (see `IsoFlopProfile.bracketed`);
    they are kept in `dropped`.
    """
    profiles = _profiles(runs, method)
    dropped = tuple(p for p in profiles if not p.bracketed) if bracketed_only else ()
    if dropped:
        _, index = runs.budget_index()
        runs = runs.take(np.isin(index, [j for j, p in enumerate(profiles) if p.bracketed]))
        profiles = [p for p in profiles if p.bracketed]
    if len(profiles) < 2:
        why = "; ".join(f"C={p.compute:.3g}: optimum {p.n_opt:.3g} outside the sampled [{p.n_min:.3g}, {p.n_max:.3g}]"
                        for p in dropped)
        raise ValueError(f"need at least 2 compute budgets for a power law, got {len(profiles)} "
                         f"(budgets: {[f'{p.compute:.3g}' for p in profiles]})"
                         + (f"; left out as not bracketed: {why}. Train sizes on both sides of those optima"
                            if why else ""))
    n_law, d_law = _laws(profiles)
    if n_bootstrap <= 0:
        return IsoFlopFit(method, tuple(profiles), n_law, d_law, dropped=dropped)
    rng = np.random.default_rng(seed)
    _, index = runs.budget_index()
    groups = [np.flatnonzero(index == j) for j in range(len(profiles))]
    n_samples, d_samples = [], []
    for _ in range(n_bootstrap):
        pick = np.concatenate([rng.choice(g, size=len(g), replace=True) for g in groups])
        try:
            n_b, d_b = _laws(_profiles(runs.take(pick), method))
        except ValueError:
            continue
        n_samples.append((n_b.coefficient, n_b.exponent))
        d_samples.append((d_b.coefficient, d_b.exponent))
    n_arr = np.array(n_samples).reshape(-1, 2)
    d_arr = np.array(d_samples).reshape(-1, 2)
    return IsoFlopFit(method, tuple(profiles), n_law, d_law, n_bootstrap=len(n_arr), dropped=dropped,
                      alpha_ci=percentile_interval(n_arr[:, 1], level), beta_ci=percentile_interval(d_arr[:, 1], level),
                      n_samples=n_arr, d_samples=d_arr)
