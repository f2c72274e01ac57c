"""How much of a benchmark the training data contained: word n-gram overlap between each example's
question and the training tokens, and the score on the clean subset.

    index = corpus_index(token_files("runs/NAME"), tokenizer, n=13, cache_dir=Path("runs/_cache/ngram_index"))
    flags = contaminated(index, [q1, q2, ...], n=13)          # bool per question
    report = contamination_report(records, flags)            # {"fraction", "clean_acc", ...}

An example is contaminated when any n consecutive words of its question
(lowercased, punctuation dropped: `lm.data.ngrams`, the same code the
curation decontamination stage uses, GPT-3's 13-gram definition) occur
anywhere in the training text. The training tokens are decoded with the
model's tokenizer one document at a time (documents end at a special token
such as <|endoftext|>, so no n-gram spans two documents) and every word
n-gram goes into a sorted uint64 index (`NgramIndex`). Building it reads
the whole corpus once; the index is saved under a key made of the files
(path, size, modification time), n and the tokenizer, and reused after.
A question shorter than n words cannot be flagged; the report counts them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from lm.data.ngrams import NgramIndex, texts_ngram_hashes
from lm.eval.stats import accuracy_summary
from lm.eval.tokens import special_ids

DOCS_PER_BATCH = 256


def token_files(path: str | Path) -> list[Path]:
    """The token arrays (`*.npy`, searched recursively, sorted) of a run directory or a token folder/file."""
    path = Path(path)
    if path.is_file():
        return [path]
    files = sorted(p for p in path.rglob("*.npy") if p.is_file()) if path.is_dir() else []
    if not files:
        raise FileNotFoundError(f"--train-tokens {str(path)!r} holds no .npy token arrays")
    return files


def _tokenizer_key(tokenizer) -> str:
    """A digest of what the tokenizer decodes a spread of ids to (enough to tell two vocabularies apart)."""
    size = getattr(tokenizer, "vocab_size", None) or len(getattr(tokenizer, "vocab", {})) or 256
    ids = list(range(0, int(size), max(1, int(size) // 4096)))
    return hashlib.sha256(repr([tokenizer.decode([i]) for i in ids]).encode()).hexdigest()[:16]


def _documents(files: Sequence[Path], tokenizer) -> Iterator[str]:
    """Decoded documents of the token arrays, split at (and without) special tokens."""
    special = np.asarray(sorted(special_ids(tokenizer)), np.int64)
    for f in files:
        ids = np.load(f, mmap_mode="r")
        cuts = np.flatnonzero(np.isin(ids, special)) if special.size else np.empty(0, np.int64)
        start = 0
        for end in [*cuts.tolist(), len(ids)]:
            if end > start:
                yield tokenizer.decode([int(t) for t in ids[start:end]])
            start = end + 1


def _hash_batches(docs: Iterator[str], n: int) -> Iterator[np.ndarray]:
    batch: list[str] = []
    for doc in docs:
        batch.append(doc)
        if len(batch) == DOCS_PER_BATCH:
            yield from texts_ngram_hashes(batch, n)
            batch = []
    if batch:
        yield from texts_ngram_hashes(batch, n)


def corpus_index(files: Sequence[Path], tokenizer, n: int = 13, cache_dir: str | Path | None = None) -> NgramIndex:
    """The word n-gram index of the training tokens, read from `cache_dir` if built before."""
    if n < 1:
        raise ValueError(f"n-gram length must be >= 1, got {n}")
    stamp = [(str(Path(f).resolve()), Path(f).stat().st_size, Path(f).stat().st_mtime_ns) for f in files]
    key = hashlib.sha256(json.dumps([stamp, n, _tokenizer_key(tokenizer)]).encode()).hexdigest()[:20]
    path = Path(cache_dir) / f"words{n}-{key}.npy" if cache_dir else None
    if path is not None and path.is_file():
        return NgramIndex.load(path, mmap=True)
    index = NgramIndex.build(_hash_batches(_documents(files, tokenizer), n))
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        index.save(path)
    return index


def contaminated(index: NgramIndex, questions: Sequence[str], n: int = 13) -> list[bool | None]:
    """Per question: True if one of its word n-grams is in the index, False if none is, None if it has
    fewer than n words (it cannot be checked)."""
    return [None if h.size == 0 else bool(index.contains(h).any()) for h in texts_ngram_hashes(questions, n)]


def contamination_report(records: Sequence[dict], flags: Sequence[bool | None], n: int = 13,
                         outcome: str = "correct") -> dict:
    """{"n_gram", "examples", "contaminated", "fraction", "too_short", "clean_acc" (+ _se, _ci95),
    "contaminated_acc"}: the clean subset is every example not flagged (short ones included)."""
    if len(records) != len(flags):
        raise ValueError(f"{len(flags)} flags for {len(records)} records")
    dirty = [r[outcome] for r, f in zip(records, flags) if f]
    clean = [r[outcome] for r, f in zip(records, flags) if not f]
    out = {"n_gram": n, "examples": len(records), "contaminated": len(dirty),
           "fraction": len(dirty) / len(records) if records else 0.0,
           "too_short": sum(f is None for f in flags),
           "contaminated_acc": sum(dirty) / len(dirty) if dirty else None}
    if clean:
        err = accuracy_summary(clean)
        out.update(clean_acc=err["acc"], clean_acc_se=err["se"], clean_acc_ci95=err["ci95"], clean_n=len(clean))
    else:
        out.update(clean_acc=None, clean_n=0)
    return out
