"""`python -m experiments.pretrain --parallel.*` on 8 virtual CPU devices, with a resume.

Slow (three runs, each compiling its own sharded steps); the same code paths run
unmarked in test_strategies.py (steps) and test_multihost.py (the CLI).
"""

from __future__ import annotations

import json
import subprocess
import sys

import jax
import numpy as np
import pytest

from lm.inference.load import load_run
from tests.parallel.devices import REPO, cpu_devices_env

pytestmark = [pytest.mark.multidevice, pytest.mark.slow]

ARGS = ["--model.d_model", "32", "--model.n_layers", "2", "--model.n_heads", "4", "--model.d_ff", "64",
        "--model.context_length", "16", "--model.vocab_size", "64", "--batch-size", "8", "--eval-batches", "1",
        "--log-every", "1", "--sample-tokens", "4", "--peak-flops", "1e9", "--optim.warmup-steps", "0",
        "--optim.eps", "1e-6", "--optim.schedule", "constant"]  # resuming with more --steps keeps the rate


def _run(*args):
    proc = subprocess.run([sys.executable, "-m", "experiments.pretrain", *ARGS, *args], cwd=REPO,
                          env=cpu_devices_env(8), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout


@pytest.mark.parametrize("axes", [["--parallel.data", "4", "--parallel.pipe", "2", "--parallel.microbatches", "2"],
                                  ["--parallel.fsdp", "-1", "--parallel.tensor", "2"]])
def test_sharded_run_resumes_like_an_unbroken_one(tmp_path, axes):
    rng = np.random.default_rng(0)
    stream = np.where(rng.random(6000) < 0.1, rng.integers(0, 64, 6000), np.tile(np.arange(64), 94)[:6000])
    (tmp_path / "tok").mkdir()
    np.save(tmp_path / "tok" / "train.npy", stream.astype(np.uint16))
    common = ["--tokens", str(tmp_path / "tok"), "--out", str(tmp_path / "runs"), "--steps", "6", "--eval-every", "3",
              "--save-every", "3", *axes]
    out = _run(*common, "--name", "straight")
    assert "x" in out.split("devices;")[0]  # the strategy line, e.g. "dp4 x pp2, 16 microbatches on 8 devices; ..."
    _run(*common, "--name", "split", "--steps", "3")
    _run(*common, "--name", "split", "--resume", "true")
    losses = {}
    for name in ("straight", "split"):
        rows = [json.loads(line) for line in (tmp_path / "runs" / name / "metrics.jsonl").read_text().splitlines()]
        losses[name] = {r["step"]: r["loss"] for r in rows if "loss" in r}
    assert set(losses["split"]) == set(range(1, 7))
    for step in range(4, 7):
        assert losses["split"][step] == pytest.approx(losses["straight"][step], rel=1e-6)
    (a, config, _), (b, _, _) = (load_run(tmp_path / "runs" / n, tokenizer=False) for n in ("straight", "split"))
    assert config.n_layers == 2 and a["blocks"]["attn"]["wq"].shape[0] == 2  # the pipeline run's layers, stacked
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=1e-6)
