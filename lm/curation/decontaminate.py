"""Benchmark decontamination: find training documents that share a word 13-gram with evaluation data.

    indexes = build_benchmark_indexes(["shared/data/corpora/a5_eval_data/mmlu", "gsm8k/test.jsonl"])
    overlaps = contamination(text, indexes)      # {"mmlu": 3} when 3 of the text's 13-grams are MMLU's

A benchmark is a file or a folder of files: JSONL (every string value of a record, lists and nested
objects included, is the record's text), JSON (a list of such records) or CSV/TSV (the cells of a
row). A folder is one benchmark, a file another, named by their parent folder and own name
("gsm8k/test" for gsm8k/test.jsonl, "mmlu/test" for the folder mmlu/test). Words are
normalised as `lm.data.ngrams.normalize_words` does (lower case, no punctuation), as GPT-3 and
lm-eval-harness do for their 13-gram overlap checks, and hashed with `lm.data.ngrams`, the same code
the evaluation contamination report uses. A benchmark item with fewer than `n` words has no n-gram
and cannot match (GPT-3 lowered n for such items; `n` is a parameter here).
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from lm.data.ngrams import NgramIndex, text_ngram_hashes, texts_ngram_hashes

SUFFIXES = (".jsonl", ".json", ".csv", ".tsv")


def _strings(value) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _strings(v)


def benchmark_files(path: str | os.PathLike) -> list[Path]:
    path = Path(path)
    if path.is_file():
        if path.suffix.lower() not in SUFFIXES:
            raise ValueError(f"{path}: benchmark files must be {', '.join(SUFFIXES)}")
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)
        if not files:
            raise FileNotFoundError(f"{path}: no {', '.join(SUFFIXES)} files inside")
        return files
    raise FileNotFoundError(f"benchmark data not found: {str(path)!r}")


def benchmark_items(path: str | os.PathLike) -> Iterator[str]:
    """The text of each item (record or row) of a benchmark file or folder."""
    for f in benchmark_files(path):
        suffix = f.suffix.lower()
        with open(f, encoding="utf-8", errors="replace", newline="") as fh:
            if suffix == ".jsonl":
                for i, line in enumerate(fh):
                    if line.strip():
                        try:
                            yield "\n".join(_strings(json.loads(line)))
                        except json.JSONDecodeError as e:
                            raise ValueError(f"{f}:{i + 1}: not JSON ({e})") from None
            elif suffix == ".json":
                data = json.load(fh)
                for rec in data if isinstance(data, list) else [data]:
                    yield "\n".join(_strings(rec))
            else:
                for row in csv.reader(fh, delimiter="\t" if suffix == ".tsv" else ","):
                    yield "\n".join(row)


def _batches(items: Iterable[str], size: int) -> Iterator[list[str]]:
    batch = []
    for it in items:
        batch.append(it)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def benchmark_name(path: str | os.PathLike) -> str:
    """"gsm8k/test" for .../gsm8k/test.jsonl, "mmlu/test" for the folder .../mmlu/test."""
    path = Path(path).resolve()
    return f"{path.parent.name}/{path.name if path.is_dir() else path.stem}"


def build_benchmark_indexes(paths: Iterable[str | os.PathLike], n: int = 13) -> dict[str, NgramIndex]:
    """{benchmark name: index of its items' word n-gram hashes}; names must be distinct."""
    out: dict[str, NgramIndex] = {}
    for p in paths:
        name = benchmark_name(p)
        if name in out:
            raise ValueError(f"two benchmarks are named {name!r}; give them distinct file or folder names")
        out[name] = NgramIndex.build(h for batch in _batches(benchmark_items(p), 4096)
                                     for h in texts_ngram_hashes(batch, n))
    return out


def save_indexes(indexes: dict[str, NgramIndex], folder: str | os.PathLike) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, idx in indexes.items():
        idx.save(folder / f"{name.replace('/', '__')}.npy")


def load_indexes(folder: str | os.PathLike) -> dict[str, NgramIndex]:
    return {p.stem.replace("__", "/"): NgramIndex.load(p, mmap=True) for p in sorted(Path(folder).glob("*.npy"))}


def contamination(text: str, indexes: dict[str, NgramIndex], n: int = 13) -> dict[str, int]:
    """{benchmark: number of the text's word n-grams found in it}, benchmarks with no overlap left out."""
    hashes = text_ngram_hashes(text, n)
    if hashes.size == 0:
        return {}
    out = {}
    for name, idx in indexes.items():
        hits = int(np.count_nonzero(idx.contains(hashes)))
        if hits:
            out[name] = hits
    return out
