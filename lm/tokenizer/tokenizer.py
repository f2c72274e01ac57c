"""Encoding and decoding with a trained byte-level BPE vocabulary.

Encoding applies merges by rank, exactly like GPT-2's encoder and tiktoken:
within each pre-token, repeatedly merge the adjacent pair whose merge was
learned earliest. Results per pre-token string are cached, since natural text
repeats its words constantly.
"""

from __future__ import annotations

import os

import regex
from collections.abc import Iterable, Iterator, Sequence

from lm.tokenizer.pool import worker_pool
from lm.tokenizer.pretokenize import LOOKAHEAD_CHARS, pretoken_regex, special_token_regex

# Above this many characters, `encode_parallel` splits work across processes.
_PARALLEL_MIN_CHARS = 1 << 20


class Tokenizer:
    """Byte-level BPE tokenizer.

    Args:
      vocab: id -> token bytes. Must contain every single byte.
      merges: merged pairs in rank order (earliest learned first).
      special_tokens: strings encoded as one id each and never split. Ones
        missing from `vocab` are appended with new ids.
    """

    def __init__(
        self,
        vocab: dict[int, bytes],
        merges: Sequence[tuple[bytes, bytes]],
        special_tokens: Sequence[str] | None = None,
        cache_size: int = 1 << 20,
    ):
        self.vocab: dict[int, bytes] = dict(vocab)
        self.merges: list[tuple[bytes, bytes]] = [(bytes(a), bytes(b)) for a, b in merges]
        self.special_tokens: list[str] = list(dict.fromkeys(special_tokens or []))
        self.token_to_id: dict[bytes, int] = {t: i for i, t in self.vocab.items()}
        for s in self.special_tokens:
            sb = s.encode("utf-8")
            if sb not in self.token_to_id:
                new_id = max(self.vocab, default=-1) + 1
                self.vocab[new_id] = sb
                self.token_to_id[sb] = new_id
        self.special_ids: dict[str, int] = {s: self.token_to_id[s.encode("utf-8")] for s in self.special_tokens}

        missing = [b for b in range(256) if bytes([b]) not in self.token_to_id]
        if missing:
            raise ValueError(
                f"vocabulary lacks {len(missing)} single-byte token(s) (e.g. byte {missing[0]}); "
                "a byte-level BPE vocab must contain all 256 bytes"
            )
        self._byte_ids = [self.token_to_id[bytes([b])] for b in range(256)]
        self.ranks: dict[tuple[int, int], tuple[int, int]] = {}
        for rank, (a, b) in enumerate(self.merges):
            try:
                ia, ib, merged = self.token_to_id[a], self.token_to_id[b], self.token_to_id[a + b]
            except KeyError:
                raise ValueError(f"merge {rank} ({a!r}, {b!r}) uses or makes a token missing from the vocab") from None
            self.ranks.setdefault((ia, ib), (rank, merged))
        self._decode_table: list[bytes] = [b""] * (max(self.vocab) + 1)
        for i, t in self.vocab.items():
            self._decode_table[i] = t
        self._special_re = special_token_regex(self.special_tokens)
        self._max_special = max((len(s) for s in self.special_tokens), default=0)
        self._cache: dict[str, list[int]] = {}
        self._cache_size = cache_size

    def __getstate__(self) -> dict:
        """Pickled (to worker processes) without the encode cache, which can hold a million entries."""
        return {**self.__dict__, "_cache": {}}

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    # ----------------------------------------------------------------- encode
    def _bpe(self, piece: str) -> list[int]:
        ids = [self._byte_ids[b] for b in piece.encode("utf-8")]
        ranks = self.ranks
        while len(ids) > 1:
            best = None
            for pair in zip(ids, ids[1:]):
                r = ranks.get(pair)
                if r is not None and (best is None or r[0] < best[0]):
                    best, best_pair = r, pair
            if best is None:
                break
            a, b = best_pair
            merged_id = best[1]
            out: list[int] = []
            i, n = 0, len(ids)
            while i < n:
                if i + 1 < n and ids[i] == a and ids[i + 1] == b:
                    out.append(merged_id)
                    i += 2
                else:
                    out.append(ids[i])
                    i += 1
            ids = out
        return ids

    def _encode_pretokens(self, pieces: Iterable[str], out: list[int]) -> None:
        cache = self._cache
        extend = out.extend
        for p in pieces:
            ids = cache.get(p)
            if ids is None:
                ids = self._bpe(p)
                if len(cache) >= self._cache_size:
                    cache.clear()
                cache[p] = ids
            extend(ids)

    def encode_ordinary(self, text: str) -> list[int]:
        """Encode text, treating special-token strings as ordinary text."""
        out: list[int] = []
        self._encode_pretokens(pretoken_regex(text).findall(text), out)
        return out

    def encode(self, text: str) -> list[int]:
        """Encode text to ids; special tokens (longest match first) map to their ids."""
        if self._special_re is None:
            return self.encode_ordinary(text)
        out: list[int] = []
        pos = 0
        findall = pretoken_regex(text).findall
        for m in self._special_re.finditer(text):
            if m.start() > pos:
                self._encode_pretokens(findall(text, pos, m.start()), out)
            out.append(self.special_ids[m.group()])
            pos = m.end()
        if pos < len(text):
            self._encode_pretokens(findall(text, pos), out)
        return out

    def encode_iterable(self, iterable: Iterable[str]) -> Iterator[int]:
        """Lazily encode a stream of strings (e.g. a file's lines) in bounded memory.

        The ids equal `encode("".join(iterable))`: text near the end of each
        chunk whose pre-tokenization could still change is carried over.
        """
        buf = ""
        for chunk in iterable:
            buf += chunk
            ids, consumed = self._encode_prefix(buf, final=False)
            buf = buf[consumed:]
            yield from ids
        ids, _ = self._encode_prefix(buf, final=True)
        yield from ids

    def _encode_prefix(self, text: str, final: bool) -> tuple[list[int], int]:
        """Encode the longest prefix of `text` that later text cannot change."""
        out: list[int] = []
        n = len(text)
        pos = 0
        findall = pretoken_regex(text).findall
        if self._special_re is not None:
            # A special token match is final only if every longer special
            # starting at the same place would also fit in the buffer.
            settled = n if final else n - self._max_special
            for m in self._special_re.finditer(text):
                if m.start() > settled:
                    break
                if m.start() > pos:
                    self._encode_pretokens(findall(text, pos, m.start()), out)
                out.append(self.special_ids[m.group()])
                pos = m.end()
            # Any special token still to come starts after `settled`.
            plain_end = n if final else max(pos, settled + 1)
        else:
            plain_end = n
        if final:
            if pos < n:
                self._encode_pretokens(findall(text, pos), out)
            return out, n
        # The pattern matches every character, so the pieces tile the text:
        # drop from the end the pieces that more text could still change.
        pieces = findall(text, pos, plain_end)
        end, limit = plain_end, plain_end - LOOKAHEAD_CHARS
        while pieces and end > limit:
            end -= len(pieces.pop())
        self._encode_pretokens(pieces, out)
        pos = end
        return out, pos

    def encode_parallel(self, text: str, num_workers: int | None = None) -> list[int]:
        """`encode` split over processes at special tokens or safe newlines; same ids."""
        num_workers = num_workers or os.cpu_count() or 1
        if num_workers <= 1 or len(text) < _PARALLEL_MIN_CHARS:
            return self.encode(text)
        parts = split_text_for_workers(text, num_workers * 4, self.special_tokens)
        # The tokenizer goes to each worker once (initializer), not pickled per task.
        with worker_pool(num_workers, _set_worker_tokenizer, (self,)) as pool:
            out: list[int] = []
            for ids in pool.imap(_encode_in_worker, parts):
                out.extend(ids)
        return out

    # ----------------------------------------------------------------- decode
    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        table = self._decode_table
        try:
            return b"".join([table[i] for i in ids])
        except IndexError:
            bad = next(i for i in ids if not 0 <= i < len(table))
            raise ValueError(f"token id {bad} is outside the vocabulary (size {len(self.vocab)})") from None

    def decode(self, ids: Iterable[int]) -> str:
        """Ids to text; byte sequences that are not valid UTF-8 become U+FFFD."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def __repr__(self) -> str:
        return (f"Tokenizer(vocab_size={self.vocab_size}, merges={len(self.merges)}, "
                f"special_tokens={self.special_tokens})")


_WORKER_TOKENIZER: Tokenizer | None = None  # set in worker processes only, by `_set_worker_tokenizer`
_NEWLINE_AFTER_ALNUM = regex.compile(r"[A-Za-z0-9][\r\n]")


def _set_worker_tokenizer(tokenizer: Tokenizer) -> None:
    global _WORKER_TOKENIZER
    _WORKER_TOKENIZER = tokenizer


def _encode_in_worker(text: str) -> list[int]:
    assert _WORKER_TOKENIZER is not None
    return _WORKER_TOKENIZER.encode(text)


def split_text_for_workers(text: str, parts: int, special_tokens: Sequence[str]) -> list[str]:
    """Cut text into about `parts` pieces at places where encoding splits anyway."""
    target = max(1, len(text) // parts)
    special_re = special_token_regex(special_tokens)
    cuts = [0]
    pos = target
    n = len(text)
    while pos < n:
        cut = _safe_cut(text, pos, special_re)
        if cut is None:
            break
        if cut > cuts[-1]:
            cuts.append(cut)
        pos = cut + target
    cuts.append(n)
    return [text[a:b] for a, b in zip(cuts[:-1], cuts[1:]) if b > a]


def _safe_cut(text: str, pos: int, special_re) -> int | None:
    """First position >= pos where the encoding of the parts equals the whole's."""
    if special_re is not None:
        m = special_re.search(text, pos)
        if m is not None:
            # Keep overlapping specials intact: cut at a match that the
            # leftmost-longest scan from before it would also find.
            back = special_re.search(text, max(0, m.start() - 64))
            while back is not None and back.end() <= m.start():
                back = special_re.search(text, back.end())
            return back.start() if back is not None else m.start()
        return None
    # Just before a newline that follows an ASCII letter or digit (see pretokenize).
    m = _NEWLINE_AFTER_ALNUM.search(text, max(pos - 1, 0))
    return m.start() + 1 if m else None
