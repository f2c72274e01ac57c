"""Error bars for benchmark scores, and paired comparisons of two models on the same examples.

    s = accuracy_summary(correct)                        # {"acc", "se", "ci95": [lo, hi], "n"}
    s = accuracy_summary(correct, strata=subjects)       # also "macro", "macro_se", "macro_ci95"
    d = paired_difference(correct_a, correct_b)          # {"diff", "se", "ci95", "mcnemar_p", ...}

The standard error of an accuracy is the sample standard deviation of the
0/1 outcomes over sqrt(n), as lm-evaluation-harness reports it. The 95%
interval is a percentile bootstrap over examples (resampling within each
stratum when strata are given, so each subject keeps its size); the seed is
explicit, so an interval is reproducible. Comparing two checkpoints on the
same questions, the paired difference removes the variance the questions
share: its interval is a paired bootstrap (the same resampled questions for
both), and McNemar's test asks whether the discordant questions (right for
one model only) split unevenly, exactly by the binomial distribution.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

N_BOOT = 2000


def mean_stderr(x: Sequence[float]) -> float:
    """Standard error of the mean: sample std (n - 1) / sqrt(n); 0 for fewer than 2 values."""
    x = np.asarray(x, np.float64)
    return float(x.std(ddof=1) / math.sqrt(len(x))) if len(x) > 1 else 0.0


def _strata_index(strata: Sequence | None, n: int) -> list[np.ndarray]:
    if strata is None:
        return [np.arange(n)]
    if len(strata) != n:
        raise ValueError(f"{len(strata)} strata labels for {n} values")
    groups: dict = {}
    for i, s in enumerate(strata):
        groups.setdefault(s, []).append(i)
    return [np.asarray(v) for _, v in sorted(groups.items(), key=lambda kv: str(kv[0]))]


def bootstrap_resamples(n: int, n_boot: int = N_BOOT, seed: int = 0, strata: Sequence | None = None) -> np.ndarray:
    """Indices int [n_boot, n] of bootstrap resamples; with strata, each stratum resampled within itself."""
    rng = np.random.default_rng(seed)
    parts = [idx[rng.integers(0, len(idx), (n_boot, len(idx)))] for idx in _strata_index(strata, n)]
    return np.concatenate(parts, axis=1)


def _interval(samples: np.ndarray) -> list[float]:
    lo, hi = np.percentile(samples, [2.5, 97.5])
    return [float(lo), float(hi)]


def accuracy_summary(correct: Sequence[bool | float], strata: Sequence | None = None, n_boot: int = N_BOOT,
                     seed: int = 0) -> dict:
    """{"acc", "se", "ci95", "n"} over all examples; with `strata` (e.g. subjects) also the macro average
    (mean of per-stratum accuracies) with its standard error and stratified bootstrap interval."""
    x = np.asarray(correct, np.float64)
    if x.size == 0:
        raise ValueError("no outcomes to summarise")
    idx = bootstrap_resamples(len(x), n_boot, seed, strata)
    out = {"acc": float(x.mean()), "se": mean_stderr(x), "ci95": _interval(x[idx].mean(axis=1)), "n": len(x)}
    if strata is not None:
        groups = _strata_index(strata, len(x))
        out["macro"] = float(np.mean([x[g].mean() for g in groups]))
        out["macro_se"] = float(math.sqrt(sum(mean_stderr(x[g]) ** 2 for g in groups)) / len(groups))
        bounds = np.cumsum([0] + [len(g) for g in groups])  # the resamples' columns: strata in this order
        resampled = x[idx]
        macro = np.mean([resampled[:, a:b].mean(axis=1) for a, b in zip(bounds[:-1], bounds[1:])], axis=0)
        out["macro_ci95"] = _interval(macro)
    return out


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for b and c discordant pairs: 2 P(X <= min(b, c)), X ~ Bin(b + c, 1/2)."""
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return float(min(1.0, 2 * tail))


def mcnemar_chi2(b: int, c: int) -> float:
    """McNemar's chi-square p-value with continuity correction, (|b - c| - 1)^2 / (b + c) on 1 dof."""
    if b + c == 0:
        return 1.0
    stat = (abs(b - c) - 1) ** 2 / (b + c)
    return float(math.erfc(math.sqrt(stat / 2)))  # survival function of chi2(1) at stat


def paired_difference(a: Sequence[bool | float], b: Sequence[bool | float], n_boot: int = N_BOOT,
                      seed: int = 0) -> dict:
    """B minus A on the same examples (equal length, same order): {"diff", "se", "ci95", "acc_a", "acc_b",
    "n", "only_a", "only_b", "mcnemar_p", "mcnemar_chi2_p"}; only_a counts examples A got right and B wrong."""
    xa, xb = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if xa.shape != xb.shape or xa.ndim != 1 or xa.size == 0:
        raise ValueError(f"paired outcomes need two equal, non-empty 1-d sequences, got {xa.shape} and {xb.shape}")
    d = xb - xa
    idx = bootstrap_resamples(len(d), n_boot, seed)
    only_a, only_b = int(np.sum((xa > 0.5) & (xb < 0.5))), int(np.sum((xb > 0.5) & (xa < 0.5)))
    return {"diff": float(d.mean()), "se": mean_stderr(d), "ci95": _interval(d[idx].mean(axis=1)),
            "acc_a": float(xa.mean()), "acc_b": float(xb.mean()), "n": len(d), "only_a": only_a, "only_b": only_b,
            "mcnemar_p": mcnemar_exact(only_a, only_b), "mcnemar_chi2_p": mcnemar_chi2(only_a, only_b)}
