"""The last stage: clean text shards to the training arrays `experiments.pretrain --tokens` reads.

Writes DIR/train.npy, DIR/val.npy and DIR/tokenizer.json. Documents are separated by
<|endoftext|>; a document goes to validation by a hash of its id, so the split does not depend
on shard order or worker count. With no tokenizer given, a byte-level BPE is trained on the
training text (lm.tokenizer.train_bpe).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Iterable

from lm.curation.document import Document

EOT = "<|endoftext|>"


def _is_val(doc_id: str, fraction: float) -> bool:
    h = int.from_bytes(hashlib.blake2b(doc_id.encode(), digest_size=8).digest(), "little")
    return h / 2**64 < fraction


def write_split_text(docs: Iterable[Document], out_dir: Path, val_fraction: float) -> tuple[Path, Path, int, int]:
    out_dir.mkdir(parents=True, exist_ok=True)
    train, val = out_dir / "train.txt", out_dir / "val.txt"
    n = {True: 0, False: 0}
    with open(train, "w", encoding="utf-8") as ft, open(val, "w", encoding="utf-8") as fv:
        for d in docs:
            v = _is_val(d.id, val_fraction)
            (fv if v else ft).write(d.text.replace(EOT, "") + EOT)
            n[v] += 1
    return train, val, n[False], n[True]


def tokenize_documents(docs: Iterable[Document], out_dir: str | os.PathLike, *, tokenizer: str = "",
                       vocab_size: int = 4096, val_fraction: float = 0.05, workers: int = 1,
                       progress: bool = True) -> dict:
    """Encode documents into out_dir/{train,val}.npy (+ tokenizer.json); returns a summary."""
    from lm.tokenizer import Tokenizer, encode_file, load_tokenizer, save_tokenizer, train_bpe

    out_dir = Path(out_dir)
    train_txt, val_txt, n_train, n_val = write_split_text(docs, out_dir, val_fraction)
    if n_train == 0:
        raise ValueError("no documents survived curation; nothing to tokenize (loosen the filters?)")
    if tokenizer:
        tok = load_tokenizer(tokenizer)
    else:
        vocab, merges = train_bpe(train_txt, vocab_size, [EOT], progress=progress)
        tok = Tokenizer(vocab, merges, [EOT])
    save_tokenizer(tok, out_dir)
    summary = {"train_docs": n_train, "val_docs": n_val, "dir": str(out_dir)}
    for name, path in (("train", train_txt), ("val", val_txt)):
        if path.stat().st_size:
            s = encode_file(tok, path, out_dir / f"{name}.npy", num_workers=workers, progress=progress)
            summary[f"{name}_tokens"] = s["tokens"]
        else:
            summary[f"{name}_tokens"] = 0
    return summary
