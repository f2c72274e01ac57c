"""Verifiable rewards: exact numeric answers (GSM8K, generated arithmetic) and countdown expressions.

    extract_answer("... so she has 1,234 left.\\n#### 1,234")   # "1234"
    numbers_equal("42.0", "42")                                 # True
    gsm8k_reward(completion, "18")                              # 1.0 or 0.0
    problems = arithmetic_problems(100, seed=0, digits=2)       # [{"question": "12+34=", "answer": "46"}]

The evaluation code (`lm.eval.gsm8k`) and the alignment rewards (`lm.align.tasks`) score with the
same functions, so an evaluation number and an RL reward always agree on what counts as correct.
Everything here is plain Python on strings: rewards are computed on decoded
text outside jit.
"""

from __future__ import annotations

import ast
import random
import re
from collections import Counter
from decimal import Decimal, InvalidOperation
from fractions import Fraction

# A number: optional sign, digits with optional thousands commas ("1,234"), optional decimals.
# Thousands groups must be exactly 3 digits, so a list "3,4" is two numbers, not 34.
_NUMBER = r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"
# Not inside a word or number; a minus is a sign only where it cannot be subtraction ("3-5" gives 3, 5).
_NUMBER_RE = re.compile(rf"(?<![\w.])(?:(?<![)])-)?{_NUMBER.removeprefix('-?')}")
_HASHES_RE = re.compile(rf"####\s*\$?\s*({_NUMBER})")
_ANSWER_TAG_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def normalize_number(s: str) -> str:
    """'1,234' -> '1234', '-3.50' -> '-3.5', '42.0' -> '42'. Raises ValueError if `s` is not a number."""
    s = s.strip().replace(",", "").lstrip("$")
    try:
        d = Decimal(s)
    except InvalidOperation:
        raise ValueError(f"not a number: {s!r}") from None
    if not d.is_finite():
        raise ValueError(f"not a finite number: {s!r}")
    if d == d.to_integral_value():
        return str(int(d))
    return format(d.normalize(), "f")


def extract_answer(text: str) -> str | None:
    """The final numeric answer in `text`, normalised (commas removed, "42.0" -> "42"), or None.

    Prefers the number after the last "####" (GSM8K's convention); otherwise
    falls back to the last number anywhere in the text.
    """
    hashes = _HASHES_RE.findall(text)
    if hashes:
        return normalize_number(hashes[-1])
    numbers = _NUMBER_RE.findall(text)
    return normalize_number(numbers[-1]) if numbers else None


def numbers_equal(pred: str | float | int | None, gold: str | float | int, rel_tol: float = 1e-9) -> bool:
    """Whether `pred` and `gold` are the same number ("42.0" == "42", "1,234" == "1234").

    Compared exactly as fractions when both parse, so "0.1" vs "0.10" is equal
    and "0.3" vs "0.30000001" is not (unless `rel_tol` is loosened). Unparsable
    input is simply not equal.
    """
    if pred is None:
        return False
    try:
        p = Fraction(normalize_number(str(pred)))
        g = Fraction(normalize_number(str(gold)))
    except ValueError:
        return False
    return abs(p - g) <= Fraction(rel_tol) * max(abs(g), Fraction(1)) if rel_tol else p == g


def gsm8k_reward(response: str, gold: str) -> float:
    """1.0 if the final number in `response` equals `gold`, else 0.0.

    `gold` is a number ("18") or a full GSM8K reference solution ending in "#### 18".
    """
    if "####" in gold:
        gold = gold.rsplit("####", 1)[1]
    return float(numbers_equal(extract_answer(response), gold))


def format_reward(response: str, style: str = "gsm8k") -> float:
    """1.0 if `response` states its answer in the expected form, else 0.0.

    style="gsm8k": a line "#### <number>" and nothing but whitespace after it.
    style="tags":  "<answer>...</answer>" containing a number (R1-Zero style).
    """
    if style == "gsm8k":
        return float(re.search(rf"####\s*\$?\s*{_NUMBER}\s*$", response) is not None)
    if style == "tags":
        m = _ANSWER_TAG_RE.search(response)
        return float(m is not None and _NUMBER_RE.search(m.group(1)) is not None)
    raise ValueError(f"unknown format style {style!r}; use 'gsm8k' or 'tags'")


# --- generated arithmetic -----------------------------------------------------------------------

_OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}


def arithmetic_problems(n: int, seed: int, digits: int = 2, ops: str = "+", reverse: bool = False,
                        exclude: set | frozenset = frozenset()) -> list[dict]:
    """`n` problems "a<op>b=" with `digits`-digit operands, deterministic in `seed`.

    Returns [{"question": "37+58=", "answer": "95", "value": 95, "a": 37, "b": 58, "op": "+", "reverse": False}].
    With `reverse`, "answer" is the result's digits least-significant first ("59" for 95; "001" for
    100), a format small transformers learn far faster (Lee et al. 2023, "Teaching Arithmetic to
    Small Transformers"); it is then checked as an exact digit string. Questions in `exclude`
    (e.g. a held-out set's) are skipped.
    """
    if n < 0 or digits < 1:
        raise ValueError(f"need n >= 0 and digits >= 1, got n={n}, digits={digits}")
    bad = set(ops) - set(_OPS)
    if not ops or bad:
        raise ValueError(f"ops must be drawn from {''.join(_OPS)!r}, got {ops!r}")
    rng = random.Random(seed)
    lo, hi = 10 ** (digits - 1) if digits > 1 else 0, 10**digits - 1
    if len(exclude) >= len(ops) * (hi - lo + 1) ** 2:
        raise ValueError("every possible question is excluded")
    out = []
    while len(out) < n:
        a, b, op = rng.randint(lo, hi), rng.randint(lo, hi), rng.choice(ops)
        question = f"{a}{op}{b}="
        if question in exclude:
            continue
        value = _OPS[op](a, b)
        answer = ("-" if value < 0 else "") + str(abs(value))[::-1] if reverse else str(value)
        out.append({"question": question, "answer": answer, "value": value, "a": a, "b": b, "op": op,
                    "reverse": reverse})
    return out


def arithmetic_reward(response: str, gold: str, exact: bool = False) -> float:
    """1.0 if the first number of `response` equals `gold` (the model answers right after "="), else 0.0.

    `exact` compares digit strings ("001" is not "1"), as reversed answers need.
    """
    m = _NUMBER_RE.search(response)
    if m is None:
        return 0.0
    return float(m.group(0) == gold if exact else numbers_equal(m.group(0), gold))


# --- countdown ----------------------------------------------------------------------------------

def countdown_problems(n: int, seed: int, n_numbers: int = 4, max_number: int = 25) -> list[dict]:
    """`n` solvable countdown problems: reach "target" with + - * / over a subset of "numbers".

    The target is made by combining a random subset of the numbers with random
    operators, so every problem has at least one solution ("solution").
    """
    if n_numbers < 2:
        raise ValueError(f"countdown needs at least 2 numbers, got {n_numbers}")
    rng = random.Random(seed)
    out = []
    while len(out) < n:
        numbers = [rng.randint(1, max_number) for _ in range(n_numbers)]
        used = rng.sample(numbers, rng.randint(2, n_numbers))
        expr = str(used[0])
        for x in used[1:]:
            op = rng.choice("+-*")
            expr = f"({expr}){op}{x}" if op == "*" else f"{expr}{op}{x}"
        target = _safe_eval(expr)
        if target is None or target <= 0 or target.denominator != 1:
            continue
        out.append({"numbers": numbers, "target": int(target), "solution": expr,
                    "question": f"Using the numbers {numbers}, write an expression equal to {int(target)}."})
    return out


def _safe_eval(expr: str) -> Fraction | None:
    """Exact value of an arithmetic expression over integers with + - * / and parentheses, else None."""
    try:
        tree = ast.parse(expr, mode="eval")
    except (SyntaxError, ValueError):
        return None

    def ev(node):
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return Fraction(node.value)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -ev(node.operand)
        if isinstance(node, ast.BinOp) and type(node.op) in (ast.Add, ast.Sub, ast.Mult, ast.Div):
            a, b = ev(node.left), ev(node.right)
            if isinstance(node.op, ast.Add):
                return a + b
            if isinstance(node.op, ast.Sub):
                return a - b
            if isinstance(node.op, ast.Mult):
                return a * b
            if b == 0:
                raise ZeroDivisionError
            return a / b
        raise ValueError("disallowed syntax")

    try:
        return ev(tree)
    except (ValueError, ZeroDivisionError, RecursionError):
        return None


def countdown_reward(response: str, numbers: list[int], target: int) -> float:
    """1.0 if `response` (or its <answer>...</answer> part) is an expression that uses each given
    number at most once, only + - * / and parentheses, and equals `target`; else 0.0."""
    m = _ANSWER_TAG_RE.search(response)
    expr = (m.group(1) if m else response).strip().split("=")[0].strip()
    if not expr or len(expr) > 200:
        return 0.0
    used = Counter(int(t) for t in re.findall(r"\d+", expr))
    if used - Counter(numbers):
        return 0.0
    value = _safe_eval(expr)
    return float(value is not None and value == target)
