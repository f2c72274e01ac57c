"""The pipeline at scale: new filter stages, decontamination, canaries, resume after a kill, and output
bytes that do not depend on the executor (1, 2, 4 processes, Ray)."""

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks.warc_fixtures import write_warc
from lm.curation.config import CurationConfig
from lm.curation.document import read_jsonl
from lm.curation.pipeline import run_curation

from .conftest import edit_words, html_page

BENCH_ITEMS = [
    "A farmer has 17 sheep and buys 25 more at the spring market, then sells 12 of them to a neighbour. How many "
    "sheep does the farmer have at the end of the week?",
    "Which of the following best describes the main function of the mitochondria found in most eukaryotic cells "
    "of plants and animals?",
    "A train leaves the station at nine in the morning travelling at sixty miles per hour towards a city two "
    "hundred miles away. When does it arrive?",
]


@pytest.fixture(scope="module")
def crawl(tmp_path_factory, english_docs):
    """Four shards of real English text with near-copies and two pages quoting a benchmark."""
    d = tmp_path_factory.mktemp("crawl")
    rng = random.Random(0)
    docs = english_docs[:36]
    pages = [(f"https://site.example/{i}", t) for i, t in enumerate(docs)]
    pages += [(f"https://mirror.example/{i}", edit_words(docs[i], 0.04, rng)) for i in (1, 2, 3)]
    pages[7] = (pages[7][0], pages[7][1] + "\n\nHomework: " + BENCH_ITEMS[0])
    pages[9] = (pages[9][0], BENCH_ITEMS[1].lower() + "\n\n" + pages[9][1])
    rng.shuffle(pages)
    for s in range(4):
        write_warc(d / f"crawl-{s}.warc", [(u, html_page(f"Page {u}", t).encode(), "text/html")
                                           for u, t in pages[s::4]])
    bench = d / "bench" / "quiz.jsonl"
    bench.parent.mkdir()
    bench.write_text("".join(json.dumps({"question": q, "answer": "x"}) + "\n" for q in BENCH_ITEMS))
    return str(d / "crawl-*.warc"), str(bench)


def _kwargs(crawl, out, **kw):
    base = dict(input=crawl[0], out=str(out), workers=1, vocab_size=300, toxic=False, decontaminate=crawl[1],
                canaries=2, canary_benchmark_items=3)
    return {**base, **kw}


def _config(crawl, out, **kw):
    return CurationConfig(**_kwargs(crawl, out, **kw))


def _output_bytes(out: Path) -> dict[str, bytes]:
    files = sorted(p for p in (out / "clean").glob("*.jsonl")) + sorted((out / "tokens").glob("*.npy"))
    files += [out / "tokens" / "tokenizer.json"] if (out / "tokens" / "tokenizer.json").exists() else []
    return {str(p.relative_to(out)): p.read_bytes() for p in files}


@pytest.fixture(scope="module")
def reference(crawl, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "out"
    res = run_curation(_config(crawl, out), progress=False)
    return out, res, _output_bytes(out)


def test_decontamination_and_canaries_in_stats(reference):
    out, res, _ = reference
    st = json.loads((out / "stats.json").read_text())
    name = "bench/quiz"
    assert st["decontaminate"]["counters"][f"docs:{name}"] == 2  # both quoting pages
    assert st["decontaminate"]["removed"] == {"benchmark_overlap": 2}
    assert st["canaries"]["counters"] == {f"benchmark_planted:{name}": 3, f"benchmark_found:{name}": 3}
    rows = {r["target"]: r for r in st["canaries"]["near_duplicates"]}
    assert sorted(rows) == [round(0.5 + 0.05 * i, 2) for i in range(10)]
    for t, r in rows.items():
        assert abs(r["mean_jaccard"] - t) < 0.03 and r["pairs"] == 2
        assert 0 <= r["predicted_candidate_rate"] <= 1
    assert rows[0.95]["removed_rate"] == 1 and rows[0.5]["removed_rate"] == 0  # threshold 0.6
    assert "Near-duplicate canaries" in res["report"]
    texts = [d.text for p in res["clean_shards"] for d in read_jsonl(p)]
    assert not any("canary" in d.id for p in res["clean_shards"] for d in read_jsonl(p))
    assert not any("17 sheep" in t or "mitochondria found in most" in t.lower() for t in texts)
    # the 3 planted copies (and a pair of near-identical pydoc topics); canaries are not counted
    assert st["fuzzy_dedup"]["in"] == st["language"]["kept"] and st["fuzzy_dedup"]["removed"]["near_duplicate"] >= 3


def test_new_filter_stages_report_counts_and_samples(crawl, tmp_path):
    cfg = _config(crawl, tmp_path / "f", gopher_repetition=True, c4=True, fineweb=True, tokenize=False, canaries=0,
                  decontaminate=str(Path(crawl[1]).parent), decontam_action="flag", mask_pii=False)
    res = run_curation(cfg, progress=False)
    st = res["stats"]
    # a folder is a benchmark too; its documents are flagged, not removed
    name = f"{Path(crawl[1]).parent.parent.name}/bench"
    assert st["decontaminate"]["counters"][f"docs:{name}"] == 2 and not st["decontaminate"]["removed"]
    order = ["gopher", "gopher_repetition", "c4", "fineweb"]
    for a, b in zip(order, order[1:]):
        assert st[b]["in"] == st[a]["kept"]  # each stage sees what the previous one kept
    assert sum(st["c4"]["removed"].values()) > 0 and st["c4"]["samples"]
    assert any(k.startswith("lines_") for k in st["c4"]["counters"])
    assert all(len(v) <= 5 for s in order for v in st[s]["samples"].values())


def test_workers_give_identical_bytes(crawl, reference, tmp_path):
    for workers in (2, 4):
        run_curation(_config(crawl, tmp_path / f"w{workers}", workers=workers), progress=False)
        assert _output_bytes(tmp_path / f"w{workers}") == reference[2], workers


def test_ray_gives_identical_bytes(crawl, reference, tmp_path):
    ray = pytest.importorskip("ray")
    try:
        run_curation(_config(crawl, tmp_path / "ray", workers=2, ray="local"), progress=False)
    finally:
        ray.shutdown()
    assert _output_bytes(tmp_path / "ray") == reference[2]


def test_killed_run_resumes_to_identical_output(crawl, reference, tmp_path, monkeypatch):
    out = tmp_path / "killed"
    kwargs = _kwargs(crawl, out, keep_work=True)
    cfg = CurationConfig(**kwargs)
    code = ("import json, sys\nfrom lm.curation.config import CurationConfig\n"
            "from lm.curation.pipeline import run_curation\n"
            "run_curation(CurationConfig(**json.loads(sys.argv[1])), progress=False)")
    proc = subprocess.Popen([sys.executable, "-c", code, json.dumps(kwargs)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    marker = out / "work" / "a-00001.done"
    deadline = time.time() + 120
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert marker.exists(), proc.stderr.read().decode()[-2000:]
    assert not (out / "complete.json").exists()  # killed mid-run
    done_before = {p.name for p in (out / "work").glob("a-*.done")}

    import lm.curation.stages as stages

    calls = []
    real = stages.pass_extract
    monkeypatch.setattr(stages, "pass_extract", lambda *a: calls.append(a[2]) or real(*a))
    run_curation(cfg, progress=False)
    assert len(calls) == 4 - len(done_before) and 1 in {int(n[2:7]) for n in done_before}
    assert _output_bytes(out) == reference[2]

    # A finished run is not recomputed; other settings in the same folder are refused.
    calls.clear()
    assert run_curation(cfg, progress=False)["seconds"] == 0.0 and not calls
    with pytest.raises(ValueError, match="other settings"):
        run_curation(_config(crawl, out, canaries=1), progress=False)


def test_report_warns_when_dedup_removes_no_planted_duplicates():
    from lm.curation.pipeline import _canary_lines

    row = {"target": 0.9, "pairs": 5, "mean_jaccard": 0.9, "candidate_rate": 0.0, "predicted_candidate_rate": 1.0,
           "removed_rate": 0.0, "predicted_removed_rate": 1.0}
    assert "Warning" in "\n".join(_canary_lines({"canaries": {"near_duplicates": [row]}}))
    assert "Warning" not in "\n".join(_canary_lines({"canaries": {"near_duplicates": [{**row, "removed_rate": 1.0}]}}))
