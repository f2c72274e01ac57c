"""Writing results: `results.json` (metrics and settings), `records.jsonl` (one line per example)
and `results.md` (a short Markdown table), all in one output folder."""

from __future__ import annotations

import json
from pathlib import Path


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def _err(m: dict, key: str) -> str:
    """"29.20% ± 1.16 [26.9, 31.5]": the value, its standard error and bootstrap 95% interval, in points."""
    if m.get(f"{key}_se") is None:
        return _pct(m[key])
    lo, hi = m[f"{key}_ci95"]
    return f"{_pct(m[key])} ± {100 * m[key + '_se']:.2f} [{100 * lo:.1f}, {100 * hi:.1f}]"


def markdown_table(result: dict) -> str:
    """A short Markdown summary of an evaluation result (as returned by `experiments.eval.evaluate`)."""
    task, m = result["task"], result["metrics"]
    head = f"**{result['model']}** on **{task}**"
    rows: list[tuple[str, str]]
    if task == "perplexity":
        bpb = m["bits_per_byte"]
        rows = [("scored tokens", f"{m['tokens']:,}"), ("mean NLL (nats/token)", f"{m['mean_nll']:.4f}"),
                ("perplexity", f"{m['perplexity']:.3f}"), ("bits per byte", "-" if bpb is None else f"{bpb:.4f}"),
                ("context / stride", f"{m['context']} / {m['stride']}")]
    elif task == "mmlu":
        rows = [("questions / subjects", f"{m['n']} / {m['subjects']}"), ("macro accuracy", _err(m, "macro_acc")),
                ("micro accuracy", _err(m, "micro_acc")), ("macro acc_norm", _err(m, "macro_acc_norm")),
                ("micro acc_norm", _err(m, "micro_acc_norm"))]
    elif task == "gsm8k_bpb":
        lo, hi = m["mean_bits_per_byte_ci95"]
        rows = [("reference solutions", str(m["n"])), ("bits per byte (all answers)", f"{m['bits_per_byte']:.4f}"),
                ("mean bits per byte ± se [95%]",
                 f"{m['mean_bits_per_byte']:.4f} ± {m['mean_bits_per_byte_se']:.4f} [{lo:.4f}, {hi:.4f}]"),
                ("answer tokens / bytes", f"{m['tokens']:,} / {m['bytes']:,}")]
    elif task in ("alpaca_eval", "simple_safety_tests"):
        rows = [("prompts", str(m["n"])), ("mean output characters", f"{m['mean_output_chars']:.0f}"),
                ("empty outputs", str(m["empty_outputs"])), ("judge", m["judge"])]
    else:
        rows = [("problems", str(m["n"])), ("exact match", _err(m, "accuracy")),
                ("answers extracted", f"{m['extracted']} / {m['n']}")]
    c = m.get("contamination")
    if c:
        rows += [(f"contaminated ({c['n_gram']}-gram in training data)",
                  f"{c['contaminated']} / {c['examples']} ({_pct(c['fraction'])}; "
                  f"{c['too_short']} too short to check)"),
                 ("clean-subset accuracy", _err(c, "clean_acc") if c["clean_acc"] is not None else "-"),
                 ("contaminated-subset accuracy", _pct(c["contaminated_acc"]))]
    lines = [head, "", "| metric | value (± standard error [bootstrap 95% interval]) |", "|---|---:|",
             *(f"| {k} | {v} |" for k, v in rows)]
    if task == "mmlu":
        lines += ["", "| subject | n | acc | acc_norm |", "|---|---:|---:|---:|"]
        lines += [f"| {s} | {v['n']} | {_err({**v, 'acc_se': v.get('se'), 'acc_ci95': v.get('ci95')}, 'acc')} "
                  f"| {_pct(v['acc_norm'])} |" for s, v in m["per_subject"].items()]
    return "\n".join(lines) + "\n"


def write_results(result: dict, out_dir: str | Path) -> Path:
    """Write results.json, records.jsonl and results.md under `out_dir`; returns the folder."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = {k: v for k, v in result.items() if k != "records"}
    (out / "results.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    with (out / "records.jsonl").open("w", encoding="utf-8") as f:
        for r in result.get("records", []):
            f.write(json.dumps(r, ensure_ascii=False, default=str) + "\n")
    (out / "results.md").write_text(markdown_table(result))
    return out
