"""The training driver's guard rails on a toy step (no model to compile): exact resume, never
overwriting a run, finished runs, data and optimizer changes, atomic history, NaN messages, MFU peak."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm.optim import OptimizerConfig
from lm.train import TrainConfig, TrainState
from lm.trainer import Loop, RunOptions, data_fingerprint, fit

CONFIG = TrainConfig(steps=6, batch_size=4, log_every=1, eval_every=3, save_every=3, async_checkpoints=False)


@jax.jit
def _step(state, batch):
    """Gradient descent on the mean squared distance to the batch rows: params w [4], batch [4, 4]."""
    w = state.params["w"]
    loss = jnp.mean(jnp.sum((w - batch) ** 2, axis=-1))
    w = w - 0.1 * 2 * jnp.mean(w - batch, axis=0)
    return TrainState(state.step + 1, {"w": w}, state.opt_state), {"loss": loss, "param_norm": jnp.linalg.norm(w)}


def _batches(start):
    step = start
    while True:
        yield np.random.default_rng(step).normal(size=(4, 4)).astype(np.float32)
        step += 1


def _state():
    return TrainState(jnp.zeros([], jnp.int32), {"w": jnp.ones(4)}, ())


LOOP = Loop(_step, _batches, lambda s: {"val_w": float(jnp.sum(s.params["w"]))})


def _fit(run_dir, config=CONFIG, loop=LOOP, data=None, **options):
    return fit(loop, _state(), config, run_dir, data=data, options=RunOptions(progress=False, **options))


def _losses(history):
    return {h["step"]: h["loss"] for h in history if "loss" in h}


def test_resume_is_exact_and_says_where_it_resumed(tmp_path, capsys):
    straight = _fit(tmp_path / "a")
    _fit(tmp_path / "b", stop_after=3)
    resumed = _fit(tmp_path / "b", resume=True)
    assert "resumed from step 3" in capsys.readouterr().out and resumed.resumed_from == 3
    assert _losses(resumed.history) == _losses(straight.history) and len(_losses(straight.history)) == 6
    np.testing.assert_array_equal(resumed.state.params["w"], straight.state.params["w"])
    assert resumed.final_eval == straight.final_eval
    on_disk = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert on_disk == resumed.history


def test_a_run_with_checkpoints_is_never_overwritten_silently(tmp_path):
    _fit(tmp_path / "run")
    with pytest.raises(ValueError, match="already holds checkpoints") as e:
        _fit(tmp_path / "run")
    assert str(tmp_path / "run") in str(e.value) and "--resume true" in str(e.value)
    assert "--overwrite true" in str(e.value)
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) > 6  # untouched
    again = _fit(tmp_path / "run", overwrite=True)
    assert again.resumed_from is None and min(_losses(again.history)) > 0


def test_a_finished_run_reports_its_numbers_and_more_steps_continue(tmp_path, capsys):
    first = _fit(tmp_path / "run")
    done = _fit(tmp_path / "run", resume=True)
    assert done.complete and "is complete" in capsys.readouterr().out
    assert done.final_eval == first.final_eval and done.history == first.history
    more = _fit(tmp_path / "run", dataclasses.replace(CONFIG, steps=9), resume=True)
    assert not more.complete and sorted(_losses(more.history)) == list(range(1, 10))
    with pytest.raises(ValueError, match="checkpoint at step 9, past the 4 steps asked for"):
        _fit(tmp_path / "run", dataclasses.replace(CONFIG, steps=4), resume=True)


def test_resume_on_other_data_is_refused_and_changed_settings_are_reported(tmp_path, capsys):
    tokens = np.arange(10_000, dtype=np.uint16)
    a = data_fingerprint("train.npy", tokens)
    b = data_fingerprint("train.npy", np.where(tokens == 5000, 1, tokens).astype(np.uint16))
    assert a != b and a == data_fingerprint("train.npy", tokens.copy())
    _fit(tmp_path / "run", data=a, stop_after=3)
    with pytest.raises(ValueError, match="sample_sha1") as e:
        _fit(tmp_path / "run", data=b, resume=True)
    assert "--allow-data-change true" in str(e.value)
    faster = dataclasses.replace(CONFIG, optim=OptimizerConfig(lr=0.5))
    _fit(tmp_path / "run", faster, data=b, resume=True, allow_data_change=True)
    out = capsys.readouterr().out
    assert "changed training data" in out and "optim.lr 0.003 -> 0.5" in out


def test_the_metrics_history_is_on_disk_whole_when_a_resume_starts(tmp_path):
    """A kill right after a resume starts must not lose the history: the kept records are on disk
    before the first new step runs (they used to sit unflushed in a file opened with "w")."""
    _fit(tmp_path / "run", stop_after=3)
    before = (tmp_path / "run" / "metrics.jsonl").read_text()
    seen = []

    def step(state, batch):
        seen.append((tmp_path / "run" / "metrics.jsonl").read_text())
        return _step(state, batch)

    _fit(tmp_path / "run", loop=dataclasses.replace(LOOP, step=step), resume=True)
    assert seen[0] == before and before.count("\n") == 4  # steps 1-3 and the evaluation at 3


def test_non_finite_parameters_are_named_as_such(tmp_path):
    def bad(state, batch):
        state, m = _step(state, batch)
        return state, dict(m, param_norm=jnp.where(state.step >= 2, jnp.inf, m["param_norm"]))

    with pytest.raises(FloatingPointError) as e:
        _fit(tmp_path / "run", loop=dataclasses.replace(LOOP, step=bad))
    assert "the parameters became inf at step 2 (the loss was still finite)" in str(e.value)
    assert "loss became finite" not in str(e.value) and "last good checkpoint is none" in str(e.value)


def test_the_peak_for_mfu_is_measured_once_and_cached(tmp_path, monkeypatch):
    import lm.train.mfu as mfu

    calls = []
    monkeypatch.setattr(mfu, "device_peak_flops", lambda dtype: calls.append(dtype) or (1e10, "measured"))
    cache = tmp_path / "_cache" / "peak_flops.json"
    assert mfu.cached_peak_flops("float32", cache) == (1e10, "measured")
    peak, source = mfu.cached_peak_flops("float32", cache)
    assert peak == 1e10 and "cached" in source and calls == ["float32"]
