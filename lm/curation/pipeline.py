"""The curation pipeline: WARC/WET shards -> clean text shards -> training token arrays.

    from lm.curation.pipeline import run_curation
    from lm.curation.config import CurationConfig
    result = run_curation(CurationConfig(input="crawl/*.warc.gz", out="curated"))

Output under `out`: clean/shard-NNNNN.jsonl (kept documents with metadata), tokens/ (train.npy,
val.npy, tokenizer.json: `python -m experiments.pretrain --tokens OUT/tokens`), stats.json
(per-stage counts, reasons, samples of removed documents, worker-seconds, decontamination overlaps
per benchmark, canary recall) and report.md. Intermediate files go to work/ and are deleted at the
end unless `keep_work`.

Resume: every task writes its outputs and then a completion marker, so rerunning the same command
after a crash runs only what is missing and gives byte-identical clean shards and tokens; a
finished run is not recomputed. The output depends on the settings and inputs only: 1, 2 or N
worker processes and Ray give the same bytes (tasks are pure functions of their shard, and the
driver's global steps read shards in order).

Fuzzy dedup keeps memory flat in the corpus size: signatures become sorted band files per shard,
and the driver streams them (`lm.curation.disk_lsh`), holding one window per shard and one
union-find entry per document.
"""

from __future__ import annotations

import glob
import json
import shutil
import time
from pathlib import Path

import numpy as np

from lm.curation import stats as S
from lm.curation.config import CurationConfig
from lm.curation.executor import ShardExecutor
from lm.curation.resume import atomic_write_text, check_settings, read_marker, settings_of, write_marker

STAGE_ORDER = ["read", "extract", "language", "fuzzy_dedup", "line_dedup", "decontaminate", "gopher",
               "gopher_repetition", "c4", "fineweb", "harmful", "quality", "pii", "tokenize"]


def expand_inputs(pattern: str) -> list[str]:
    files = []
    for part in filter(None, (p.strip() for p in pattern.split(","))):
        found = sorted(glob.glob(part, recursive=True)) or ([part] if Path(part).is_file() else [])
        files.extend(found)
    if not files:
        raise FileNotFoundError(f"no input files match {pattern!r}")
    return files


def _run_missing(ex: ShardExecutor, fn, tasks: list[tuple], markers: list[Path], desc: str) -> list[dict]:
    """Run the tasks whose marker is missing; returns every task's marker payload, in task order."""
    todo = [t for t, m in zip(tasks, markers) if not m.is_file()]
    if todo:
        ex.map(fn, todo, desc=desc)
    return [read_marker(m) for m in markers]


def _near_duplicates(config: CurationConfig, docs_per_shard: list[int], progress: bool = False
                     ) -> tuple[list[dict], dict, np.ndarray]:
    """Cluster near-duplicates from the shards' band files; ({position: id of kept copy} per shard,
    info, root [all documents])."""
    from lm.curation.disk_lsh import stream_buckets
    from lm.curation.document import read_jsonl_at
    from lm.curation.lsh import cluster_groups
    from lm.curation.minhash import shingle_set
    from lm.curation.stages import work_path

    n_shards = len(docs_per_shard)
    starts = np.concatenate(([0], np.cumsum(docs_per_shard))).astype(np.int64)
    offsets = [np.load(work_path(config.out, "a", s, ".offsets.npy"), mmap_mode="r") for s in range(n_shards)]

    def load(i: int):
        s = int(np.searchsorted(starts, i, side="right") - 1)
        return read_jsonl_at(work_path(config.out, "a", s), int(offsets[s][i - starts[s]]))

    m = config.minhash
    prefixes = [str(work_path(config.out, "a", s, "")) for s in range(n_shards)]
    root, info = cluster_groups(stream_buckets(prefixes, starts[:-1], m.bands, progress=progress), int(starts[-1]),
                                lambda i: shingle_set(load(i).text, m.ngram), threshold=m.threshold)
    dup = [dict() for _ in range(n_shards)]
    for i in np.flatnonzero(root != np.arange(len(root))):
        s = int(np.searchsorted(starts, i, side="right") - 1)
        dup[s][int(i - starts[s])] = load(int(root[i])).id
    return dup, info, root


def _canary_report(config: CurationConfig, shard: int, root: np.ndarray, start: int) -> list[dict]:
    """Near-duplicate canary recall per Jaccard bucket beside the S-curve (see lm.curation.canaries)."""
    from lm.curation.canaries import near_duplicate_report
    from lm.curation.document import read_jsonl
    from lm.curation.lsh import band_keys
    from lm.curation.minhash import jaccard, minhash_signatures, shingle_set
    from lm.curation.stages import work_path

    m = config.minhash
    docs = [d for d in read_jsonl(work_path(config.out, "a", shard))]
    pos = {d.id: start + i for i, d in enumerate(docs)}
    near = [d for d in docs if d.meta.get("canary") == "near_duplicate"]
    keys = band_keys(minhash_signatures([d.text for d in near], m.num_perm, m.ngram, m.seed), m.bands, m.rows)
    by_pair: dict[str, dict] = {}
    for d, k in zip(near, keys):
        by_pair.setdefault(d.meta["pair"], {})[d.meta["role"]] = (d, k)
    jac, cand, removed = {}, {}, {}
    for pair, roles in by_pair.items():
        (base, kb), (copy, kc) = roles["base"], roles["copy"]
        jac[pair] = jaccard(shingle_set(base.text, m.ngram), shingle_set(copy.text, m.ngram))
        cand[pair] = bool(np.any(kb == kc))
        removed[pair] = bool(root[pos[copy.id]] == root[pos[base.id]])
    return near_duplicate_report(near, jac, cand, removed, m.bands, m.rows, m.threshold)


def _benchmark_samples(config: CurationConfig) -> dict[str, list[str]]:
    """Items to plant as benchmark canaries: the first long-enough items of each benchmark, in a
    seeded order."""
    import random

    from lm.curation.decontaminate import benchmark_items, benchmark_name
    from lm.data.ngrams import normalize_words

    out = {}
    for p in filter(None, (x.strip() for x in config.decontaminate.split(","))):
        items = [t for t in benchmark_items(p) if len(normalize_words(t)) >= config.decontam_ngram + 5]
        random.Random(config.canary_seed).shuffle(items)
        out[benchmark_name(p)] = items[:config.canary_benchmark_items]
    return out


def _run_passes(config: CurationConfig, files: list[str], ex: ShardExecutor) -> dict:
    """Passes A, B and C over all shards, with the global steps between them; returns stats."""
    from lm.curation.decontaminate import build_benchmark_indexes, save_indexes
    from lm.curation.exact_dedup import merge_counts
    from lm.curation.stages import marker_path, pass_canaries, pass_dedup, pass_extract, pass_filter, work_path

    out, work = config.out, Path(config.out) / "work"
    canary = len(files) if config.canaries else None  # the canary shard comes after the real ones
    shards = list(range(len(files) + (canary is not None)))
    index_dir = ""
    if config.decontaminate:
        index_dir = str(work / "decontam")
        if not (work / "decontam.done").is_file():
            save_indexes(build_benchmark_indexes([p.strip() for p in config.decontaminate.split(",") if p.strip()],
                                                 config.decontam_ngram), index_dir)
            write_marker(work / "decontam.done", {})

    a_tasks = [(config, f, i) for i, f in enumerate(files)]
    a = _run_missing(ex, pass_extract, a_tasks, [marker_path(out, "a", i) for i in range(len(files))], "extract")
    if canary is not None:
        a += _run_missing(ex, pass_canaries, [(config, canary, _benchmark_samples(config) if index_dir else {})],
                          [marker_path(out, "a", canary)], "canaries")
    stats: dict = {}
    for payload in a:
        stats = S.merge(stats, payload["stats"], config.max_samples)

    fuzzy = read_marker(work / "fuzzy.done")
    if fuzzy is None:
        t = time.perf_counter()
        dup, info, canaries = [dict() for _ in shards], {}, None
        if config.fuzzy_dedup:
            docs = [p["docs"] for p in a]
            dup, info, root = _near_duplicates(config, docs, ex.progress)
            if canary is not None:
                canaries = _canary_report(config, canary, root, int(np.sum(docs[:canary])))
        fuzzy = {"dup": [{str(k): v for k, v in d.items()} for d in dup], "info": info, "canaries": canaries,
                 "seconds": time.perf_counter() - t}
        write_marker(work / "fuzzy.done", fuzzy)
    if config.fuzzy_dedup:
        S.stage(stats, "fuzzy_dedup")["seconds"] += fuzzy["seconds"]
        for k, v in fuzzy["info"].items():
            S.count(stats, "fuzzy_dedup", k, v)
    dup = [{int(k): v for k, v in d.items()} for d in fuzzy["dup"]]

    b = _run_missing(ex, pass_dedup, [(config, i, dup[i], i == canary) for i in shards],
                     [marker_path(out, "b", i) for i in shards], "dedup")
    for payload in b:
        stats = S.merge(stats, payload["stats"], config.max_samples)
    counts_file = work / "line_counts.npz"
    if not counts_file.is_file():
        parts = []
        for i in shards:
            with np.load(work_path(out, "b", i, ".counts.npz")) as z:
                parts.append((z["hashes"], z["counts"]))
        hashes, counts = merge_counts(parts)
        del parts
        with open(work / "line_counts.tmp.npz", "wb") as f:
            np.savez(f, hashes=hashes, counts=counts)
        (work / "line_counts.tmp.npz").replace(counts_file)
        del hashes, counts

    c = _run_missing(ex, pass_filter, [(config, i, str(counts_file), index_dir, i == canary) for i in shards],
                     [marker_path(out, "c", i) for i in shards], "filter")
    for payload in c:
        stats = S.merge(stats, payload["stats"], config.max_samples)
    if index_dir:  # every benchmark is listed, with 0 where nothing overlaps
        from lm.curation.decontaminate import load_indexes

        counters = S.stage(stats, "decontaminate")["counters"]
        for name in load_indexes(index_dir):
            counters.setdefault(f"docs:{name}", 0)
            counters.setdefault(f"ngrams:{name}", 0)
    if fuzzy["canaries"] is not None:
        S.stage(stats, "canaries")["near_duplicates"] = fuzzy["canaries"]
    return stats


def _canary_lines(stats: dict) -> list[str]:
    rows = stats.get("canaries", {}).get("near_duplicates")
    if not rows:
        return []
    out = ["", "Near-duplicate canaries (recall per Jaccard bucket beside the LSH S-curve):", "",
           "| target | pairs | mean Jaccard | candidates | predicted | removed | predicted |",
           "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        out.append(f"| {r['target']:.2f} | {r['pairs']} | {r['mean_jaccard']:.3f} | {r['candidate_rate']:.2f} | "
                   f"{r['predicted_candidate_rate']:.2f} | {r['removed_rate']:.2f} | "
                   f"{r['predicted_removed_rate']:.2f} |")
    expected = sum(r["predicted_removed_rate"] * r["pairs"] for r in rows)
    got = sum(r["removed_rate"] * r["pairs"] for r in rows)
    if expected >= 1 and got < 0.5 * expected:
        out.append(f"\n**Warning: fuzzy dedup removed {got:.0f} planted near-duplicates where ~{expected:.0f} "
                   "were predicted; check the MinHash settings.**")
    return out


def run_curation(config: CurationConfig, progress: bool = True) -> dict:
    """Run every stage (or what an interrupted run left); returns {"stats", "report", "tokens",
    "clean_shards", "seconds"}."""
    from lm.curation.stages import clean_path

    if not config.input or not config.out:
        raise ValueError("both input and out are required")
    files = expand_inputs(config.input)
    out = Path(config.out)
    settings = {**settings_of(config), "input_files": files}
    shards = [str(clean_path(config.out, i)) for i in range(len(files))]
    done = read_marker(out / "complete.json")
    if done is not None and done.get("settings") == settings:  # a finished run: nothing to do
        return {"stats": json.loads((out / "stats.json").read_text()), "report": (out / "report.md").read_text(),
                "tokens": done.get("tokens"), "clean_shards": shards, "seconds": 0.0}
    if done is not None:
        raise ValueError(f"{out} holds a finished run with other settings; choose another --out")
    (out / "work").mkdir(parents=True, exist_ok=True)
    check_settings(out / "work" / "settings.json", settings)
    t0 = time.perf_counter()
    with ShardExecutor(config.workers, config.ray, progress) as ex:
        stats = _run_passes(config, files, ex)

    tokens = None
    if config.tokenize:
        from lm.curation.document import read_jsonl
        from lm.curation.tokens import tokenize_documents

        tokens = read_marker(out / "work" / "tokens.done")
        if tokens is None:
            t = time.perf_counter()
            tokens = tokenize_documents((d for p in shards for d in read_jsonl(p)), out / "tokens",
                                        tokenizer=config.tokenizer, vocab_size=config.vocab_size,
                                        val_fraction=config.val_fraction, workers=config.workers or None,
                                        progress=progress)
            tokens["seconds"] = time.perf_counter() - t
            write_marker(out / "work" / "tokens.done", tokens)
        st = S.stage(stats, "tokenize")
        st["in"] = st["kept"] = tokens["train_docs"] + tokens["val_docs"]
        st["seconds"] = tokens["seconds"]
        S.count(stats, "tokenize", "train_tokens", tokens["train_tokens"])
        S.count(stats, "tokenize", "val_tokens", tokens["val_tokens"])
    seconds = time.perf_counter() - t0
    report = "\n".join([S.format_report(stats, STAGE_ORDER)] + _canary_lines(stats))
    docs_in = S.stage(stats, "read")["in"]
    kept = sum(1 for p in shards for _ in open(p, "rb"))
    header = (f"{len(files)} shards, {docs_in:,} records -> {kept:,} documents kept "
              f"in {seconds:.1f} s ({docs_in / max(seconds, 1e-9):,.0f} records/s end to end)\n\n")
    atomic_write_text(out / "stats.json", json.dumps(stats, indent=1, ensure_ascii=False))
    atomic_write_text(out / "report.md", header + report + "\n")
    write_marker(out / "complete.json", {"settings": settings, "tokens": tokens})
    if not config.keep_work:
        shutil.rmtree(out / "work", ignore_errors=True)
    return {"stats": stats, "report": header + report, "tokens": tokens, "clean_shards": shards, "seconds": seconds}
