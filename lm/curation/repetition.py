"""Gopher repetition rules (Rae et al. 2021, appendix A, table A1): drop text that repeats itself.

A document is removed when any of these exceeds its threshold:
- duplicate lines: the fraction of lines that repeat an earlier line (> 0.30), and the fraction
  of characters in those repeated lines (> 0.20);
- duplicate paragraphs (blocks separated by blank lines): the same two fractions (> 0.30, > 0.20);
- top n-gram character fraction, n = 2, 3, 4: the characters covered by all occurrences of the
  most frequent word n-gram over all characters of words (> 0.20, 0.18, 0.16);
- duplicate n-gram character fraction, n = 5..10: the characters of words that lie inside an
  occurrence of an n-gram seen earlier in the document, over all characters of words
  (> 0.15, 0.14, 0.13, 0.12, 0.11, 0.10).
Words are whitespace-separated tokens; lines and paragraphs are compared after stripping
surrounding whitespace, and blank ones are not counted.
"""

from __future__ import annotations

import re
from collections import Counter

MAX_DUP_LINE_FRAC, MAX_DUP_LINE_CHAR_FRAC = 0.30, 0.20
MAX_DUP_PARA_FRAC, MAX_DUP_PARA_CHAR_FRAC = 0.30, 0.20
MAX_TOP_NGRAM_CHAR_FRAC = {2: 0.20, 3: 0.18, 4: 0.16}
MAX_DUP_NGRAM_CHAR_FRAC = {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10}

_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n\s*")


def _duplicate_fractions(items: list[str]) -> tuple[float, float]:
    """(fraction of items equal to an earlier one, fraction of characters in those items)."""
    if not items:
        return 0.0, 0.0
    seen, dup, dup_chars = set(), 0, 0
    for it in items:
        if it in seen:
            dup += 1
            dup_chars += len(it)
        else:
            seen.add(it)
    return dup / len(items), dup_chars / max(sum(map(len, items)), 1)


def top_ngram_char_fraction(words: list[str], n: int) -> float:
    """Characters covered by every occurrence of the most frequent word n-gram / characters of all words."""
    if len(words) < n:
        return 0.0
    counts = Counter(zip(*(words[i:] for i in range(n))))
    gram, count = max(counts.items(), key=lambda kv: (kv[1], kv[0]))
    if count < 2:
        return 0.0
    return sum(map(len, gram)) * count / max(sum(map(len, words)), 1)


def duplicate_ngram_char_fraction(words: list[str], n: int) -> float:
    """Characters of words inside a repeat (second or later occurrence) of some n-gram / all word characters."""
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
    return sum(len(w) for w, c in zip(words, covered) if c) / max(sum(map(len, words)), 1)


def repetition_stats(text: str) -> dict[str, float]:
    lines = [ln.strip() for ln in text.split("\n") if ln.strip()]
    paragraphs = [p.strip() for p in _PARAGRAPH_BREAK.split(text) if p.strip()]
    words = text.split()
    out = {}
    out["dup_line_frac"], out["dup_line_char_frac"] = _duplicate_fractions(lines)
    out["dup_para_frac"], out["dup_para_char_frac"] = _duplicate_fractions(paragraphs)
    for n in MAX_TOP_NGRAM_CHAR_FRAC:
        out[f"top_{n}gram_char_frac"] = top_ngram_char_fraction(words, n)
    for n in MAX_DUP_NGRAM_CHAR_FRAC:
        out[f"dup_{n}gram_char_frac"] = duplicate_ngram_char_fraction(words, n)
    return out


def repetition_filter(text: str) -> tuple[bool, str | None]:
    """(keep, the first rule the document breaks or None), rules checked in the order above."""
    lines = [ln.strip() for ln in text.split("\n") if ln.strip()]
    frac, chars = _duplicate_fractions(lines)
    if frac > MAX_DUP_LINE_FRAC:
        return False, "dup_line_frac"
    if chars > MAX_DUP_LINE_CHAR_FRAC:
        return False, "dup_line_char_frac"
    frac, chars = _duplicate_fractions([p.strip() for p in _PARAGRAPH_BREAK.split(text) if p.strip()])
    if frac > MAX_DUP_PARA_FRAC:
        return False, "dup_para_frac"
    if chars > MAX_DUP_PARA_CHAR_FRAC:
        return False, "dup_para_char_frac"
    words = text.split()
    for n, limit in MAX_TOP_NGRAM_CHAR_FRAC.items():
        if top_ngram_char_fraction(words, n) > limit:
            return False, f"top_{n}gram_char_frac"
    for n, limit in MAX_DUP_NGRAM_CHAR_FRAC.items():
        if duplicate_ngram_char_fraction(words, n) > limit:
            return False, f"dup_{n}gram_char_frac"
    return True, None
