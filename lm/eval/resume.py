"""Resumable evaluation: per-example records appended as they are computed, keyed by what produced them.

    fp = fingerprint(params, config)                                   # "3f2a...": the weights and the model config
    log = RecordLog(out_dir / "partial.jsonl")
    key = record_key(fp, "mmlu", "val", "mmlu/val/anatomy/3", {"shots": 5, "format": "letter"})
    if key not in log: log.append([(key, record)])                     # flushed and fsynced at once

A killed run leaves every finished example in the log (a half-written last
line is ignored), and the next run with the same model, task, split and
prompt settings computes only the rest. A key holds everything that changes
an example's result, so a log never serves a record computed by another
model or with other prompts; such lines stay in the file, unused. Because a
scored example does not depend on its batch (`lm.eval.scoring`), the
resumed run's numbers equal an unbroken run's exactly.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import numpy as np
from tqdm.auto import tqdm


def fingerprint(params, config) -> str:
    """16 hex digits of a SHA-256 over the model config and every parameter's path, dtype, shape and bytes."""
    h = hashlib.sha256(repr(config).encode())
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        a = np.asarray(leaf)
        h.update(f"{jax.tree_util.keystr(path)}:{a.dtype}:{a.shape}".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def record_key(model: str, task: str, split: str, example_id: str, settings: dict) -> str:
    """One string for (model fingerprint, task, split, example id, prompt settings)."""
    return json.dumps([model, task, split, example_id, settings], sort_keys=True, separators=(",", ":"))


class RecordLog:
    """An append-only JSONL file of {"key", "record"} lines, read back into a dict on open."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.records: dict[str, dict] = {}
        self.appended = 0  # records this process computed and wrote (the rest were read back)
        if self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").split("\n"):  # not splitlines: U+2028 in text
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:  # the line a killed run was writing
                    continue
                self.records[row["key"]] = row["record"]

    def __contains__(self, key: str) -> bool:
        return key in self.records

    def __getitem__(self, key: str) -> dict:
        return self.records[key]

    def __len__(self) -> int:
        return len(self.records)

    def append(self, items: list[tuple[str, dict]]) -> None:
        """Write (key, record) pairs and make them durable before returning."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        torn = False
        if self.path.is_file() and self.path.stat().st_size:
            with self.path.open("rb") as f:
                f.seek(-1, os.SEEK_END)
                torn = f.read(1) != b"\n"
        with self.path.open("a", encoding="utf-8") as f:
            if torn:
                f.write("\n")  # end the line a killed run was writing, so the new ones parse
            for key, record in items:
                f.write(json.dumps({"key": key, "record": record}, ensure_ascii=False, default=str) + "\n")
                self.records[key] = record
                self.appended += 1
            f.flush()
            os.fsync(f.fileno())


def resumable(keys: Sequence[str], compute: Callable[[list[int], int], list[dict]], log: RecordLog | None,
              chunk: int, order: Sequence[int] | None = None, on_chunk: Callable[[int], None] | None = None,
              progress: bool = False, desc: str = "examples") -> list[dict]:
    """One record per key, in the keys' order. The examples (in `order`) are cut into fixed chunks of
    `chunk`; a chunk with any key missing from `log` is computed, compute(indices, start) -> records, and
    appended. Chunks are the same in every run, so a recomputed chunk sees the same batches and seeds
    (`start` is the chunk's offset) as the unbroken run did. on_chunk(examples done) after each chunk."""
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    log = log if log is not None else RecordLog(os.devnull)
    order = list(range(len(keys))) if order is None else list(order)
    bar = tqdm(total=len(keys), disable=not progress, desc=desc, unit="ex", dynamic_ncols=True)
    bar.update(sum(k in log for k in keys))
    for start in range(0, len(order), chunk):
        idx = order[start: start + chunk]
        missing = [i for i in idx if keys[i] not in log]
        if not missing:
            continue
        records = compute(idx, start)
        log.append([(keys[i], r) for i, r in zip(idx, records) if keys[i] not in log])
        bar.update(len(missing))
        if on_chunk is not None:
            on_chunk(sum(k in log for k in keys))
    bar.close()
    return [log[k] for k in keys]
