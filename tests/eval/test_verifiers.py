import pytest
from hypothesis import given, strategies as st

from lm.eval.verifiers import (arithmetic_problems, arithmetic_reward, countdown_problems, countdown_reward,
                               extract_answer, format_reward, gsm8k_reward, normalize_number, numbers_equal)


@pytest.mark.parametrize("text, want", [
    ("Natalia sold 48/2 = 24 clips in May.\n#### 72", "72"),
    ("She has 1,234 apples.\n#### 1,234", "1234"),
    ("#### -7", "-7"),
    ("#### 3.50", "3.5"),
    ("#### $1,000,000", "1000000"),
    ("#### 12\nlater text 99", "12"),               # '####' wins over the last number
    ("first #### 5 then #### 6", "6"),              # the last '####'
    ("so the answer is 42.", "42"),                 # fallback; a sentence's full stop is not a decimal
    ("the temperature fell to -3.25 degrees", "-3.25"),
    ("3-5", "5"),                                   # a minus after a digit is subtraction, not a sign
    ("x = -5", "-5"),
    ("pairs 3,4", "4"),                             # '3,4' is not a thousands group
    ("total: 12,345,678.9 units", "12345678.9"),
    ("42.0", "42"),
    ("no numbers here", None),
    ("", None),
])
def test_extract_answer(text, want):
    assert extract_answer(text) == want


@pytest.mark.parametrize("a, b, want", [
    ("42", "42", True), ("42.0", "42", True), ("42.00", "42.0", True), ("1,234", "1234", True),
    ("-3", "-3.0", True), ("0.1", "0.10", True), ("41", "42", False), ("-42", "42", False),
    ("0.3", "0.30000001", False), (None, "1", False), ("abc", "1", False), ("1e3", "1000", True), (7, "7", True),
])
def test_numbers_equal(a, b, want):
    assert numbers_equal(a, b) is want


@given(st.integers(-10**12, 10**12))
def test_integer_roundtrip_with_commas(n):
    text = f"The total is {n:,}.\n#### {n:,}"
    assert extract_answer(text) == str(n)
    assert numbers_equal(extract_answer(f"answer {n:,}"), str(n))


def test_normalize_rejects_non_numbers():
    with pytest.raises(ValueError, match="not a number"):
        normalize_number("twelve")
    with pytest.raises(ValueError, match="finite"):
        normalize_number("inf")


def test_gsm8k_reward_and_full_reference():
    gold_solution = "Half of 48 is 24. 48 + 24 = 72\n#### 72"
    assert gsm8k_reward("48+24=72\n#### 72", gold_solution) == 1.0
    assert gsm8k_reward("so 72.0", "72") == 1.0
    assert gsm8k_reward("#### 71", gold_solution) == 0.0
    assert gsm8k_reward("I don't know", "72") == 0.0


def test_format_reward():
    assert format_reward("work...\n#### 42") == 1.0
    assert format_reward("work...\n#### 42  \n") == 1.0
    assert format_reward("the answer is 42") == 0.0
    assert format_reward("#### 42 and more words") == 0.0
    assert format_reward("<think>..</think><answer>17</answer>", style="tags") == 1.0
    assert format_reward("<answer>seventeen</answer>", style="tags") == 0.0
    with pytest.raises(ValueError, match="style"):
        format_reward("x", style="xml")


def test_arithmetic_problems_are_seeded_and_correct():
    a = arithmetic_problems(50, seed=3, digits=2, ops="+-*")
    assert a == arithmetic_problems(50, seed=3, digits=2, ops="+-*")
    assert a != arithmetic_problems(50, seed=4, digits=2, ops="+-*")
    for p in a:
        assert 10 <= p["a"] <= 99 and 10 <= p["b"] <= 99
        assert p["question"] == f"{p['a']}{p['op']}{p['b']}="
        assert int(p["answer"]) == eval(p["question"][:-1])      # independent check by Python itself
        assert arithmetic_reward(p["answer"] + "\n", p["answer"]) == 1.0
        assert arithmetic_reward(str(int(p["answer"]) + 1), p["answer"]) == 0.0
    assert arithmetic_reward("", "5") == 0.0
    assert arithmetic_reward("12 then 5", "5") == 0.0          # the first number is the answer
    with pytest.raises(ValueError, match="ops"):
        arithmetic_problems(1, 0, ops="/")


def test_countdown_problems_are_solvable_and_verified():
    probs = countdown_problems(30, seed=0)
    assert probs == countdown_problems(30, seed=0)
    for p in probs:
        assert countdown_reward(p["solution"], p["numbers"], p["target"]) == 1.0
        assert countdown_reward(f"<answer>{p['solution']}</answer>", p["numbers"], p["target"]) == 1.0
    assert countdown_reward("3*4", [3, 4, 5], 12) == 1.0
    assert countdown_reward("3*4 = 12", [3, 4, 5], 12) == 1.0
    assert countdown_reward("3*3+3", [3, 4, 5], 12) == 0.0       # reuses a number
    assert countdown_reward("12", [3, 4, 5], 12) == 0.0          # 12 is not given
    assert countdown_reward("3*4", [3, 4, 5], 13) == 0.0
    assert countdown_reward("(5-4)/0", [5, 4, 0], 1) == 0.0      # division by zero is wrong, not a crash
    assert countdown_reward("__import__('os')", [1], 1) == 0.0   # only arithmetic is evaluated
    assert countdown_reward("", [1], 1) == 0.0
    assert countdown_reward("20/5*3", [20, 5, 3], 12) == 1.0


def test_reversed_arithmetic_and_exclusion():
    held = arithmetic_problems(20, seed=1, reverse=True)
    exclude = {p["question"] for p in held}
    train = arithmetic_problems(500, seed=2, reverse=True, exclude=exclude)
    assert not exclude & {p["question"] for p in train}
    for p in held + train:
        assert p["answer"] == str(p["value"])[::-1] and p["value"] == p["a"] + p["b"]
    hundred = {"answer": "001"}
    assert arithmetic_reward("001", hundred["answer"], exact=True) == 1.0
    assert arithmetic_reward("1", hundred["answer"], exact=True) == 0.0   # reversed "1" is 1, not 100
    assert arithmetic_reward("1", "001") == 1.0                            # numerically equal
    minus = arithmetic_problems(200, seed=0, ops="-", reverse=True)
    neg = next(p for p in minus if p["value"] < 0)
    assert neg["answer"] == "-" + str(-neg["value"])[::-1]
