"""GSM8K: loading, prompts, generation to a stop string, answer extraction through the alignment verifier."""

import json

import pytest

from lm.eval.generation import cut_at_stop, generate_until
from lm.eval.gsm8k import chat_ids, chat_messages, evaluate_gsm8k, gold_number, load_gsm8k, plain_prompt, score
from lm.eval.paths import default_eval_data_dir
from lm.inference.sampling import SamplingConfig
from tests.eval.models import byte_tokenizer, chain_model, config
from tests.inference.tiny import random_params

PROBLEMS = [("What is 6 * 7?", "6 * 7 = <<6*7=42>>42\n#### 42"), ("How many?", "#### 7"),
            ("Big one?", "It is 1000 + 42 = 1042.\n#### 1,042"), ("Forty-two again?", "#### 42")]


@pytest.fixture(scope="module")
def gsm_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("gsm8k")
    for split in ("train", "test"):
        with (root / f"{split}.jsonl").open("w") as f:
            for q, a in PROBLEMS:
                f.write(json.dumps({"question": f"{split}: {q}", "answer": a}) + "\n")
    return root


def verifier():
    return pytest.importorskip("lm.eval.verifiers", reason="the verifier (lm/eval/verifiers.py) is absent")


@pytest.mark.parametrize("completion, gold, expected, correct", [
    ("6 * 7 = 42\n#### 42", "42", "42", True),
    ("She pays 1,000 + 234 = $1,234.\n#### 1,234", "1234", "1234", True),
    ("The temperature falls to -5 degrees.\n#### -5", "-5", "-5", True),
    ("Each costs 7 / 2 = 3.5 dollars.\n#### 3.5", "3.5", "3.5", True),
    ("#### 3.50", "3.5", "3.5", True),
    ("#### 41", "42", "41", False),
    ("I do not know.", "42", None, False),
])
def test_answer_extraction_through_the_verifier(completion, gold, expected, correct):
    v = verifier()
    pred, ok = score(completion, gold)
    assert ok is correct
    if expected is None:
        assert pred is None
    else:
        assert v.numbers_equal(pred, expected)


def test_gold_numbers_and_loading(gsm_dir, tmp_path):
    problems = load_gsm8k(gsm_dir / "test.jsonl")
    assert [gold_number(p["answer"]) for p in problems] == ["42", "7", "1042", "42"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "q", "answer": "no marker"}) + "\n")
    with pytest.raises(ValueError, match="#### N"):
        load_gsm8k(bad)
    with pytest.raises(FileNotFoundError, match="data-dir"):
        load_gsm8k(tmp_path / "missing.jsonl")


def test_prompts():
    shots = [{"question": "1+1?", "answer": "1+1=2\n#### 2"}]
    assert plain_prompt("2+2?", shots) == "Question: 1+1?\nAnswer: 1+1=2\n#### 2\n\nQuestion: 2+2?\nAnswer:"
    msgs = chat_messages("2+2?", shots)
    assert [m["role"] for m in msgs] == ["user", "assistant", "user"] and msgs[-1]["content"] == "2+2?"

    class Templated:
        def encode(self, text):
            return list(text.encode())

        def apply_chat_template(self, messages, add_generation_prompt=False):
            return "".join(f"<{m['role']}>{m['content']}" for m in messages) + ("<assistant>" * add_generation_prompt)

    assert bytes(chat_ids(Templated(), msgs)).decode().endswith("<user>2+2?<assistant>")
    with pytest.raises(ValueError, match="no chat template"):
        chat_ids(byte_tokenizer(), msgs)


def test_cut_at_stop():
    assert cut_at_stop("42\n\nQuestion: next", ("Question:", "\n\n")) == ("42", True)
    assert cut_at_stop("no stop here", ("Question:",)) == ("no stop here", False)


def test_planted_model_answers_42_end_to_end(gsm_dir):
    verifier()
    # after "Answer:" the chain writes " 42" then newlines (a blank line stops generation)
    plant = {ord(":"): ord(" "), ord(" "): ord("4"), ord("4"): ord("2"), ord("2"): ord("\n"), ord("\n"): ord("\n")}
    params, c = chain_model(plant, context_length=512)
    r = evaluate_gsm8k(params, c, byte_tokenizer(), gsm_dir, shots=1, batch_size=3,
                       sampling=SamplingConfig(temperature=0, max_new_tokens=24))
    assert [x["prediction"] for x in r["records"]] == [" 42"] * 4
    assert [x["correct"] for x in r["records"]] == [True, False, False, True]
    assert r["accuracy"] == 0.5 and r["n"] == 4 and r["extracted"] == 4
    assert r["records"][0]["prompt"].startswith("Question: train: What is 6 * 7?")


def test_generation_is_deterministic_for_a_seed_and_greedy_ignores_batching():
    c = config(context_length=64, sliding_window=0)
    params = random_params(c, 5)
    tok = byte_tokenizer()
    prompts = [tok.encode(p) for p in ("Once upon", "The cat sat on", "A")]
    hot = SamplingConfig(temperature=1.0, max_new_tokens=12, seed=3)
    a = generate_until(params, c, tok, prompts, hot, batch_size=3)
    assert a == generate_until(params, c, tok, prompts, hot, batch_size=3)
    greedy = SamplingConfig(temperature=0, max_new_tokens=12)
    together = generate_until(params, c, tok, prompts, greedy, batch_size=3, chunk=5)
    alone = [generate_until(params, c, tok, [p], greedy, batch_size=3)[0] for p in prompts]
    assert together == alone


def test_real_gsm8k_files():
    d = default_eval_data_dir() / "gsm8k"
    if not (d / "test.jsonl").is_file():
        pytest.skip(f"GSM8K not found at {d} (set LM_SHARED_DIR to the shared/ folder)")
    test = load_gsm8k(d / "test.jsonl")
    assert len(test) == 1319 and gold_number(test[0]["answer"]) == "18"


def test_gold_answer_bits_per_byte_match_a_full_forward_pass(gsm_dir):
    import math

    import numpy as np

    from lm.eval.gsm8k import gold_bpb_records, summarize_bpb
    from tests.eval.test_scoring import _brute

    c = config(context_length=128, sliding_window=0)
    params, tok = random_params(c, 8), byte_tokenizer()
    problems, shots = load_gsm8k(gsm_dir / "test.jsonl")[:3], []  # 0-shot: short prompts, one compiled shape
    records = gold_bpb_records(params, c, tok, problems, shots, "test", batch_size=2)
    for p, r in zip(problems, records):
        prompt = plain_prompt(p["question"], shots)
        answer = " " + p["answer"]
        nll = -_brute(params, c, tok.encode(prompt), tok.encode(answer))
        assert r["bytes"] == len(answer.encode()) and r["nll"] == pytest.approx(nll, rel=1e-5)
        assert r["bits_per_byte"] == pytest.approx(nll / math.log(2) / r["bytes"], rel=1e-5)
    s = summarize_bpb(records)
    total = sum(r["nll"] for r in records) / math.log(2) / sum(r["bytes"] for r in records)
    assert s["bits_per_byte"] == pytest.approx(total) and s["n"] == 3
    assert s["mean_bits_per_byte"] == pytest.approx(np.mean([r["bits_per_byte"] for r in records]))
