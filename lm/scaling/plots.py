"""Scaling-law figures as PNGs (matplotlib, Agg backend: no display needed).

Each function takes fitted results, writes one file and returns its path.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from lm.scaling.data import Runs
from lm.scaling.isoflop import IsoFlopFit
from lm.scaling.parametric import ParametricLaw


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path) -> str:
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    _pyplot().close(fig)
    return path


def plot_isoflop_profiles(runs: Runs, fit: IsoFlopFit, path, title: str = "IsoFLOP profiles") -> str:
    """Loss against N for every budget, with each profile's parabola and its minimum."""
    plt = _pyplot()
    profiles = sorted([*fit.profiles, *fit.dropped], key=lambda p: p.compute)
    colours = plt.cm.viridis(np.linspace(0, 0.9, len(profiles)))
    fig, ax = plt.subplots(figsize=(8, 5))
    for profile, colour in zip(profiles, colours):
        used = profile not in fit.dropped
        sel = np.isclose(runs.compute, profile.compute, rtol=1e-6)
        label = f"C = {profile.compute:.2g}" + ("" if used else " (not bracketed, unused)")
        ax.scatter(runs.n_params[sel], runs.loss[sel], color=colour, s=18, label=label)
        if profile.coeffs is not None:
            n = np.geomspace(runs.n_params[sel].min(), runs.n_params[sel].max(), 100)
            ax.plot(n, profile.parabola(n), color=colour, lw=1, ls="-" if used else "--")
        if profile.n_min <= profile.n_opt <= profile.n_max:  # a vertex far off the grid would squash the axes
            ax.plot(profile.n_opt, profile.loss_opt, "*", color=colour if used else "none", ms=12, mec="k", mew=0.5)
    ax.set_xscale("log")
    ax.set_xlabel("parameters N")
    ax.set_ylabel("final loss (nats/token)")
    ax.set_title(f"{title} ({fit.method}; stars: optima)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, path)


def plot_optimal_scaling(fit: IsoFlopFit, path, extrapolate_to: float = 1e24, marks: Sequence[float] = (),
                         law: ParametricLaw | None = None, title: str = "Compute-optimal allocation") -> str:
    """N_opt(C) and D_opt(C): per-budget optima, the power laws extended to
    `extrapolate_to` FLOPs with their bootstrap band, predictions at `marks`,
    and (if given) the allocation implied by a parametric law for comparison."""
    plt = _pyplot()
    c_obs = np.array([p.compute for p in fit.profiles])
    c = np.geomspace(c_obs.min(), max(extrapolate_to, c_obs.max()), 200)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    series = [("N_opt (parameters)", fit.n_opt, fit.n_samples, [p.n_opt for p in fit.profiles], 0),
              ("D_opt (tokens)", fit.d_opt, fit.d_samples, [p.d_opt for p in fit.profiles], 1)]
    for ax, (label, power_law, samples, observed, k) in zip(axes, series):
        ax.scatter(c_obs, observed, color="k", zorder=3, label="per-budget optimum")
        ax.plot(c, power_law(c), color="C0", label=f"IsoFLOP fit: {power_law}")
        if samples is not None and len(samples):
            band = samples[:, :1] * c[None, :] ** samples[:, 1:2]  # (b, len(c))
            lo, hi = np.percentile(band, [2.5, 97.5], axis=0)
            ax.fill_between(c, lo, hi, color="C0", alpha=0.2, label="95% bootstrap band")
        if law is not None:
            ax.plot(c, law.optimal(c)[k], "--", color="C3", label="parametric fit")
        for m in marks:
            v = float(power_law(m))
            ax.plot(m, v, "o", color="C1", mec="k")
            ax.annotate(f"{v:.3g}", (m, v), textcoords="offset points", xytext=(-40, 8), fontsize=8)
        ax.axvspan(c_obs.max(), c.max(), color="0.9", zorder=0)  # shaded: extrapolation
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("compute C (FLOPs)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.suptitle(title)
    return _save(fig, path)


def plot_parametric_contours(runs: Runs, law: ParametricLaw, path, title: str = "Parametric fit L(N, D)") -> str:
    """Contours of the fitted L over (N, D) with the runs coloured by their loss,
    lines of constant C = 6ND, and the compute-optimal frontier."""
    plt = _pyplot()
    pad = 0.3
    ln, ld = np.log10(runs.n_params), np.log10(runs.n_tokens)
    n = np.logspace(ln.min() - pad, ln.max() + pad, 200)
    d = np.logspace(ld.min() - pad, ld.max() + pad, 200)
    nn, dd = np.meshgrid(n, d)
    loss = law.loss(nn, dd)
    fig, ax = plt.subplots(figsize=(8, 6))
    lo, hi = np.percentile(runs.loss, [1, 99])
    levels = np.linspace(max(law.E, lo - 0.3), hi + 0.3, 15)
    cs = ax.contour(nn, dd, loss, levels=levels, cmap="viridis", linewidths=0.8)
    ax.clabel(cs, fontsize=7, fmt="%.2f")
    sc = ax.scatter(runs.n_params, runs.n_tokens, c=runs.loss, cmap="viridis", vmin=levels[0], vmax=levels[-1],
                    s=14, edgecolors="k", linewidths=0.3)
    fig.colorbar(sc, ax=ax, label="final loss (nats/token)")
    for cval in np.logspace(np.floor(np.log10(runs.compute.min())), np.ceil(np.log10(runs.compute.max())), 5):
        ax.plot(n, cval / (6 * n), ":", color="0.6", lw=0.8)  # an IsoFLOP line, C = 6ND
    c = np.geomspace(6 * n.min() * d.min(), 6 * n.max() * d.max(), 200)
    n_opt, d_opt = law.optimal(c)
    ax.plot(n_opt, d_opt, color="C3", lw=2, label=f"compute-optimal: N ~ C^{law.a:.3f}, D ~ C^{law.b:.3f}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(n.min(), n.max())
    ax.set_ylim(d.min(), d.max())
    ax.set_xlabel("parameters N")
    ax.set_ylabel("tokens D")
    ax.set_title(f"{title}\n{law}", fontsize=9)
    ax.legend(fontsize=8, loc="upper right")
    return _save(fig, path)
