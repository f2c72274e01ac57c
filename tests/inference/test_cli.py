"""`python -m experiments.generate` on a tiny run directory made by `experiments.pretrain`."""

import jax
import numpy as np
import pytest

from experiments.generate import GenerateConfig, generate_text, main
from experiments.pretrain import parse_config, pretrain
from lm.inference.generate import generate
from lm.inference.load import load_run
from lm.inference.sampling import SamplingConfig

TINY = ["--model.d_model", "32", "--model.n_layers", "1", "--model.n_heads", "2", "--model.d_ff", "64",
        "--model.context_length", "24", "--model.vocab_size", "300", "--batch-size", "4", "--steps", "4",
        "--eval-every", "4", "--eval-batches", "1", "--save-every", "4", "--log-every", "2", "--sample-tokens", "0"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gen")
    text = tmp / "stories.txt"
    story = "Once upon a time there was a little cat. The cat liked to play in the sun. "
    text.write_text("<|endoftext|>".join(story * (i % 3 + 1) for i in range(200)), encoding="utf-8")
    result = pretrain(parse_config(["--data", str(text), "--out", str(tmp / "runs"), "--name", "toy", *TINY]),
                      progress=False)
    return result


def test_load_run_restores_the_trained_params(run):
    params, config, tok = load_run(run["run_dir"])
    assert config.context_length == 24 and config.vocab_size == 300 and tok.vocab_size <= 300
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(run["state"]["params"])):
        np.testing.assert_array_equal(a, b)


def test_cli_streams_the_completion(run, capsys):
    assert main(["--run", run["run_dir"], "--prompt", "The cat", "--max-new-tokens", "8", "--temperature", "0",
                 "--chunk", "3"]) == 0
    out = capsys.readouterr()
    assert out.out.startswith("The cat") and "tokens/s" in out.err
    params, config, tok = load_run(run["run_dir"])
    result = generate_text(GenerateConfig(run=run["run_dir"], prompt="The cat", max_new_tokens=8, temperature=0),
                           quiet=True)
    assert out.out == "The cat" + result["text"] + "\n"
    assert result["text"] == generate(params, config, tok, "The cat", SamplingConfig(temperature=0, max_new_tokens=8))
    # speculative decoding with the run as its own draft gives the same greedy text
    spec = generate_text(GenerateConfig(run=run["run_dir"], prompt="The cat", max_new_tokens=8, temperature=0,
                                        draft=run["run_dir"], draft_len=3), quiet=True)
    assert spec["text"] == result["text"]


def test_cli_auto_draft_length_gives_the_greedy_text(run, capsys):
    """`--draft-len auto` through the CLI entry: the run as its own draft, greedy, so whatever the tuner
    decides (plain or speculative segments) the text is the target's greedy text."""
    assert main(["--run", run["run_dir"], "--prompt", "The cat", "--max-new-tokens", "8", "--temperature", "0",
                 "--draft", run["run_dir"], "--draft-len", "auto"]) == 0
    out = capsys.readouterr()
    params, config, tok = load_run(run["run_dir"])
    want = generate(params, config, tok, "The cat", SamplingConfig(temperature=0, max_new_tokens=8))
    assert out.out == "The cat" + want + "\n"
    assert "draft lengths per segment [0" in out.err  # the tuner ran, and it starts by measuring plain steps
    assert main(["--run", run["run_dir"], "--draft", run["run_dir"], "--draft-len", "often"]) == 2
    assert "--draft-len must be a positive integer or 'auto'" in capsys.readouterr().err


def test_cli_bad_input(run, tmp_path, capsys):
    assert main(["--run", run["run_dir"], "--top-p", "0"]) == 2
    assert "top_p must be in (0, 1]" in capsys.readouterr().err
    assert main(["--run", run["run_dir"], "--prompt", ""]) == 2
    assert "empty" in capsys.readouterr().err
    assert main(["--run", run["run_dir"], "--prompt", "x" * 200]) == 2
    assert "longer than the model's context_length=24" in capsys.readouterr().err
    assert main(["--run", str(tmp_path / "missing")]) == 2
    assert "no checkpoints found" in capsys.readouterr().err
    assert main([]) == 2
    assert "--run is required" in capsys.readouterr().err
