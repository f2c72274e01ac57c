"""The unit every stage works on: a document's text plus its metadata, and JSONL shards of them."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Iterable, Iterator


@dataclasses.dataclass(frozen=True)
class Document:
    """One page. `meta` holds what stages learn about it (language, scores, PII counts)."""

    id: str
    text: str
    url: str = ""
    meta: dict = dataclasses.field(default_factory=dict)

    def with_meta(self, **kv) -> "Document":
        return dataclasses.replace(self, meta={**self.meta, **kv})


def write_jsonl(docs: Iterable[Document], path: str | os.PathLike) -> list[int]:
    """Write one JSON object per line; returns each line's byte offset (for random access later).

    The file is written beside `path` and renamed into place, so a killed run never leaves a
    truncated shard under the final name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    offsets = []
    with open(tmp, "wb") as f:
        for d in docs:
            offsets.append(f.tell())
            f.write(json.dumps(dataclasses.asdict(d), ensure_ascii=False).encode("utf-8") + b"\n")
    os.replace(tmp, path)
    return offsets


def read_jsonl(path: str | os.PathLike) -> Iterator[Document]:
    with open(path, "rb") as f:
        for line in f:
            if line.strip():
                yield Document(**json.loads(line))


def read_jsonl_at(path: str | os.PathLike, offset: int) -> Document:
    """The document whose line starts at byte `offset` (from `write_jsonl`)."""
    with open(path, "rb") as f:
        f.seek(offset)
        return Document(**json.loads(f.readline()))
