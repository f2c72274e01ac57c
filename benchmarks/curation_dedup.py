"""Fuzzy dedup at 1x and 10x a Debian documentation corpus: peak memory of the streamed (on-disk)
path against the in-memory one, and a head-to-head with datatrove's MinHash dedup.

    python benchmarks/curation_dedup.py [--pages 1000] [--scale 10] [--work runs/dedup-bench]

1x is `--pages` Debian documentation pages sampled over every source and language (extracted
once, as pass A of the pipeline leaves them); 10x adds nine copies of every page with 2% of the
words replaced (so each page gets a cluster of ten near-duplicates). Each measurement runs in a
fresh process; peak RSS is that process's ru_maxrss, and "above baseline" subtracts the RSS after
imports. Modes: "disk" is the pipeline's path (per shard: signatures, sorted band files; then
the streamed merge, verification and clustering), "memory" holds every text and signature
(`fuzzy_dedup(texts)`), "datatrove" runs datatrove's four MinHash stages (signatures, buckets,
clusters, filter) with the same shingle size, bands and rows, on the same texts. Agreement is
reported over "same cluster" pairs: precision and recall of ours against datatrove's.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import time
from itertools import combinations
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARD_DOCS = 250


def _rss_mb() -> float:
    """This process's peak RSS so far (VmHWM: unlike ru_maxrss, not inherited from the parent across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def prepare(work: Path, pages: int, scale: int, seed: int = 0) -> None:
    """Write work/1x and work/{scale}x: JSONL shards of extracted pages (ids page-N or page-N~copy)."""
    from benchmarks.warc_fixtures import debian_pages
    from lm.curation.document import Document, write_jsonl
    from lm.curation.extract import extract_text

    if (work / f"{scale}x" / "done").exists():
        return
    rng = random.Random(seed)
    all_pages = list(debian_pages())
    if not all_pages:
        raise SystemExit("no Debian documentation pages: bash benchmarks/curation_setup.sh")
    chosen = sorted(rng.sample(all_pages, min(pages, len(all_pages))), key=lambda p: p[0])
    docs = []
    for url, path, _ in chosen:
        text, _ = extract_text(path.read_bytes(), "text/html", "utf-8")
        if text:
            docs.append(Document(id=f"page-{len(docs)}", text=text, url=url))
    for name, copies in (("1x", 1), (f"{scale}x", scale)):
        out = work / name
        corpus = list(docs)
        for c in range(1, copies):
            r = random.Random(c)
            for d in docs:
                words = d.text.split(" ")
                for i in r.sample(range(len(words)), max(1, len(words) // 50)):
                    words[i] = "".join(r.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(6))
                corpus.append(Document(id=f"{d.id}~{c}", text=" ".join(words), url=d.url))
        for s in range(0, len(corpus), SHARD_DOCS):
            write_jsonl(corpus[s:s + SHARD_DOCS], out / f"shard-{s // SHARD_DOCS:05d}.jsonl")
        (out / "done").write_text(json.dumps({"docs": len(corpus), "chars": sum(len(d.text) for d in corpus)}))


def _cluster_pairs(labels: dict[str, object]) -> set[tuple[str, str]]:
    groups: dict[object, list[str]] = {}
    for doc_id, label in labels.items():
        groups.setdefault(label, []).append(doc_id)
    return {tuple(sorted(p)) for g in groups.values() if len(g) > 1 for p in combinations(g, 2)}


def run_ours(corpus: Path, mode: str, threshold: float) -> dict:
    from lm.curation.config import CurationConfig
    from lm.curation.document import read_jsonl
    from lm.curation.near_dedup import MinHashConfig, fuzzy_dedup
    from lm.curation.pipeline import _near_duplicates
    from lm.curation.stages import _finish_a

    shards = sorted(corpus.glob("shard-*.jsonl"))
    base = _rss_mb()
    t = time.perf_counter()
    mh = MinHashConfig(threshold=threshold)
    if mode == "memory":
        docs = [d for s in shards for d in read_jsonl(s)]
        root, _ = fuzzy_dedup([d.text for d in docs], mh)
        ids = [d.id for d in docs]
    else:
        out = corpus.parent / f"work-{corpus.name}-{threshold}"
        config = CurationConfig(input="-", out=str(out), minhash=mh)
        counts, ids = [], []
        for i, s in enumerate(shards):  # pass A's tail, one shard at a time
            docs = list(read_jsonl(s))
            ids += [d.id for d in docs]
            counts.append(len(docs))
            _finish_a(config, i, docs, {}, time.perf_counter())
            del docs
        _, _, root = _near_duplicates(config, counts)
    seconds = time.perf_counter() - t
    labels = {ids[i]: int(r) for i, r in enumerate(root)}
    return {"seconds": seconds, "peak_rss_mb": _rss_mb(), "baseline_rss_mb": base, "labels": labels}


def _xxhash_accepts_str() -> None:
    """datatrove 0.10.1 passes str to xxhash, which xxhash >= 4 rejects ("Strings must be encoded");
    encode as UTF-8 (what xxhash 3 did) rather than downgrade a package others use."""
    import xxhash

    import datatrove.utils.hashes.xxhash as dt

    dt.xxhash64 = lambda data: xxhash.xxh64_intdigest(data.encode("utf-8") if isinstance(data, str) else data)
    dt.xxhash32 = lambda data: xxhash.xxh32_intdigest(data.encode("utf-8") if isinstance(data, str) else data)


def run_datatrove(corpus: Path, work: Path) -> dict:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import (MinhashConfig, MinhashDedupBuckets, MinhashDedupCluster,
                                                  MinhashDedupFilter, MinhashDedupSignature)
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter

    from lm.curation.near_dedup import MinHashConfig

    _xxhash_accepts_str()
    ours = MinHashConfig()
    cfg = MinhashConfig(n_grams=ours.ngram, num_buckets=ours.bands, hashes_per_bucket=ours.rows, seed=ours.seed)
    shards = len(list(corpus.glob("shard-*.jsonl")))
    w = work / f"datatrove-{corpus.name}"
    base = _rss_mb()
    t = time.perf_counter()

    def reader():
        return JsonlReader(str(corpus), glob_pattern="shard-*.jsonl", text_key="text", id_key="id")

    for pipeline, tasks in (
            ([reader(), MinhashDedupSignature(output_folder=str(w / "sigs"), config=cfg)], shards),
            ([MinhashDedupBuckets(input_folder=str(w / "sigs"), output_folder=str(w / "buckets"), config=cfg)],
             cfg.num_buckets),
            ([MinhashDedupCluster(input_folder=str(w / "buckets"), output_folder=str(w / "remove"), config=cfg,
                                  save_cluster_id=True)], 1),
            ([reader(), MinhashDedupFilter(input_folder=str(w / "remove"), load_cluster_ids=True,
                                           exclusion_writer=JsonlWriter(str(w / "removed"), compression=None)),
              JsonlWriter(str(w / "kept"), compression=None)], shards)):
        LocalPipelineExecutor(pipeline=pipeline, tasks=tasks, workers=1, logging_dir=str(w / "logs"),
                              skip_completed=False).run()
    seconds = time.perf_counter() - t
    labels = {}
    for f in sorted((w / "kept").glob("*.jsonl")) + sorted((w / "removed").glob("*.jsonl")):
        for line in open(f):
            d = json.loads(line)
            cid = d.get("metadata", {}).get("minhash_cluster_id")
            labels[d["id"]] = f"cluster-{cid}" if cid is not None and cid != -1 else f"single-{d['id']}"
    return {"seconds": seconds, "peak_rss_mb": _rss_mb(), "baseline_rss_mb": base, "labels": labels}


def _child(argv: list[str]) -> dict:
    out = subprocess.run([sys.executable, "-m", "benchmarks.curation_dedup", *argv], cwd=ROOT, capture_output=True,
                         text=True)
    if out.returncode:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default="runs/dedup-bench")
    p.add_argument("--pages", type=int, default=1000)
    p.add_argument("--scale", type=int, default=10)
    p.add_argument("--datatrove-scales", default="1x", help="which corpora datatrove runs on (comma-separated)")
    p.add_argument("--child", nargs=3, metavar=("MODE", "CORPUS", "THRESHOLD"), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    work = Path(a.work)
    if a.child:
        mode, corpus, threshold = a.child
        res = (run_datatrove(Path(corpus), work) if mode == "datatrove"
               else run_ours(Path(corpus), mode, float(threshold)))
        print(json.dumps(res))
        return 0
    prepare(work, a.pages, a.scale)
    scales = list(dict.fromkeys(["1x", f"{a.scale}x"]))  # --scale 1: the 1x corpus alone
    rows, labels = [], {}
    for scale in scales:
        meta = json.loads((work / scale / "done").read_text())
        modes = [("disk", "0.6"), ("memory", "0.6")]
        if scale in a.datatrove_scales.split(","):
            modes += [("disk", "1e-9"), ("datatrove", "0")]
        for mode, thr in modes:
            r = _child([f"--work={work}", "--child", mode, str(work / scale), thr])
            labels[(scale, mode, thr)] = r.pop("labels")
            rows.append((scale, meta["docs"], meta["chars"], mode, thr, r))
            print(f"{scale} {mode} thr={thr}: {r}", flush=True)
    print("\n| corpus | docs | M chars | path | wall s | peak RSS MB | above baseline MB |\n"
          "|---|---:|---:|---|---:|---:|---:|")
    for scale, docs, chars, mode, thr, r in rows:
        name = {"disk": "ours, streamed from disk", "memory": "ours, in memory", "datatrove": "datatrove"}[mode]
        name += " (candidates, no verification)" if thr == "1e-9" else ""
        print(f"| {scale} | {docs:,} | {chars / 1e6:.0f} | {name} | {r['seconds']:.1f} | {r['peak_rss_mb']:.0f} | "
              f"{r['peak_rss_mb'] - r['baseline_rss_mb']:.0f} |")
    for scale in a.datatrove_scales.split(","):
        if (scale, "datatrove", "0") not in labels:
            continue
        theirs = _cluster_pairs(labels[(scale, "datatrove", "0")])
        print(f"\n| {scale}: same-cluster pairs | pairs | precision vs datatrove | recall vs datatrove |\n"
              "|---|---:|---:|---:|")
        print(f"| datatrove | {len(theirs):,} | - | - |")
        for thr, name in (("0.6", "ours (Jaccard >= 0.6 verified)"), ("1e-9", "ours (LSH candidates only)")):
            ours = _cluster_pairs(labels[(scale, "disk", thr)])
            both = len(ours & theirs)
            print(f"| {name} | {len(ours):,} | {both / max(len(ours), 1):.3f} | {both / max(len(theirs), 1):.3f} |")
    same = all(labels[(s, "disk", "0.6")] == labels[(s, "memory", "0.6")] for s in scales)
    print(f"\ndisk and in-memory clusters identical at every scale: {same}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
