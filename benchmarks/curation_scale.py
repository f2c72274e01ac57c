"""The whole pipeline with the at-scale stages on Debian documentation WARCs: removal counts of the
Gopher repetition, C4 and FineWeb stages, decontamination overlaps per benchmark, and canary recall
per Jaccard bucket beside the LSH S-curve.

    python benchmarks/curation_scale.py [--warc-dir runs/debian-warc-600] [--pages 600] [--canaries 20]
        [--benchmarks ../shared/data/corpora/a5_eval_data/mmlu/test,../shared/.../gsm8k/test.jsonl] [--write]

`--write` puts the tables in benchmarks/RESULTS.md (section "curation_scale").
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "corpora" / "a5_eval_data"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--warc-dir", default="runs/debian-warc-600")
    p.add_argument("--pages", type=int, default=600)
    p.add_argument("--canaries", type=int, default=20)
    p.add_argument("--benchmarks", default=f"{SHARED / 'mmlu' / 'test'},{SHARED / 'gsm8k' / 'test.jsonl'}")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", default="runs/debian-curated-scale")
    p.add_argument("--write", action="store_true")
    a = p.parse_args(argv)
    from benchmarks.results import machine_description, write_section, commit as results_commit
    from benchmarks.warc_fixtures import build_debian_warcs
    from lm.curation.config import CurationConfig
    from lm.curation.pipeline import run_curation

    d = Path(a.warc_dir)
    if not list(d.glob("*.warc*")):
        build_debian_warcs(d, pages_per_shard=100, max_pages=a.pages, sample=True)
    cfg = CurationConfig(input=str(d / "*.warc*"), out=a.out, workers=a.workers, tokenize=False, toxic=False,
                         gopher_repetition=True, c4=True, fineweb=True, decontaminate=a.benchmarks,
                         canaries=a.canaries, canary_benchmark_items=10)
    t = time.perf_counter()
    res = run_curation(cfg, progress=False)
    secs = time.perf_counter() - t
    st = res["stats"]
    pages = json.loads((d / "manifest.json").read_text())["pages"]
    lines = [res["report"], ""]
    dc = st.get("decontaminate", {}).get("counters", {})
    lines.append("| benchmark | documents overlapping | 13-grams matched | planted canaries found |")
    lines.append("|---|---:|---:|---:|")
    can = st.get("canaries", {}).get("counters", {})
    for name in sorted({k.split(":", 1)[1] for k in list(dc) + list(can)}):
        lines.append(f"| {name} | {dc.get(f'docs:{name}', 0)} | {dc.get(f'ngrams:{name}', 0)} | "
                     f"{can.get(f'benchmark_found:{name}', 0)} / {can.get(f'benchmark_planted:{name}', 0)} |")
    body = "\n".join(lines)
    print(body)
    print(f"\n{secs:.0f} s")
    if a.write:
        commit = results_commit()
        write_section("curation_scale", f"## Curation at scale: new stages, decontamination, canaries "
                      f"(`python benchmarks/curation_scale.py --write`)\nCommit {commit}, {machine_description()} "
                      f"(shared with other jobs), {a.workers} worker processes, {secs:.0f} s. {pages:,} Debian "
                      f"documentation pages (all sources and languages) in WARCs plus a WET copy of one shard; "
                      f"English kept; every filter on except the toxic classifier; {a.canaries} near-duplicate "
                      f"canary pairs per Jaccard bucket and 10 items per benchmark planted.\n\n{body}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
