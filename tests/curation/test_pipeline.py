"""The whole pipeline on small WARCs written here: every stage's counts, outputs, executors, CLI."""

import json
import random

import numpy as np
import pytest

from benchmarks.warc_fixtures import write_warc, write_wet
from lm.curation.config import CurationConfig
from lm.curation.document import read_jsonl
from lm.curation.pipeline import run_curation

from .conftest import FRENCH, GERMAN, edit_words, html_page


@pytest.fixture(scope="module")
def crawl(tmp_path_factory, english_docs):
    """Three shards (gzip'd, plain, WET) with planted cases; returns (glob, expectations)."""
    d = tmp_path_factory.mktemp("crawl")
    rng = random.Random(0)
    eng = english_docs[:24]
    pages = [(f"https://site.example/en/{i}", html_page(f"Page {i}", t).encode(), "text/html; charset=utf-8")
             for i, t in enumerate(eng)]
    pages[0] = (pages[0][0], html_page("Contact", eng[0] + "\n\nWrite to jane.roe@example.com or call 555-123-4567.")
                .encode(), "text/html")
    pages += [(f"https://site.example/de/{i}", html_page("Seite", (GERMAN + " ") * 3).encode(), "text/html")
              for i in range(3)]
    pages += [(f"https://site.example/fr/{i}", html_page("Page", (FRENCH + " ") * 3).encode("cp1252"),
               "text/html; charset=windows-1252") for i in range(2)]
    pages += [(f"https://mirror.example/en/{i}", html_page(f"Page {i}", edit_words(eng[i], 0.05, rng)).encode(),
               "text/html") for i in (5, 6, 7)]  # near-duplicates
    pages += [("https://site.example/img.png", b"\x89PNG\r\n\x1a\n" + bytes(300), "image/png"),
              ("https://site.example/empty", b"", "text/html"),
              ("https://site.example/short", html_page("Hi", "Too short to keep.").encode(), "text/html")]
    rng.shuffle(pages)
    write_warc(d / "crawl-0.warc.gz", pages[:20])
    write_warc(d / "crawl-1.warc", pages[20:])
    write_wet(d / "crawl-2.warc.wet.gz", [("https://wet.example/a", eng[10]), ("https://wet.example/b", "")])
    raw = (d / "crawl-1.warc").read_bytes()
    cut = raw.index(b"WARC/1.", 10)  # a malformed stretch before the second record
    (d / "crawl-1.warc").write_bytes(raw[:cut] + b"not a header\r\n\r\n" + raw[cut:])
    return str(d / "crawl-*"), {"records": len(pages) + 2}


@pytest.fixture(scope="module")
def curated(crawl, tmp_path_factory):
    """The serial run every other run is compared with."""
    out = tmp_path_factory.mktemp("curated") / "out"
    return out, run_curation(CurationConfig(input=crawl[0], out=str(out), vocab_size=300, workers=1), progress=False)


def _clean(result):
    return [(d.id, d.text) for p in result["clean_shards"] for d in read_jsonl(p)]


def test_stage_counts_outputs_and_tokens(crawl, curated):
    out, res = curated
    st = res["stats"]
    assert st["read"]["in"] == crawl[1]["records"]
    assert st["read"]["counters"]["malformed_skips"] == 1
    assert st["extract"]["removed"] == {"binary": 1, "empty": 2}
    assert st["language"]["removed"].get("lang:de") == 3 and st["language"]["removed"].get("lang:fr") == 2
    # 3 edited copies plus the WET copy of an English page
    assert st["fuzzy_dedup"]["removed"] == {"near_duplicate": 4}
    assert all(s["duplicate_of"] for s in st["fuzzy_dedup"]["samples"]["near_duplicate"])
    assert st["line_dedup"]["counters"]["lines_removed"] >= 3 * 20  # nav and footer lines on every page
    assert st["gopher"]["removed"].get("too_few_words", 0) >= 1
    assert st["pii"]["counters"] == {"email": 1, "phone": 1, "ip": 0}
    docs = [d for p in res["clean_shards"] for d in read_jsonl(p)]
    # The 24 English pages (one of the 3 near-copies is kept instead of its original), less those
    # that line dedup shortened below 50 words: pydoc topics share many lines with one another.
    assert len(docs) == st["pii"]["kept"] == st["gopher"]["kept"] == 24 - st["gopher"]["removed"]["too_few_words"] + 1
    assert "https://site.example/short" in [x["url"] for x in st["gopher"]["samples"]["too_few_words"]] or \
        st["gopher"]["removed"]["too_few_words"] > 5
    text = "\n".join(d.text for d in docs)
    assert "|||EMAIL_ADDRESS|||" in text and "jane.roe" not in text and "Copyright 2024" not in text
    assert len({d.url.split("/")[-1] for d in docs}) == len(docs)
    assert all(d.meta["language"] == "en" for d in docs)
    tok = np.load(out / "tokens" / "train.npy")
    assert tok.dtype == np.uint16 and tok.max() < 300 and len(tok) == res["tokens"]["train_tokens"] > 0
    assert (out / "tokens" / "tokenizer.json").is_file()
    assert json.loads((out / "stats.json").read_text())["read"]["in"] == crawl[1]["records"]
    assert "| language |" in (out / "report.md").read_text()
    assert not (out / "work").exists()


def test_pretrain_reads_the_token_arrays(curated):
    from experiments.pretrain import PretrainConfig, load_data

    tok, data = load_data(PretrainConfig(tokens=str(curated[0] / "tokens"),
                                         model=PretrainConfig().model.__class__(vocab_size=300)))
    assert len(data.train) > 1000 and len(data.val) > 0 and tok is not None


def test_processes_give_the_same_result_as_serial(crawl, curated, tmp_path):
    cfg = CurationConfig(input=crawl[0], out=str(tmp_path / "c"), workers=2, tokenize=False,
                         toxic=False)  # no page is toxic; skipping it saves each worker loading scikit-learn
    assert _clean(run_curation(cfg, progress=False)) == _clean(curated[1])


def test_switches_and_all_duplicate_corpus(tmp_path, english_docs):
    page = html_page("Same", english_docs[0]).encode()
    write_warc(tmp_path / "dup.warc", [(f"https://x.example/{i}", page, "text/html") for i in range(20)])
    cfg = CurationConfig(input=str(tmp_path / "dup.warc"), out=str(tmp_path / "o"), workers=1, tokenize=False)
    st = run_curation(cfg, progress=False)["stats"]
    assert st["fuzzy_dedup"]["kept"] == 1 and st["pii"]["kept"] == 1
    off = CurationConfig(input=cfg.input, out=str(tmp_path / "o2"), workers=1, tokenize=False, fuzzy_dedup=False,
                         line_dedup=True, languages=())
    st = run_curation(off, progress=False)["stats"]
    assert st["line_dedup"]["removed"] == {"all_lines_repeated": 20}  # every line repeats: nothing is left
    with pytest.raises(ValueError, match="nothing to tokenize"):
        run_curation(CurationConfig(input=cfg.input, out=str(tmp_path / "o3"), workers=1, languages=("xx",)),
                     progress=False)
    with pytest.raises(FileNotFoundError, match="no input files"):
        run_curation(CurationConfig(input=str(tmp_path / "nothing*"), out=str(tmp_path / "o4")), progress=False)
    with pytest.raises(ValueError, match="langid_backend"):
        CurationConfig(langid_backend="magic")


def test_cli(crawl, tmp_path, capsys):
    from experiments.curate import main

    assert main(["--input", crawl[0], "--out", str(tmp_path / "cli"), "--workers", "1", "--vocab-size", "300",
                 "--language", "en", "--minhash.bands", "10", "--minhash.rows", "10"]) == 0
    out = capsys.readouterr().out
    assert "| fuzzy_dedup |" in out and "experiments.pretrain --tokens" in out
    assert main(["--input", str(tmp_path / "none*"), "--out", str(tmp_path / "x")]) == 2


@pytest.mark.slow  # starting a local Ray instance takes 15-40 s on 2 busy cores
def test_ray_local(crawl, curated, tmp_path):
    ray = pytest.importorskip("ray")
    cfg = CurationConfig(input=crawl[0], out=str(tmp_path / "ray"), workers=2, tokenize=False, ray="local",
                         toxic=False)
    try:
        res = run_curation(cfg, progress=False)
    finally:
        ray.shutdown()
    assert _clean(res) == _clean(curated[1])
