import pytest

from lm.align.tasks import ARITHMETIC, ARITHMETIC_CHAT, GSM8K_CHAT, Task, task_problems
from tests.align import tiny


def test_arithmetic_task_prompts_targets_and_scores():
    tok = tiny.tokenizer()
    p = task_problems(ARITHMETIC, "test", 3)[0]
    assert tok.decode(ARITHMETIC.prompt_ids(tok, p)) == p["question"]
    assert ARITHMETIC.target_ids(tok, p) == tok.encode(p["answer"]) + [256]
    assert ARITHMETIC.score(p["answer"], p) == 1.0
    assert ARITHMETIC.score(str(p["value"]), p) == (str(p["value"]) == p["answer"])  # reversed digits count


def test_chat_tasks_need_a_chat_template_and_their_end_token():
    tok = tiny.tokenizer()
    p = task_problems(ARITHMETIC_CHAT, "test", 1)[0]
    with pytest.raises(ValueError, match="chat template"):
        ARITHMETIC_CHAT.prompt_ids(tok, p)
    with pytest.raises(ValueError, match="not a special token"):
        ARITHMETIC_CHAT.stop_id(tok)
    assert ARITHMETIC_CHAT.score(f"{p['a']} + {p['b']} = {p['value']}", p) == 1.0  # the last number counts
    assert GSM8K_CHAT.score("so 3 + 4 = 7\n#### 7", {"answer": "... #### 7"}) == 1.0


def test_held_out_and_training_problems_never_overlap():
    test = {p["question"] for p in task_problems(ARITHMETIC, "test", 1000)}
    train = {p["question"] for p in task_problems(ARITHMETIC, "train", 20000)}
    assert not test & train
    with pytest.raises(ValueError, match="at most 1000"):
        task_problems(ARITHMETIC, "test", 1001)


def test_task_validation():
    with pytest.raises(ValueError, match="reward"):
        Task("x", reward="bleu")
    with pytest.raises(ValueError, match="source"):
        Task("x", source="web")
