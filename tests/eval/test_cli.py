"""`python -m experiments.eval`: bad input fails clearly before any model loads; results files; a real run."""

import csv
import json

import numpy as np
import pytest

from experiments.eval import EvalConfig, evaluate, main
from lm.eval.report import write_results
from tests.eval.models import byte_tokenizer, config, write_run
from tests.inference.tiny import random_params

@pytest.mark.parametrize("argv, message", [
    (["--task", "hellaswag", "--run", "r"], "unknown task 'hellaswag'; choose one of perplexity, mmlu, gsm8k,"),
    (["--task", "mmlu"], "give exactly one model"),
    (["--task", "mmlu", "--run", "r", "--hf-dir", "d"], "give exactly one model"),
    (["--task", "mmlu", "--run", "r", "--limit", "0"], "--limit must be a positive number of examples, got 0"),
    (["--task", "perplexity", "--run", "r"], "--task perplexity needs --data FILE"),
    (["--task", "mmlu", "--run", "r", "--split", "train"], "--split 'train' is not one of"),
    (["--task", "mmlu", "--run", "r", "--data-dir", "/no/such/dir"], "mmlu data not found at '/no/such/dir/mmlu'"),
    (["--task", "perplexity", "--run", "r", "--data", "/no/such.txt"], "perplexity data not found"),
])
def test_bad_input_is_a_clear_error(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_perplexity_results_files(tmp_path):
    c = config(sliding_window=0)
    tok = byte_tokenizer()
    text = tmp_path / "held_out.txt"
    text.write_text("Once upon a time, a small cat sat in the sun.<|endoftext|>The end.", encoding="utf-8")
    model = (random_params(c, 7), c, tok)
    result = evaluate(EvalConfig(task="perplexity", run="r", data=str(text), stride=8, progress=False), model)
    m = result["metrics"]
    n_text = len(tok.encode(text.read_text()))
    assert m["tokens"] == n_text  # <|endoftext|> in front, so every text token is a scored target
    assert m["bytes"] == len(text.read_bytes()) - len("<|endoftext|>")  # document markers are not text bytes
    np.testing.assert_allclose(m["bits_per_byte"], m["nll"] / np.log(2) / m["bytes"])
    holdout = evaluate(EvalConfig(task="perplexity", run="r", data=str(text), holdout=0.5, bos="", progress=False),
                       model)
    assert holdout["metrics"]["tokens"] == n_text - int(n_text * 0.5) - 1
    out = write_results(result, tmp_path / "out")
    saved = json.loads((out / "results.json").read_text())
    assert saved["metrics"]["perplexity"] == pytest.approx(m["perplexity"]) and "records" not in saved
    assert "| perplexity |" in (out / "results.md").read_text()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run directory as `experiments.pretrain` writes it (checkpoint + tokenizer), without the training."""
    tmp = tmp_path_factory.mktemp("evalrun")
    run_dir = tmp / "runs" / "toy"
    write_run(run_dir, config(sliding_window=0))
    text = tmp / "stories.txt"
    text.write_text("Once upon a time there was a little cat. The cat liked to play in the sun. " * 20)
    return run_dir, text


def test_cli_on_a_run_directory(run, tmp_path, capsys):
    run_dir, text = run
    out = tmp_path / "ppl"
    assert main(["--run", str(run_dir), "--task", "perplexity", "--data", str(text), "--out", str(out),
                 "--progress", "false"]) == 0
    printed = capsys.readouterr().out
    saved = json.loads((out / "results.json").read_text())
    assert saved["model"] == "toy" and saved["metrics"]["tokens"] == len(text.read_bytes())  # bytes = tokens here
    assert f"{saved['metrics']['perplexity']:.3f}" in printed


def test_cli_mmlu_and_gsm8k_write_per_example_records(run, tmp_path, capsys):
    from tests.eval.test_gsm8k import PROBLEMS
    from tests.eval.test_mmlu import ROWS

    run_dir, _ = run
    data = tmp_path / "data"
    for split, by_subject in ROWS.items():
        (data / "mmlu" / split).mkdir(parents=True)
        for subject, rows in by_subject.items():
            with (data / "mmlu" / split / f"{subject}_{split}.csv").open("w", newline="") as f:
                csv.writer(f).writerows(rows)
    (data / "gsm8k").mkdir()
    for split in ("train", "test"):
        (data / "gsm8k" / f"{split}.jsonl").write_text(
            "".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in PROBLEMS))
    common = ["--run", str(run_dir), "--data-dir", str(data), "--progress", "false", "--limit", "3"]
    assert main([*common, "--task", "mmlu", "--shots", "1", "--out", str(tmp_path / "m")]) == 0
    recs = [json.loads(x) for x in (tmp_path / "m" / "records.jsonl").read_text().splitlines()]
    assert len(recs) == 3 and {"prompt", "pred", "gold", "correct", "subject"} <= set(recs[0])
    assert "| alpha_beta |" in (tmp_path / "m" / "results.md").read_text()
    assert main([*common, "--task", "gsm8k", "--shots", "0", "--max-new-tokens", "4",
                 "--out", str(tmp_path / "g")]) == 0
    recs = [json.loads(x) for x in (tmp_path / "g" / "records.jsonl").read_text().splitlines()]
    assert len(recs) == 3 and {"prompt", "prediction", "extracted", "gold", "correct"} <= set(recs[0])
    assert [r["gold"] for r in recs] == ["42", "7", "1042"]
    assert "exact match" in capsys.readouterr().out


def test_cli_open_ended_tasks_write_records_for_judging(run, tmp_path):
    run_dir, _ = run
    data = tmp_path / "data"
    (data / "alpaca_eval").mkdir(parents=True)
    (data / "alpaca_eval" / "alpaca_eval.jsonl").write_text("".join(
        json.dumps({"instruction": f"Say {w}.", "output": w, "generator": "ref", "dataset": "toy"}) + "\n"
        for w in ("hi", "bye", "ok")))
    (data / "simple_safety_tests").mkdir()
    (data / "simple_safety_tests" / "simple_safety_tests.csv").write_text(
        'id,harm_area,counter,category,prompts_final\nsst_001,"Scams, Fraud",1,Advice,How do I cheat?\n')
    common = ["--run", str(run_dir), "--data-dir", str(data), "--progress", "false", "--max-new-tokens", "3"]
    assert main([*common, "--task", "alpaca_eval", "--limit", "2", "--out", str(tmp_path / "a")]) == 0
    recs = [json.loads(x) for x in (tmp_path / "a" / "records.jsonl").read_text().splitlines()]
    assert [r["instruction"] for r in recs] == ["Say hi.", "Say bye."] and recs[0]["reference"] == "hi"
    assert recs[0]["prompt"] == "Instruction: Say hi.\nResponse:"  # no chat template: the plain form
    outputs = json.loads((tmp_path / "a" / "alpaca_eval_outputs.json").read_text())
    assert outputs[1] == {"instruction": "Say bye.", "output": recs[1]["output"], "generator": "toy", "dataset": "toy"}
    assert "no judge model is available offline" in (tmp_path / "a" / "results.md").read_text()
    assert main([*common, "--task", "simple_safety_tests", "--out", str(tmp_path / "s")]) == 0
    (rec,) = [json.loads(x) for x in (tmp_path / "s" / "records.jsonl").read_text().splitlines()]
    assert rec["id"] == "simple_safety_tests/sst_001" and rec["harm_area"] == "Scams, Fraud"
