import random

import pytest

from lm.tokenizer import train_bpe
from lm.tokenizer.pretokenize import count_pretokens, find_chunk_boundaries
from tests.tokenizer.reference import reference_train_bpe


def _write(tmp_path, text, name="corpus.txt"):
    p = tmp_path / name
    p.write_bytes(text.encode("utf-8"))
    return p


def _check_against_reference(path, vocab_size, specials, **kw):
    text = path.read_text(encoding="utf-8")
    vocab, merges = train_bpe(path, vocab_size, specials, **kw)
    ref_vocab, ref_merges = reference_train_bpe(text, vocab_size, specials)
    assert merges == ref_merges
    assert vocab == ref_vocab


def test_matches_reference_on_real_corpus(corpora_dir, tmp_path):
    # corpus.en is CS336's training fixture; tinystories has the special token in it.
    _check_against_reference(corpora_dir / "corpus.en", 500, ["<|endoftext|>"])
    _check_against_reference(corpora_dir / "tinystories_sample.txt", 400, ["<|endoftext|>"])


def test_matches_reference_with_small_chunks_and_workers(corpora_dir):
    # Many tiny chunks over two processes must give exactly the single-pass counts.
    _check_against_reference(corpora_dir / "corpus.en", 400, ["<|endoftext|>"], chunk_bytes=2048, num_workers=2)


def test_ties_break_to_lexicographically_greatest_pair(tmp_path):
    # Every pair occurs equally often: the order is decided by ties alone.
    path = _write(tmp_path, "ab cd ef ab cd ef gh")
    vocab, merges = train_bpe(path, 256 + 4)
    # Count 2: (a,b) (" ",c) (c,d) (" ",e) (e,f); the greatest is (e,f).
    assert merges[0] == (b"e", b"f")
    _check_against_reference(path, 256 + 12, [])


@pytest.mark.parametrize("seed", range(6))
def test_matches_reference_on_generated_corpora(tmp_path, seed):
    rng = random.Random(seed)
    alphabet = rng.choice(["ab", "abc", "abé", "xyz01 ", "aé😀 "])
    docs = []
    for _ in range(rng.randint(5, 40)):
        words = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 7))) for _ in range(rng.randint(1, 12))]
        docs.append(rng.choice([" ", "  ", "\n", ", "]).join(words))
    text = "<|endoftext|>".join(docs)
    path = _write(tmp_path, text)
    _check_against_reference(path, 256 + 1 + rng.randint(5, 60), ["<|endoftext|>"])


def test_special_tokens_never_merged_or_spanned(tmp_path):
    path = _write(tmp_path, "<|endoftext|>" * 50 + "hello<|endoftext|>hello" * 20)
    vocab, merges = train_bpe(path, 300, ["<|endoftext|>"])
    assert vocab[256] == b"<|endoftext|>"
    for a, b in merges:
        assert b"<|" not in a + b and b"|>" not in a + b
    assert len(vocab) == len(set(vocab.values()))


def test_vocab_layout_and_size(corpora_dir):
    vocab, merges = train_bpe(corpora_dir / "corpus.en", 700, ["<|endoftext|>", "<pad>"])
    assert len(vocab) == 700 and len(merges) == 700 - 258
    assert [vocab[i] for i in range(256)] == [bytes([i]) for i in range(256)]
    assert vocab[256] == b"<|endoftext|>" and vocab[257] == b"<pad>"
    for k, (a, b) in enumerate(merges):
        assert vocab[258 + k] == a + b


def test_chunk_boundaries_are_safe_without_special_tokens(tmp_path):
    rng = random.Random(0)
    lines = []
    for _ in range(3000):
        words = [rng.choice(["the", "cat", "  ", "é", "'ll", "42", "!?", " "]) for _ in range(rng.randint(0, 8))]
        lines.append("".join(words))
    text = "\n".join(lines[:1500]) + "x\r\n".join(lines[1500:]) + "\n  \n\nend"
    path = _write(tmp_path, text)
    whole = count_pretokens(path, num_workers=1, chunk_bytes=1 << 30)
    bounds = find_chunk_boundaries(path, 512)
    assert len(bounds) > 5
    assert count_pretokens(path, num_workers=2, chunk_bytes=512) == whole


def test_chunk_cut_keeps_overlapping_special_tokens(tmp_path):
    specials = ["<s>", "<s><s>"]
    text = ("abc<s><s>def<s>" * 200)
    path = _write(tmp_path, text)
    whole = count_pretokens(path, specials, num_workers=1, chunk_bytes=1 << 30)
    assert count_pretokens(path, specials, num_workers=1, chunk_bytes=37) == whole


# ---------------------------------------------------------------- bad input
def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        train_bpe(tmp_path / "nope.txt", 300)


def test_vocab_size_too_small(tmp_path):
    path = _write(tmp_path, "hello")
    with pytest.raises(ValueError, match="at least 258"):
        train_bpe(path, 257, ["<a>", "<b>"])


def test_empty_corpus(tmp_path):
    path = _write(tmp_path, "")
    with pytest.raises(ValueError, match="empty"):
        train_bpe(path, 300)


def test_undecodable_bytes_name_the_offset(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes(b"hello world caf\xe9 ok")
    with pytest.raises(ValueError, match=r"byte offset 15"):
        train_bpe(path, 300, num_workers=1)
