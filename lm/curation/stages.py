"""The three per-shard passes of the pipeline (each a top-level function, so processes and Ray
can run it), and the per-document stage functions they chain.

Pass A: read, extract, identify language; MinHash signatures of what survives.
   (the driver clusters near-duplicates from all signatures)
Pass B: drop near-duplicates; count line hashes (exact line dedup, pass 1).
   (the driver merges the counts)
Pass C: exact line dedup (pass 2), Gopher rules, harmful filters, quality filter, PII masking;
        write the clean shard.
Near-duplicates go first so that a page and its near-copy do not strip each other's shared
lines in the exact line dedup (which drops every copy of a repeated line).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from lm.curation import stats as S
from lm.curation.config import CurationConfig
from lm.curation.document import Document, read_jsonl, write_jsonl


def work_path(out: str, name: str, shard: int) -> Path:
    return Path(out) / "work" / f"{name}-{shard:05d}.jsonl"


def clean_path(out: str, shard: int) -> Path:
    return Path(out) / "clean" / f"shard-{shard:05d}.jsonl"


def _timed(stats: dict, name: str, t0: float) -> float:
    t = time.perf_counter()
    S.stage(stats, name)["seconds"] += t - t0
    return t


def pass_extract(config: CurationConfig, warc: str, shard: int) -> tuple[dict, np.ndarray]:
    from lm.curation.extract import extract_text
    from lm.curation.language import identify_language
    from lm.curation.minhash import minhash_signatures
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
    write_jsonl(kept, work_path(config.out, "a", shard))
    m = config.minhash
    sig = (minhash_signatures([d.text for d in kept], m.num_perm, m.ngram, m.seed) if config.fuzzy_dedup
           else np.zeros((len(kept), 0), np.uint32))
    _timed(stats, "fuzzy_dedup", t)
    return stats, sig


def pass_dedup(config: CurationConfig, shard: int, duplicate_of: dict[int, str]
               ) -> tuple[dict, tuple[np.ndarray, np.ndarray]]:
    """Drop the documents at positions in `duplicate_of` (-> id of the kept copy); count line hashes."""
    from lm.curation.exact_dedup import line_hash_counts

    stats, kept = {}, []
    t = time.perf_counter()
    for i, doc in enumerate(read_jsonl(work_path(config.out, "a", shard))):
        dup = duplicate_of.get(i)
        if config.fuzzy_dedup:
            S.record(stats, "fuzzy_dedup", dup is None, "near_duplicate", doc, config.max_samples, duplicate_of=dup)
        if dup is None:
            kept.append(doc)
    write_jsonl(kept, work_path(config.out, "b", shard))
    t = _timed(stats, "fuzzy_dedup", t)
    counts = line_hash_counts(d.text for d in kept) if config.line_dedup else (np.zeros(0, np.uint64),) * 2
    _timed(stats, "line_dedup", t)
    return stats, counts


def _harmful_classifiers(config: CurationConfig) -> list:
    from lm.curation.harmful import load_harmful_classifier

    out = []
    if config.toxic or config.toxic_model:
        out.append(load_harmful_classifier("toxic", config.toxic_model or None))
    if config.nsfw_model:
        out.append(load_harmful_classifier("nsfw", config.nsfw_model))
    return out


def _filters(config: CurationConfig) -> list:
    """[(stage name, texts -> [(keep, reason)])], each run over a whole shard at once."""
    from lm.curation.gopher import gopher_filter
    from lm.curation.harmful import harmful_filter_batch
    from lm.curation.quality import quality_filter

    steps = []
    if config.gopher:
        steps.append(("gopher", lambda texts: [gopher_filter(t) for t in texts]))
    classifiers = _harmful_classifiers(config)
    if classifiers:
        steps.append(("harmful", lambda texts: harmful_filter_batch(texts, classifiers, config.harmful_threshold)))
    if config.quality_model:
        steps.append(("quality", lambda texts: [quality_filter(t, config.quality_model, config.min_quality)
                                                for t in texts]))
    return steps


def pass_filter(config: CurationConfig, shard: int, counts_file: str) -> dict:
    from lm.curation.exact_dedup import dedup_lines
    from lm.curation.pii import mask_pii

    stats = {}
    t = time.perf_counter()
    docs = list(read_jsonl(work_path(config.out, "b", shard)))  # one shard, not the corpus
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
    for name, fn in _filters(config):
        verdicts = fn([d.text for d in docs])
        for doc, (ok, why) in zip(docs, verdicts):
            S.record(stats, name, ok, why, doc, config.max_samples)
        docs = [d for d, (ok, _) in zip(docs, verdicts) if ok]
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
    return stats
