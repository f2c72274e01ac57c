"""The main job, `python -m experiments.pretrain`, at toy size."""

import json

import pytest

from experiments.pretrain import PretrainConfig, main, parse_config, pretrain

TINY = ["--model.d_model", "32", "--model.n_layers", "1", "--model.n_heads", "2", "--model.d_ff", "64",
        "--model.context_length", "16", "--model.vocab_size", "300", "--batch-size", "4",
        "--eval-every", "4", "--eval-batches", "2", "--save-every", "4", "--log-every", "2", "--sample-tokens", "5"]


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "stories.txt"
    story = "Once upon a time there was a little cat. The cat liked to play in the sun. "
    path.write_text("<|endoftext|>".join(story * (i % 3 + 1) for i in range(300)), encoding="utf-8")
    return path


def test_cli_flags_reach_the_config():
    c = parse_config(["--preset", "tinystories", "--model.d_model", "64", "--steps", "7", "--optim.lr", "0.01"])
    assert c.model.d_model == 64 and c.model.n_layers == 4 and c.model.vocab_size == 10_000
    assert c.steps == 7 and c.optim.lr == 0.01 and c.train_config().steps == 7


def test_end_to_end_then_resume(text_file, tmp_path, capsys):
    args = ["--data", str(text_file), "--out", str(tmp_path / "runs"), "--name", "toy", *TINY]
    assert main([*args, "--steps", "8"]) == 0
    run = tmp_path / "runs" / "toy"
    for name in ("metrics.jsonl", "loss.png", "summary.json", "sample.txt", "tokenizer.json"):
        assert (run / name).is_file(), name
    summary = json.loads((run / "summary.json").read_text())
    assert summary["val_loss"] > 0 and summary["val_perplexity"] > 1
    assert "held-out loss" in capsys.readouterr().out
    assert main([*args, "--steps", "12", "--resume", "true"]) == 0
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert max(steps) == 12 and sorted(set(steps)) == sorted(set(steps), key=int)
    assert "resumed from step 8" in capsys.readouterr().out


def test_reruns_neither_destroy_nor_crash_a_finished_run(text_file, tmp_path, capsys):
    """Issue 21: rerunning a name without --resume kept deleting the run; resuming a finished run
    crashed (and nulled summary.json); fewer --steps gave an IndexError; other data went through."""
    args = ["--data", str(text_file), "--out", str(tmp_path / "runs"), "--name", "toy", *TINY, "--steps", "4"]
    run = tmp_path / "runs" / "toy"
    assert main(args) == 0
    summary, metrics = (run / "summary.json").read_text(), (run / "metrics.jsonl").read_text()
    capsys.readouterr()
    assert main(args) == 2  # the same command again: refused, the run untouched
    err = capsys.readouterr().err
    assert str(run) in err and "--resume true" in err and "--overwrite true" in err
    assert (run / "metrics.jsonl").read_text() == metrics and sorted(p.name for p in (run / "checkpoints").iterdir())
    assert main([*args, "--resume"]) == 0  # finished: say so and report its numbers
    out = capsys.readouterr().out
    assert "is complete" in out and "held-out loss" in out
    assert json.loads((run / "summary.json").read_text()) == json.loads(summary)
    assert main([*args, "--steps", "2", "--resume", "true"]) == 2
    assert "past the 2 steps asked for" in capsys.readouterr().err
    other = tmp_path / "other.txt"
    other.write_text(text_file.read_text().replace("cat", "dog"))
    tokenizer = (run / "tokenizer.json").read_text()
    assert main([*args, "--data", str(other), "--resume", "true"]) == 2
    err = capsys.readouterr().err
    assert "other data" in err and "--allow-data-change true" in err
    assert (run / "tokenizer.json").read_text() == tokenizer  # refused before anything was written
    assert main([*args, "--overwrite", "true"]) == 0  # asked for: the run starts again
    assert "resumed" not in capsys.readouterr().out and (run / "metrics.jsonl").read_text() != metrics


def test_importable_and_returns_history(text_file, tmp_path):
    config = parse_config(["--data", str(text_file), "--out", str(tmp_path), "--steps", "4", *TINY])
    result = pretrain(config, progress=False)
    assert result["history"] and result["val_loss"] is not None and result["run_dir"].endswith("stories-tiny")


@pytest.mark.slow  # two CLI runs; document masking itself is tested in tests/model/test_documents.py
def test_documents_are_split_at_the_tokenizers_end_of_text(text_file, tmp_path, capsys):
    """The default job trains with document masking whenever its tokenizer has <|endoftext|>."""
    args = ["--data", str(text_file), "--out", str(tmp_path / "runs"), "--name", "docs", *TINY]
    assert main([*args, "--steps", "2"]) == 0
    assert "documents split at token" in capsys.readouterr().out
    assert main([*args, "--name", "plain", "--steps", "2", "--document-mask", "false"]) == 0
    assert "plain sequences" in capsys.readouterr().out


def test_dry_run_compiles_and_reports_without_data(tmp_path, capsys):
    assert main(["--out", str(tmp_path), "--dry-run", *TINY]) == 0
    out = capsys.readouterr().out
    assert "FLOPs per token (XLA cost analysis)" in out and "temporaries" in out and "parameters:" in out
    assert not any(tmp_path.iterdir())  # no tokenizer, no data, no run directory
    assert main(["--out", str(tmp_path), "--dry-run", "--parallel.fsdp", "3", *TINY]) == 2  # one CPU device
    assert "does not divide" in capsys.readouterr().err


def test_bad_input_is_reported(tmp_path, capsys):
    assert main(["--data", str(tmp_path / "missing.txt"), "--out", str(tmp_path)]) == 2
    assert "missing.txt" in capsys.readouterr().err
    assert main(["--model.d_model", "30", "--model.n_heads", "4"]) == 2
    assert "divisible by n_heads" in capsys.readouterr().err
    with pytest.raises(ValueError, match="not both"):
        PretrainConfig(data="a.txt", tokens="dir")
    assert main(["--tokens", str(tmp_path), "--out", str(tmp_path)]) == 2
    assert "train.npy" in capsys.readouterr().err


@pytest.mark.slow  # a 60-step run on the embedded corpus; tests/train/test_loop.py's learning test stays default
def test_loss_decreases_on_the_embedded_corpus(tmp_path):
    """Real English (the stdlib docs the default job uses): held-out loss falls well below uniform."""
    import math

    pytest.importorskip("tensorboardX")
    config = parse_config([*TINY, "--out", str(tmp_path), "--steps", "60", "--eval-every", "20", "--save-every", "60",
                           "--tensorboard", "true", "--optim.lr", "0.01", "--optim.warmup_steps", "5",
                           "--sample-tokens", "0"])
    result = pretrain(config, progress=False)
    val = [h["val_loss"] for h in result["history"] if "val_loss" in h]
    # Uniform guessing scores ln(300) = 5.70 nats; 60 steps reach about 4.1.
    assert len(val) == 3 and val[0] > val[1] > val[2] and val[-1] < math.log(300) - 1.2, val
    assert list((tmp_path / config.run_name / "tensorboard").glob("events.out.tfevents.*"))
