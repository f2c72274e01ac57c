"""MMLU: CSV loading, k-shot prompts from dev, per-subject and macro accuracy, bad input, the real files."""

import csv

import pytest

from lm.eval.mmlu import evaluate_mmlu, format_prompt, load_mmlu, mmlu_examples, summarize
from lm.eval.paths import default_eval_data_dir
from tests.eval.models import byte_tokenizer, chain_model

ROWS = {
    "dev": {"alpha_beta": [[f"Dev question {i}?", "w", "x", "y", "z", "ABCDA"[i]] for i in range(5)],
            "gamma": [[f"G dev {i}", "1", "2", "3", "4", "D"] for i in range(5)]},
    "val": {"alpha_beta": [["What is a, b?", "one", "two, three", "four", "five", "C"],
                           ["Second", "p", "q", "r", "s", "A"],
                           ["Third\nline", "p", "q", "r", "s", "C"]],
            "gamma": [["G1", "1", "2", "3", "4", "B"], ["G2", "1", "2", "3", "4", "C"]]},
}


@pytest.fixture(scope="module")
def mmlu_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("mmlu")
    for split, by_subject in ROWS.items():
        (root / split).mkdir()
        for subject, rows in by_subject.items():
            with (root / split / f"{subject}_{split}.csv").open("w", newline="") as f:
                csv.writer(f).writerows(rows)
    return root


def test_letter_prompt_is_the_papers_format(mmlu_dir):
    q = load_mmlu(mmlu_dir, "val")[0]
    shot = load_mmlu(mmlu_dir, "dev")[1]
    assert q.options[1] == "two, three" and q.answer == 2  # quoted commas survive the CSV reader
    assert format_prompt(q, [shot], "letter") == (
        "The following are multiple choice questions (with answers) about alpha beta.\n\n"
        "Dev question 1?\nA. w\nB. x\nC. y\nD. z\nAnswer: B\n\n"
        "What is a, b?\nA. one\nB. two, three\nC. four\nD. five\nAnswer:")
    assert format_prompt(q, [shot], "cloze") == (
        "The following are questions (with answers) about alpha beta.\n\n"
        "Question: Dev question 1?\nAnswer: x\n\nQuestion: What is a, b?\nAnswer:")


def test_examples_take_shots_from_dev_and_limit_round_robins_subjects(mmlu_dir):
    ex = mmlu_examples(mmlu_dir, "val", shots=5)
    assert [e.meta["subject"] for e in ex] == ["alpha_beta", "gamma", "alpha_beta", "gamma", "alpha_beta"]
    assert ex[0].prompt.count("\nAnswer: ") == 5 and ex[0].prompt.endswith("Answer:")
    assert ex[0].choices == (" A", " B", " C", " D") and ex[0].gold == 2
    assert [e.meta["subject"] for e in mmlu_examples(mmlu_dir, "val", shots=0, limit=2)] == ["alpha_beta", "gamma"]
    cloze = mmlu_examples(mmlu_dir, "val", shots=1, fmt="cloze", only=("gamma",))
    assert len(cloze) == 2 and cloze[0].choices == (" 1", " 2", " 3", " 4")
    dev = mmlu_examples(mmlu_dir, "dev", shots=2, only=("alpha_beta",))  # a dev question is never its own shot
    assert dev[0].prompt.count("Dev question 0?") == 1 and "Dev question 2?" in dev[0].prompt
    assert "Dev question 0?" in dev[1].prompt


def test_planted_model_scores_per_subject_and_macro(mmlu_dir):
    params, c = chain_model({ord(":"): ord(" "), ord(" "): ord("C")})  # always answers " C"
    r = evaluate_mmlu(params, c, byte_tokenizer(), mmlu_dir, "val", shots=1, batch_size=4)
    assert [x["pred_letter"] for x in r["records"]] == ["C"] * 5
    assert r["per_subject"]["alpha_beta"]["acc"] == pytest.approx(2 / 3)
    assert r["per_subject"]["gamma"]["acc"] == pytest.approx(1 / 2)
    assert r["macro_acc"] == pytest.approx((2 / 3 + 1 / 2) / 2) and r["micro_acc"] == pytest.approx(3 / 5)
    assert r["n"] == 5 and r["subjects"] == 2 and r["macro_acc_norm"] == r["macro_acc"]  # letters: same length
    rec = r["records"][0]
    assert {"prompt", "choices", "gold", "pred", "correct", "subject", "logprobs"} <= set(rec)


def test_summarize_by_hand():
    recs = [{"subject": "a", "correct": True, "correct_norm": False}, {"subject": "a", "correct": False,
            "correct_norm": False}, {"subject": "b", "correct": True, "correct_norm": True}]
    s = summarize(recs)
    assert s["macro_acc"] == pytest.approx(0.75) and s["micro_acc"] == pytest.approx(2 / 3)
    assert s["macro_acc_norm"] == pytest.approx(0.5) and s["per_subject"]["a"]["n"] == 2


def test_bad_input(mmlu_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="data-dir"):
        load_mmlu(tmp_path / "nowhere", "val")
    with pytest.raises(ValueError, match="unknown MMLU subject"):
        load_mmlu(mmlu_dir, "val", only=("astrology",))
    with pytest.raises(ValueError, match="unknown MMLU split"):
        load_mmlu(mmlu_dir, "validation")
    with pytest.raises(ValueError, match="unknown MMLU format"):
        mmlu_examples(mmlu_dir, "val", fmt="essay")
    with pytest.raises(ValueError, match="only 5 dev questions"):
        mmlu_examples(mmlu_dir, "val", shots=6)


def test_real_mmlu_files():
    d = default_eval_data_dir() / "mmlu"
    if not (d / "val").is_dir():
        pytest.skip(f"MMLU not found at {d} (set LM_SHARED_DIR to the shared/ folder)")
    val = load_mmlu(d, "val")
    assert len(val) == 1531 and len({q.subject for q in val}) == 57
    assert len(load_mmlu(d, "dev")) == 57 * 5
    ex = mmlu_examples(d, "val", shots=5, limit=57)
    assert len({e.meta["subject"] for e in ex}) == 57  # --limit 57 gives one question per subject
    assert all(e.prompt.count("\nAnswer: ") == 5 for e in ex)
