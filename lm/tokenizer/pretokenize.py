"""Pre-tokenization: split text into the words BPE merges within.

Byte-level BPE never merges across a pre-token boundary or a special token, so
both training and encoding start here. Counting pre-tokens of a large file runs
in worker processes over byte ranges cut where a cut cannot change the result:
at the start of a special token, or (with no special tokens) just before a
newline ("\n" or "\r") that follows an ASCII letter or digit: the letter run
ends there whatever comes next, and the whitespace run starts there in both
the whole text and the piece.
"""

from __future__ import annotations

import collections
import os
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import regex

from lm.tokenizer.pool import worker_pool

# GPT-2's pattern, as used by tiktoken's "gpt2" encoding (and written into exported tokenizers).
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

# What `\p{L}` and `\p{N}` mean depends on the regex engine's Unicode tables. tiktoken runs the
# pattern with Rust's regex-syntax (Unicode 16.0 since regex 1.11); the `regex` module here knows a
# newer Unicode (18.0 in regex 2026.11), whose added letters (CJK Extension J such as U+324C8, Small
# Seal, Jurchen, Tangut...) and numbers are still unassigned to tiktoken: neither letter nor number,
# so they join the ` ?[^\s\p{L}\p{N}]+` run there ("\U000324C8's" is "\U000324C8'" + "s", not
# "\U000324C8" + "'s"). These are the code points where the two engines' `\p{L}` / `\p{N}` disagree,
# found by running both over all of Unicode; tests/tokenizer/test_unicode_version.py re-checks every
# code point, so a tables update on either side fails there rather than silently.
_LETTERS_NEWER_THAN_TIKTOKEN = (
    (0x0558, 0x0558), (0x058B, 0x058C), (0x088F, 0x088F), (0x0C5C, 0x0C5C), (0x0CDC, 0x0CDC),
    (0x208F, 0x208F), (0x209D, 0x209F), (0xA7CE, 0xA7CF), (0xA7D2, 0xA7D2), (0xA7D4, 0xA7D4),
    (0xA7DD, 0xA7DD), (0xA7E2, 0xA7E2), (0xA7F1, 0xA7F1), (0xAB6C, 0xAB6D), (0x107BB, 0x107BF),
    (0x10940, 0x10959), (0x10EC5, 0x10EC7), (0x10ED9, 0x10EEE), (0x11B0A, 0x11B0A), (0x11DB0, 0x11DDB),
    (0x11DF1, 0x11DF1), (0x16EA0, 0x16EB8), (0x16EBB, 0x16ED3), (0x16FF2, 0x16FF3), (0x187F8, 0x187FF),
    (0x18CD6, 0x18CDA), (0x18D09, 0x18D20), (0x18D80, 0x18DF2), (0x18E00, 0x19191), (0x191A0, 0x191D2),
    (0x1B123, 0x1B128), (0x1B168, 0x1B168), (0x1D6A6, 0x1D6A6), (0x1DF1F, 0x1DF24), (0x1DF2B, 0x1DF81),
    (0x1DF90, 0x1DF96), (0x1DFCD, 0x1DFFF), (0x1E6C0, 0x1E6DE), (0x1E6E0, 0x1E6E2), (0x1E6E4, 0x1E6E5),
    (0x1E6E7, 0x1E6ED), (0x1E6F0, 0x1E6F4), (0x1E6FE, 0x1E6FF), (0x2B73A, 0x2B73F), (0x2B81E, 0x2B81E),
    (0x2CEA2, 0x2CEAD), (0x323B0, 0x33479), (0x3D000, 0x3FC3F),
)
_NUMBERS_NEWER_THAN_TIKTOKEN = (
    (0x11DE0, 0x11DE9), (0x1246F, 0x1246F), (0x12475, 0x1247F), (0x12550, 0x12686), (0x16FF4, 0x16FF6),
)


def _ranges(pairs) -> str:
    return "".join(rf"\U{a:08X}-\U{b:08X}" for a, b in pairs)


# Set difference (`--`) needs the regex module's version-1 syntax; nothing else in the pattern
# behaves differently under it (it has no empty matches and no case folding).
LETTER = rf"[\p{{L}}--[{_ranges(_LETTERS_NEWER_THAN_TIKTOKEN)}]]"
NUMBER = rf"[\p{{N}}--[{_ranges(_NUMBERS_NEWER_THAN_TIKTOKEN)}]]"
TIKTOKEN_GPT2_PATTERN = (
    rf"""(?V1)'(?:[sdmt]|ll|ve|re)| ?{LETTER}+| ?{NUMBER}+| ?[^\s{LETTER}{NUMBER}]+|\s+(?!\S)|\s+"""
)
_EXACT_REGEX = regex.compile(TIKTOKEN_GPT2_PATTERN)
# The set difference makes `regex` about twice as slow, and the plain pattern splits any text
# without those code points identically, so it serves whenever a text has none of them.
_PLAIN_REGEX = regex.compile(GPT2_PATTERN)
# [start, end + 1) bounds, sorted: an odd searchsorted index means "inside a range".
_NEWER_BOUNDS = np.array(sorted(x for a, b in _LETTERS_NEWER_THAN_TIKTOKEN + _NUMBERS_NEWER_THAN_TIKTOKEN
                                for x in (a, b + 1)), dtype=np.uint32)


def pretoken_regex(text: str) -> regex.Pattern:
    """The compiled GPT-2 pattern that splits `text` as tiktoken does (`.findall(text, pos, endpos)`)."""
    if text.isascii():
        return _PLAIN_REGEX
    cps = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    cps = cps[cps >= _NEWER_BOUNDS[0]]
    newer = cps.size and (np.searchsorted(_NEWER_BOUNDS, cps, side="right") % 2).any()
    return _EXACT_REGEX if newer else _PLAIN_REGEX

# A pre-token match is final once the text extends this many characters past
# its end: the longest lookahead in the pattern is the contraction "'ll"
# (three characters from the match start), and `\s+(?!\S)` needs one more.
LOOKAHEAD_CHARS = 3


def special_token_regex(special_tokens: Sequence[str]) -> regex.Pattern | None:
    """Alternation of the special tokens, longest first so overlaps match longest."""
    if not special_tokens:
        return None
    ordered = sorted(set(special_tokens), key=lambda s: (-len(s), s))
    return regex.compile("|".join(regex.escape(s) for s in ordered))


def split_on_special(text: str, special_re: regex.Pattern | None) -> list[str]:
    """Split text into the pieces between special tokens (specials dropped)."""
    if special_re is None:
        return [text]
    return special_re.split(text)


def count_pretokens_in_text(text: str, special_tokens: Sequence[str] = ()) -> collections.Counter:
    """Counter of pre-token strings in `text`, never spanning a special token."""
    special_re = special_token_regex(special_tokens)
    counts: collections.Counter = collections.Counter()
    findall = pretoken_regex(text).findall
    for piece in split_on_special(text, special_re):
        if piece:
            counts.update(findall(piece))
    return counts


_NEWLINE_AFTER_ALNUM = regex.compile(rb"[A-Za-z0-9][\r\n]")


def find_chunk_boundaries(
    path: str | os.PathLike, chunk_bytes: int, special_tokens: Sequence[str] = ()
) -> list[int]:
    """Byte offsets [0, ..., size] cutting the file into pieces of about `chunk_bytes`.

    Each interior offset is the start of a special token (when there are any)
    or a position just after a newline followed by an ASCII alphanumeric, so
    counting pre-tokens per piece gives exactly the counts of the whole file.
    A piece grows past `chunk_bytes` when no safe cut exists nearby.
    """
    size = os.path.getsize(path)
    boundaries = [0]
    markers = [s.encode("utf-8") for s in special_tokens]
    window = 1 << 16
    with open(path, "rb") as f:
        pos = chunk_bytes
        while pos < size:
            cut = _next_safe_cut(f, pos, size, markers, window)
            if cut is None or cut >= size:
                break
            if cut > boundaries[-1]:
                boundaries.append(cut)
            pos = max(cut, boundaries[-1]) + chunk_bytes
    boundaries.append(size)
    return boundaries


def _next_safe_cut(f, pos: int, size: int, markers: list[bytes], window: int) -> int | None:
    longest = max((len(m) for m in markers), default=1)
    while pos < size:
        f.seek(pos)
        data = f.read(window + longest)
        if not data:
            return None
        if markers:
            cut = _first_clean_special_start(f, pos, data, markers, longest)
            if cut is not None:
                return cut
        else:
            for m in _NEWLINE_AFTER_ALNUM.finditer(data):
                return pos + m.start() + 1
        pos += window
    return None


def _first_clean_special_start(f, pos: int, data: bytes, markers: list[bytes], longest: int):
    """Offset of the first special token in `data` that no longer special overlaps."""
    special_re = regex.compile(b"|".join(regex.escape(m) for m in sorted(markers, key=len, reverse=True)))
    for hit in sorted({i for m in markers for i in _find_all(data, m)}):
        start = max(0, pos + hit - longest)
        f.seek(start)
        around = f.read(2 * longest)
        spans = [(start + m.start(), start + m.end()) for m in special_re.finditer(around)]
        if any(a < pos + hit < b for a, b in spans) or (pos + hit) not in {a for a, _ in spans}:
            continue
        return pos + hit
    return None


def _find_all(data: bytes, needle: bytes) -> Iterator[int]:
    i = data.find(needle)
    while i != -1:
        yield i
        i = data.find(needle, i + 1)


def read_text_range(path: str | os.PathLike, start: int, end: int) -> str:
    """Decode bytes [start, end) of a UTF-8 file, naming the file and the offset of any bad byte."""
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read(end - start)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(
            f"{path}: not valid UTF-8 at byte offset {start + e.start} ({e.reason}); re-encode the file as "
            f"UTF-8 (e.g. `iconv -f latin1 -t utf-8 {path} > {path}.utf8` for a Latin-1 file) and use that"
        ) from None


def read_text(path: str | os.PathLike) -> str:
    """The whole of a UTF-8 text file, exactly as on disk (no newline translation: as training reads it).

    A file in another encoding is a ValueError naming the file, the offset and the fix."""
    return read_text_range(path, 0, os.path.getsize(path))


def _count_range(args) -> collections.Counter:
    path, start, end, special_tokens = args
    return count_pretokens_in_text(read_text_range(path, start, end), special_tokens)


def count_pretokens(
    path: str | os.PathLike,
    special_tokens: Sequence[str] = (),
    num_workers: int | None = None,
    chunk_bytes: int = 8 << 20,
    progress: bool = False,
) -> collections.Counter:
    """Counter of pre-token strings over a whole file, counted in parallel.

    Memory in each worker is bounded by `chunk_bytes` of text plus its counts.
    """
    num_workers = num_workers or os.cpu_count() or 1
    # Small files still get one piece per worker, so every core helps.
    chunk_bytes = max(1 << 18, min(chunk_bytes, os.path.getsize(path) // num_workers + 1))
    boundaries = find_chunk_boundaries(path, chunk_bytes, special_tokens)
    jobs = [(str(path), a, b, tuple(special_tokens)) for a, b in zip(boundaries[:-1], boundaries[1:])]
    num_workers = min(num_workers, len(jobs))
    total: collections.Counter = collections.Counter()
    bar = _progress(len(jobs), "pre-tokenizing", progress)
    if num_workers <= 1:
        results: Iterable[collections.Counter] = map(_count_range, jobs)
        for counts in results:
            total.update(counts)
            bar.update(1)
    else:
        with worker_pool(num_workers) as pool:
            for counts in pool.imap_unordered(_count_range, jobs):
                total.update(counts)
                bar.update(1)
    bar.close()
    return total


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, unit="chunk")
