"""MMLU (Hendrycks et al. 2021): 57 subjects of 4-way multiple choice, k-shot prompts from `dev`.

    questions = load_mmlu(data_dir / "mmlu", split="val")          # [MMLUQuestion, ...]
    examples = mmlu_examples(data_dir / "mmlu", "val", shots=5, fmt="letter")
    result = evaluate_mmlu(params, config, tokenizer, data_dir / "mmlu", shots=5)

The folder holds `{dev,val,test}/{subject}_{split}.csv`, rows `question, A, B,
C, D, answer-letter`, no header. Two prompt formats:

- `letter` (the paper's, and lm-evaluation-harness's `mmlu`): the header "The
  following are multiple choice questions (with answers) about {subject}.",
  k solved dev questions with their lettered options and "Answer: X", then
  the question and "Answer:"; the choices scored are " A", " B", " C", " D".
- `cloze` (lm-evaluation-harness's `mmlu_continuation`; the kind of prompt
  SmolLM2's authors report for small models): "The following are questions
  (with answers) about {subject}." then "Question: ...\\nAnswer:" with no
  options shown; each answer's text is scored, and acc_norm (per character) is
  the headline number.

Both follow lm-evaluation-harness 0.4 character for character (questions
stripped of surrounding whitespace, blank lines between examples), so that
`experiments.eval_harness_check` can compare the two on the same prompts.

Reported: per-subject accuracy, the macro average over subjects, and the
micro average over questions, each with its standard error and a bootstrap
95% interval (`lm.eval.stats`).
"""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

from lm.eval.multiple_choice import Choice, evaluate_choices
from lm.eval.stats import accuracy_summary
from lm.model import ModelConfig

LETTERS = ("A", "B", "C", "D")
SPLITS = ("dev", "val", "test")
FORMATS = ("letter", "cloze")


@dataclasses.dataclass(frozen=True)
class MMLUQuestion:
    subject: str
    question: str
    options: tuple[str, str, str, str]
    answer: int  # index into options
    index: int  # row in the subject's CSV


def subjects(mmlu_dir: str | Path, split: str = "dev") -> list[str]:
    """Subject names with a CSV for `split`, sorted."""
    d = Path(mmlu_dir) / split
    if not d.is_dir():
        raise FileNotFoundError(f"MMLU split folder {str(d)!r} not found; --data-dir must hold mmlu/{{dev,val,test}}/ "
                                "(e.g. ../shared/data/corpora/a5_eval_data)")
    names = sorted(p.name[: -len(f"_{split}.csv")] for p in d.glob(f"*_{split}.csv"))
    if not names:
        raise FileNotFoundError(f"no *_{split}.csv files in {str(d)!r}")
    return names


def load_subject(mmlu_dir: str | Path, subject: str, split: str) -> list[MMLUQuestion]:
    path = Path(mmlu_dir) / split / f"{subject}_{split}.csv"
    if not path.is_file():
        raise FileNotFoundError(f"MMLU file {str(path)!r} not found (unknown subject {subject!r}?)")
    out = []
    with path.open(newline="", encoding="utf-8") as f:
        for i, row in enumerate(csv.reader(f)):
            if len(row) != 6 or row[5].strip() not in LETTERS:
                raise ValueError(f"{path}:{i + 1}: expected question, 4 options and an answer letter A-D, got {row!r}")
            out.append(MMLUQuestion(subject, row[0], tuple(row[1:5]), LETTERS.index(row[5].strip()), i))
    return out


def load_mmlu(mmlu_dir: str | Path, split: str = "val", only: tuple[str, ...] = ()) -> list[MMLUQuestion]:
    """All questions of `split` (subjects in alphabetical order), or of the subjects in `only`."""
    if split not in SPLITS:
        raise ValueError(f"unknown MMLU split {split!r}; choose one of {SPLITS}")
    names = subjects(mmlu_dir, split)
    unknown = sorted(set(only) - set(names))
    if unknown:
        raise ValueError(f"unknown MMLU subject(s) {unknown}; available: {names}")
    return [q for s in names if not only or s in only for q in load_subject(mmlu_dir, s, split)]


def _topic(subject: str) -> str:
    return subject.replace("_", " ")


def _letter_block(q: MMLUQuestion) -> str:
    options = "".join(f"{letter}. {opt}\n" for letter, opt in zip(LETTERS, q.options))
    return f"{q.question.strip()}\n{options}Answer:"


def prompt_parts(q: MMLUQuestion, shots: list[MMLUQuestion], fmt: str = "letter") -> tuple[str, str]:
    """(the header and solved examples, which a subject's questions share; the question's own part)."""
    if fmt == "letter":
        head = f"The following are multiple choice questions (with answers) about {_topic(q.subject)}.\n\n"
        solved = "".join(f"{_letter_block(s)} {LETTERS[s.answer]}\n\n" for s in shots)
        return head + solved, _letter_block(q)
    if fmt == "cloze":
        head = f"The following are questions (with answers) about {_topic(q.subject)}.\n\n"
        solved = "".join(f"Question: {s.question.strip()}\nAnswer: {s.options[s.answer]}\n\n" for s in shots)
        return head + solved, f"Question: {q.question.strip()}\nAnswer:"
    raise ValueError(f"unknown MMLU format {fmt!r}; choose one of {FORMATS}")


def format_prompt(q: MMLUQuestion, shots: list[MMLUQuestion], fmt: str = "letter") -> str:
    """The prompt text for question `q` after the solved examples `shots`."""
    return "".join(prompt_parts(q, shots, fmt))


def interleave(questions: list[MMLUQuestion]) -> list[MMLUQuestion]:
    """Round-robin over subjects (first question of each subject, then the second, ...), so that
    `--limit N` samples every subject rather than the first few alphabetically."""
    by_subject: dict[str, list[MMLUQuestion]] = {}
    for q in questions:
        by_subject.setdefault(q.subject, []).append(q)
    lists = list(by_subject.values())
    return [lst[i] for i in range(max(map(len, lists), default=0)) for lst in lists if i < len(lst)]


def mmlu_examples(mmlu_dir: str | Path, split: str = "val", shots: int = 5, fmt: str = "letter",
                  limit: int | None = None, only: tuple[str, ...] = ()) -> list[Choice]:
    """`Choice` examples with k-shot prompts; `limit` keeps the first N in round-robin subject order."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown MMLU format {fmt!r}; choose one of {FORMATS}")
    if shots < 0:
        raise ValueError(f"shots must be >= 0, got {shots}")
    questions = interleave(load_mmlu(mmlu_dir, split, only))
    if limit is not None:
        questions = questions[:limit]
    dev: dict[str, list[MMLUQuestion]] = {}
    out = []
    for q in questions:
        if q.subject not in dev:
            dev[q.subject] = load_subject(mmlu_dir, q.subject, "dev") if shots else []
            if len(dev[q.subject]) < shots:
                raise ValueError(f"subject {q.subject!r} has only {len(dev[q.subject])} dev questions; "
                                 f"use --shots {len(dev[q.subject])} or fewer")
        pool = dev[q.subject] if split != "dev" else [s for s in dev[q.subject] if s.index != q.index]
        shot_qs = pool[:shots]
        choices = tuple(f" {x}" for x in (LETTERS if fmt == "letter" else q.options))
        shared, own = prompt_parts(q, shot_qs, fmt)
        out.append(Choice(shared + own, choices, q.answer, shared=shared,
                          meta={"id": f"mmlu/{split}/{q.subject}/{q.index}", "subject": q.subject,
                                "index": q.index, "question": q.question, "gold_letter": LETTERS[q.answer]}))
    return out


def summarize(records: list[dict], key: str = "correct") -> dict:
    """{"per_subject": {subject: {"acc", "acc_norm", "n", "se", "ci95"}}, "macro_acc", "micro_acc", ... }, each
    accuracy with its standard error (`_se`) and bootstrap 95% interval (`_ci95`; macro: stratified by subject)."""
    per: dict[str, dict] = {}
    for r in records:
        s = per.setdefault(r["subject"], {"correct": 0, "correct_norm": 0, "n": 0})
        s["correct"] += r["correct"]
        s["correct_norm"] += r["correct_norm"]
        s["n"] += 1
    per_subject = {}
    for k, v in sorted(per.items()):
        err = accuracy_summary([r["correct"] for r in records if r["subject"] == k])
        per_subject[k] = {"acc": v["correct"] / v["n"], "acc_norm": v["correct_norm"] / v["n"], "n": v["n"],
                          "se": err["se"], "ci95": err["ci95"]}
    n = len(records)
    out = {"per_subject": per_subject,
           "macro_acc": sum(v["acc"] for v in per_subject.values()) / len(per_subject),
           "macro_acc_norm": sum(v["acc_norm"] for v in per_subject.values()) / len(per_subject),
           "micro_acc": sum(r["correct"] for r in records) / n,
           "micro_acc_norm": sum(r["correct_norm"] for r in records) / n,
           "n": n, "subjects": len(per_subject)}
    subjects = [r["subject"] for r in records]
    for suffix, field in (("", "correct"), ("_norm", "correct_norm")):
        err = accuracy_summary([r[field] for r in records], strata=subjects)
        out[f"micro_acc{suffix}_se"], out[f"micro_acc{suffix}_ci95"] = err["se"], err["ci95"]
        out[f"macro_acc{suffix}_se"], out[f"macro_acc{suffix}_ci95"] = err["macro_se"], err["macro_ci95"]
    return out


def evaluate_mmlu(params, config: ModelConfig, tokenizer, mmlu_dir: str | Path, split: str = "val", shots: int = 5,
                  fmt: str = "letter", limit: int | None = None, only: tuple[str, ...] = (), batch_size: int = 8,
                  progress: bool = False) -> dict:
    """Run MMLU; returns summarize(...) plus "records" (one per question)."""
    examples = mmlu_examples(mmlu_dir, split, shots, fmt, limit, only)
    result = evaluate_choices(params, config, tokenizer, examples, batch_size, progress, desc=f"mmlu {split}")
    for r in result["records"]:
        r["pred_letter"] = LETTERS[r["pred"]]
    return {**summarize(result["records"]), "records": result["records"]}
