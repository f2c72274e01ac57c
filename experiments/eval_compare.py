"""Compare two evaluation results on the same examples: paired difference, paired bootstrap, McNemar.

    python -m experiments.eval_compare runs/eval/ckpt-1000-mmlu-val runs/eval/ckpt-2000-mmlu-val
    from experiments.eval_compare import compare
    report = compare("runs/eval/A", "runs/eval/B")   # {"metrics": {"correct": {...}}, "n", "only_in_a", ...}

Each folder is what `python -m experiments.eval` writes; examples are matched
by their id (`records.jsonl`), so the two runs may have scored them in any
order. For each 0/1 outcome both runs record (`correct`, and `correct_norm`
for multiple choice), it reports the accuracy of each, B minus A with its
standard error and paired-bootstrap 95% interval, the discordant counts and
McNemar's exact and chi-square p-values (`lm.eval.stats.paired_difference`).
Overall only: per-subject differences on tens of questions are mostly noise.
Exits 2 when the runs share no examples.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lm.eval.stats import N_BOOT, paired_difference

OUTCOMES = ("correct", "correct_norm")


def example_id(record: dict) -> str:
    """The id `experiments.eval` writes, or one made from the fields older records have."""
    if "id" in record:
        return str(record["id"])
    return f"{record.get('subject', '')}/{record['index']}"


def load_records(folder: str | Path) -> tuple[dict, dict[str, dict]]:
    """(results.json, {example id: record}) of an evaluation folder."""
    folder = Path(folder)
    for name in ("results.json", "records.jsonl"):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder / name} not found: give folders written by `python -m experiments.eval`")
    summary = json.loads((folder / "results.json").read_text())
    records = {}
    for line in (folder / "records.jsonl").read_text(encoding="utf-8").split("\n"):  # not splitlines: U+2028 in text
        if line.strip():
            r = json.loads(line)
            records[example_id(r)] = r
    return summary, records


def compare(a: str | Path, b: str | Path, n_boot: int = N_BOOT, seed: int = 0) -> dict:
    sa, ra = load_records(a)
    sb, rb = load_records(b)
    common = [k for k in ra if k in rb]
    if not common:
        raise ValueError(f"{a} and {b} share no examples (different tasks or splits?)")
    metrics = {}
    for field in OUTCOMES:
        if all(field in ra[k] and field in rb[k] for k in common):
            metrics[field] = paired_difference([ra[k][field] for k in common], [rb[k][field] for k in common],
                                               n_boot, seed)
    return {"a": str(a), "b": str(b), "model_a": sa.get("model"), "model_b": sb.get("model"),
            "task": sa.get("task"), "n": len(common), "only_in_a": len(ra) - len(common),
            "only_in_b": len(rb) - len(common), "metrics": metrics}


def markdown(report: dict) -> str:
    lines = [f"**{report['model_b']}** (B) minus **{report['model_a']}** (A) on {report['n']} shared "
             f"{report['task']} examples", "",
             "| outcome | A | B | B - A ± se | paired bootstrap 95% | only A right | only B right | McNemar exact p |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for field, d in report["metrics"].items():
        lo, hi = d["ci95"]
        lines.append(f"| {field} | {100 * d['acc_a']:.2f}% | {100 * d['acc_b']:.2f}% | {100 * d['diff']:+.2f} ± "
                     f"{100 * d['se']:.2f} | [{100 * lo:+.2f}, {100 * hi:+.2f}] | {d['only_a']} | {d['only_b']} | "
                     f"{d['mcnemar_p']:.3g} |")
    if report["only_in_a"] or report["only_in_b"]:
        lines += ["", f"({report['only_in_a']} examples only in A and {report['only_in_b']} only in B left out)"]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", help="result folder of model A (the baseline)")
    parser.add_argument("b", help="result folder of model B")
    parser.add_argument("--n-boot", type=int, default=N_BOOT, help="bootstrap resamples")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    parser.add_argument("--out", default="", help="also write the report as JSON here")
    args = parser.parse_args(argv)
    try:
        report = compare(args.a, args.b, args.n_boot, args.seed)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(markdown(report))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
