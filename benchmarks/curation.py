"""Curation speed on real pages (Debian documentation packed into WARCs), and MinHash dedup
against datasketch on the same documents.

    bash benchmarks/curation_setup.sh          # once: apt packages and runs/debian-warc
    python -m benchmarks.curation [--warc-dir runs/debian-warc] [--docs 1000]

Prints documents/s for each stage (one process), for the whole pipeline (all cores), MinHash
dedup throughput ours vs datasketch as a ratio (interleaved repeats, median), and language-id
agreement with the page folders for the three offline backends.
"""

from __future__ import annotations

import argparse
import glob
import statistics
import time
from pathlib import Path


def _rate(n: int, fn) -> tuple[float, object]:
    t = time.perf_counter()
    out = fn()
    return n / (time.perf_counter() - t), out


def stage_rates(files: list[str]) -> list[tuple[str, float, int]]:
    from lm.curation.exact_dedup import dedup_lines, line_hash_counts
    from lm.curation.extract import extract_text
    from lm.curation.gopher import gopher_filter
    from lm.curation.harmful import load_harmful_classifier
    from lm.curation.language import identify_language
    from lm.curation.pii import mask_pii
    from lm.curation.reading import read_warc

    rows = []
    r, recs = _rate(1, lambda: [x for f in files for x in read_warc(f)])
    rows.append(("read (fastwarc)", r * len(recs), len(recs)))
    r, texts = _rate(len(recs), lambda: [extract_text(x.payload, x.content_type, x.charset)[0] for x in recs])
    rows.append(("extract (resiliparse)", r, len(recs)))
    texts = [t for t in texts if t]
    for backend in ("fasttext", "langid", "cld2"):
        identify_language("warm up", backend)
        r, _ = _rate(len(texts), lambda: [identify_language(t, backend) for t in texts])
        rows.append((f"language ({backend})", r, len(texts)))
    rows.append(("PII masking", _rate(len(texts), lambda: [mask_pii(t) for t in texts])[0], len(texts)))
    rows.append(("Gopher rules", _rate(len(texts), lambda: [gopher_filter(t) for t in texts])[0], len(texts)))
    clf = load_harmful_classifier("toxic")
    clf.batch(["warm up"])
    rows.append(("toxic (alt-profanity-check)", _rate(len(texts), lambda: clf.batch(texts))[0], len(texts)))

    def line_dedup():
        counts = line_hash_counts(texts)
        return [dedup_lines(t, counts) for t in texts]

    rows.append(("exact line dedup (2 passes)", _rate(len(texts), line_dedup)[0], len(texts)))
    return rows


def minhash_vs_datasketch(texts: list[str], repeats: int = 3) -> dict:
    import datasketch

    from lm.curation.near_dedup import MinHashConfig, fuzzy_dedup
    from lm.curation.lsh import candidate_pairs
    from lm.curation.minhash import minhash_signatures, normalize, shingles

    c = MinHashConfig()
    norm = [normalize(t) for t in texts]  # both sides start from the same normalised text

    def ours_sig():
        return minhash_signatures(norm, c.num_perm, c.ngram, c.seed)

    def ours_dedup():
        return fuzzy_dedup(norm, c)

    def theirs():
        lsh = datasketch.MinHashLSH(num_perm=c.num_perm, params=(c.bands, c.rows))
        mhs = []
        for i, t in enumerate(norm):
            m = datasketch.MinHash(num_perm=c.num_perm, seed=c.seed)
            m.update_batch([s.encode() for s in shingles(t, c.ngram)])
            lsh.insert(i, m)
            mhs.append(m)
        return {(min(i, j), max(i, j)) for i, m in enumerate(mhs) for j in lsh.query(m) if j != i}

    def ours_candidates():
        return candidate_pairs(ours_sig(), c.bands, c.rows)

    times = {"ours signatures": [], "ours candidates": [], "ours dedup (verified, clustered)": [],
             "datasketch MinHash + MinHashLSH": []}
    for _ in range(repeats):  # interleaved, so contention hits both sides alike
        for name, fn in (("ours signatures", ours_sig), ("ours candidates", ours_candidates),
                         ("ours dedup (verified, clustered)", ours_dedup),
                         ("datasketch MinHash + MinHashLSH", theirs)):
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    ref = med["datasketch MinHash + MinHashLSH"]
    return {k: (len(texts) / v, ref / v) for k, v in med.items()}


def language_accuracy(per_lang: int) -> dict:
    from lm.curation.language import identify_language
    from benchmarks.warc_fixtures import labelled_debian_texts

    pages = labelled_debian_texts(per_lang)
    out = {}
    for backend in ("fasttext", "langid", "cld2"):
        ok_all = ok_tr = n_tr = 0
        for p in pages:
            hit = identify_language(p["text"], backend)[0] == p["lang"]
            ok_all += hit
            if not p["untranslated"]:
                ok_tr += hit
                n_tr += 1
        out[backend] = (ok_all / len(pages), ok_tr / max(n_tr, 1), len(pages), n_tr)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--warc-dir", default="runs/debian-warc")
    p.add_argument("--stage-shards", type=int, default=2, help="shards timed stage by stage")
    p.add_argument("--docs", type=int, default=1000, help="documents for the MinHash comparison")
    p.add_argument("--per-lang", type=int, default=10)
    p.add_argument("--workers", type=int, default=0)
    a = p.parse_args(argv)
    from lm.curation.config import CurationConfig
    from lm.curation.extract import extract_text
    from lm.curation.pipeline import run_curation
    from lm.curation.reading import read_warc
    from benchmarks.warc_fixtures import build_debian_warcs

    d = Path(a.warc_dir)
    if not glob.glob(str(d / "*.warc*")):
        build_debian_warcs(d)
    files = sorted(glob.glob(str(d / "debian-*.warc*")))
    print("| stage (one process) | docs/s | docs |\n|---|---:|---:|")
    for name, rate, n in stage_rates([f for f in files if ".wet" not in f][:a.stage_shards]):
        print(f"| {name} | {rate:,.0f} | {n:,} |")

    out = d.parent / "debian-curated"
    t = time.perf_counter()
    res = run_curation(CurationConfig(input=str(d / "*.warc*"), out=str(out), workers=a.workers, tokenize=False),
                       progress=False)
    secs = time.perf_counter() - t
    n = res["stats"]["read"]["in"]
    print(f"\nwhole pipeline without tokenization: {n:,} records in {secs:.1f} s = {n / secs:,.0f} records/s\n")
    print(res["report"])

    texts = []  # extracted pages as a crawl has them: all languages, duplicates included
    for f in files:
        for rec in read_warc(f):
            text, _ = extract_text(rec.payload, rec.content_type, rec.charset)
            if text and len(texts) < a.docs:
                texts.append(text)
    print(f"\n| MinHash dedup on {len(texts)} extracted pages | docs/s | vs datasketch |\n|---|---:|---:|")
    for name, (rate, ratio) in minhash_vs_datasketch(texts).items():
        print(f"| {name} | {rate:,.0f} | {ratio:.2f}x |")

    print("\n| language id backend | agreement, all pages | agreement, translated pages | pages (translated) |\n"
          "|---|---:|---:|---:|")
    for backend, (all_, tr, n, n_tr) in language_accuracy(a.per_lang).items():
        print(f"| {backend} | {all_:.3f} | {tr:.3f} | {n} ({n_tr}) |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
