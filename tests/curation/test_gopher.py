"""Gopher rules at their exact thresholds."""

import pytest

from lm.curation.gopher import gopher_filter, gopher_stats


def words(n, word="word"):
    return " ".join([word] * n)


def test_word_count_bounds():
    assert gopher_filter(words(49)) == (False, "too_few_words")
    assert gopher_filter(words(50)) == (True, None)
    assert gopher_filter(words(100_000)) == (True, None)
    assert gopher_filter(words(100_001)) == (False, "too_many_words")
    assert gopher_filter("") == (False, "too_few_words")


def test_mean_word_length_bounds():
    assert gopher_filter(words(60, "abc")) == (True, None)  # exactly 3
    assert gopher_filter(words(60, "ab")) == (False, "short_mean_word_length")
    assert gopher_filter(words(60, "abcdefghij")) == (True, None)  # exactly 10
    assert gopher_filter(words(60, "abcdefghijk")) == (False, "long_mean_word_length")


def test_ellipsis_lines():
    line, dots = "some words in a normal line here", "some words in a line that trails off..."
    ok = "\n".join([dots] * 3 + [line] * 7)  # 30%: allowed
    bad = "\n".join([dots] * 4 + [line] * 6)
    assert gopher_stats(ok)["ellipsis_line_fraction"] == pytest.approx(0.3)
    assert gopher_filter(ok) == (True, None)
    assert gopher_filter(bad) == (False, "ellipsis_lines")
    assert gopher_filter("\n".join(["a line with a unicode ellipsis…"] * 10 + [line] * 10))[1] == "ellipsis_lines"


def test_alphabetic_words():
    assert gopher_filter(" ".join(["word"] * 80 + ["1234"] * 20)) == (True, None)  # exactly 80%
    assert gopher_filter(" ".join(["word"] * 79 + ["1234"] * 21)) == (False, "non_alphabetic_words")
    assert gopher_filter(" ".join(["wörd"] * 60 + ["日本語"] * 40))[0]  # any script's letters count
