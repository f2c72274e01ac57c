"""SFT and DPO killed with SIGKILL right after a checkpoint, then resumed from the command line, log the
same losses as unbroken runs, bit for bit (the in-process version with stop_after is tests/align/test_resume.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.parallel.devices import REPO

pytestmark = pytest.mark.slow  # about 5 minutes: a pretraining run and three runs each of SFT and DPO


def _run(args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def _losses(path):
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("kill")
    text = root / "text.txt"
    text.write_text("<|endoftext|>".join("12+34=46 and 5+7=12. The cat sat. " * (i % 3 + 1) for i in range(400)))
    _run(["experiments.pretrain", "--data", str(text), "--out", str(root), "--name", "base", "--steps", "30",
          "--model.d_model", "32", "--model.n_layers", "1", "--model.n_heads", "2", "--model.d_ff", "64",
          "--model.context_length", "32", "--model.vocab_size", "270", "--batch-size", "8", "--sample-tokens", "0",
          "--peak-flops", "1e9"])
    return root


@pytest.mark.parametrize("kind", ["sft", "dpo"])
def test_killed_after_a_checkpoint_resumes_exactly(base, kind):
    extra = {"sft": [], "dpo": ["--dpo.train.eval_every", "100", "--samples", "2"]}[kind]
    common = [f"experiments.{kind}", "--init", str(base / "base"), "--task", "arithmetic", "--out", str(base),
              "--n-train", "64", "--n-eval", "8", "--eval-batch-size", "8", f"--{kind}.train.steps", "300",
              f"--{kind}.train.save_every", "100", f"--{kind}.train.log_every", "1", f"--{kind}.train.batch_size", "8",
              f"--{kind}.train.async_checkpoints", "false", *extra]
    _run([*common, "--name", f"{kind}-straight"])
    proc = subprocess.Popen([sys.executable, "-m", *common, "--name", f"{kind}-killed"], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    done = base / f"{kind}-killed" / "checkpoints" / "100" / "commit_success.txt"
    while not done.exists() and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    metrics = f"{kind}_metrics.jsonl"
    assert max(_losses(base / f"{kind}-killed" / metrics)) < 300  # it really was stopped mid-run
    assert "resumed from step 100" in _run([*common, "--name", f"{kind}-killed", "--resume", "true"])
    straight, resumed = _losses(base / f"{kind}-straight" / metrics), _losses(base / f"{kind}-killed" / metrics)
    assert sorted(resumed) == list(range(1, 301)) and resumed == straight
