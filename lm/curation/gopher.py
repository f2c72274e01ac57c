"""Gopher quality rules (Rae et al. 2021, appendix A), the subset the issue names.

A document is kept when all hold:
- 50 <= number of words <= 100,000
- 3 <= mean word length <= 10 characters
- at most 30% of its lines end with an ellipsis ("..." or "…")
- at least 80% of its words contain an alphabetic character
Words are whitespace-separated tokens (Gopher used a word tokenizer; for the counts above the
difference is punctuation attached to words, which moves mean length slightly).
"""

from __future__ import annotations

MIN_WORDS, MAX_WORDS = 50, 100_000
MIN_MEAN_LEN, MAX_MEAN_LEN = 3.0, 10.0
MAX_ELLIPSIS_LINES = 0.3
MIN_ALPHA_WORDS = 0.8


def gopher_stats(text: str) -> dict[str, float]:
    words = text.split()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    n = len(words)
    return {
        "words": n,
        "mean_word_length": sum(map(len, words)) / n if n else 0.0,
        "ellipsis_line_fraction": (sum(ln.rstrip().endswith(("...", "…")) for ln in lines) / len(lines)
                                   if lines else 0.0),
        "alpha_word_fraction": sum(any(c.isalpha() for c in w) for w in words) / n if n else 0.0,
    }


def gopher_filter(text: str) -> tuple[bool, str | None]:
    """(keep, reason the document fails or None)."""
    s = gopher_stats(text)
    if s["words"] < MIN_WORDS:
        return False, "too_few_words"
    if s["words"] > MAX_WORDS:
        return False, "too_many_words"
    if s["mean_word_length"] < MIN_MEAN_LEN:
        return False, "short_mean_word_length"
    if s["mean_word_length"] > MAX_MEAN_LEN:
        return False, "long_mean_word_length"
    if s["ellipsis_line_fraction"] > MAX_ELLIPSIS_LINES:
        return False, "ellipsis_lines"
    if s["alpha_word_fraction"] < MIN_ALPHA_WORDS:
        return False, "non_alphabetic_words"
    return True, None
