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
import multiprocessing as mp
import os
from collections.abc import Iterable, Iterator, Sequence

import regex

# GPT-2's pattern, as used by tiktoken's "gpt2" encoding.
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
GPT2_REGEX = regex.compile(GPT2_PATTERN)

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
    findall = GPT2_REGEX.findall
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
        # fork shares the parent's compiled regex and avoids re-importing modules.
        ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
        with ctx.Pool(num_workers) as pool:
            for counts in pool.imap_unordered(_count_range, jobs):
                total.update(counts)
                bar.update(1)
    bar.close()
    return total


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, unit="chunk")
