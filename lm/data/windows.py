"""Random windows of `context_length + 1` tokens from memory-mapped token arrays.

Batch `step` is a pure function of (seed, step): its window starts come from a
counter-based generator seeded with both. The iterator over steps is
therefore checkpointed by one integer, and a resumed run reads exactly the
batches the uninterrupted run would have. (No input-pipeline library: a batch
is one fancy-indexing read of a memory-mapped array, and the state is `step`.)
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np


@dataclasses.dataclass(frozen=True)
class TokenData:
    """Train and validation token arrays ([n_tokens] integers, usually memory-mapped)."""

    train: np.ndarray
    val: np.ndarray


def load_tokens(path: str | os.PathLike) -> np.ndarray:
    """Memory-map a 1-D `.npy` token array (written by `lm.tokenizer.encode_file`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"token array not found: {str(path)!r} (encode text with experiments.encode_corpus)")
    try:
        arr = np.load(path, mmap_mode="r")
    except ValueError as e:
        raise ValueError(f"{path}: not a readable .npy token array ({e})") from None
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{path}: expected a 1-D integer token array, got shape {arr.shape} dtype {arr.dtype}")
    return arr


def split_tokens(tokens: np.ndarray, val_fraction: float) -> TokenData:
    """Hold out the last `val_fraction` of the array for validation."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    cut = int(len(tokens) * (1 - val_fraction))
    return TokenData(train=tokens[:cut], val=tokens[cut:])


def _check_length(tokens: np.ndarray, context_length: int, what: str) -> None:
    if len(tokens) < context_length + 1:
        raise ValueError(
            f"{what} has {len(tokens)} tokens, fewer than one window of context_length + 1 = "
            f"{context_length + 1}; use more text or a shorter context"
        )


def batch_at(tokens: np.ndarray, step: int, batch_size: int, context_length: int, seed: int) -> np.ndarray:
    """The batch of training windows for `step`: int32 [batch, context_length + 1]."""
    _check_length(tokens, context_length, "the training split")
    # (seed, step) is the Philox *key*: streams of different keys are independent. (With step as the
    # counter, consecutive steps' streams were the same numbers shifted by one block, so step k + 1
    # repeated most of step k's windows.)
    rng = np.random.Generator(np.random.Philox(key=np.array([seed, step], dtype=np.uint64)))
    # Valid starts are 0 ..= len - context_length - 1 (the last window ends on the last token);
    # `integers` excludes its upper bound.
    starts = rng.integers(0, len(tokens) - context_length, size=batch_size)
    idx = starts[:, None] + np.arange(context_length + 1)[None, :]
    return np.asarray(tokens[idx], dtype=np.int32)


def make_train_iterator(
    tokens: np.ndarray,
    batch_size: int,
    context_length: int,
    seed: int,
    start_step: int = 0,
    num_steps: int | None = None,
    shard: tuple[int, int] = (0, 1),
) -> TrainBatches:
    """An iterator of training batches (int32 [batch_size / shards, context_length + 1]) from `start_step`.

    `shard=(index, count)` keeps rows index::count of every batch, so each
    process of a multi-host run reads only its part of the same global batch.
    The iterator's `get_state()` is `{"next_index": k}`: batch k comes next.
    """
    _check_length(tokens, context_length, "the training split")
    index, count = shard
    if batch_size % count:
        raise ValueError(f"batch_size {batch_size} does not divide over {count} data shards")
    stop = start_step + (num_steps if num_steps is not None else 1 << 40)
    return TrainBatches(lambda step: batch_at(tokens, step, batch_size, context_length, seed)[index::count],
                        start_step, stop)


class TrainBatches(Iterator[np.ndarray]):
    """batch(start), batch(start + 1), ... up to `stop` (exclusive); `get_state()` names the next step."""

    def __init__(self, batch: Callable[[int], np.ndarray], start: int, stop: int):
        self._batch, self._next, self._stop = batch, start, stop

    def __next__(self) -> np.ndarray:
        if self._next >= self._stop:
            raise StopIteration
        self._next += 1
        return self._batch(self._next - 1)

    def get_state(self) -> dict:
        return {"next_index": self._next}


def eval_batches(tokens: np.ndarray, batch_size: int, context_length: int, max_batches: int | None = None):
    """Consecutive non-overlapping windows covering the validation split, in order.

    Yields int32 [batch, context_length + 1]; the last batch may be smaller.
    """
    _check_length(tokens, context_length, "the validation split")
    n_windows = (len(tokens) - 1) // context_length
    if max_batches is not None:
        n_windows = min(n_windows, max_batches * batch_size)
    offsets = np.arange(context_length + 1)
    for b in range(0, n_windows, batch_size):
        starts = np.arange(b, min(b + batch_size, n_windows)) * context_length
        yield np.asarray(tokens[starts[:, None] + offsets[None, :]], dtype=np.int32)
