"""Approach 2: IsoFLOP parabolas and the power laws through their minima."""

import numpy as np
import pytest

from lm.scaling import ParametricLaw, Runs, fit_isoflop, fit_power_law, fit_profile

BUDGETS = np.array([1e18, 3e18, 1e19, 3e19, 1e20, 3e20])


def synthetic_profiles(coef=0.2, alpha=0.5, curvature=0.3, noise=0.0, seed=0, per_budget=9):
    """Loss = base(C) + curvature * (log10 N - log10 N_opt(C))^2 + noise, N_opt = coef * C^alpha."""
    rng = np.random.default_rng(seed)
    n, c, loss = [], [], []
    for budget in BUDGETS:
        n_opt = coef * budget ** alpha
        sizes = n_opt * np.logspace(-1, 1, per_budget) * np.exp(rng.uniform(-0.1, 0.1, per_budget))
        base = 10 * budget ** -0.05
        n.extend(sizes)
        c.extend([budget] * per_budget)
        loss.extend(base + curvature * np.log10(sizes / n_opt) ** 2 + rng.normal(0, noise, per_budget))
    return Runs.from_arrays(n, loss, compute=c)


def test_power_law_is_exact_on_exact_data():
    law = fit_power_law([1e18, 1e20, 1e22], [2.0 * c ** 0.4 for c in (1e18, 1e20, 1e22)])
    assert law.exponent == pytest.approx(0.4) and law.coefficient == pytest.approx(2.0)
    assert float(law(1e21)) == pytest.approx(2.0 * 1e21 ** 0.4)


def test_recovers_known_exponent_without_noise():
    fit = fit_isoflop(synthetic_profiles(), n_bootstrap=0)
    assert fit.alpha == pytest.approx(0.5, abs=1e-9)
    assert fit.n_opt.coefficient == pytest.approx(0.2, rel=1e-6)
    # D_opt = C / (6 N_opt) makes the exponents sum to one and fixes b.
    assert fit.alpha + fit.beta == pytest.approx(1.0)
    assert fit.d_opt.coefficient == pytest.approx(1 / (6 * 0.2), rel=1e-6)
    assert len(fit.profiles) == len(BUDGETS) and all(p.n_runs == 9 for p in fit.profiles)


def test_recovers_known_exponent_with_noise_and_bootstrap_covers_it():
    fit = fit_isoflop(synthetic_profiles(alpha=0.45, noise=0.01, seed=1), n_bootstrap=200, seed=0)
    assert fit.alpha == pytest.approx(0.45, abs=0.02)
    assert 0.45 in fit.alpha_ci and 0.55 in fit.beta_ci
    assert fit.alpha_ci.high - fit.alpha_ci.low < 0.1
    p = fit.predict(1e24)
    assert p.n_opt in p.n_opt_ci and p.d_opt == pytest.approx(1e24 / (6 * p.n_opt))


def test_profiles_of_a_parametric_law_give_its_exponent():
    """IsoFLOP slices of L(N, D) have their minimum at the law's N_opt(C) = G (C/6)^a."""
    law = ParametricLaw(E=1.8, A=480.0, B=2100.0, alpha=0.35, beta=0.37)
    n, c = [], []
    for budget in BUDGETS:
        n_opt = law.optimal(budget)[0]
        sizes = n_opt * np.logspace(-0.5, 0.5, 9)
        n.extend(sizes)
        c.extend([budget] * 9)
    n, c = np.array(n), np.array(c)
    runs = Runs.from_arrays(n, law.loss(n, c / (6 * n)), compute=c)
    fit = fit_isoflop(runs, n_bootstrap=0)
    assert fit.alpha == pytest.approx(law.a, abs=0.01)


def test_argmin_picks_the_best_run():
    runs = Runs.from_arrays([1, 2, 4, 1, 2, 4], [3.0, 2.0, 2.5, 2.5, 1.9, 1.8], compute=[10, 10, 10, 100, 100, 100])
    fit = fit_isoflop(runs, method="argmin", n_bootstrap=0)
    assert [p.n_opt for p in fit.profiles] == [2, 4]
    assert fit.profiles[0].coeffs is None


def test_bad_input_is_reported():
    with pytest.raises(ValueError, match="at least 3"):
        fit_isoflop(Runs.from_arrays([1, 2, 1, 2, 3], [3, 2, 3, 2, 1], compute=[10, 10, 100, 100, 100]), n_bootstrap=0)
    with pytest.raises(ValueError, match="at least 2 compute budgets"):
        fit_isoflop(Runs.from_arrays([1, 2, 3], [3, 2, 3], compute=[10, 10, 10]), n_bootstrap=0)
    with pytest.raises(ValueError, match="no minimum"):
        fit_profile(np.array([1.0, 10, 100]), np.array([1.0, 2.0, 1.0]), 1e20)
    with pytest.raises(ValueError, match="method"):
        fit_isoflop(synthetic_profiles(), method="cubic")
    with pytest.raises(ValueError, match="n_params must be positive"):
        Runs.from_arrays([1, 0, 3], [3, 2, 3], compute=[10, 10, 10])
    with pytest.raises(ValueError, match="n_tokens must be positive"):
        Runs.from_arrays([1, 2, 3], [3, 2, 3], n_tokens=[10, -1, 10])
    with pytest.raises(ValueError, match="loss must be finite"):
        Runs.from_arrays([1, 2, 3], [3, np.nan, 3], compute=[10, 10, 10])
    with pytest.raises(ValueError, match="same length"):
        Runs([1, 2], [1, 2], [1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="give n_tokens"):
        Runs.from_arrays([1, 2], [1, 2])


def test_unbracketed_profiles_can_be_left_out():
    runs = synthetic_profiles()
    # A budget whose sizes all lie above its optimum: loss only rises with N.
    edge = Runs.from_arrays([1e12, 2e12, 4e12], [3.0, 3.2, 3.5], compute=[1e21] * 3)
    both = Runs(*(np.concatenate([getattr(runs, f), getattr(edge, f)])
                  for f in ("n_params", "n_tokens", "compute", "loss")))
    fit = fit_isoflop(both, n_bootstrap=10, bracketed_only=True)
    assert [p.compute for p in fit.dropped] == [1e21] and not fit.dropped[0].bracketed
    assert fit.alpha == pytest.approx(0.5, abs=1e-9) and len(fit.profiles) == len(BUDGETS)
    with pytest.raises(ValueError, match="not bracketed.*C=1e\\+21"):
        fit_isoflop(Runs(*(np.concatenate([getattr(runs.take(runs.compute == BUDGETS[0]), f), getattr(edge, f)])
                           for f in ("n_params", "n_tokens", "compute", "loss"))), n_bootstrap=0, bracketed_only=True)
