"""Two local processes (jax.distributed on localhost, gloo collectives on CPU) train like one.

Both runs go through the user's command, `python -m experiments.pretrain`: one
with `--parallel.data -1 --coordinator-address ... --num-processes 2
--process-id i` in two processes of one CPU device each, one plain
single-device run. Same data, same steps: same losses and parameters.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from lm.inference.load import load_run
from tests.parallel.devices import REPO, cpu_devices_env

pytestmark = pytest.mark.multidevice

ARGS = ["--model.d_model", "32", "--model.n_layers", "1", "--model.n_heads", "2", "--model.d_ff", "64",
        "--model.context_length", "16", "--model.vocab_size", "64", "--batch-size", "4", "--steps", "3",
        "--eval-every", "3", "--eval-batches", "1", "--save-every", "3", "--log-every", "1",
        "--sample-tokens", "0", "--peak-flops", "1e9", "--optim.warmup-steps", "0", "--optim.eps", "1e-6"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _tokens(d):
    rng = np.random.default_rng(0)
    n = 6000
    stream = np.where(rng.random(n) < 0.1, rng.integers(0, 64, n), np.tile(np.arange(64), n // 64 + 1)[:n])
    d.mkdir()
    np.save(d / "train.npy", stream[:5000].astype(np.uint16))
    np.save(d / "val.npy", stream[5000:].astype(np.uint16))
    return d


def _losses(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def test_two_processes_match_one(tmp_path):
    tokens, out = _tokens(tmp_path / "tokens"), tmp_path / "runs"
    common = [sys.executable, "-m", "experiments.pretrain", "--tokens", str(tokens), "--out", str(out), *ARGS]
    address = f"localhost:{_free_port()}"
    env = cpu_devices_env(1)
    for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        env.pop(name, None)  # the flags alone describe the two-process run
    procs = [subprocess.Popen([*common, "--name", "multi", "--parallel.data", "-1", "--coordinator-address", address,
                               "--num-processes", "2", "--process-id", str(i)], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
    single = subprocess.run([*common, "--name", "single"], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=600)
    outputs = []
    for p in procs:
        try:
            outputs.append(p.communicate(timeout=600)[0])
        finally:
            p.kill()
    assert single.returncode == 0, single.stderr[-3000:]
    for i, (p, text) in enumerate(zip(procs, outputs)):
        assert p.returncode == 0, f"process {i} failed:\n{text[-4000:]}"
        assert f"process {i} of 2 reads rows {i}::2 of every batch" in text  # its own half of each batch
    a, b = _losses(out / "single"), _losses(out / "multi")
    assert sorted(a) == sorted(b) == [1, 2, 3]
    np.testing.assert_allclose([b[s] for s in sorted(b)], [a[s] for s in sorted(a)], rtol=1e-5)
    # The checkpoint the two processes wrote (sharded, by orbax) restores in one process.
    (pa, _, _), (pb, _, _) = load_run(out / "single", tokenizer=False), load_run(out / "multi", tokenizer=False)
    for x, y in zip(jax.tree.leaves(pa), jax.tree.leaves(pb)):
        np.testing.assert_allclose(np.asarray(y), np.asarray(x), atol=2e-4)
    assert not (out / "multi" / "tensorboard").exists() and (out / "multi" / "metrics.jsonl").is_file()
