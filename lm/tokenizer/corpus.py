"""Encode a whole text corpus into one token array on disk (`.npy`).

Workers encode byte ranges of the file cut where encoding splits anyway (see
`pretokenize.find_chunk_boundaries`), in order, and the parent appends their
ids to disk as they arrive, so memory stays bounded by the chunk size.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from lm.tokenizer.pool import worker_pool
from lm.tokenizer.pretokenize import find_chunk_boundaries, read_text_range
from lm.tokenizer.tokenizer import Tokenizer

_WORKER: Tokenizer | None = None  # the tokenizer `_encode_range` uses in this (worker) process


def _set_worker_tokenizer(tokenizer: Tokenizer | None) -> None:
    global _WORKER
    _WORKER = tokenizer


def token_dtype(vocab_size: int):
    """uint16 when every id fits, else uint32."""
    import numpy as np

    return np.uint16 if vocab_size <= 1 << 16 else np.uint32


def _encode_range(args):
    import numpy as np

    path, start, end, dtype = args
    assert _WORKER is not None
    ids = _WORKER.encode(read_text_range(path, start, end))
    return np.asarray(ids, dtype=dtype), end - start


def encode_file(
    tokenizer: Tokenizer,
    input_path: str | os.PathLike,
    output_path: str | os.PathLike,
    *,
    num_workers: int | None = None,
    chunk_bytes: int = 4 << 20,
    progress: bool = True,
) -> dict:
    """Encode a UTF-8 text file into a 1-D `.npy` token array.

    Returns a summary dict: tokens, bytes, bytes_per_token, dtype, path.
    """
    import numpy as np
    from tqdm.auto import tqdm

    input_path, output_path = Path(input_path), Path(output_path)
    if not input_path.is_file():
        raise FileNotFoundError(f"corpus not found: {str(input_path)!r}")
    size = input_path.stat().st_size
    if size == 0:
        raise ValueError(f"corpus {str(input_path)!r} is empty; nothing to encode")
    dtype = token_dtype(max(tokenizer.vocab) + 1)
    bounds = find_chunk_boundaries(input_path, chunk_bytes, tokenizer.special_tokens)
    jobs = [(str(input_path), a, b, dtype) for a, b in zip(bounds[:-1], bounds[1:])]
    num_workers = min(num_workers or os.cpu_count() or 1, len(jobs))

    output_path.parent.mkdir(parents=True, exist_ok=True)
    total = 0
    bar = tqdm(total=size, desc=f"encoding {input_path.name}", unit="B", unit_scale=True, disable=not progress)
    pool = None
    with tempfile.NamedTemporaryFile(dir=output_path.parent, suffix=".ids", delete=False) as raw:
        try:
            if num_workers <= 1:
                _set_worker_tokenizer(tokenizer)
                results = map(_encode_range, jobs)
            else:
                pool = worker_pool(num_workers, _set_worker_tokenizer, (tokenizer,))
                results = pool.imap(_encode_range, jobs)
            for ids, nbytes in results:
                raw.write(ids.tobytes())
                total += len(ids)
                bar.update(nbytes)
            if pool is not None:
                pool.close()
                pool.join()
        finally:
            _set_worker_tokenizer(None)
            if pool is not None:
                pool.terminate()  # after an error; a no-op once joined
            bar.close()
    try:
        src = np.memmap(raw.name, dtype=dtype, mode="r", shape=(total,)) if total else np.zeros(0, dtype)
        dst = np.lib.format.open_memmap(output_path, mode="w+", dtype=dtype, shape=(total,))
        step = 1 << 24
        for i in range(0, total, step):
            dst[i : i + step] = src[i : i + step]
        dst.flush()
        del src, dst
    finally:
        os.unlink(raw.name)
    return {"path": str(output_path), "tokens": total, "bytes": size,
            "bytes_per_token": size / max(total, 1), "dtype": np.dtype(dtype).name}
