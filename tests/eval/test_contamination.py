"""Contamination: benchmark questions planted in a small training corpus are recovered exactly, through
the shared n-gram code (lm.data.ngrams), and the index is built once per corpus."""

import numpy as np
import pytest

from lm.data import ngrams
from lm.eval.contamination import contaminated, contamination_report, corpus_index, token_files
from tests.eval.models import byte_tokenizer

EOT = 256
FILLER = ("the cat sat on a warm mat while rain fell softly over quiet hills and a small dog slept "
          "near the old wooden door of the farm house by the river")


def _questions(n: int) -> list[str]:
    rng = np.random.default_rng(0)
    words = "apple river number seven orbit planet molecule theorem prime market law verdict".split()
    return [f"Question {i}: " + " ".join(rng.choice(words, 16)) + "?" for i in range(n)]


def _corpus(tmp_path, planted: list[str]):
    """Two token files of byte tokens: filler documents with the planted questions inside some of them."""
    tok = byte_tokenizer()
    docs = [FILLER] * 6 + [f"{FILLER} {q.upper()} and more." for q in planted]  # case and punctuation differ
    np.random.default_rng(1).shuffle(docs)
    for part in (0, 1):
        ids = [t for d in docs[part::2] for t in [*tok.encode(d), EOT]]
        np.save(tmp_path / f"tokens_{part}.npy", np.asarray(ids, np.uint16))
    return tok


def test_planted_questions_are_recovered_exactly(tmp_path, monkeypatch):
    questions = _questions(20)
    planted = [questions[i] for i in (1, 4, 5, 11, 17)]
    tok = _corpus(tmp_path, planted)
    files = token_files(tmp_path)
    index = corpus_index(files, tok, 13, tmp_path / "cache")
    flags = contaminated(index, questions + ["too short to check"], 13)
    assert flags == [i in (1, 4, 5, 11, 17) for i in range(20)] + [None]
    records = [{"correct": i % 2 == 1} for i in range(21)]
    r = contamination_report(records, flags, 13)
    assert (r["contaminated"], r["examples"], r["too_short"]) == (5, 21, 1) and r["fraction"] == 5 / 21
    assert r["contaminated_acc"] == 4 / 5 and r["clean_n"] == 16 and r["clean_acc"] == 6 / 16  # odd ids: 1 5 11 17
    # The index is the same one lm.data.ngrams builds from the decoded documents, and it is cached.
    arrays = [np.load(f) for f in files]
    docs = [tok.decode([int(t) for t in d]) for a in arrays for d in np.split(a, np.flatnonzero(a == EOT))]
    direct = ngrams.NgramIndex.build(ngrams.text_ngram_hashes(d.replace("<|endoftext|>", ""), 13) for d in docs)
    assert np.array_equal(index.hashes, direct.hashes)
    monkeypatch.setattr(ngrams.NgramIndex, "build", lambda *a, **k: pytest.fail("index rebuilt"))
    again = corpus_index(files, tok, 13, tmp_path / "cache")
    assert np.array_equal(again.hashes, index.hashes)
    assert contaminated(again, questions[:2], 13) == [False, True]


def test_shorter_ngrams_flag_more(tmp_path):
    tok = _corpus(tmp_path, [])
    index = corpus_index(token_files(tmp_path), tok, 3, None)
    assert contaminated(index, ["a warm mat", "a cold mat", "x y"], 3) == [True, False, None]
    with pytest.raises(FileNotFoundError, match="no .npy"):
        token_files(tmp_path / "nowhere")
