"""C4's line and page filters (Raffel et al. 2020, section 2.2), in the order of the original
implementation (TensorFlow Datasets' c4_utils, which datatrove's C4QualityFilter follows).

Each line is stripped and checked in turn: a line with a word over 1,000 characters goes; citation
markers ("[1]", "[edit]", "[citation needed]") are deleted; the line goes unless it ends in terminal
punctuation (. ? ! " ', not an ellipsis) and has at least 3 words. Of the lines left, one holding
"lorem ipsum" or a curly brace (code) removes the whole page, and one mentioning "javascript" or a
site policy ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies",
"use cookies") goes. The page is removed if fewer than 5 sentences remain. `c4_filter` returns the
kept lines, the reason for a page removal, and line removals counted by reason.
"""

from __future__ import annotations

import re
from collections import Counter

TERMINAL = (".", "!", "?", '"', "'")
POLICY = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")
MIN_WORDS_PER_LINE = 3
MIN_SENTENCES = 5
MAX_WORD_LENGTH = 1000

_CITATION = re.compile(r"\[\d*\]|\[edit\]|\[citation needed\]", re.I)
# A sentence ends at terminal punctuation followed by whitespace or the end of the text.
_SENTENCE_END = re.compile(r"[.!?]+[\"')\]]*(?=\s|$)")


def count_sentences(text: str) -> int:
    return len(_SENTENCE_END.findall(text))


def c4_filter(text: str) -> tuple[str, str | None, Counter]:
    """(kept lines joined by newlines, reason the page is removed or None, lines removed per reason)."""
    removed: Counter = Counter()
    kept, sentences = [], 0
    for raw in text.split("\n"):
        line = raw.strip()
        if not line:
            continue
        words = line.split()
        if any(len(w) > MAX_WORD_LENGTH for w in words):
            removed["word_too_long"] += 1
            continue
        line = _CITATION.sub("", line)
        if not line.endswith(TERMINAL) or line.endswith("..."):
            removed["no_terminal_punctuation"] += 1
            continue
        if len(words) < MIN_WORDS_PER_LINE:
            removed["short_line"] += 1
            continue
        low = line.lower()
        if "lorem ipsum" in low:
            return "", "lorem_ipsum", removed
        if "javascript" in low:
            removed["javascript_line"] += 1
            continue
        if "{" in line:
            return "", "curly_bracket", removed
        if any(p in low for p in POLICY):
            removed["policy_line"] += 1
            continue
        sentences += max(count_sentences(line), 1)
        kept.append(line)
    if sentences < MIN_SENTENCES:
        return "", "too_few_sentences", removed
    return "\n".join(kept), None, removed
