"""Decontamination: 13-gram overlap with benchmark files, counted per benchmark."""

import json
import random

import pytest

from lm.curation.decontaminate import benchmark_items, build_benchmark_indexes, contamination

QUESTION = ("Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
            "How many clips did Natalia sell altogether in April and May?")


@pytest.fixture
def bench(tmp_path):
    (tmp_path / "gsm").mkdir()
    (tmp_path / "gsm" / "test.jsonl").write_text(
        json.dumps({"question": QUESTION, "answer": "72"}) + "\n" + json.dumps({"question": "Too short."}) + "\n")
    (tmp_path / "quiz.csv").write_text(
        '"Which planet in the solar system has the largest number of known moons as of this year?",Saturn,Mars,'
        'Venus,Earth,A\n')
    return [str(tmp_path / "gsm"), str(tmp_path / "quiz.csv")]


def test_items_from_jsonl_and_csv(bench):
    assert next(benchmark_items(bench[0])).startswith("Natalia sold") and "72" in next(benchmark_items(bench[0]))
    assert next(benchmark_items(bench[1])).split("\n")[1:] == ["Saturn", "Mars", "Venus", "Earth", "A"]
    with pytest.raises(FileNotFoundError, match="not found"):
        list(benchmark_items(bench[0] + "-missing"))


def test_planted_strings_are_found_per_benchmark(bench, english_docs):
    idx = build_benchmark_indexes(bench)
    assert set(idx) == {f"{bench[1].split('/')[-2]}/gsm", f"{bench[1].split('/')[-2]}/quiz"}
    idx = {k.split("/")[1]: v for k, v in idx.items()}
    rng = random.Random(0)
    for doc in english_docs[:30]:
        assert contamination(doc, idx) == {}
    # Reformatted (case, punctuation, line breaks) inside a page: still found.
    reformatted = QUESTION.upper().replace(",", "").replace(" ", "\n", 3)
    page = english_docs[0] + "\n\nQ: " + reformatted + "\n" + english_docs[1]
    hits = contamination(page, idx)
    assert set(hits) == {"gsm"} and hits["gsm"] == len(QUESTION.split()) - 13 + 1
    quiz = "Which planet in the solar system has the largest number of known moons as of this year? Saturn"
    assert set(contamination(f"{english_docs[2]} {quiz} {english_docs[3]}", idx)) == {"quiz"}
    # 12 consecutive words are not a 13-gram
    words = QUESTION.split()
    start = rng.randrange(len(words) - 12)
    assert contamination(" ".join(words[start:start + 12]), idx) == {}
    with pytest.raises(ValueError, match="named"):
        build_benchmark_indexes([bench[0], bench[0]])


def test_real_eval_sets_every_planted_item_found(corpora_dir, english_docs):
    """Items of the shipped GSM8K and MMLU files planted in real pages are all found; the pages alone
    overlap with nothing."""
    root = corpora_dir / "a5_eval_data"
    if not root.is_dir():
        pytest.skip(f"{root} not found")
    paths = [root / "gsm8k" / "test.jsonl", root / "mmlu" / "val"]  # val: 1,531 items, a tenth of test
    idx = build_benchmark_indexes(paths)
    rng = random.Random(1)
    assert set(idx) == {"gsm8k/test", "mmlu/val"}
    for path, name in zip(paths, ("gsm8k/test", "mmlu/val")):
        items = [t for t in benchmark_items(path) if len(t.split()) >= 20]
        for item in rng.sample(items, 10):
            page = rng.choice(english_docs) + "\n" + item + "\n" + rng.choice(english_docs)
            assert name in contamination(page, idx), item[:80]
    assert sum(bool(contamination(d, idx)) for d in english_docs) == 0
