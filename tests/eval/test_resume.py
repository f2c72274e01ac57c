"""Resumable evaluation: a run killed at about half continues and ends with the unbroken run's numbers;
--subjects and --limit; --batch-size auto from XLA's memory analysis, found once and cached."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from experiments.eval import EvalConfig, evaluate
from lm.eval import memory
from lm.eval.report import markdown_table
from lm.eval.resume import RecordLog, fingerprint
from tests.eval.models import byte_tokenizer, config, write_run
from tests.inference.tiny import random_params


class Killed(Exception):
    pass


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    for split, n in (("dev", 2), ("val", 8)):
        (root / "mmlu" / split).mkdir(parents=True)
        for subject in ("alpha", "beta"):
            with (root / "mmlu" / split / f"{subject}_{split}.csv").open("w", newline="") as f:
                csv.writer(f).writerows([[f"{subject} {split} {i}: {i}+{i}?", "x", "yy", "z",
                                          f"{2 * i}", "ABCD"[i % 4]] for i in range(n)])
    c = config(context_length=256, sliding_window=0)
    return root, (random_params(c, 5), c, byte_tokenizer())


def test_killed_run_resumes_to_the_unbroken_result(setup, tmp_path):
    root, model = setup
    cfg = EvalConfig(task="mmlu", run="toy", data_dir=str(root), shots=1, chunk=4, batch_size="4", progress=False)
    unbroken = evaluate(cfg, model, out_dir=tmp_path / "unbroken")

    def kill_at_half(done):
        if done >= 8:
            raise Killed
    with pytest.raises(Killed):
        evaluate(cfg, model, out_dir=tmp_path / "killed", on_chunk=kill_at_half)
    log = tmp_path / "killed" / "partial.jsonl"
    assert len(RecordLog(log)) == 8
    with log.open("a") as f:
        f.write('{"key": "half a line')  # what a kill during a write leaves
    chunks = []
    resumed = evaluate(cfg, model, out_dir=tmp_path / "killed", on_chunk=chunks.append)
    assert chunks == [12, 16]  # only the second half was computed
    assert resumed["metrics"] == unbroken["metrics"]
    strip = lambda rs: [{k: v for k, v in r.items()} for r in rs]  # noqa: E731
    assert strip(resumed["records"]) == strip(unbroken["records"])  # log-probs bitwise equal
    again = evaluate(cfg, model, out_dir=tmp_path / "killed", on_chunk=chunks.append)
    assert chunks == [12, 16] and again["metrics"] == unbroken["metrics"]  # nothing left to compute
    other = random_params(model[1], 6)  # another model's records are keyed apart
    assert fingerprint(other, model[1]) != unbroken["model_fingerprint"] == fingerprint(*model[:2])


def test_subjects_limit_and_auto_batch_size(setup, tmp_path, monkeypatch):
    root, model = setup
    seen = []

    def fake_bytes(params, c, rows, w):  # the search and the cache; the real memory analysis is the slow test's
        seen.append(rows)
        return rows * 1000

    monkeypatch.setattr(memory, "batch_bytes", fake_bytes)
    cfg = EvalConfig(task="mmlu", run="toy", data_dir=str(root), shots=1, limit=3, subjects=("beta",),
                     batch_size="auto", memory_budget_gb=4500 / 2 ** 30, progress=False)
    r = evaluate(cfg, model, out_dir=tmp_path / "out")
    assert [x["id"] for x in r["records"]] == [f"mmlu/val/beta/{i}" for i in range(3)]
    assert seen == [2, 4, 8] and list(json.loads((tmp_path / "batch_size_cache.json").read_text()).values()) == [4]
    evaluate(cfg, model, out_dir=tmp_path / "out2")
    assert seen == [2, 4, 8]  # found once, then read from the cache
    with pytest.raises(ValueError, match="positive number or auto"):
        EvalConfig(task="mmlu", run="toy", batch_size="many")


@pytest.mark.slow
def test_memory_analysis_orders_batch_sizes(setup, tmp_path):
    _, model = setup
    w = memory.Widths(256, 64, 8, 4)
    budget = memory.batch_bytes(model[0], model[1], 4, w)
    assert memory.batch_bytes(model[0], model[1], 8, w) > budget > memory.batch_bytes(model[0], model[1], 2, w)
    assert memory.auto_batch_size(model[0], model[1], w, budget, tmp_path / "c.json", "k") == 4


def test_contamination_report_through_the_command(setup, tmp_path):
    root, model = setup
    tok = model[2]
    docs = ["some training text", "alpha val 1: 1+1? is in here", "more text", "ALPHA VAL 3: 3+3!"]
    np.save(tmp_path / "tokens.npy", np.asarray([t for d in docs for t in [*tok.encode(d), 256]], np.uint16))
    cfg = EvalConfig(task="mmlu", run="toy", data_dir=str(root), shots=1, limit=4, subjects=("alpha",),
                     batch_size="4", train_tokens=str(tmp_path), ngram=3, ngram_cache=str(tmp_path / "cache"),
                     progress=False)
    r = evaluate(cfg, model, out_dir=tmp_path / "out")
    c = r["metrics"]["contamination"]
    assert [x["contaminated"] for x in r["records"]] == [False, True, False, True]
    assert c["fraction"] == 0.5 and c["clean_n"] == 2 and c["n_gram"] == 3
    assert c["clean_acc"] == np.mean([x["correct"] for x in r["records"][::2]])
    assert "contaminated (3-gram in training data) | 2 / 4" in markdown_table(r)


def _records_written(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.is_file() else 0


@pytest.mark.slow  # three processes start jax and compile: ~25 s; the test above is the default suite's
def test_sigkilled_command_resumes_to_the_unbroken_result(setup, tmp_path):
    """The real thing: `python -m experiments.eval` killed with SIGKILL once about half of the records are
    on disk, then the same command again; its results.json equals an unbroken run's, and it computed
    only the examples the killed run had not written."""
    root, _ = setup
    run_dir = tmp_path / "runs" / "toy"
    write_run(run_dir, config(context_length=256, sliding_window=0, d_model=64, n_layers=2), seed=5)
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(repo), "JAX_PLATFORMS": "cpu"}

    def command(out):
        return [sys.executable, "-m", "experiments.eval", "--run", str(run_dir), "--task", "mmlu",
                "--data-dir", str(root), "--shots", "1", "--chunk", "1", "--batch-size", "1",
                "--progress", "false", "--out", str(out)]

    total = 16
    killed = tmp_path / "killed"
    pipes = dict(cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    unbroken = subprocess.Popen(command(tmp_path / "unbroken"), **pipes)  # alongside: the test takes less time
    proc = subprocess.Popen(command(killed), **pipes)
    log = killed / "partial.jsonl"
    while proc.poll() is None and _records_written(log) < total // 2:
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, err[-2000:]  # killed, not finished
    done = len(RecordLog(log))
    assert total // 2 <= done < total and not (killed / "results.json").exists()
    resumed = subprocess.run(command(killed), cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"[resumed: {done} examples from" in resumed.stderr
    _, err = unbroken.communicate(timeout=300)
    assert unbroken.returncode == 0, err[-2000:]
    got, want = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("killed", "unbroken"))
    assert got["metrics"]["n"] == total and got["metrics"] == want["metrics"]
    assert (got["examples_computed"], got["examples_resumed"]) == (total - done, done)  # nothing done twice
    assert want["examples_computed"] == total
    records = [(tmp_path / d / "records.jsonl").read_text() for d in ("killed", "unbroken")]
    assert records[0] == records[1]  # every log-prob bitwise equal
