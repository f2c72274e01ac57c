"""C4's line and page filters (Raffel et al. 2020, section 2.2), as datatrove and dolma apply them.

Lines are kept only if they end in terminal punctuation (. ! ? " ', not an ellipsis), have at
least 3 words, and mention neither "javascript" nor a site policy ("terms of use", "privacy
policy", "cookie policy", "uses cookies", "use of cookies", "use cookies"). Citation markers
("[1]", "[edit]", "[citation needed]") are deleted first. The page is removed if it contains
"lorem ipsum" or a curly brace (code), a word longer than 1,000 characters, or fewer than 5
sentences remain. `c4_filter` returns the filtered text and the reason for a removal; line
removals are counted by reason so a report can say what went.
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


def c4_line_reason(line: str) -> str | None:
    """Why C4 drops this (citation-stripped, stripped) line, or None to keep it."""
    low = line.lower()
    if "javascript" in low:
        return "javascript_line"
    if any(p in low for p in POLICY):
        return "policy_line"
    if not line.endswith(TERMINAL) or line.endswith("..."):
        return "no_terminal_punctuation"
    if len(line.split()) < MIN_WORDS_PER_LINE:
        return "short_line"
    return None


def c4_filter(text: str) -> tuple[str, str | None, Counter]:
    """(filtered text, reason the page is removed or None, lines removed per reason).

    The kept text holds the surviving lines in order, joined by newlines (blank lines are dropped:
    C4 keeps sentences, not layout)."""
    low = text.lower()
    if "lorem ipsum" in low:
        return "", "lorem_ipsum", Counter()
    if "{" in text:
        return "", "curly_bracket", Counter()
    removed: Counter = Counter()
    kept = []
    for raw in text.split("\n"):
        line = _CITATION.sub("", raw).strip()
        if not line:
            continue
        if any(len(w) > MAX_WORD_LENGTH for w in line.split()):
            return "", "word_too_long", removed
        why = c4_line_reason(line)
        if why:
            removed[why] += 1
        else:
            kept.append(line)
    out = "\n".join(kept)
    if count_sentences(out) < MIN_SENTENCES:
        return "", "too_few_sentences", removed
    return out, None, removed
