"""FineWeb's line-level quality filter (Penedo et al. 2024, section 3.3): three page rules on lines.

A page is removed when
- at most 12% of its lines end in terminal punctuation ("line_punct_ratio"),
- at least 67% of its lines are 30 characters or shorter ("short_line_ratio"),
- at least 1% of its characters (newlines excluded) sit in lines that repeat an earlier line
  ("char_dup_ratio"),
- or it has more than 0.3 newlines per word, a list rather than prose ("list_ratio").
Lines are the non-blank lines, stripped. Terminal punctuation includes CJK and other scripts' stops.
"""

from __future__ import annotations

LINE_PUNCT_THRESHOLD = 0.12
SHORT_LINE_THRESHOLD = 0.67
SHORT_LINE_LENGTH = 30
CHAR_DUP_THRESHOLD = 0.01
NEW_LINE_RATIO = 0.3
TERMINAL = tuple(".!?\"'”’»)…。！？؟।॥։።၊။፧፨᙮᠃᠉‼‽⁇⁈⁉⸮﹒﹗！．｡")


def fineweb_stats(text: str) -> dict[str, float]:
    lines = [ln.strip() for ln in text.split("\n") if ln.strip()]
    if not lines:
        return {"line_punct_ratio": 0.0, "short_line_ratio": 1.0, "char_dup_ratio": 0.0, "list_ratio": 0.0}
    seen, dup_chars = set(), 0
    for ln in lines:
        if ln in seen:
            dup_chars += len(ln)
        seen.add(ln)
    chars = len(text.replace("\n", ""))
    words = len(text.split())
    return {
        "line_punct_ratio": sum(ln.endswith(TERMINAL) for ln in lines) / len(lines),
        "short_line_ratio": sum(len(ln) <= SHORT_LINE_LENGTH for ln in lines) / len(lines),
        "char_dup_ratio": dup_chars / max(chars, 1),
        "list_ratio": text.count("\n") / max(words, 1),
    }


def fineweb_filter(text: str) -> tuple[bool, str | None]:
    """(keep, the first rule the page breaks or None)."""
    s = fineweb_stats(text)
    if s["line_punct_ratio"] <= LINE_PUNCT_THRESHOLD:
        return False, "line_punct_ratio"
    if s["short_line_ratio"] >= SHORT_LINE_THRESHOLD:
        return False, "short_line_ratio"
    if s["char_dup_ratio"] >= CHAR_DUP_THRESHOLD:
        return False, "char_dup_ratio"
    if s["list_ratio"] > NEW_LINE_RATIO:
        return False, "list_ratio"
    return True, None
