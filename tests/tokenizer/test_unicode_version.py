"""Our pre-tokenizer classifies every code point as tiktoken does, although the `regex` module's Unicode
tables are newer than tiktoken's (Rust regex-syntax): characters that Unicode added since are letters or
numbers to `regex` but unassigned to tiktoken (e.g. U+324C8, CJK Extension J)."""

import pytest
import regex
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lm.tokenizer import load_gpt2_tokenizer
from lm.tokenizer.pretokenize import LETTER, NUMBER, TIKTOKEN_GPT2_PATTERN, pretoken_regex

tiktoken = pytest.importorskip("tiktoken")

ALL = "".join(chr(c) for c in range(0x110000) if not 0xD800 <= c < 0xE000)


def tiktoken_class(pattern: str) -> set[str]:
    """The code points tiktoken's regex engine matches with a one-character class: tiktoken encodes only
    the text its pattern matches, and with single-byte ranks the ids are the matched bytes."""
    ranks = {bytes([b]): b for b in range(256)}
    enc = tiktoken.Encoding("class-probe", pat_str=pattern, mergeable_ranks=ranks, special_tokens={})
    return set(bytes(enc.encode_ordinary(ALL)).decode("utf-8"))


@pytest.fixture(scope="module")
def newer_than_tiktoken() -> list[str]:
    """Code points the `regex` module calls letters or numbers and tiktoken does not (empty when their
    Unicode versions agree)."""
    return sorted(set(regex.findall(r"[\p{L}\p{N}]", ALL)) - tiktoken_class(r"[\p{L}\p{N}]"))


def test_every_code_point_is_classified_as_tiktoken_does():
    for ours, theirs in [(LETTER, r"\p{L}"), (NUMBER, r"\p{N}"), (r"\s", r"\s")]:
        mine = set(regex.findall(ours, ALL, flags=regex.V1))
        want = tiktoken_class(theirs)
        assert mine == want, (theirs, sorted(f"U+{ord(c):04X}" for c in mine ^ want)[:20])
    # the pattern is built from these classes, and a text holding such a code point is split with it
    assert LETTER in TIKTOKEN_GPT2_PATTERN and NUMBER in TIKTOKEN_GPT2_PATTERN
    text = "It's \U000324C8's 1\U00011DE0'll"
    assert pretoken_regex(text).findall(text) == ["It", "'s", " \U000324C8'", "s", " 1", "\U00011DE0'", "ll"]


@pytest.fixture(scope="module")
def gpt2(corpora_dir):
    return load_gpt2_tokenizer(corpora_dir / "gpt2_vocab.json", corpora_dir / "gpt2_merges.txt", ["<|endoftext|>"])


def test_cjk_extension_j_encodes_as_tiktoken(gpt2, tiktoken_gpt2):
    # To tiktoken U+324C8 is not a letter, so it joins the apostrophe after it: "\U000324C8'", "s".
    for s in ["\U000324C8's", "a\U000324C8're", "1\U00011DE0'll", " \U0003D000'!", "x\U000324C8!\U0003D000 y"]:
        assert gpt2.encode_ordinary(s) == tiktoken_gpt2.encode_ordinary(s), s


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_strings_with_astral_code_points_encode_as_tiktoken(gpt2, tiktoken_gpt2, newer_than_tiktoken, data):
    newer = st.sampled_from(newer_than_tiktoken) if newer_than_tiktoken else st.characters(min_codepoint=0x10000)
    # pieces whose pre-token boundaries change the ids: contractions, runs of letters, digits, spaces
    pieces = st.sampled_from(["'s", "'ll", "'t", "a", "Zo", "19", " ", "  ", "!", "\n", "\t", "é"])
    part = st.one_of(pieces, newer, st.characters(min_codepoint=0x10000, exclude_categories=("Cs",)), st.characters())
    s = "".join(data.draw(st.lists(part, max_size=12)))
    assert gpt2.encode_ordinary(s) == tiktoken_gpt2.encode_ordinary(s)
