"""The alignment experiments: CLI flags, bad input, and the pretrain -> SFT -> GRPO pipeline end to end."""

import json
from pathlib import Path

import pytest

from experiments.align_arithmetic import PipelineConfig, run_pipeline
from experiments.dpo import DPORun, run_dpo
from experiments.grpo import GRPORun
from experiments.grpo import main as grpo_main
from experiments.sft import SFTRun
from experiments.sft import main as sft_main
from lm.align.config import DPOConfig, GRPOConfig
from lm.align.tasks import GSM8K_CHAT, task_problems
from lm.config import parse_config
from lm.train import TrainConfig


def test_flags_reach_nested_configs_and_keep_fine_tuning_defaults():
    c = parse_config(SFTRun, ["--init", "runs/x", "--sft.train.steps", "7", "--sft.train.optim.lr", "1e-4",
                              "--task", "arithmetic"])
    assert c.sft.train.steps == 7 and c.sft.train.optim.lr == 1e-4 and c.task == "arithmetic"
    assert c.sft.train.optim.weight_decay == 0.0  # the fine-tuning default, not pretraining's 0.1
    g = parse_config(GRPORun, ["--init", "runs/x", "--grpo.loss.loss_type", "reinforce_with_baseline",
                               "--grpo.loss.normalize_std", "false", "--grpo.loss.length_norm", "constant"])
    assert g.grpo.loss.loss_type == "reinforce_with_baseline" and not g.grpo.loss.normalize_std
    assert g.grpo.loss.length_norm == "constant"
    p = parse_config(PipelineConfig, ["--model.d_model", "32", "--grpo.train.steps", "3"])
    assert p.model.d_model == 32 and p.model.vocab_size == 257 and p.grpo.train.steps == 3


def test_bad_input_is_a_clear_error(tmp_path, capsys):
    assert sft_main([]) == 2
    assert "--init is required" in capsys.readouterr().err
    assert grpo_main(["--init", str(tmp_path)]) == 2
    assert "neither a run directory" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown task"):
        SFTRun(init="x", task="poetry")
    with pytest.raises(ValueError, match="GSM8K: pass its directory"):
        task_problems(GSM8K_CHAT, "test", 5)
    with pytest.raises(FileNotFoundError, match="GSM8K file"):
        task_problems(GSM8K_CHAT, "test", 5, data_dir=str(tmp_path))


def _small(tmp_path, **kw):
    grpo = GRPOConfig(prompts_per_step=4, group_size=4, max_new_tokens=5,
                      train=TrainConfig(steps=2, batch_size=16, eval_every=1, log_every=1))
    return PipelineConfig(out=str(tmp_path), name="p", pretrain_steps=20, pretrain_lines=2000, sft_steps=10,
                          n_eval=16, sampled_draws=1, grpo=grpo, **kw)


@pytest.mark.slow  # the whole pretrain -> SFT -> GRPO -> DPO chain; each stage's driver has its own default tests
def test_pipeline_runs_every_stage_and_writes_its_report(tmp_path):
    result = run_pipeline(_small(tmp_path), progress=False)
    names = [s["name"] for s in result["stages"]]
    assert names == ["random init", "pretrained", "SFT", "GRPO"]
    assert all(s["n"] == 16 and 0 <= s["accuracy"] <= 1 for s in result["stages"])
    root = Path(result["run_dir"])
    for f in ("report.md", "pipeline.png", "stages.json", "grpo/grpo.png", "grpo/grpo_metrics.jsonl",
              "sft/summary.json", "pretrain/checkpoints"):
        assert (root / f).exists(), f
    assert "| GRPO |" in result["report"] and "GRPO rollout reward" in result["report"]
    # Stages chain through saved checkpoints: DPO starts from the SFT run directory.
    dpo = run_dpo(DPORun(init=str(root / "sft"), out=str(tmp_path), name="dpo", n_train=64, n_eval=16,
                         eval_batch_size=16, save=False,
                         dpo=DPOConfig(train=TrainConfig(steps=3, batch_size=8))),
                  progress=False)
    assert dpo["train_pairs"] >= 8 and dpo["n_eval"] == 16
    assert json.loads((tmp_path / "dpo" / "summary.json").read_text())["steps"] == 3


@pytest.mark.slow
@pytest.mark.xfail(strict=False, reason="seed 0 does not rise at every stage (12.5 -> 12.0 -> 10.0 at ee0766f); "
                   "the 3-seed table in experiments/results/align.md and tests/align/test_align_seeds.py's "
                   "slow test carry the claim that holds")
def test_full_pipeline_accuracy_rises_at_every_stage(tmp_path):
    """The default pipeline (~10 minutes on 2 cores): each stage beats the one before on 200 held-out problems."""
    result = run_pipeline(PipelineConfig(out=str(tmp_path)), progress=False)
    acc = [s["accuracy"] for s in result["stages"]]
    assert acc[0] < acc[1] < acc[2] < acc[3], acc
