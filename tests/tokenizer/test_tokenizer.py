import json
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lm.tokenizer import (
    Tokenizer,
    encode_file,
    load_gpt2_tokenizer,
    load_tokenizer,
    mergeable_ranks,
    save_gpt2_tokenizer,
    save_tiktoken_ranks,
    save_tokenizer,
    train_bpe,
)

CORPORA = ["address.txt", "german.txt", "tinystories_sample.txt", "corpus.en", "tinystories_train_sample_2MiB.txt"]
EOT = "<|endoftext|>"
GENERATED = (
    "Once upon a time, a cat named Tom found 42 shiny stones. He said: \"I'll keep them!\"\n"
    "Über den Wolken — naïve café, 東京 😀 emoji.\n\n   Indented line\twith tab.\r\n"
)


@pytest.fixture(scope="module")
def gpt2(corpora_dir):
    return load_gpt2_tokenizer(corpora_dir / "gpt2_vocab.json", corpora_dir / "gpt2_merges.txt", [EOT])


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A tokenizer trained here on generated text, so these tests need no shared data."""
    path = tmp_path_factory.mktemp("tok") / "train.txt"
    path.write_text((GENERATED + EOT) * 30, encoding="utf-8")
    vocab, merges = train_bpe(path, 350, [EOT])
    return Tokenizer(vocab, merges, [EOT])


# ------------------------------------------------------------ exactness vs tiktoken
@pytest.mark.parametrize("name", CORPORA)
def test_gpt2_encoding_equals_tiktoken_on_corpora(gpt2, tiktoken_gpt2, corpora_dir, name):
    text = (corpora_dir / name).read_text(encoding="utf-8")
    ids = gpt2.encode(text)
    assert ids == tiktoken_gpt2.encode(text, allowed_special={EOT})
    assert gpt2.decode(ids) == text


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text())
def test_gpt2_encoding_equals_tiktoken_on_random_unicode(gpt2, tiktoken_gpt2, s):
    assert gpt2.encode_ordinary(s) == tiktoken_gpt2.encode_ordinary(s)
    assert gpt2.decode(gpt2.encode(s)) == s


def test_gpt2_known_ids(gpt2):
    assert gpt2.encode("Hello, how are you? <|endoftext|>") == [15496, 11, 703, 389, 345, 30, 220, 50256]


# ------------------------------------------------------------ properties, no shared data
@settings(max_examples=300, deadline=None)
@given(st.text())
def test_roundtrip_any_string(small_tok, s):
    assert small_tok.decode(small_tok.encode(s)) == s


@pytest.fixture(scope="module")
def small_tok(small):
    return small


# Pieces that stress chunk boundaries: contractions, whitespace runs, split specials.
_atoms = st.sampled_from(list("ab 'lsv\n\r\t.é😀") + [EOT, "<|", "|>", "endoftext", "  "])
chunked_text = st.lists(st.lists(_atoms, max_size=6).map("".join), max_size=12)


@settings(max_examples=300, deadline=None)
@given(chunked_text)
def test_encode_iterable_equals_encode(small_tok, chunks):
    assert list(small_tok.encode_iterable(chunks)) == small_tok.encode("".join(chunks))


def test_encode_iterable_streams_a_file(small_tok, tmp_path):
    path = tmp_path / "f.txt"
    path.write_text(GENERATED * 200 + EOT + GENERATED, encoding="utf-8")
    with open(path, encoding="utf-8", newline="") as f:
        assert list(small_tok.encode_iterable(f)) == small_tok.encode(path.read_bytes().decode("utf-8"))


def test_encode_parallel_equals_encode(small_tok):
    text = (GENERATED + EOT) * 20000  # > 1M characters, so it really splits
    assert small_tok.encode_parallel(text, num_workers=2) == small_tok.encode(text)
    plain = GENERATED.replace("\r", "") * 12000
    assert small_tok.encode_parallel(plain, num_workers=2) == small_tok.encode(plain)


def test_overlapping_special_tokens_match_longest_first(small):
    tok = Tokenizer(small.vocab, small.merges, [EOT, EOT + EOT])
    ids = tok.encode("a" + EOT + EOT + "b" + EOT)
    assert ids.count(tok.special_ids[EOT + EOT]) == 1 and ids.count(tok.special_ids[EOT]) == 1
    assert tok.decode(ids) == "a" + EOT + EOT + "b" + EOT
    assert list(tok.encode_iterable(["a<|endof", "text|><|end", "oftext|>b", EOT])) == ids


def test_specials_are_single_ids_and_ordinary_encoding_splits_them(small):
    assert small.encode(EOT) == [small.special_ids[EOT]]
    assert len(small.encode_ordinary(EOT)) > 1


def test_invalid_utf8_decodes_to_replacement_char(small):
    ids = small.encode("é")
    assert len(ids) >= 1
    first_byte = [i for i, t in small.vocab.items() if t == "é".encode()[:1]]
    assert small.decode(first_byte) == "\ufffd"
    with pytest.raises(ValueError, match="outside the vocabulary"):
        small.decode([10**6])


# ------------------------------------------------------------ file formats
def test_own_format_is_lossless_for_arbitrary_bytes(small, tmp_path):
    vocab = dict(small.vocab)
    weird = [b"\xff\xfe", b"\x00 \n", b"\xc3"]
    merges = list(small.merges) + [(weird[0][:1], weird[0][1:])]
    vocab[max(vocab) + 1] = weird[0]
    tok = Tokenizer(vocab, merges, [EOT])
    loaded = load_tokenizer(save_tokenizer(tok, tmp_path / "tok"))
    assert loaded.vocab == tok.vocab and loaded.merges == tok.merges and loaded.special_tokens == [EOT]
    assert loaded.encode(GENERATED + EOT) == tok.encode(GENERATED + EOT)


def test_gpt2_format_roundtrip_and_hf_tokenizers_agree(small, tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    vocab_path, merges_path = save_gpt2_tokenizer(small, tmp_path)
    again = load_gpt2_tokenizer(vocab_path, merges_path, [EOT])
    assert again.vocab == small.vocab and again.merges == small.merges
    hf = tokenizers.Tokenizer(tokenizers.models.BPE.from_file(str(vocab_path), str(merges_path)))
    hf.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    assert hf.encode(GENERATED).ids == small.encode(GENERATED)


def test_tiktoken_export_encodes_identically(small, tmp_path):
    tiktoken = pytest.importorskip("tiktoken")
    from lm.tokenizer import GPT2_PATTERN

    enc = tiktoken.Encoding("ours", pat_str=GPT2_PATTERN, mergeable_ranks=mergeable_ranks(small),
                            special_tokens=small.special_ids)
    text = GENERATED * 3 + EOT + "unseen words: zebra quixotic"
    assert enc.encode(text, allowed_special="all") == small.encode(text)
    lines = save_tiktoken_ranks(small, tmp_path / "ours.tiktoken").read_text().splitlines()
    assert len(lines) == len(small.vocab) - 1


def test_corpus_to_npy(small, tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text((GENERATED + EOT) * 500, encoding="utf-8")
    summary = encode_file(small, path, tmp_path / "out" / "ids.npy", chunk_bytes=4096, num_workers=2, progress=False)
    arr = np.load(tmp_path / "out" / "ids.npy")
    assert arr.dtype == np.uint16 and summary["dtype"] == "uint16"
    assert arr.tolist() == small.encode(path.read_bytes().decode("utf-8"))
    assert summary["tokens"] == len(arr) and summary["bytes_per_token"] > 1


# ------------------------------------------------------------ bad input
def test_load_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer file not found"):
        load_tokenizer(tmp_path / "none")
    with pytest.raises(FileNotFoundError, match="vocab.json"):
        load_gpt2_tokenizer(tmp_path / "vocab.json", tmp_path / "merges.txt")


def test_malformed_own_format(tmp_path):
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a valid tokenizer JSON"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text(json.dumps({"format": "lm-bpe-v1", "vocab": {"0": "zz"}, "merges": []}))
    with pytest.raises(ValueError, match="malformed vocab or merges"):
        load_tokenizer(tmp_path)


def test_malformed_gpt2_files(small, tmp_path):
    vocab_path, merges_path = save_gpt2_tokenizer(small, tmp_path)
    merges_path.write_text("#version: 0.2\nĠ t\nthree tokens here\n")
    with pytest.raises(ValueError, match=r"merges.txt:3: expected two"):
        load_gpt2_tokenizer(vocab_path, merges_path)
    vocab_path.write_text(json.dumps({"a": "zero"}))
    with pytest.raises(ValueError, match="integer ids"):
        load_gpt2_tokenizer(vocab_path, merges_path)


def test_vocab_without_all_bytes_is_rejected():
    with pytest.raises(ValueError, match="all 256 bytes"):
        Tokenizer({0: b"a"}, [])


def test_merge_with_unknown_token_is_rejected(small):
    with pytest.raises(ValueError, match="missing from the vocab"):
        Tokenizer(small.vocab, [(b"zz", b"qq")])


def test_importing_tokenizer_does_not_import_jax():
    code = "import sys, lm.tokenizer; bad = [m for m in ('jax', 'flax', 'torch') if m in sys.modules]; print(bad)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
