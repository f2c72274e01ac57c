"""Converting a run saved in the per-layer layout (tests/fixtures/old_layout_run, written by the code
before the layers were stacked) and resuming it: experiments.convert_checkpoint and lm.train.convert."""

import contextlib
import dataclasses
import io
import shlex
import shutil
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from experiments.convert_checkpoint import main
from lm.config import from_dict
from lm.data import TokenData
from lm.inference.load import load_run
from lm.model import forward
from lm.train import TrainConfig, init_state
from lm.train.checkpoint import checkpoint_manager, restore_checkpoint
from lm.train.convert import legacy_template, saved_layout
from lm.trainer import train

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "old_layout_run"
N_LAYERS = 2


@dataclasses.dataclass
class Converted:
    old: Path  # a copy of the fixture: tests never write into tests/fixtures
    new: Path
    stdout: str


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> Converted:
    root = tmp_path_factory.mktemp("convert")
    old = shutil.copytree(FIXTURE, root / "old")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main([str(old), str(root / "new")]) == 0
    return Converted(old, root / "new", out.getvalue())


def _saved_config(run_dir: Path, step: int = 4) -> dict:
    manager = checkpoint_manager(run_dir / "checkpoints", async_save=False)
    saved = manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"]
    manager.close()
    return saved


def _train_config(run_dir: Path, **changes) -> TrainConfig:
    return dataclasses.replace(from_dict(TrainConfig, _saved_config(run_dir)["train"]), **changes)


def _resume_config(run_dir: Path) -> TrainConfig:
    # The same config in both training tests: jit caches on it, so the second reuses the first's
    # compiled init (about 10 s of XLA compile on a 2-core CPU).
    return _train_config(run_dir, steps=6, log_every=1, eval_every=6, save_every=6)


def _data() -> TokenData:
    toks = np.random.default_rng(0).integers(0, 64, 4_000).astype(np.uint16)
    return TokenData(train=toks[:3_600], val=toks[3_600:])


def test_converted_run_is_stacked_and_reproduces_the_old_logits(converted):
    assert "step 4: converted (legacy -> stacked)" in converted.stdout
    assert f"--name {converted.new.name} --resume true" in converted.stdout
    assert saved_layout(converted.new / "checkpoints" / "4") == "stacked"
    assert (converted.new / "metrics.jsonl").read_text() == (FIXTURE / "metrics.jsonl").read_text()

    params, model_config, _ = load_run(converted.new, tokenizer=False)
    assert "blocks" in params and not any(k.startswith("block_") for k in params)
    assert all(x.shape[0] == N_LAYERS for x in jax.tree.leaves(params["blocks"]))
    tokens = (np.arange(32).reshape(2, 16) * 7) % 64
    logits = np.asarray(forward(params, tokens, model_config))
    old = np.load(FIXTURE / "old_logits.npy")
    assert logits.shape == old.shape
    # Measured 6.0e-7 (jax 0.10.2, CPU): float32 rounding; the scan over stacked layers sums in
    # another order than the old per-layer loop did.
    assert np.abs(logits - old).max() < 1e-5

    # Loading the unconverted run converts it on the fly, to exactly the same arrays.
    on_the_fly, config2, _ = load_run(converted.old, tokenizer=False)
    assert config2 == model_config
    assert jax.tree.structure(on_the_fly) == jax.tree.structure(params)
    for a, b in zip(jax.tree.leaves(on_the_fly), jax.tree.leaves(params), strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_optimizer_moments_are_stacked_too(converted):
    config = _train_config(converted.new)
    template = jax.eval_shape(lambda k: init_state(config, k), jax.random.PRNGKey(0))
    new_manager = checkpoint_manager(converted.new / "checkpoints", async_save=False)
    old_manager = checkpoint_manager(converted.old / "checkpoints", async_save=False)
    new, new_data, _ = restore_checkpoint(new_manager, template)
    old, old_data, _ = restore_checkpoint(old_manager, legacy_template(template))
    new_manager.close()
    old_manager.close()
    assert new_data == old_data == {"next_index": 4}
    assert int(new["step"]) == int(old["step"]) == 4
    # The legacy fixture also saved an "rng" no step read; it is dropped as the state loads.
    assert type(new).__name__ == type(old).__name__ == "TrainState" and "rng" not in new._fields

    def adam(state):
        found = [s for s in jax.tree.leaves(state["opt_state"], is_leaf=lambda s: hasattr(s, "mu"))
                 if hasattr(s, "mu")]
        assert len(found) == 1
        return found[0]

    new_adam, old_adam = adam(new), adam(old)
    assert int(new_adam.count) == int(old_adam.count) == 4
    for moment in ("mu", "nu"):
        n, o = getattr(new_adam, moment), getattr(old_adam, moment)
        assert set(n) == {"blocks"} | {k for k in o if not k.startswith("block_")}
        assert not np.all(np.asarray(jax.tree.leaves(n["blocks"])[0]) == 0)  # trained moments, not a fresh init
        stacked = jax.tree.map(lambda *xs: np.stack(xs), *(o[f"block_{i}"] for i in range(N_LAYERS)))
        for a, b in zip(jax.tree.leaves(n["blocks"]), jax.tree.leaves(stacked), strict=True):
            np.testing.assert_array_equal(np.asarray(a), b)
        for key in set(n) - {"blocks"}:
            for a, b in zip(jax.tree.leaves(n[key]), jax.tree.leaves(o[key]), strict=True):
                np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_converted_run_resumes_training(converted, tmp_path):
    run = shutil.copytree(converted.new, tmp_path / "run")  # resuming writes; keep the shared copy intact
    result = train(_resume_config(run), _data(), run, resume=True, progress=False)
    assert [h["step"] for h in result.history[:3]] == [2, 4, 4]  # the old run's metrics are kept
    assert [h["step"] for h in result.history[3:] if "loss" in h] == [5, 6]  # it continued, not restarted
    assert int(result.state["step"]) == 6 and np.isfinite(result.final_val_loss)
    manager = checkpoint_manager(run / "checkpoints", async_save=False)
    assert manager.all_steps() == [4, 6]
    manager.close()


def test_resuming_a_legacy_run_asks_for_the_conversion(converted, tmp_path):
    run = shutil.copytree(FIXTURE, tmp_path / "old-run")
    with pytest.raises(ValueError, match="experiments.convert_checkpoint") as e:
        # The converted run's config: the legacy one still says attention_impl "xla" (upgrade_config).
        train(_resume_config(converted.new), _data(), run, resume=True, progress=False)
    assert f"experiments.convert_checkpoint {run} {tmp_path / 'old-run-stacked'}" in str(e.value)
    assert "--resume true" in str(e.value)


def test_printed_resume_command_rebuilds_the_saved_config(converted):
    from experiments.pretrain import parse_config

    line = next(x for x in converted.stdout.splitlines() if "experiments.pretrain" in x)
    args = shlex.split(line.split("python -m experiments.pretrain", 1)[1].split("  (")[0])
    config = parse_config(args)
    assert config.resume and Path(config.out) / config.run_name == converted.new
    assert config.train_config() == _train_config(converted.new)


def test_cli_errors(converted, tmp_path, capsys):
    assert main([str(tmp_path / "missing"), str(tmp_path / "new")]) == 2
    assert "does not exist" in capsys.readouterr().err

    (tmp_path / "not_a_run").mkdir()
    assert main([str(tmp_path / "not_a_run"), str(tmp_path / "new")]) == 2
    assert "no checkpoints/ folder" in capsys.readouterr().err

    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("keep me")
    assert main([str(converted.old), str(busy)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "already exists and is not empty" in err
    assert [p.name for p in busy.iterdir()] == ["notes.txt"]

    assert main([str(converted.new), str(tmp_path / "again")]) == 2
    assert "already in the stacked layout" in capsys.readouterr().err
    assert not (tmp_path / "again").exists()

    assert not (tmp_path / "new").exists()


def test_a_failed_conversion_leaves_nothing_behind(converted, tmp_path, monkeypatch):
    import lm.train.checkpoint

    def disk_full(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(lm.train.checkpoint, "save_checkpoint", disk_full)
    with pytest.raises(OSError, match="No space left"):
        main([str(converted.old), str(tmp_path / "new")])
    # A partial NEW would resume from whichever steps were written.
    assert not (tmp_path / "new").exists()
