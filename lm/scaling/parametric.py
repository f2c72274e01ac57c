"""Approach 3 of Hoffmann et al. (2022): a parametric loss L(N, D) = E + A/N^alpha + B/D^beta.

The fit follows the paper and Epoch AI's replication (Besiroglu et al. 2024):
parametrise A = e^a, B = e^b, E = e^e so that

    log L_hat = LSE(a - alpha log N, b - beta log D, e)

(log-sum-exp keeps every term positive without constraints and is smooth),
minimise the summed Huber loss (delta = 1e-3) of log L_hat - log L with L-BFGS,
and start from every point of a grid, keeping the best optimum: the objective
has flat valleys and local minima, so one start is not enough. The Huber loss
makes the fit robust to the few runs far off the surface; with delta = 1e-3
in log space nearly every residual sits in its linear part, so this is close to
a least-absolute-deviation fit.
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
from scipy.optimize import minimize
from threadpoolctl import threadpool_limits

from lm.scaling.data import Runs
from lm.scaling.prediction import Prediction
from lm.scaling.stats import Interval, huber, huber_grad, percentile_interval

PARAM_NAMES = ("E", "A", "B", "alpha", "beta")


@dataclasses.dataclass(frozen=True)
class ParametricLaw:
    """L(N, D) = E + A / N^alpha + B / D^beta, loss in nats/token, N parameters, D tokens."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float

    def __post_init__(self):
        for name in PARAM_NAMES:
            if not np.isfinite(getattr(self, name)) or getattr(self, name) <= 0:
                raise ValueError(f"ParametricLaw.{name} must be positive and finite, got {getattr(self, name)}")

    def loss(self, n_params, n_tokens):
        """Predicted loss, broadcasting N and D."""
        n, d = np.asarray(n_params, dtype=np.float64), np.asarray(n_tokens, dtype=np.float64)
        return self.E + self.A / n ** self.alpha + self.B / d ** self.beta

    @property
    def a(self) -> float:
        """Exponent of N_opt ~ C^a: beta / (alpha + beta)."""
        return self.beta / (self.alpha + self.beta)

    @property
    def b(self) -> float:
        """Exponent of D_opt ~ C^b: alpha / (alpha + beta)."""
        return self.alpha / (self.alpha + self.beta)

    @property
    def G(self) -> float:
        """(alpha A / (beta B))^(1/(alpha+beta)), the constant of the optimal allocation."""
        return (self.alpha * self.A / (self.beta * self.B)) ** (1 / (self.alpha + self.beta))

    def optimal(self, compute):
        """(N_opt, D_opt) minimising L under C = 6 N D (Hoffmann et al. eq. 4):
        N_opt = G (C/6)^a, D_opt = (C/6)^b / G. Broadcasts over C (FLOPs)."""
        c6 = np.asarray(compute, dtype=np.float64) / 6
        return self.G * c6 ** self.a, c6 ** self.b / self.G

    def optimal_loss(self, compute):
        return self.loss(*self.optimal(compute))

    @classmethod
    def from_log_params(cls, theta) -> "ParametricLaw":
        a, b, e, alpha, beta = (float(t) for t in theta)
        return cls(E=float(np.exp(e)), A=float(np.exp(a)), B=float(np.exp(b)), alpha=alpha, beta=beta)

    def __str__(self) -> str:
        return (f"L = {self.E:.4g} + {self.A:.4g}/N^{self.alpha:.4f} + {self.B:.4g}/D^{self.beta:.4f}  "
                f"(N_opt ~ C^{self.a:.3f}, D_opt ~ C^{self.b:.3f})")


@dataclasses.dataclass(frozen=True)
class ParametricConfig:
    """How Approach 3 is fitted. The default grid is Hoffmann et al.'s, as in
    Epoch's notebook: 5 x 5 x 5 x 6 x 6 = 4500 starts."""

    delta: float = dataclasses.field(default=1e-3, metadata={"help": "Huber delta on log-loss residuals"})
    alpha_grid: tuple[float, ...] = (0.0, 0.5, 1.0, 1.5, 2.0)
    beta_grid: tuple[float, ...] = (0.0, 0.5, 1.0, 1.5, 2.0)
    e_grid: tuple[float, ...] = (-1.0, -0.5, 0.0, 0.5, 1.0)  # log E
    a_grid: tuple[float, ...] = (0.0, 5.0, 10.0, 15.0, 20.0, 25.0)  # log A
    b_grid: tuple[float, ...] = (0.0, 5.0, 10.0, 15.0, 20.0, 25.0)  # log B
    n_bootstrap: int = dataclasses.field(default=200, metadata={"help": "bootstrap resamples (0: none)"})
    bootstrap_starts: int = dataclasses.field(
        default=3, metadata={"help": "best distinct grid optima each resample restarts from"})
    polish: int = dataclasses.field(default=5, metadata={"help": "best distinct optima refined with tight tolerances"})
    seed: int = 0
    level: float = 0.95
    max_iter: int = 2000

    def __post_init__(self):
        if self.delta <= 0:
            raise ValueError(f"delta must be positive, got {self.delta}")
        for name in ("alpha_grid", "beta_grid", "e_grid", "a_grid", "b_grid"):
            if not getattr(self, name):
                raise ValueError(f"{name} must have at least one value")
        if self.n_bootstrap < 0 or self.bootstrap_starts < 1 or self.polish < 1 or self.max_iter < 1:
            raise ValueError("n_bootstrap must be >= 0; bootstrap_starts, polish and max_iter >= 1")
        if not 0 < self.level < 1:
            raise ValueError(f"level must be in (0, 1), got {self.level}")

    def grid(self) -> np.ndarray:
        """Initial thetas (a, b, e, alpha, beta), shape (starts, 5)."""
        return np.array(list(itertools.product(self.a_grid, self.b_grid, self.e_grid, self.alpha_grid,
                                               self.beta_grid)), dtype=np.float64)


def objective(theta: np.ndarray, log_n: np.ndarray, log_d: np.ndarray, log_loss: np.ndarray,
              delta: float) -> tuple[float, np.ndarray]:
    """Summed Huber loss of log-space residuals and its gradient w.r.t. theta (5,).

    log_n, log_d, log_loss: shape (n,), natural logs. The gradient is analytic:
    d LSE / d term_k is the softmax weight of term k, which is what makes 4500
    starts affordable (finite differences would cost 6 evaluations a step). The
    log-sum-exp is written out rather than calling scipy.special, which costs
    5x more per call at n = 240."""
    a, b, e, alpha, beta = theta
    t_n = a - alpha * log_n
    t_d = b - beta * log_d
    m = np.maximum(np.maximum(t_n, t_d), e)  # shift so no exp overflows
    x_n, x_d, x_e = np.exp(t_n - m), np.exp(t_d - m), np.exp(e - m)
    s = x_n + x_d + x_e
    r = m + np.log(s) - log_loss
    g = huber_grad(r, delta) / s  # huber'(r) times the softmax normaliser
    g_n, g_d = g * x_n, g * x_d
    grad = np.array([g_n.sum(), g_d.sum(), (g * x_e).sum(), -(g_n @ log_n), -(g_d @ log_d)])
    return float(huber(r, delta).sum()), grad


def _minimise(theta0, args, max_iter: int, polish: bool) -> tuple[np.ndarray, float]:
    """One L-BFGS-B run. `polish` tightens the tolerances: scipy's default gtol
    (1e-5) stops early on an objective that is itself ~1e-3 (the cause Epoch
    give for Hoffmann's different estimates), but the screening pass over the
    grid only has to find the right basin, so it keeps the defaults (2x cheaper)."""
    options = {"maxiter": max_iter, "gtol": 1e-12, "ftol": 1e-15} if polish else {"maxiter": max_iter}
    res = minimize(objective, theta0, args=args, jac=True, method="L-BFGS-B", options=options)
    return res.x, float(res.fun)


@dataclasses.dataclass(frozen=True)
class ParametricFit:
    """The best law over the grid, its objective, and bootstrap intervals."""

    law: ParametricLaw
    objective: float  # summed Huber loss at the optimum
    n_runs: int
    n_starts: int
    config: ParametricConfig
    intervals: dict[str, Interval] | None = None  # E, A, B, alpha, beta, a, b
    # Bootstrap laws as rows (E, A, B, alpha, beta), shape (b, 5).
    samples: np.ndarray | None = dataclasses.field(default=None, repr=False, compare=False)

    def predict(self, compute: float) -> Prediction:
        """Compute-optimal N, D and loss at `compute` FLOPs, with intervals when bootstrapped."""
        if compute <= 0:
            raise ValueError(f"compute must be positive, got {compute:g}")
        n, d = self.law.optimal(compute)
        cis: list[Interval | None] = [None, None, None]
        if self.samples is not None and len(self.samples):
            laws = [ParametricLaw(*row) for row in self.samples]
            opt = np.array([law.optimal(compute) for law in laws])  # (b, 2)
            loss = [law.optimal_loss(compute) for law in laws]
            cis = [percentile_interval(v, self.config.level) for v in (opt[:, 0], opt[:, 1], loss)]
        return Prediction(compute, float(n), float(d), float(self.law.optimal_loss(compute)), *cis,
                          source="parametric")


def _valid(theta: np.ndarray, fun: float) -> bool:
    """A usable optimum: finite, positive exponents, and A, B, E representable (exp < 1e300)."""
    return bool(np.isfinite(fun) and np.all(np.isfinite(theta)) and theta[3] > 0 and theta[4] > 0
                and np.all(theta[:3] < 690))


def _fit_from(runs: Runs, starts: np.ndarray, config: ParametricConfig) -> list[tuple[np.ndarray, float]]:
    """Optima from every start, best first, as (theta (5,), objective) pairs.

    Every start is screened with default tolerances; the best `config.polish`
    distinct optima are then refined with tight ones."""
    args = (np.log(runs.n_params), np.log(runs.n_tokens), np.log(runs.loss), config.delta)
    results = []
    with np.errstate(over="ignore", invalid="ignore"):
        for theta0 in starts:
            theta, fun = _minimise(theta0, args, config.max_iter, polish=False)
            if _valid(theta, fun):
                results.append((theta, fun))
        results.sort(key=lambda t: t[1])
        polished = [_minimise(theta, args, config.max_iter, polish=True) for theta in _distinct(results, config.polish)]
    results = [(t, f) for t, f in polished if _valid(t, f)] + results
    results.sort(key=lambda t: t[1])
    return results


def _distinct(results, k: int) -> np.ndarray:
    """Up to k optima that are not the same point (many starts land on one minimum)."""
    kept: list[np.ndarray] = []
    for theta, _ in results:
        if all(np.max(np.abs(theta - t)) > 1e-3 for t in kept):
            kept.append(theta)
        if len(kept) == k:
            break
    return np.array(kept)


# L-BFGS-B calls BLAS on 5-variable problems every iteration; with a thread pool each call pays a thread
# hand-off, which on a busy 2-core machine made one fit ~10x slower. One limit around the whole fit (entering
# one costs ~3 ms, and a bootstrap runs hundreds of fits).
@threadpool_limits.wrap(limits=1, user_api="blas")
def fit_parametric(runs: Runs, config: ParametricConfig = ParametricConfig()) -> ParametricFit:
    """Fit L(N, D) to `runs` (uses n_params, n_tokens and loss; not compute).

    Needs at least 5 runs (one per parameter) with more than one distinct N and D.
    The bootstrap resamples runs with replacement and restarts L-BFGS from the
    `bootstrap_starts` best distinct optima of the full-data grid search: a
    resample is close to the data, so its optimum is near one of those, and a
    full grid per resample would cost thousands of fits each.
    """
    if len(runs) < len(PARAM_NAMES):
        raise ValueError(f"the parametric law has {len(PARAM_NAMES)} parameters; need at least "
                         f"{len(PARAM_NAMES)} runs, got {len(runs)}")
    if len(np.unique(runs.n_params)) < 2 or len(np.unique(runs.n_tokens)) < 2:
        raise ValueError("need runs at 2 or more distinct model sizes N and token counts D to separate the terms")
    starts = config.grid()
    results = _fit_from(runs, starts, config)
    if not results:
        raise ValueError("no start of the grid converged to positive exponents; widen the initialisation grid")
    theta, fun = results[0]
    law = ParametricLaw.from_log_params(theta)
    if config.n_bootstrap == 0:
        return ParametricFit(law, fun, len(runs), len(starts), config)
    boot_starts = _distinct(results, config.bootstrap_starts)
    rng = np.random.default_rng(config.seed)
    samples = []
    for _ in range(config.n_bootstrap):
        resample = runs.take(rng.integers(0, len(runs), size=len(runs)))
        boot = _fit_from(resample, boot_starts, config)
        if boot:
            b = ParametricLaw.from_log_params(boot[0][0])
            samples.append((b.E, b.A, b.B, b.alpha, b.beta))
    arr = np.array(samples).reshape(-1, 5)
    intervals = {name: percentile_interval(arr[:, i], config.level) for i, name in enumerate(PARAM_NAMES)}
    alpha, beta = arr[:, 3], arr[:, 4]
    intervals["a"] = percentile_interval(beta / (alpha + beta), config.level)
    intervals["b"] = percentile_interval(alpha / (alpha + beta), config.level)
    return ParametricFit(law, fun, len(runs), len(starts), config, intervals, arr)
