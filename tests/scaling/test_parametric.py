"""Approach 3: recovering L(N, D) = E + A/N^alpha + B/D^beta from noisy synthetic runs."""

import numpy as np
import pytest
from scipy.optimize import minimize_scalar

from lm.scaling import ParametricConfig, ParametricLaw, Runs, fit_parametric
from lm.scaling.parametric import objective

TRUE = ParametricLaw(E=1.8, A=480.0, B=2100.0, alpha=0.35, beta=0.37)
# A coarse grid keeps tests fast; it still holds starts in the right basin.
FAST = dict(alpha_grid=(0.5, 1.0), beta_grid=(0.5, 1.0), e_grid=(0.0, 0.5), a_grid=(5.0, 10.0), b_grid=(5.0, 10.0))


def synthetic_runs(law=TRUE, n=300, noise=0.01, seed=0) -> Runs:
    """Runs spread over the (N, D) range of Chinchilla's Figure 4, loss x lognormal noise."""
    rng = np.random.default_rng(seed)
    params = 10 ** rng.uniform(7.5, 10.5, n)
    tokens = 10 ** rng.uniform(9.0, 11.8, n)
    loss = law.loss(params, tokens) * np.exp(rng.normal(0, noise, n))
    return Runs.from_arrays(params, loss, n_tokens=tokens)


def test_gradient_matches_finite_differences():
    runs = synthetic_runs(n=50)
    args = (np.log(runs.n_params), np.log(runs.n_tokens), np.log(runs.loss), 1e-1)  # big delta: both Huber branches
    theta = np.array([6.0, 7.5, 0.5, 0.3, 0.4])
    f, g = objective(theta, *args)
    eps = 1e-6
    numeric = [(objective(theta + eps * e, *args)[0] - objective(theta - eps * e, *args)[0]) / (2 * eps)
               for e in np.eye(5)]
    np.testing.assert_allclose(g, numeric, rtol=1e-5, atol=1e-8)


def test_recovers_exact_parameters_without_noise():
    fit = fit_parametric(synthetic_runs(noise=0.0, n=100), ParametricConfig(n_bootstrap=0, **FAST))
    for name in ("E", "A", "B", "alpha", "beta"):
        assert getattr(fit.law, name) == pytest.approx(getattr(TRUE, name), rel=1e-3), name
    assert fit.objective < 1e-10


def test_recovers_parameters_from_noisy_data_within_bootstrap_interval():
    fit = fit_parametric(synthetic_runs(noise=0.01, seed=3), ParametricConfig(n_bootstrap=30, seed=0, **FAST))
    law = fit.law
    assert law.E == pytest.approx(TRUE.E, abs=0.05)
    assert law.alpha == pytest.approx(TRUE.alpha, abs=0.03)
    assert law.beta == pytest.approx(TRUE.beta, abs=0.03)
    assert law.A == pytest.approx(TRUE.A, rel=0.5) and law.B == pytest.approx(TRUE.B, rel=0.5)
    assert law.a == pytest.approx(TRUE.a, abs=0.02)
    for name in ("E", "alpha", "beta"):
        assert getattr(law, name) in fit.intervals[name], name
    assert fit.samples.shape == (30, 5)
    p = fit.predict(1e23)
    assert p.n_opt in p.n_opt_ci and p.loss in p.loss_ci


def test_optimal_allocation_minimises_loss_at_fixed_compute():
    for c in (1e20, 1e23, 1e25):
        n_opt, d_opt = TRUE.optimal(c)
        assert 6 * n_opt * d_opt == pytest.approx(c)
        res = minimize_scalar(lambda x: TRUE.loss(10 ** x, c / (6 * 10 ** x)), bounds=(5, 14), method="bounded",
                              options={"xatol": 1e-9})
        assert np.log10(n_opt) == pytest.approx(res.x, abs=1e-4)
    assert TRUE.a + TRUE.b == pytest.approx(1.0)


def test_bad_input_is_reported():
    runs = synthetic_runs(n=4)
    with pytest.raises(ValueError, match="at least 5 runs"):
        fit_parametric(runs)
    same_n = Runs.from_arrays([1e8] * 6, [3, 2.9, 2.8, 2.7, 2.6, 2.5], n_tokens=[1e9, 2e9, 3e9, 4e9, 5e9, 6e9])
    with pytest.raises(ValueError, match="distinct"):
        fit_parametric(same_n)
    with pytest.raises(ValueError, match="delta"):
        ParametricConfig(delta=0)
    with pytest.raises(ValueError, match="alpha_grid"):
        ParametricConfig(alpha_grid=())
    with pytest.raises(ValueError, match="ParametricLaw.alpha"):
        ParametricLaw(E=1, A=1, B=1, alpha=-0.1, beta=0.3)
