"""experiments.align_seeds: the seed table and its intervals, the results-file writer, the reuse of
finished seeds, and (slow) the direction of each stage's change on one seed."""

import dataclasses
import json
import math
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from experiments.align_arithmetic import PipelineConfig, run_pipeline
from experiments.align_seeds import (SeedsConfig, _config_json, format_table, provenance, run_seed, t_interval,
                                     write_section)

T_975_DF2 = 4.302652729911275  # Student t 97.5% quantile, 2 degrees of freedom (printed tables: 4.303)


def _result(seed, pre, sft, grpo, n=200):
    stages = [{"name": name, "accuracy": a, "n": n, "sampled_accuracy": 0.0, "stopped": 1.0, "seconds": 10.0}
              for name, a in [("random init", 0.0), ("pretrained", pre), ("SFT", sft), ("GRPO", grpo)]]
    return {"seed": seed, "stages": stages, "config": {},
            "provenance": {"commit": "abc1234", "dirty": [], "machine": "Test CPU, 2 cores", "date": "2026-12-02"}}


def test_t_interval_matches_the_t_table_and_numpy():
    values = [25.5, 34.5, 30.0]
    mean, low, high = t_interval(values)
    half = T_975_DF2 * np.std(values, ddof=1) / math.sqrt(3)
    assert mean == pytest.approx(np.mean(values)) and low == pytest.approx(30.0 - half)
    assert high == pytest.approx(30.0 + half)
    assert math.isnan(t_interval([0.4])[1])  # one seed has no interval


def test_table_has_per_seed_values_means_intervals_paired_changes_and_provenance(tmp_path):
    (tmp_path / "grpo").mkdir()
    rows = [{"step": 50, "eval_accuracy": 0.45}, {"step": 1, "reward": 0.2}, {"step": 0, "eval_accuracy": 0.4}]
    (tmp_path / "grpo" / "grpo_metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    seed0 = {**_result(0, 0.25, 0.40, 0.51), "run_dir": str(tmp_path)}
    table = format_table([_result(2, 0.30, 0.46, 0.50), seed0, _result(1, 0.35, 0.53, 0.56)])
    lines = table.splitlines()
    assert "| greedy held-out accuracy (%) | seed 0 | seed 1 | seed 2 | mean | 95% t-interval |" in lines
    sft = [x for x in lines if x.startswith("| SFT |")][0]
    half = T_975_DF2 * np.std([40.0, 53.0, 46.0], ddof=1) / math.sqrt(3)
    assert sft == f"| SFT | 40.0 | 53.0 | 46.0 | 46.3 | [{46.333 - half:.1f}, {46.333 + half:.1f}] |"
    change = [x for x in lines if x.startswith("| GRPO - SFT |")][0]
    assert change.startswith("| GRPO - SFT | +11.0 | +3.0 | +4.0 | +6.0 | [")  # paired, per seed
    assert "| GRPO - pretrained |" in table and "| SFT - pretrained |" in table
    assert table.count("commit `abc1234` (clean), Test CPU, 2 cores, 2026-12-02") == 3
    assert "- seed 0: step 0: 40.0, step 50: 45.0\n" in table and "- seed 1: step" not in table
    assert "n/a (one seed)" in format_table([_result(0, 0.3, 0.4, 0.5)])


def test_section_writer_replaces_only_between_markers(tmp_path):
    path = tmp_path / "align.md"
    path.write_text("# head\n<!-- align_seeds:start -->\nold\n<!-- align_seeds:end -->\n## kept\nsweep\n")
    write_section("new table\n", path)
    new = "# head\n<!-- align_seeds:start -->\nnew table\n<!-- align_seeds:end -->\n## kept\nsweep\n"
    assert path.read_text() == new
    path.write_text("no markers\n")
    with pytest.raises(ValueError, match="no '<!-- align_seeds:start -->'"):
        write_section("x", path)


def test_finished_seed_is_reused_and_another_config_is_refused(tmp_path):
    config = SeedsConfig(out=str(tmp_path), name="s", run=False)
    with pytest.raises(FileNotFoundError, match="seed 3 has no"):
        run_seed(config, 3)
    pipeline = dataclasses.replace(config.pipeline, out=str(tmp_path / "s"), name="seed3", seed=3)
    done = {**_result(3, 0.3, 0.4, 0.5), "config": _config_json(pipeline)}
    (tmp_path / "s" / "seed3").mkdir(parents=True)
    (tmp_path / "s" / "seed3" / "result.json").write_text(json.dumps(done))
    assert run_seed(config, 3) == done
    other = dataclasses.replace(config, pipeline=dataclasses.replace(config.pipeline, sft_steps=61))
    with pytest.raises(ValueError, match="another pipeline config"):
        run_seed(other, 3)


def test_provenance_names_the_commit_and_machine():
    p = provenance()
    repo = Path(__file__).resolve().parents[2]
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True).stdout
    assert p["commit"] == head.strip() and isinstance(p["dirty"], list)
    assert " cores, " in p["machine"] and p["date"].endswith("UTC")
    assert p["load"] is None or p["load"] >= 0
    assert p["xla_flags"] == os.environ.get("XLA_FLAGS", "")


# Direction of each stage's change, as far as the 3-seed table in experiments/results/align.md
# supports it. SFT beat pretraining on every seed there (+2.5, +24.5, +17.5 points); GRPO after 100
# steps was -5.5, +8.0, +10.0 points from SFT, so GRPO beating SFT is not a claim the seeds support.
# Seed 0's changes are noise: rerun on a later tree (losses equal to the table's run to ~6 digits) it
# gave 12.5 -> 12.0, SFT below pretraining. Seed 1 rerun gave 3.0 -> 19.0 -> 24.0 (table: 8.0 -> 32.5
# -> 40.5). So this test runs seed 1 and asks SFT for a third of its table gain (+24.5, about 5
# standard errors of a difference); GRPO may lose at most about one standard error, since across
# seeds it went either way.
SEED = 1
GRPO_STEPS = 100  # of the default 300, to keep the test short
SFT_MIN_GAIN = 0.08
GRPO_TOLERANCE = 0.03


@pytest.mark.slow
def test_sft_beats_pretraining_and_grpo_keeps_sft_accuracy(tmp_path):
    """Seed 1 of the default pipeline with GRPO cut to 100 steps (~9 minutes on 2 loaded cores): SFT
    gains at least SFT_MIN_GAIN over the pretrained model on the 200 held-out problems, and GRPO does
    not fall more than GRPO_TOLERANCE below SFT."""
    g = PipelineConfig().grpo
    config = PipelineConfig(out=str(tmp_path), sampled_draws=1, seed=SEED,
                            grpo=dataclasses.replace(g, train=dataclasses.replace(g.train, steps=GRPO_STEPS)))
    acc = {s["name"]: s["accuracy"] for s in run_pipeline(config, progress=False)["stages"]}
    print("held-out greedy accuracy per stage:", acc)
    assert acc["SFT"] >= acc["pretrained"] + SFT_MIN_GAIN, acc
    assert acc["GRPO"] >= acc["SFT"] - GRPO_TOLERANCE, acc
