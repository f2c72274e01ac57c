"""Per-stage statistics: documents in, kept, removed by reason, samples of removed documents, time.

A stats tree is a plain dict {stage: {"in", "kept", "removed": {reason: n}, "samples":
{reason: [doc summaries]}, "seconds", "counters": {name: n}}}, so it pickles to worker
processes and Ray tasks and merges by addition.
"""

from __future__ import annotations

import json

SAMPLE_CHARS = 400


def new_stage() -> dict:
    return {"in": 0, "kept": 0, "removed": {}, "samples": {}, "seconds": 0.0, "counters": {}}


def stage(stats: dict, name: str) -> dict:
    return stats.setdefault(name, new_stage())


def record(stats: dict, name: str, kept: bool, reason: str | None = None, doc=None, max_samples: int = 5,
           **extra) -> None:
    s = stage(stats, name)
    s["in"] += 1
    if kept:
        s["kept"] += 1
        return
    reason = reason or "removed"
    s["removed"][reason] = s["removed"].get(reason, 0) + 1
    samples = s["samples"].setdefault(reason, [])
    if doc is not None and len(samples) < max_samples:
        samples.append({"id": doc.id, "url": doc.url, "text": doc.text[:SAMPLE_CHARS], **extra})


def count(stats: dict, name: str, counter: str, n: int = 1) -> None:
    c = stage(stats, name)["counters"]
    c[counter] = c.get(counter, 0) + n


def merge(a: dict, b: dict, max_samples: int = 5) -> dict:
    """a + b (a new dict); samples keep a's first, then b's, up to `max_samples` per reason."""
    out = json.loads(json.dumps(a))
    for name, sb in b.items():
        sa = stage(out, name)
        for k in ("in", "kept", "seconds"):
            sa[k] += sb[k]
        for field in ("removed", "counters"):
            for k, v in sb[field].items():
                sa[field][k] = sa[field].get(k, 0) + v
        for reason, samples in sb["samples"].items():
            dst = sa["samples"].setdefault(reason, [])
            dst.extend(samples[:max(0, max_samples - len(dst))])
    return out


def format_report(stats: dict, order: list[str] | None = None) -> str:
    """A Markdown table: stage, in, kept, removed (top reasons), docs/s (per worker-second)."""
    rows = ["| stage | in | kept | removed | top reasons | docs/s (per worker) |", "|---|---:|---:|---:|---|---:|"]
    for name in order or list(stats):
        if name not in stats:
            continue
        s = stats[name]
        removed = sum(s["removed"].values())
        top = ", ".join(f"{r} {n}" for r, n in sorted(s["removed"].items(), key=lambda kv: -kv[1])[:4])
        rate = f"{s['in'] / s['seconds']:,.0f}" if s["seconds"] > 0 else "-"
        rows.append(f"| {name} | {s['in']:,} | {s['kept']:,} | {removed:,} | {top} | {rate} |")
    counters = [f"- {name}: " + ", ".join(f"{k} {v:,}" for k, v in s["counters"].items())
                for name, s in stats.items() if s["counters"]]
    return "\n".join(rows + ([""] + counters if counters else []))
