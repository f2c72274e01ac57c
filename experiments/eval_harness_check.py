"""Agreement with lm-evaluation-harness: the same MMLU questions, prompts and few-shot examples scored
by lm-eval's Hugging Face backend and by `lm`, answer by answer, with the wall time of each.

    python -m experiments.eval_harness_check --hf-dir runs/smollm2-135m-instruct
    python -m experiments.eval_harness_check --hf-dir DIR --subjects anatomy astronomy --mmlu-format cloze
    from experiments.eval_harness_check import HarnessCheckConfig, check
    report = check(HarnessCheckConfig(hf_dir=DIR))   # {"agree", "n", "max_abs_loglik_diff", "seconds", ...}

Nothing is downloaded. The shared MMLU CSV files are written as JSON lines
(strings stay strings: a CSV reader would turn "None" or "01" into other
values) into a scratch folder together with one lm-eval task definition per
subject: `dataset_path: json` over those files, the `dev` split as k-shot
examples (first n, as lm-eval's `mmlu` does) and lm-eval's own MMLU prompt
template (`mmlu`, or `mmlu_continuation` for `--mmlu-format cloze`). lm-eval
runs them with `model="hf"` (transformers, float32, CPU) and logs every
sample; `lm` runs `lm.eval.mmlu` on the same questions. Reported: the chosen
answer (argmax log-likelihood) agreeing, the largest log-likelihood
difference over all choices, whether the prompts are the same text, and each
side's wall time (model loading included for both).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

SUBJECTS = ("abstract_algebra", "anatomy", "astronomy", "business_ethics", "college_biology")


@dataclasses.dataclass(frozen=True)
class HarnessCheckConfig:
    hf_dir: str = dataclasses.field(default="", metadata={"help": "Hugging Face model folder (safetensors)"})
    data_dir: str = dataclasses.field(default="", metadata={"help": "folder with mmlu/ (default: shared)"})
    split: str = "val"
    shots: int = 5
    subjects: tuple[str, ...] = SUBJECTS
    mmlu_format: str = dataclasses.field(default="letter", metadata={"help": "letter (lm-eval mmlu) or cloze"})
    batch_size: int = 8
    out: str = dataclasses.field(default="", metadata={"help": "write the report as JSON here"})

    def __post_init__(self):
        if not self.hf_dir:
            raise ValueError("--hf-dir is required (e.g. runs/smollm2-135m-instruct)")
        if self.mmlu_format not in ("letter", "cloze"):
            raise ValueError(f"--mmlu-format must be letter or cloze, got {self.mmlu_format!r}")
        if not self.subjects or self.shots < 0 or self.batch_size < 1:
            raise ValueError("give at least one subject, --shots >= 0 and --batch-size >= 1")


def _task_yaml(name: str, subject: str, files: dict[str, Path], fmt: str) -> str:
    """An lm-eval task over local JSON lines, with lm-eval 0.4's MMLU template for `fmt`."""
    topic = subject.replace("_", " ")
    common = {"task": name, "dataset_path": "json",
              "dataset_kwargs": {"data_files": {k: str(v) for k, v in files.items()}},
              "test_split": "eval", "fewshot_split": "dev", "fewshot_config": {"sampler": "first_n"},
              "output_type": "multiple_choice",
              "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}]}
    if fmt == "letter":  # lm_eval/tasks/mmlu/default/_default_template_yaml
        spec = {"description": f"The following are multiple choice questions (with answers) about {topic}.\n\n",
                "doc_to_text": "{{question.strip()}}\nA. {{choices[0]}}\nB. {{choices[1]}}\nC. {{choices[2]}}\n"
                               "D. {{choices[3]}}\nAnswer:",
                "doc_to_choice": ["A", "B", "C", "D"], "doc_to_target": "answer"}
    else:  # lm_eval/tasks/mmlu/continuation/_continuation_template_yaml
        spec = {"description": f"The following are questions (with answers) about {topic}.\n\n",
                "doc_to_text": "Question: {{question.strip()}}\nAnswer:", "doc_to_choice": "{{choices}}",
                "doc_to_target": "{{answer}}"}
    return json.dumps({**common, **spec}, indent=1)  # JSON is YAML


def write_tasks(mmlu_dir: Path, subjects, split: str, fmt: str, folder: Path) -> dict[str, str]:
    """One JSON-lines file per subject and split, and one task file each; returns {subject: task name}."""
    from lm.eval.mmlu import load_subject

    names = {}
    for subject in subjects:
        files = {}
        for part, src in (("eval", split), ("dev", "dev")):
            path = folder / f"{subject}_{src}.jsonl"
            with path.open("w", encoding="utf-8") as f:
                for q in load_subject(mmlu_dir, subject, src):
                    f.write(json.dumps({"question": q.question, "choices": list(q.options), "answer": q.answer}) + "\n")
            files[part] = path
        names[subject] = f"lmcheck_mmlu_{fmt}_{subject}"
        (folder / f"{names[subject]}.yaml").write_text(_task_yaml(names[subject], subject, files, fmt))
    return names


def run_harness(config: HarnessCheckConfig, mmlu_dir: Path) -> tuple[dict, float]:
    """({subject: [sample, ...]}, seconds) from lm-eval's HF backend on the local task definitions."""
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import lm_eval
    from lm_eval.tasks import TaskManager

    with tempfile.TemporaryDirectory(prefix="lmcheck-") as tmp:
        names = write_tasks(mmlu_dir, config.subjects, config.split, config.mmlu_format, Path(tmp))
        t0 = time.perf_counter()
        out = lm_eval.simple_evaluate(
            model="hf", model_args=f"pretrained={config.hf_dir},dtype=float32,device=cpu",
            tasks=list(names.values()), num_fewshot=config.shots, batch_size=config.batch_size,
            log_samples=True, task_manager=TaskManager(include_path=tmp, include_defaults=False))
        seconds = time.perf_counter() - t0
    return {s: out["samples"][n] for s, n in names.items()}, seconds


def run_ours(config: HarnessCheckConfig, mmlu_dir: Path) -> tuple[dict, float]:
    """({subject/index: record}, seconds) from `lm` (HF checkpoint loaded by lm.interop) on the same questions."""
    from lm.eval.mmlu import mmlu_examples
    from lm.eval.multiple_choice import evaluate_choices
    from lm.interop import load_hf

    t0 = time.perf_counter()
    params, model_config, tokenizer = load_hf(config.hf_dir, dtype="float32")
    examples = mmlu_examples(mmlu_dir, config.split, config.shots, config.mmlu_format, only=config.subjects)
    r = evaluate_choices(params, model_config, tokenizer, examples, config.batch_size, progress=True, desc="lm")
    seconds = time.perf_counter() - t0
    return {f"{x['subject']}/{x['index']}": x for x in r["records"]}, seconds


def check(config: HarnessCheckConfig) -> dict:
    import numpy as np

    from lm.eval.paths import default_eval_data_dir

    mmlu_dir = (Path(config.data_dir) if config.data_dir else default_eval_data_dir()) / "mmlu"
    ours, ours_s = run_ours(config, mmlu_dir)
    theirs, theirs_s = run_harness(config, mmlu_dir)
    rows = []
    for subject, samples in theirs.items():
        for smp in samples:
            rec = ours[f"{subject}/{smp['doc_id']}"]
            ll = [float(r[0][0]) for r in smp["resps"]]
            prompt = smp["arguments"][0][0] if "arguments" in smp else None
            rows.append({"subject": subject, "index": smp["doc_id"], "gold": rec["gold"],
                         "ours": rec["pred"], "harness": int(np.argmax(ll)),
                         "max_abs_loglik_diff": float(np.max(np.abs(np.asarray(ll) - rec["logprobs"]))),
                         "same_prompt": None if prompt is None else prompt == rec["prompt"]})
    n = len(rows)
    per_subject = {s: {"n": sum(r["subject"] == s for r in rows),
                       "agree": sum(r["subject"] == s and r["ours"] == r["harness"] for r in rows)}
                   for s in config.subjects}
    return {"n": n, "agree": sum(r["ours"] == r["harness"] for r in rows),
            "same_prompt": sum(bool(r["same_prompt"]) for r in rows),
            "max_abs_loglik_diff": max(r["max_abs_loglik_diff"] for r in rows),
            "acc_ours": sum(r["ours"] == r["gold"] for r in rows) / n,
            "acc_harness": sum(r["harness"] == r["gold"] for r in rows) / n,
            "seconds": {"lm": ours_s, "lm_eval_hf": theirs_s}, "per_subject": per_subject, "rows": rows,
            "config": dataclasses.asdict(config)}


def summary(report: dict) -> str:
    s = report["seconds"]
    return (f"{report['agree']}/{report['n']} chosen answers agree ({100 * report['agree'] / report['n']:.1f}%); "
            f"prompts identical on {report['same_prompt']}/{report['n']}; largest log-likelihood difference "
            f"{report['max_abs_loglik_diff']:.2e}; accuracy lm {100 * report['acc_ours']:.1f}%, lm-eval "
            f"{100 * report['acc_harness']:.1f}%; wall time lm {s['lm']:.0f} s, lm-eval HF {s['lm_eval_hf']:.0f} s "
            f"({s['lm_eval_hf'] / s['lm']:.2f}x)")


def main(argv=None) -> int:
    from lm.config import add_dataclass_args, dataclass_from_args

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dataclass_args(parser, HarnessCheckConfig)
    try:
        config = dataclass_from_args(HarnessCheckConfig, parser.parse_args(argv))
        report = check(config)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("| subject | questions | same answer |\n|---|---:|---:|")
    for subject, v in report["per_subject"].items():
        print(f"| {subject} | {v['n']} | {v['agree']} |")
    print("\n" + summary(report))
    if config.out:
        Path(config.out).parent.mkdir(parents=True, exist_ok=True)
        Path(config.out).write_text(json.dumps(report, indent=2) + "\n")
    ok = report["agree"] >= 0.99 * report["n"] and report["max_abs_loglik_diff"] < 1e-3
    return 0 if ok else 1


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
