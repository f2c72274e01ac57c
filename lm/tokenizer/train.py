"""Byte-level BPE training.

The vocabulary is the 256 single bytes (ids 0-255), then the special tokens,
then one token per merge in creation order. Each step merges the most frequent
adjacent pair; ties go to the lexicographically greatest pair of byte strings.

After counting pre-tokens once, the merge loop only touches the words that
contain the pair being merged: an index maps each pair to the words holding it,
and a lazy max-heap keyed on (count, pair bytes) yields the next merge.
"""

from __future__ import annotations

import heapq
import os
import time
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence

from lm.tokenizer.pretokenize import count_pretokens

Vocab = dict[int, bytes]
Merges = list[tuple[bytes, bytes]]


def train_bpe(
    input_path: str | os.PathLike,
    vocab_size: int,
    special_tokens: Sequence[str] = (),
    *,
    num_workers: int | None = None,
    chunk_bytes: int = 8 << 20,
    progress: bool = False,
    stats: dict | None = None,
) -> tuple[Vocab, Merges]:
    """Train a byte-level BPE tokenizer on a UTF-8 text file.

    Args:
      input_path: text file; special tokens in it delimit documents.
      vocab_size: final vocabulary size, including the 256 bytes and the specials.
      special_tokens: strings that are never split or merged.
      num_workers: pre-tokenization processes (default: all cores).
      chunk_bytes: bytes of text per pre-tokenization job (bounds memory).
      progress: show progress bars.
      stats: if given, filled with timings (`pretokenize_s`, `merge_s`) and sizes.

    Returns:
      (vocab, merges): vocab maps id -> token bytes; merges lists the merged
      pairs in creation order.
    """
    path = os.fspath(input_path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"training text not found: {path!r} (pass an existing UTF-8 text file)")
    specials = list(dict.fromkeys(special_tokens))
    min_size = 256 + len(specials)
    if vocab_size < min_size:
        raise ValueError(
            f"vocab_size={vocab_size} is too small: it must hold the 256 single bytes plus "
            f"{len(specials)} special token(s), so at least {min_size}"
        )
    if os.path.getsize(path) == 0:
        raise ValueError(f"training text {path!r} is empty; BPE needs text to count pairs in")

    t0 = time.perf_counter()
    word_counts = count_pretokens(path, specials, num_workers=num_workers, chunk_bytes=chunk_bytes, progress=progress)
    t1 = time.perf_counter()
    vocab, merges = merge_loop(word_counts, vocab_size, specials, progress=progress)
    t2 = time.perf_counter()
    if stats is not None:
        stats.update(pretokenize_s=t1 - t0, merge_s=t2 - t1, unique_pretokens=len(word_counts),
                     bytes=os.path.getsize(path))
    return vocab, merges


def _desc_key(token: bytes) -> tuple[int, ...]:
    """Key whose ascending order is the descending order of byte strings.

    Python orders a prefix before its extensions, so the terminator 256 sorts
    after every (inverted) byte value.
    """
    return tuple(255 - b for b in token) + (256,)


def merge_loop(
    word_counts: Mapping[str, int] | Counter,
    vocab_size: int,
    special_tokens: Sequence[str] = (),
    progress: bool = False,
) -> tuple[Vocab, Merges]:
    """Run BPE merges over counted pre-tokens until the vocabulary is full."""
    vocab: Vocab = {i: bytes([i]) for i in range(256)}
    for s in special_tokens:
        vocab[len(vocab)] = s.encode("utf-8")
    num_merges = max(0, vocab_size - len(vocab))

    words: list[list[int]] = []
    freqs: list[int] = []
    for w, c in word_counts.items():
        ids = list(w.encode("utf-8"))
        if len(ids) > 1:  # one-byte words hold no pairs
            words.append(ids)
            freqs.append(c)

    pair_counts: defaultdict[tuple[int, int], int] = defaultdict(int)
    where: defaultdict[tuple[int, int], set[int]] = defaultdict(set)
    for wi, ids in enumerate(words):
        c = freqs[wi]
        for pair in zip(ids, ids[1:]):
            pair_counts[pair] += c
            where[pair].add(wi)

    keys = {i: _desc_key(t) for i, t in vocab.items()}
    heap = [(-c, keys[a], keys[b], a, b) for (a, b), c in pair_counts.items()]
    heapq.heapify(heap)

    from tqdm.auto import tqdm

    bar = tqdm(total=num_merges, desc="merging", disable=not progress, unit="merge")
    merges: Merges = []
    while len(merges) < num_merges and heap:
        neg, ka, kb, a, b = heapq.heappop(heap)
        actual = pair_counts.get((a, b), 0)
        if actual != -neg:
            # Stale entry. A count that fell is re-queued at its true value; a
            # count that rose was already pushed when it rose.
            if 0 < actual < -neg:
                heapq.heappush(heap, (-actual, ka, kb, a, b))
            continue
        new_id = len(vocab)
        vocab[new_id] = vocab[a] + vocab[b]
        keys[new_id] = _desc_key(vocab[new_id])
        merges.append((vocab[a], vocab[b]))
        bar.update(1)
        _apply_merge(a, b, new_id, words, freqs, pair_counts, where, heap, keys)
    bar.close()
    return vocab, merges


def _apply_merge(a, b, new_id, words, freqs, pair_counts, where, heap, keys) -> None:
    delta: defaultdict[tuple[int, int], int] = defaultdict(int)
    for wi in where.pop((a, b)):
        ids = words[wi]
        n = len(ids)
        merged: list[int] = []
        i = 0
        changed = False
        while i < n:
            if i + 1 < n and ids[i] == a and ids[i + 1] == b:
                merged.append(new_id)
                i += 2
                changed = True
            else:
                merged.append(ids[i])
                i += 1
        if not changed:
            continue
        c = freqs[wi]
        for pair in zip(ids, ids[1:]):
            delta[pair] -= c
        for pair in zip(merged, merged[1:]):
            delta[pair] += c
            where[pair].add(wi)
        words[wi] = merged
    pair_counts.pop((a, b), None)
    delta.pop((a, b), None)
    for pair, d in delta.items():
        if d == 0:
            continue
        c = pair_counts.get(pair, 0) + d
        if c <= 0:
            pair_counts.pop(pair, None)
            where.pop(pair, None)
        else:
            pair_counts[pair] = c
            if d > 0:
                heapq.heappush(heap, (-c, keys[pair[0]], keys[pair[1]], pair[0], pair[1]))
