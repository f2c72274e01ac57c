"""The three per-shard passes of the pipeline (each a top-level function, so processes and Ray
can run it), and the per-document stage functions they chain.

Pass A: read, extract, identify language; MinHash signatures of what survives, written as sorted
        band keys (`lm.curation.disk_lsh`). The canary shard's pass A plants synthetic documents.
   (the driver clusters near-duplicates by streaming the band files)
Pass B: drop near-duplicates; count line hashes (exact line dedup, pass 1).
   (the driver merges the counts)
Pass C: exact line dedup (pass 2), decontamination, Gopher quality and repetition rules, C4 and
        FineWeb line filters, harmful filters, quality filter, PII masking; write the clean shard.
Near-duplicates go first so that a page and its near-copy do not strip each other's shared
lines in the exact line dedup (which drops every copy of a repeated line).

Each pass writes its outputs and then a marker holding its statistics (`lm.curation.resume`);
a task whose marker exists is not run again.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from lm.curation import stats as S
from lm.curation.config import CurationConfig
from lm.curation.document import Document, read_jsonl, write_jsonl
from lm.curation.resume import write_marker


def work_path(out: str, name: str, shard: int, suffix: str = ".jsonl") -> Path:
    return Path(out) / "work" / f"{name}-{shard:05d}{suffix}"


def clean_path(out: str, shard: int) -> Path:
    return Path(out) / "clean" / f"shard-{shard:05d}.jsonl"


def marker_path(out: str, name: str, shard: int) -> Path:
    return work_path(out, name, shard, ".done")


def _timed(stats: dict, name: str, t0: float) -> float:
    t = time.perf_counter()
    S.stage(stats, name)["seconds"] += t - t0
    return t


def _finish_a(config: CurationConfig, shard: int, kept: list[Document], stats: dict, t: float) -> dict:
    """Write pass A's outputs for one shard: documents, their byte offsets, sorted band keys, marker."""
    from lm.curation.disk_lsh import write_band_keys
    from lm.curation.minhash import minhash_signatures

    offsets = write_jsonl(kept, work_path(config.out, "a", shard))
    np.save(work_path(config.out, "a", shard, ".offsets.npy"), np.asarray(offsets, dtype=np.int64))
    if config.fuzzy_dedup:
        m = config.minhash
        sig = minhash_signatures([d.text for d in kept], m.num_perm, m.ngram, m.seed)
        write_band_keys(sig, m.bands, m.rows, str(work_path(config.out, "a", shard, "")))
        _timed(stats, "fuzzy_dedup", t)
    write_marker(marker_path(config.out, "a", shard), {"stats": stats, "docs": len(kept)})
    return stats


def pass_extract(config: CurationConfig, warc: str, shard: int) -> dict:
    from lm.curation.extract import extract_text
    from lm.curation.language import identify_language
    from lm.curation.reading import read_warc

    stats, kept, errors = {}, [], []
    t = time.perf_counter()
    records = read_warc(warc, errors)
    for i, rec in enumerate(records):
        t = _timed(stats, "read", t)
        S.record(stats, "read", True)
        doc = Document(id=f"{Path(warc).name}#{i}", text="", url=rec.url,
                       meta={"content_type": rec.content_type, "record_type": rec.record_type})
        text, reason = extract_text(rec.payload, rec.content_type, rec.charset, config.main_content)
        doc = Document(doc.id, text, doc.url, doc.meta) if text else doc
        S.record(stats, "extract", not reason, reason, doc, config.max_samples)
        t = _timed(stats, "extract", t)
        if reason:
            continue
        lang, score = identify_language(text, config.langid_backend, config.langid_model or None)
        doc = doc.with_meta(language=lang, language_score=round(score, 4))
        ok = not config.languages or (lang in config.languages and score >= config.min_language_score)
        why = None if ok else (f"lang:{lang}" if lang not in config.languages else "low_language_score")
        S.record(stats, "language", ok, why, doc, config.max_samples)
        t = _timed(stats, "language", t)
        if ok:
            kept.append(doc)
    S.count(stats, "read", "malformed_skips", len(errors))
    return _finish_a(config, shard, kept, stats, t)


def pass_canaries(config: CurationConfig, shard: int, benchmark_items: dict[str, list[str]]) -> dict:
    """Pass A of the canary shard: synthetic near-duplicates and benchmark items (no reading or filters)."""
    from lm.curation.canaries import make_canaries

    docs = make_canaries(config.canaries, config.canary_seed, config.minhash.ngram, benchmark_items)
    return _finish_a(config, shard, docs, {}, time.perf_counter())


def pass_dedup(config: CurationConfig, shard: int, duplicate_of: dict[int, str], canary: bool = False) -> dict:
    """Drop the documents at positions in `duplicate_of` (-> id of the kept copy); count line hashes."""
    from lm.curation.exact_dedup import line_hash_counts

    stats, kept = {}, []
    t = time.perf_counter()
    for i, doc in enumerate(read_jsonl(work_path(config.out, "a", shard))):
        dup = duplicate_of.get(int(i))
        if config.fuzzy_dedup and not canary:
            S.record(stats, "fuzzy_dedup", dup is None, "near_duplicate", doc, config.max_samples, duplicate_of=dup)
        if dup is None:
            kept.append(doc)
    write_jsonl(kept, work_path(config.out, "b", shard))
    t = _timed(stats, "fuzzy_dedup", t)
    if config.line_dedup and not canary:  # canaries must not change which real lines repeat
        hashes, counts = line_hash_counts(d.text for d in kept)
    else:
        hashes, counts = np.zeros(0, np.uint64), np.zeros(0, np.int64)
    with open(work_path(config.out, "b", shard, ".counts.npz.tmp"), "wb") as f:
        np.savez(f, hashes=hashes, counts=counts)
    work_path(config.out, "b", shard, ".counts.npz.tmp").replace(work_path(config.out, "b", shard, ".counts.npz"))
    _timed(stats, "line_dedup", t)
    write_marker(marker_path(config.out, "b", shard), {"stats": stats})
    return stats


def _harmful_classifiers(config: CurationConfig) -> list:
    from lm.curation.harmful import load_harmful_classifier

    out = []
    if config.toxic or config.toxic_model:
        out.append(load_harmful_classifier("toxic", config.toxic_model or None))
    if config.nsfw_model:
        out.append(load_harmful_classifier("nsfw", config.nsfw_model))
    return out


def _keep_only(verdicts):
    """[(keep, reason)] -> [(None, reason, {})] for removals, [(unchanged, None, {})] for keeps."""
    return [((... if ok else None), why, {}) for ok, why in verdicts]


def _filters(config: CurationConfig) -> list:
    """[(stage name, texts -> [(new text | Ellipsis (unchanged) | None (removed), reason, counters)])]."""
    from lm.curation.c4 import c4_filter
    from lm.curation.fineweb import fineweb_filter
    from lm.curation.gopher import gopher_filter
    from lm.curation.harmful import harmful_filter_batch
    from lm.curation.quality import quality_filter
    from lm.curation.repetition import repetition_filter

    steps = []
    if config.gopher:
        steps.append(("gopher", lambda texts: _keep_only(gopher_filter(t) for t in texts)))
    if config.gopher_repetition:
        steps.append(("gopher_repetition", lambda texts: _keep_only(repetition_filter(t) for t in texts)))
    if config.c4:
        def c4(texts):
            out = []
            for t in texts:
                text, why, removed = c4_filter(t)
                out.append((None if why else text, why, {f"lines_{k}": v for k, v in removed.items()}))
            return out
        steps.append(("c4", c4))
    if config.fineweb:
        steps.append(("fineweb", lambda texts: _keep_only(fineweb_filter(t) for t in texts)))
    classifiers = _harmful_classifiers(config)
    if classifiers:
        steps.append(("harmful", lambda texts: _keep_only(
            harmful_filter_batch(texts, classifiers, config.harmful_threshold))))
    if config.quality_model:
        steps.append(("quality", lambda texts: _keep_only(
            quality_filter(t, config.quality_model, config.min_quality) for t in texts)))
    return steps


def _decontaminate(config: CurationConfig, docs: list[Document], stats: dict, index_dir: str,
                   canary: bool) -> list[Document]:
    """Count (and remove, or flag in meta) documents sharing an n-gram with a benchmark."""
    from lm.curation.decontaminate import contamination, load_indexes

    indexes = load_indexes(index_dir)
    kept = []
    for doc in docs:
        hits = contamination(doc.text, indexes, config.decontam_ngram)
        if canary:
            if doc.meta.get("canary") == "benchmark":
                name = doc.meta["benchmark"]
                S.count(stats, "canaries", f"benchmark_planted:{name}")
                S.count(stats, "canaries", f"benchmark_found:{name}", int(name in hits))
            continue
        for name, n in hits.items():
            S.count(stats, "decontaminate", f"docs:{name}")
            S.count(stats, "decontaminate", f"ngrams:{name}", n)
        remove = bool(hits) and config.decontam_action == "remove"
        S.record(stats, "decontaminate", not remove, "benchmark_overlap", doc, config.max_samples,
                 benchmarks=sorted(hits))
        if not remove:
            kept.append(doc.with_meta(contamination=hits) if hits else doc)
    return kept


def pass_filter(config: CurationConfig, shard: int, counts_file: str, index_dir: str = "",
                canary: bool = False) -> dict:
    from lm.curation.exact_dedup import dedup_lines
    from lm.curation.pii import mask_pii

    stats = {}
    t = time.perf_counter()
    docs = list(read_jsonl(work_path(config.out, "b", shard)))  # one shard, not the corpus
    if canary:  # only the decontamination check; canaries never reach the output
        if index_dir:
            _decontaminate(config, docs, stats, index_dir, canary=True)
        write_marker(marker_path(config.out, "c", shard), {"stats": stats})
        return stats
    if config.line_dedup:
        with np.load(counts_file) as z:
            counts = (z["hashes"], z["counts"])
        kept = []
        for doc in docs:
            text, removed = dedup_lines(doc.text, counts)
            S.count(stats, "line_dedup", "lines_removed", removed)
            S.record(stats, "line_dedup", bool(text), None if text else "all_lines_repeated", doc, config.max_samples)
            if text:
                kept.append(Document(doc.id, text, doc.url, doc.meta))
        docs = kept
        t = _timed(stats, "line_dedup", t)
    if index_dir:
        docs = _decontaminate(config, docs, stats, index_dir, canary=False)
        t = _timed(stats, "decontaminate", t)
    for name, fn in _filters(config):
        verdicts = fn([d.text for d in docs])
        kept = []
        for doc, (text, why, counters) in zip(docs, verdicts):
            S.record(stats, name, text is not None, why, doc, config.max_samples)
            for k, v in counters.items():
                S.count(stats, name, k, v)
            if text is not None:
                kept.append(doc if text is ... else Document(doc.id, text, doc.url, doc.meta))
        docs = kept
        t = _timed(stats, name, t)
    if config.mask_pii:
        masked = []
        for doc in docs:
            text, n = mask_pii(doc.text)
            for kind, c in n.items():
                S.count(stats, "pii", kind, c)
            S.record(stats, "pii", True)
            masked.append(Document(doc.id, text, doc.url, {**doc.meta, "pii": sum(n.values())}))
        docs = masked
        t = _timed(stats, "pii", t)
    write_jsonl(docs, clean_path(config.out, shard))
    write_marker(marker_path(config.out, "c", shard), {"stats": stats})
    return stats
