"""`python -m benchmarks.gpu_check --cpu-smoke`: every stage of the GPU check at toy sizes, so it cannot rot."""

import json
import subprocess
import sys
from pathlib import Path

import jax
import pytest

REPO = Path(__file__).resolve().parents[1]


def test_every_stage_runs_and_writes_its_results(tmp_path):
    out = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", "--cpu-smoke", "--out", str(tmp_path)],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    data = json.loads((tmp_path / "gpu_results.json").read_text())
    stages = data["stages"]
    assert list(stages) == ["env", "correctness", "attention", "train", "decode"]
    assert not [s for s, r in stages.items() if "error" in r]
    assert stages["env"]["jax"] and stages["env"]["device_kind"]
    assert "passed" in stages["correctness"]["kernel_tests"]["summary"] or \
        "skipped" in stages["correctness"]["kernel_tests"]["summary"]
    step = stages["correctness"]["train_step"]
    assert step["same_to_bf16"] and set(step["rel_diff_vs_xla"]) >= {"pallas", "xla"}  # cuDNN needs a GPU
    assert "needs an NVIDIA GPU" in step["losses"]["cudnn"]
    seq = stages["attention"]["rows"][0]
    assert seq["fwd+bwd pallas (ours)"]["ms"] > 0 and seq["fwd xla"]["ms"] > 0
    train = stages["train"]["rows"][0]
    assert train["tokens_per_s"] > 0 and 0.9 < train["xla_flops_ratio"] < 1.1
    assert stages["decode"]["rows"][0]["tokens_per_s"] > 0
    md = (tmp_path / "gpu_results.md").read_text()
    for section in ("## Environment", "## Correctness", "## Attention", "## Training", "## Decode"):
        assert section in md


@pytest.mark.skipif(jax.default_backend() == "gpu", reason="on a GPU the check would run for real")
def test_refuses_to_run_without_a_gpu_unless_smoke(tmp_path):
    out = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", "--out", str(tmp_path)], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "--cpu-smoke" in out.stderr
