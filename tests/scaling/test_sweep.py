"""Our own IsoFLOP sweep: planning, resumable training, and the fit -> predict -> verify pipeline.

The pipeline test swaps the trainer for a known loss surface (no training); one
test trains two toy runs for a few steps to check the real trainer is wired in
and that finished runs are not rerun."""

import dataclasses
import json

import pytest

from experiments.scaling import SweepConfig, main, sweep, train_planned
from lm.model import ModelConfig
from lm.scaling import ParametricConfig, ParametricLaw
from lm.scaling.flops import scaling_params
from lm.scaling.sweep import DEFAULT_SHAPES, nearest_shape, plan_run, plan_sweep, shape_config

BASE = ModelConfig(vocab_size=1024, context_length=128)
# alpha = beta and B = A 20^alpha give D_opt / N_opt = 1 / G^2 = 20 at every budget, as
# Chinchilla found, so the optimum sits inside the planned D/N window.
SURFACE = ParametricLaw(E=2.0, A=50.0, B=50.0 * 20 ** 0.35, alpha=0.35, beta=0.35)
FAST = ParametricConfig(alpha_grid=(0.5,), beta_grid=(0.5,), e_grid=(0.0, 0.5), a_grid=(5.0,), b_grid=(5.0,),
                        n_bootstrap=5)


def test_plan_spends_the_budget():
    run = plan_run(1e12, shape_config(BASE, 64, 2, 2), batch_size=16)
    assert run.n_tokens == run.steps * 16 * 128
    assert run.flops_6nd == pytest.approx(1e12, rel=0.01)  # within half a step of the budget
    assert run.exact_flops > run.flops_6nd  # attention is extra
    assert run.name == f"C1.00e12-d64-L2-h2-s{run.steps}"
    plan = plan_sweep([3e11, 1e12], BASE)
    assert {r.compute for r in plan} == {3e11, 1e12}
    assert all(30 <= r.steps <= 20_000 for r in plan) and len(plan) >= 8
    sizes = [scaling_params(shape_config(BASE, *s)) for s in DEFAULT_SHAPES]
    assert sizes == sorted(sizes)
    assert nearest_shape(sizes[3] * 1.1, BASE).d_model == DEFAULT_SHAPES[3][0]


def test_plan_rejects_budgets_with_too_few_sizes():
    with pytest.raises(ValueError, match="budget C=1e\\+09 fits 0 model shape"):
        plan_sweep([1e9, 1e12], BASE)
    with pytest.raises(ValueError, match="at least 2 distinct budgets"):
        SweepConfig(budgets=(1e12,))
    with pytest.raises(ValueError, match="D_MODELxLAYERSxHEADS"):
        SweepConfig(shapes=("64x2",))


def surface_trainer(calls):
    """Stands in for `pretrain`: the loss of SURFACE at the run's N and D."""

    def trainer(config, progress=False):
        calls.append(config.name)
        n = scaling_params(config.model)
        d = config.steps * config.batch_size * config.model.context_length
        return {"val_loss": float(SURFACE.loss(n, d))}

    return trainer


def test_pipeline_recovers_the_surface_and_verifies_the_10x_prediction(tmp_path):
    calls = []
    config = SweepConfig(out=str(tmp_path / "sweep"), budgets=(3e11, 1e12, 3e12), isoflop_bootstrap=20,
                         parametric=FAST)
    result = sweep(config, progress=False, trainer=surface_trainer(calls))
    law = result["parametric"].law
    assert law.alpha == pytest.approx(0.35, abs=0.01) and law.E == pytest.approx(2.0, abs=0.02)
    assert result["isoflop"].alpha == pytest.approx(SURFACE.a, abs=0.05)  # the ladder is coarse
    assert set(result["predictions"]) == {3e13, 3e14}
    v = result["verification"]
    assert v["compute"] == 3e13 and v["run"].startswith("verify-")
    assert v["measured_loss"] == pytest.approx(v["predicted_loss"], rel=1e-3)
    report = (tmp_path / "sweep" / "report.md").read_text()
    assert "predicted vs measured" in report and "exact FLOPs" in report
    for name in ("isoflop_profiles.png", "optimal_scaling.png", "parametric_contours.png"):
        assert (tmp_path / "sweep" / name).is_file()
    # Resuming trains nothing: every run, the verification included, is in sweep.jsonl.
    n_calls = len(calls)
    sweep(config, progress=False, trainer=surface_trainer(calls))
    assert len(calls) == n_calls
    # Other training settings would silently mix with the finished runs: refused.
    with pytest.raises(ValueError, match="other settings.*lr: 0.003 -> 0.01"):
        sweep(dataclasses.replace(config, lr=0.01), progress=False, trainer=surface_trainer(calls))


def test_real_trainer_runs_and_resumes(tmp_path):
    text = tmp_path / "stories.txt"
    story = "Once upon a time there was a little cat. The cat liked to play in the sun. "
    text.write_text("<|endoftext|>".join(story * (i % 3 + 1) for i in range(200)), encoding="utf-8")
    config = SweepConfig(out=str(tmp_path / "sweep"), budgets=(1e7, 2e7), data=str(text), vocab_size=300,
                         context_length=16, batch_size=4, eval_batches=2)
    base = ModelConfig(vocab_size=300, context_length=16)
    plan = [plan_run(2e7, shape_config(base, d, 1, 2), 4) for d in (16, 32)]
    assert all(2 <= r.steps <= 40 for r in plan), [r.steps for r in plan]
    # One real run is enough to check the glue to the trainer (a second size only compiles another model);
    # several runs, resuming and skipping are covered with the synthetic trainer above.
    plan = plan[:1]
    records = train_planned(plan, config, progress=False)
    assert [r["name"] for r in records] == [r.name for r in plan]
    assert all(r["val_loss"] > 0 and r["flops_exact"] > r["flops_6nd"] for r in records)
    lines = (tmp_path / "sweep" / "sweep.jsonl").read_text().splitlines()
    assert [json.loads(line)["name"] for line in lines] == [r.name for r in plan]
    calls = []
    again = train_planned(plan, config, progress=False, trainer=surface_trainer(calls))
    assert calls == [] and again == records


def test_sweep_cli_reports_bad_input(capsys):
    assert main(["sweep", "--budgets", "1e12"]) == 2
    assert "at least 2 distinct budgets" in capsys.readouterr().err
    assert main(["sweep", "--shape", "64x2"]) == 2
    assert "D_MODELxLAYERSxHEADS" in capsys.readouterr().err


def test_scaling_sweep_module_is_the_sweep_command(capsys):
    import pytest

    from experiments.scaling_sweep import main as sweep_main

    with pytest.raises(SystemExit):
        sweep_main(["--help"])
    assert "--budgets" in capsys.readouterr().out
    assert sweep_main(["--budgets", "1e11"]) == 2  # one budget cannot make a sweep
