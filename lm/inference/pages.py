"""Host-side bookkeeping of a paged KV pool: a free list, reference counts, and prefix sharing by block hash.

    pages = PageTable(num_pages=256, page_size=16)
    shared = pages.lookup(prompt)            # pages already holding the prompt's leading full blocks
    fresh = pages.allocate(3)                # more pages (free ones first, then the least recently used cached ones)
    pages.register(prompt, shared + fresh)   # after the prompt's pages are written: share its full blocks
    pages.release(shared + fresh)            # the sequence is done

A block is `page_size` tokens; its key is a hash of the whole prefix up to its end (the block's
tokens chained onto its parent's key), so two prompts share a page only if they agree on every
token before it and in it. A page holds a prefix block only once full, and a sequence only ever
writes past its shared pages, so shared pages are never written again (no copy-on-write). A page
whose last user is gone keeps its contents and its key (the next request with that prefix reuses
it) until the allocator needs it back, least recently used first.
"""

from __future__ import annotations

import collections
import hashlib
from collections.abc import Sequence

import numpy as np


def block_keys(tokens: Sequence[int], page_size: int, n_blocks: int | None = None) -> list[bytes]:
    """The chained keys of the first `n_blocks` full blocks of `tokens` (default: all full blocks)."""
    n = len(tokens) // page_size if n_blocks is None else min(n_blocks, len(tokens) // page_size)
    keys, parent = [], b""
    arr = np.asarray(tokens[: n * page_size], np.int64)
    for i in range(n):
        parent = hashlib.blake2b(parent + arr[i * page_size: (i + 1) * page_size].tobytes(), digest_size=16).digest()
        keys.append(parent)
    return keys


class PageTable:
    """Which pages of the pool are free, who holds each one, and which hold a shareable prefix block."""

    def __init__(self, num_pages: int, page_size: int):
        if num_pages < 1 or page_size < 1:
            raise ValueError(f"num_pages and page_size must be positive, got {num_pages} and {page_size}")
        self.num_pages, self.page_size = num_pages, page_size
        self.refs = np.zeros(num_pages, np.int32)
        self._free = collections.deque(range(num_pages))  # never used, or evicted
        self._cached: collections.OrderedDict[int, None] = collections.OrderedDict()  # refs 0, key kept: LRU
        self._page_of: dict[bytes, int] = {}
        self._key_of: dict[int, bytes] = {}
        self.hits = 0  # pages handed out by `lookup` (prefix tokens not recomputed = hits * page_size)

    @property
    def available(self) -> int:
        """Pages `allocate` can hand out now."""
        return len(self._free) + len(self._cached)

    def cached(self, key: bytes) -> bool:
        """A page holds the block with this key (from `block_keys`)."""
        return key in self._page_of

    def allocate(self, n: int) -> list[int]:
        """`n` pages, each with one reference; a ValueError if fewer are available."""
        if n > self.available:
            raise ValueError(f"asked for {n} pages, only {self.available} of {self.num_pages} are available")
        out = []
        for _ in range(n):
            if self._free:
                page = self._free.popleft()
            else:  # evict the least recently used cached block
                page, _ = self._cached.popitem(last=False)
                del self._page_of[self._key_of.pop(page)]
            self.refs[page] = 1
            out.append(page)
        return out

    def lookup(self, tokens: Sequence[int], max_blocks: int | None = None) -> list[int]:
        """Pages holding the longest run of `tokens`' leading full blocks (at most `max_blocks`), one more
        reference each."""
        out = []
        for key in block_keys(tokens, self.page_size, max_blocks):
            page = self._page_of.get(key)
            if page is None:
                break
            if self.refs[page] == 0:
                del self._cached[page]
            self.refs[page] += 1
            out.append(page)
        self.hits += len(out)
        return out

    def register(self, tokens: Sequence[int], pages: Sequence[int]) -> None:
        """Offer the full blocks of `tokens`, written to `pages` (in order), for sharing. A block that is
        already cached elsewhere keeps its page; `pages` then stays private."""
        for key, page in zip(block_keys(tokens, self.page_size, min(len(tokens) // self.page_size, len(pages))),
                             pages):
            if key not in self._page_of and page not in self._key_of:
                self._page_of[key], self._key_of[page] = page, key

    def release(self, pages: Sequence[int]) -> None:
        """Drop one reference to each page; unreferenced pages become free (or cached, if they hold a block)."""
        for page in pages:
            if self.refs[page] <= 0:
                raise ValueError(f"page {page} released more often than it was allocated")
            self.refs[page] -= 1
            if self.refs[page] == 0:
                if page in self._key_of:
                    self._cached[page] = None
                else:
                    self._free.append(page)
