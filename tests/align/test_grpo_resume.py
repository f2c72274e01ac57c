"""GRPO resumes exactly: a run stopped after a checkpoint (in process, or killed with SIGKILL in a
subprocess) and resumed logs the rewards and losses of the unbroken run and ends on its parameters,
bit for bit. The run uses the DAPO preset, so dynamic sampling's extra rounds and the overlong
penalty are part of what must repeat.

    python -m tests.align.test_grpo_resume RUN_DIR [--resume] [--staleness K]   # the subprocess worker
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from lm.align.config import GRPOConfig
from lm.optim import OptimizerConfig
from lm.train import TrainConfig
from lm.trainer import RunOptions

PROBLEMS = [{"question": f"q{i}", "answer": "0"} for i in range(16)]


def config(steps: int, staleness: int = 0, save_every: int = 2, epochs: int = 2) -> GRPOConfig:
    optim = OptimizerConfig(lr=1e-2, warmup_steps=1, schedule="cosine", weight_decay=0.0)
    train = TrainConfig(steps=steps, batch_size=8, eval_every=0, log_every=1, save_every=save_every, optim=optim,
                        seed=5, async_checkpoints=False)
    return GRPOConfig(prompts_per_step=4, group_size=4, epochs=epochs, max_new_tokens=6, preset="dapo", train=train,
                      max_staleness=staleness)


def run(run_dir, steps: int, staleness: int = 0, save_every: int = 2, epochs: int = 2, **options):
    from lm.align.grpo_loop import train_grpo
    from tests.align import tiny
    from tests.align.test_grpo import LowBytesTask
    from tests.align.test_grpo_options import stoppy_params

    task = LowBytesTask("low-bytes", prompt_template="{question}")
    return train_grpo(stoppy_params(), tiny.CONFIG, tiny.tokenizer(), task, PROBLEMS,
                      config(steps, staleness, save_every, epochs), run_dir,
                      options=RunOptions(progress=False, **options))


def records(history) -> dict:
    """{step: (reward, loss, rollout tries)} of the training records."""
    return {h["step"]: (h["reward"], h["loss"], h.get("tries")) for h in history if "loss" in h}


def leaves(state) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree.leaves((state.params, state.opt_state))]


def assert_same(straight, resumed, steps: int):
    assert sorted(records(resumed.history)) == list(range(1, steps + 1))
    assert records(resumed.history) == records(straight.history)  # bit for bit
    for a, b in zip(leaves(straight.state), leaves(resumed.state), strict=True):
        assert np.array_equal(a, b)


def test_grpo_resumes_exactly_in_process(tmp_path):
    small = dict(save_every=1, epochs=1)
    straight = run(tmp_path / "straight", 3, **small)
    assert any(h.get("tries", 1) > 1 for h in straight.history)  # refill rounds happened and must repeat
    run(tmp_path / "split", 3, stop_after=1, **small)
    resumed = run(tmp_path / "split", 3, resume=True, **small)
    assert resumed.resumed_from == 1
    assert_same(straight, resumed, 3)
    with pytest.raises(ValueError, match="reference_sha1"):  # the KL reference (the start params) must match
        from lm.align.grpo_loop import train_grpo
        from tests.align import tiny
        from tests.align.test_grpo import LowBytesTask

        train_grpo(tiny.params(), tiny.CONFIG, tiny.tokenizer(), LowBytesTask("low-bytes"), PROBLEMS,
                   config(3, **small), tmp_path / "split", options=RunOptions(progress=False, resume=True))


def _losses(path: Path) -> dict:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return {r["step"]: (r["reward"], r["loss"]) for r in rows if "loss" in r}


@pytest.mark.slow  # three subprocesses (each imports JAX and compiles): about a minute on a busy 2-core machine
def test_grpo_killed_after_a_checkpoint_resumes_exactly(tmp_path):
    steps, env = 10, dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    repo = Path(__file__).resolve().parents[2]
    worker = [sys.executable, "-m", "tests.align.test_grpo_resume"]
    subprocess.run([*worker, str(tmp_path / "straight"), str(steps)], cwd=repo, env=env, check=True, timeout=900)
    killed = tmp_path / "killed"
    proc = subprocess.Popen([*worker, str(killed), str(steps)], cwd=repo, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    done = killed / "checkpoints" / "2" / "commit_success.txt"
    while not done.exists() and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "final.npz").exists()  # it really was stopped mid-run
    assert max(_losses(killed / "grpo_metrics.jsonl")) < steps
    out = subprocess.run([*worker, str(killed), str(steps), "--resume"], cwd=repo, env=env, check=True, timeout=900,
                         capture_output=True, text=True).stdout
    assert "resumed from step" in out
    straight, resumed = _losses(tmp_path / "straight" / "grpo_metrics.jsonl"), _losses(killed / "grpo_metrics.jsonl")
    assert sorted(resumed) == list(range(1, steps + 1)) and resumed == straight
    a, b = np.load(tmp_path / "straight" / "final.npz"), np.load(killed / "final.npz")
    assert sorted(a.files) == sorted(b.files) and all(np.array_equal(a[k], b[k]) for k in a.files)


if __name__ == "__main__":
    out_dir, n_steps = Path(sys.argv[1]), int(sys.argv[2])
    result = run(out_dir, n_steps, resume="--resume" in sys.argv)
    np.savez(out_dir / "final.npz", **{str(i): x for i, x in enumerate(leaves(result.state))})
