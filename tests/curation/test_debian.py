"""Real pages: Debian's documentation packages (python3.11-doc, debian-handbook, debian-reference-*).

Installed by `benchmarks/curation_setup.sh`; skipped with a reason when absent.
"""

import random
from collections import defaultdict

import numpy as np
import pytest

from benchmarks.warc_fixtures import DEBIAN_ROOTS, build_debian_warcs, debian_available, debian_pages
from lm.curation.extract import extract_text

from .conftest import edit_words

pytestmark = pytest.mark.skipif(not debian_available(), reason="Debian documentation packages not installed "
                                "(run benchmarks/curation_setup.sh)")


def sample_pages(per_lang: int, seed: int = 0, source: str | None = None):
    groups = defaultdict(list)
    for url, path, lang in debian_pages():
        if source is None or f"/{source}/" in url:
            groups[lang].append((url, path))
    rng = random.Random(seed)
    return {lang: rng.sample(v, min(per_lang, len(v))) for lang, v in sorted(groups.items())}


def test_language_id_agrees_with_page_folders():
    """Folder labels are noisy: untranslated handbook/reference pages are English text in another
    language's folder. On pages that differ from their English original, lid.176 must agree."""
    from lm.curation.language import identify_language
    from benchmarks.warc_fixtures import labelled_debian_texts

    pages = labelled_debian_texts(per_lang=12)
    hits, totals = defaultdict(int), defaultdict(int)
    for p in pages:
        if not p["untranslated"]:
            hits[p["lang"]] += identify_language(p["text"])[0] == p["lang"]
            totals[p["lang"]] += 1
    rates = {lang: hits[lang] / n for lang, n in totals.items() if n >= 3}
    print("\n" + " ".join(f"{k}:{v:.2f}/{totals[k]}" for k, v in rates.items()))
    assert len(rates) >= 15  # some translations (da, el, hr, ko, ro, tr) are almost wholly English
    assert rates["en"] >= 0.9
    assert sum(hits.values()) / sum(totals.values()) >= 0.85
    assert np.median(list(rates.values())) >= 0.9


def test_long_pages_are_judged_on_their_whole_text():
    """stdtypes.html and os.html score ~0.3 on their table-of-contents opening, ~0.8 on all their text."""
    from lm.curation.language import identify_language

    for name in ("stdtypes", "os"):
        path = DEBIAN_ROOTS["python"] / "library" / f"{name}.html"
        if not path.is_file():
            pytest.skip(f"{path} not installed")
        text, _ = extract_text(path.read_bytes(), "text/html", "utf-8")
        lang, score = identify_language(text)
        assert lang == "en" and score >= 0.6, (name, score)


def test_planted_near_duplicates_in_python_docs():
    """5%-edited copies of real pages are found (recall) and nothing else is merged (precision),
    counting pairs of pages that really are near-duplicates (exact Jaccard) as true."""
    from lm.curation.near_dedup import MinHashConfig, fuzzy_dedup
    from lm.curation.minhash import jaccard, shingle_set

    rng = random.Random(0)
    base = []
    for _, path in sample_pages(500, source="python")["en"]:
        if path.stat().st_size < 200_000:  # the biggest pages cost most of the extraction time
            text, _ = extract_text(path.read_bytes(), "text/html", "utf-8")
            if len(text.split()) >= 200:
                base.append(text)
        if len(base) == 100:
            break
    c = MinHashConfig()
    sets = [shingle_set(t, c.ngram) for t in base]
    truth = {(i, j) for i in range(len(base)) for j in range(i + 1, len(base))
             if jaccard(sets[i], sets[j]) >= c.threshold}
    src = rng.sample(range(len(base)), 40)
    docs = base + [edit_words(base[i], 0.05, rng) for i in src]
    planted = {(i, len(base) + k) for k, i in enumerate(src)}
    root, _ = fuzzy_dedup(docs, c)
    found = [(int(root[j]), j) for j in range(len(docs)) if root[j] != j]
    recall = sum(root[i] == root[j] for i, j in planted) / len(planted)
    precision = sum(_linked(a, b, truth | planted) for a, b in found) / max(len(found), 1)
    assert recall >= 0.95 and precision >= 0.95, (recall, precision, len(found), len(truth))


def _linked(a, b, pairs):
    """a and b connected through the true pairs (a cluster of three counts as true)."""
    adj = defaultdict(set)
    for x, y in pairs:
        adj[x].add(y), adj[y].add(x)
    seen, stack = {a}, [a]
    while stack:
        for y in adj[stack.pop()] - seen:
            seen.add(y), stack.append(y)
    return b in seen


def test_pipeline_on_debian_warcs(tmp_path):
    from lm.curation.config import CurationConfig
    from lm.curation.pipeline import run_curation

    m = build_debian_warcs(tmp_path / "warc", pages_per_shard=40, max_pages=120, sample=True)
    res = run_curation(CurationConfig(input=str(tmp_path / "warc" / "*.warc*"), out=str(tmp_path / "out"),
                                      workers=1, tokenize=False), progress=False)
    st = res["stats"]
    assert st["read"]["in"] >= m["pages"]  # WET records come on top
    assert st["read"]["counters"]["malformed_skips"] == 0
    assert st["extract"]["kept"] >= 0.95 * st["extract"]["in"]
    assert st["language"]["removed"]  # other languages go
    assert st["fuzzy_dedup"]["removed"].get("near_duplicate", 0) >= 1  # the WET copies of shard 0
    assert sum(1 for p in res["clean_shards"] for _ in open(p)) == st["pii"]["kept"] > 10
