"""Gopher repetition rules (Rae et al. 2021, appendix A, table A1): drop text that repeats itself.

A document is removed when any of these exceeds its threshold (checked in this order):
- duplicate paragraphs (blocks separated by blank lines): the fraction of paragraphs that repeat an
  earlier one (> 0.30), and the characters in those repeats over the document's characters (> 0.20);
- duplicate lines: the same two fractions (> 0.30, > 0.20);
- top n-gram character fraction, n = 2, 3, 4: the characters of all occurrences of the most frequent
  word n-gram over the document's characters (> 0.20, 0.18, 0.16);
- duplicate n-gram character fraction, n = 5..10: the characters of words that lie inside a repeat
  (second or later occurrence) of some n-gram, each word counted once, over the document's
  characters (> 0.15, 0.14, 0.13, 0.12, 0.11, 0.10).
Words are whitespace-separated tokens; lines and paragraphs are compared stripped, blank ones not
counted. datatrove's GopherRepetitionFilter (spaCy words, and its own way of counting repeated
n-grams) agrees on 91% of the 673 English Debian documentation pages (benchmarks/RESULTS.md).
"""

from __future__ import annotations

import re
from collections import Counter

MAX_DUP_LINE_FRAC, MAX_DUP_LINE_CHAR_FRAC = 0.30, 0.20
MAX_DUP_PARA_FRAC, MAX_DUP_PARA_CHAR_FRAC = 0.30, 0.20
MAX_TOP_NGRAM_CHAR_FRAC = {2: 0.20, 3: 0.18, 4: 0.16}
MAX_DUP_NGRAM_CHAR_FRAC = {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10}

_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n\s*")


def _duplicate_fractions(items: list[str], n_chars: int) -> tuple[float, float]:
    """(fraction of items equal to an earlier one, their characters / `n_chars`)."""
    if not items:
        return 0.0, 0.0
    seen, dup, dup_chars = set(), 0, 0
    for it in items:
        if it in seen:
            dup += 1
            dup_chars += len(it)
        else:
            seen.add(it)
    return dup / len(items), dup_chars / max(n_chars, 1)


def top_ngram_char_fraction(words: list[str], n: int, n_chars: int | None = None) -> float:
    """Characters of every occurrence of the most frequent word n-gram (words joined by spaces) / `n_chars`
    (default: the characters of the words joined by spaces)."""
    if len(words) < n:
        return 0.0
    counts = Counter(zip(*(words[i:] for i in range(n))))
    gram, count = max(counts.items(), key=lambda kv: (kv[1], kv[0]))
    if count < 2:
        return 0.0
    total = n_chars if n_chars is not None else len(" ".join(words))
    return (sum(map(len, gram)) + n - 1) * count / max(total, 1)


def duplicate_ngram_char_fraction(words: list[str], n: int, n_chars: int | None = None) -> float:
    """Characters of words inside a repeat (second or later occurrence) of some n-gram, each counted once,
    / `n_chars` (default: the characters of all words)."""
    if len(words) < n:
        return 0.0
    seen: set[tuple[str, ...]] = set()
    covered = [False] * len(words)
    for i in range(len(words) - n + 1):
        gram = tuple(words[i:i + n])
        if gram in seen:
            covered[i:i + n] = [True] * n
        else:
            seen.add(gram)
    total = n_chars if n_chars is not None else sum(map(len, words))
    return sum(len(w) for w, c in zip(words, covered) if c) / max(total, 1)


def _parts(text: str) -> tuple[list[str], list[str], list[str]]:
    lines = [ln.strip() for ln in text.split("\n") if ln.strip()]
    paragraphs = [p.strip() for p in _PARAGRAPH_BREAK.split(text) if p.strip()]
    return lines, paragraphs, text.split()


def repetition_stats(text: str) -> dict[str, float]:
    lines, paragraphs, words = _parts(text)
    n = len(text)
    out = {}
    out["dup_para_frac"], out["dup_para_char_frac"] = _duplicate_fractions(paragraphs, n)
    out["dup_line_frac"], out["dup_line_char_frac"] = _duplicate_fractions(lines, n)
    for k in MAX_TOP_NGRAM_CHAR_FRAC:
        out[f"top_{k}gram_char_frac"] = top_ngram_char_fraction(words, k, n)
    for k in MAX_DUP_NGRAM_CHAR_FRAC:
        out[f"dup_{k}gram_char_frac"] = duplicate_ngram_char_fraction(words, k, n)
    return out


def repetition_filter(text: str) -> tuple[bool, str | None]:
    """(keep, the first rule the document breaks or None), rules checked in the order above."""
    lines, paragraphs, words = _parts(text)
    n = len(text)
    frac, chars = _duplicate_fractions(paragraphs, n)
    if frac > MAX_DUP_PARA_FRAC:
        return False, "dup_para_frac"
    if chars > MAX_DUP_PARA_CHAR_FRAC:
        return False, "dup_para_char_frac"
    frac, chars = _duplicate_fractions(lines, n)
    if frac > MAX_DUP_LINE_FRAC:
        return False, "dup_line_frac"
    if chars > MAX_DUP_LINE_CHAR_FRAC:
        return False, "dup_line_char_frac"
    for k, limit in MAX_TOP_NGRAM_CHAR_FRAC.items():
        if top_ngram_char_fraction(words, k, n) > limit:
            return False, f"top_{k}gram_char_frac"
    for k, limit in MAX_DUP_NGRAM_CHAR_FRAC.items():
        if duplicate_ngram_char_fraction(words, k, n) > limit:
            return False, f"dup_{k}gram_char_frac"
    return True, None
