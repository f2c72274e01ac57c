"""The curation pipeline: WARC/WET shards -> clean text shards -> training token arrays.

    from lm.curation.pipeline import run_curation
    from lm.curation.config import CurationConfig
    result = run_curation(CurationConfig(input="crawl/*.warc.gz", out="curated"))

Output under `out`: clean/shard-NNNNN.jsonl (kept documents with metadata), tokens/ (train.npy,
val.npy, tokenizer.json: `python -m experiments.pretrain --tokens OUT/tokens`), stats.json
(per-stage counts, reasons, samples of removed documents, worker-seconds) and report.md.
Intermediate files go to work/ and are deleted at the end.
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

STAGE_ORDER = ["read", "extract", "language", "fuzzy_dedup", "line_dedup", "gopher", "harmful", "quality", "pii",
               "tokenize"]


def expand_inputs(pattern: str) -> list[str]:
    files = []
    for part in filter(None, (p.strip() for p in pattern.split(","))):
        found = sorted(glob.glob(part, recursive=True)) or ([part] if Path(part).is_file() else [])
        files.extend(found)
    if not files:
        raise FileNotFoundError(f"no input files match {pattern!r}")
    return files


def _near_duplicates(config: CurationConfig, sigs: list[np.ndarray], shard_docs: list[int]) -> tuple[list[dict], dict]:
    """Per shard {position: id of the kept duplicate}, from signatures and on-demand reads."""
    from lm.curation.document import read_jsonl_at
    from lm.curation.near_dedup import fuzzy_dedup
    from lm.curation.stages import work_path

    # Offsets of every document line in pass A's shards, for reading candidates back.
    shard_of, offsets = [], []
    for shard, n in enumerate(shard_docs):
        pos, path = 0, work_path(config.out, "a", shard)
        with open(path, "rb") as f:
            for line in f:
                shard_of.append(shard)
                offsets.append(pos)
                pos += len(line)
    shard_of, offsets = np.asarray(shard_of), np.asarray(offsets)

    def load(i: int):
        return read_jsonl_at(work_path(config.out, "a", int(shard_of[i])), int(offsets[i]))

    allsig = np.concatenate(sigs) if sigs else np.zeros((0, config.minhash.num_perm), np.uint32)
    root, info = fuzzy_dedup(None, config.minhash, signatures=allsig, load_text=lambda i: load(i).text)
    starts = np.concatenate(([0], np.cumsum(shard_docs)))
    dup = [dict() for _ in shard_docs]
    for i in np.flatnonzero(root != np.arange(len(root))):
        dup[int(shard_of[i])][int(i - starts[shard_of[i]])] = load(int(root[i])).id
    return dup, info


def _run_passes(config: CurationConfig, files: list[str], ex: ShardExecutor) -> dict:
    """Passes A, B and C over all shards, with the two global steps between them; returns stats."""
    from lm.curation.exact_dedup import merge_counts
    from lm.curation.stages import pass_dedup, pass_extract, pass_filter

    stats: dict = {}
    res = ex.map(pass_extract, [(config, f, i) for i, f in enumerate(files)], desc="extract")
    for s, _ in res:
        stats = S.merge(stats, s, config.max_samples)
    sigs = [sig for _, sig in res]
    del res
    dup = [dict() for _ in files]
    if config.fuzzy_dedup:
        t = time.perf_counter()
        dup, info = _near_duplicates(config, sigs, [len(s) for s in sigs])
        S.stage(stats, "fuzzy_dedup")["seconds"] += time.perf_counter() - t
        for k, v in info.items():
            S.count(stats, "fuzzy_dedup", k, v)
    del sigs

    res = ex.map(pass_dedup, [(config, i, dup[i]) for i in range(len(files))], desc="dedup")
    for s, _ in res:
        stats = S.merge(stats, s, config.max_samples)
    counts_file = Path(config.out) / "work" / "line_counts.npz"
    hashes, counts = merge_counts([c for _, c in res])
    np.savez(counts_file, hashes=hashes, counts=counts)
    del res, hashes, counts

    for s in ex.map(pass_filter, [(config, i, str(counts_file)) for i in range(len(files))], desc="filter"):
        stats = S.merge(stats, s, config.max_samples)
    return stats


def run_curation(config: CurationConfig, progress: bool = True) -> dict:
    """Run every stage; returns {"stats", "report", "tokens", "clean_shards", "seconds"}."""
    from lm.curation.stages import clean_path

    if not config.input or not config.out:
        raise ValueError("both input and out are required")
    files = expand_inputs(config.input)
    out = Path(config.out)
    (out / "work").mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with ShardExecutor(config.workers, config.ray, progress) as ex:
        stats = _run_passes(config, files, ex)
    shards = [str(clean_path(config.out, i)) for i in range(len(files))]

    tokens = None
    if config.tokenize:
        from lm.curation.document import read_jsonl
        from lm.curation.tokens import tokenize_documents

        t = time.perf_counter()
        tokens = tokenize_documents((d for p in shards for d in read_jsonl(p)), out / "tokens",
                                    tokenizer=config.tokenizer, vocab_size=config.vocab_size,
                                    val_fraction=config.val_fraction, workers=config.workers or None,
                                    progress=progress)
        st = S.stage(stats, "tokenize")
        st["in"] = st["kept"] = tokens["train_docs"] + tokens["val_docs"]
        st["seconds"] = time.perf_counter() - t
        S.count(stats, "tokenize", "train_tokens", tokens["train_tokens"])
        S.count(stats, "tokenize", "val_tokens", tokens["val_tokens"])
    shutil.rmtree(out / "work", ignore_errors=True)
    seconds = time.perf_counter() - t0
    report = S.format_report(stats, STAGE_ORDER)
    docs_in = S.stage(stats, "read")["in"]
    kept = sum(1 for p in shards for _ in open(p, "rb"))
    header = (f"{len(files)} shards, {docs_in:,} records -> {kept:,} documents kept "
              f"in {seconds:.1f} s ({docs_in / max(seconds, 1e-9):,.0f} records/s end to end)\n\n")
    (out / "stats.json").write_text(json.dumps(stats, indent=1, ensure_ascii=False))
    (out / "report.md").write_text(header + report + "\n")
    return {"stats": stats, "report": header + report, "tokens": tokens, "clean_shards": shards, "seconds": seconds}
