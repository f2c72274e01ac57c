"""Error bars and paired comparisons against scipy, and `python -m experiments.eval_compare` end to end."""

import json
import math

import numpy as np
import pytest

from experiments.eval_compare import compare, main
from lm.eval.stats import accuracy_summary, mcnemar_chi2, mcnemar_exact, mean_stderr, paired_difference

scipy_stats = pytest.importorskip("scipy.stats")


def test_standard_error_and_bootstrap_interval_match_scipy():
    x = np.random.default_rng(0).random(400) < 0.3
    s = accuracy_summary(x, n_boot=4000)
    p = x.mean()
    assert s["acc"] == p and s["n"] == 400
    assert s["se"] == pytest.approx(math.sqrt(p * (1 - p) / 399), rel=1e-12)  # lm-eval's sample-std / sqrt(n)
    ref = scipy_stats.bootstrap((x.astype(float),), np.mean, n_resamples=4000, method="percentile",
                                rng=np.random.default_rng(1)).confidence_interval
    assert s["ci95"][0] == pytest.approx(ref.low, abs=0.01) and s["ci95"][1] == pytest.approx(ref.high, abs=0.01)
    assert s["ci95"][0] < p < s["ci95"][1] and s["ci95"] == accuracy_summary(x, n_boot=4000)["ci95"]  # seeded


def test_macro_average_is_stratified():
    x = np.array([1, 1, 1, 1, 0, 0, 1, 0], bool)
    subj = ["a"] * 4 + ["b"] * 4
    s = accuracy_summary(x, strata=subj, n_boot=500)
    assert s["macro"] == pytest.approx((1.0 + 0.25) / 2)
    assert s["macro_se"] == pytest.approx(math.sqrt(0 + mean_stderr([0, 0, 1, 0]) ** 2) / 2)
    lo, hi = s["macro_ci95"]  # subject a is always 100%: the macro average never drops below 0.5
    assert 0.5 <= lo <= s["macro"] <= hi


@pytest.mark.parametrize("b, c", [(0, 0), (3, 0), (5, 9), (40, 61), (7, 7)])
def test_mcnemar_matches_scipy(b, c):
    exact = 1.0 if b + c == 0 else scipy_stats.binomtest(min(b, c), b + c, 0.5).pvalue
    assert mcnemar_exact(b, c) == pytest.approx(exact, rel=1e-9)
    chi = 1.0 if b + c == 0 else scipy_stats.chi2.sf((abs(b - c) - 1) ** 2 / (b + c), 1)
    assert mcnemar_chi2(b, c) == pytest.approx(chi, rel=1e-9)


def test_paired_difference_is_tighter_than_unpaired_when_models_agree():
    rng = np.random.default_rng(2)
    a = rng.random(500) < 0.4
    b = a.copy()
    flip = rng.choice(500, 30, replace=False)
    b[flip] = ~b[flip]
    d = paired_difference(a, b)
    assert d["diff"] == pytest.approx(b.mean() - a.mean())
    assert d["only_a"] + d["only_b"] == 30 and d["only_b"] - d["only_a"] == int(b.sum()) - int(a.sum())
    unpaired = math.hypot(mean_stderr(a), mean_stderr(b))
    assert d["se"] < unpaired / 2 and d["ci95"][0] <= d["diff"] <= d["ci95"][1]
    with pytest.raises(ValueError, match="equal, non-empty"):
        paired_difference([1, 0], [1])


def _write(folder, model, outcomes):
    folder.mkdir()
    (folder / "results.json").write_text(json.dumps({"model": model, "task": "mmlu"}))
    (folder / "records.jsonl").write_text("".join(
        json.dumps({"id": f"mmlu/val/s/{i}", "correct": bool(c), "correct_norm": bool(c)}) + "\n"
        for i, c in outcomes))


def test_compare_cli(tmp_path, capsys):
    a = [(i, i % 3 == 0) for i in range(60)]
    b = [(i, i % 3 == 0 or i % 5 == 1) for i in reversed(range(60))]  # another order; B right on 8 more
    _write(tmp_path / "A", "ckpt-1", a)
    _write(tmp_path / "B", "ckpt-2", b + [(99, True)])
    r = compare(tmp_path / "A", tmp_path / "B")
    m = r["metrics"]["correct"]
    assert r["n"] == 60 and r["only_in_b"] == 1 and (m["only_a"], m["only_b"]) == (0, 8)
    assert m["diff"] == pytest.approx(8 / 60) and m["mcnemar_p"] == pytest.approx(2 / 2 ** 8)
    assert main([str(tmp_path / "A"), str(tmp_path / "B")]) == 0
    out = capsys.readouterr().out
    assert "+13.33 ±" in out and "0.00781" in out
    _write(tmp_path / "C", "other", [(1000 + i, True) for i in range(3)])
    assert main([str(tmp_path / "A"), str(tmp_path / "C")]) == 2
    assert "share no examples" in capsys.readouterr().err
