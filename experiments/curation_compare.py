"""The CS336 point at small scale: does curation help? Same pages, same steps, same tokenizer.

    python -m experiments.curation_compare --steps 400          # needs benchmarks/curation_setup.sh

Debian documentation pages are split by page (every translation of a page on the same side),
about 10% held out. The held-out pages are curated; their clean text is the validation set
for both runs. The rest are the training pages: "unfiltered" is every page's extracted text
(all languages, boilerplate, duplicates), "curated" is the pipeline's output. One BPE tokenizer,
trained on neither (the embedded Python corpus), encodes everything. The tiny model trains for
the same number of steps on each; the table goes to experiments/results/curation.md.

    from experiments.curation_compare import CompareConfig, compare
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import re
import sys
import time
from pathlib import Path

from lm.cli_env import prepare_process

EOT = "<|endoftext|>"


@dataclasses.dataclass(frozen=True)
class CompareConfig:
    out: str = "runs/curation-compare"
    steps: int = 400
    held_out: float = 0.1
    vocab_size: int = 4096
    workers: int = 0
    results: str = dataclasses.field(default="experiments/results/curation.md",
                                     metadata={"help": "Markdown file for the table ('' to skip)"})


def _page_key(url: str) -> str:
    """The page with its language removed, so all translations share a key."""
    path = url.split("/", 3)[-1]
    path = re.sub(r"/[a-z]{2}-[A-Z]{2}/", "/", path)
    return re.sub(r"\.[a-z]{2}(-[a-z]{2})?\.html$", ".html", path)


def _held_out(url: str, fraction: float) -> bool:
    return int(hashlib.sha1(_page_key(url).encode()).hexdigest()[:8], 16) / 2**32 < fraction


def _encode(tok, texts, path: Path) -> int:
    import numpy as np

    from lm.tokenizer import encode_file

    txt = path.with_suffix(".txt")
    txt.write_text(EOT.join(t.replace(EOT, "") for t in texts) + EOT, encoding="utf-8")
    s = encode_file(tok, txt, path, num_workers=None, progress=False)
    txt.unlink()
    return int(np.load(path, mmap_mode="r").shape[0]) if s else 0


def _prepare(config: CompareConfig, out: Path) -> dict:
    """WARCs, the split, curation, the shared tokenizer and the token arrays; returns sizes."""
    from lm.curation.config import CurationConfig
    from lm.curation.document import read_jsonl
    from lm.curation.extract import extract_text
    from lm.curation.pipeline import run_curation
    from lm.curation.reading import read_warc
    from benchmarks.warc_fixtures import build_debian_warcs, write_warc
    from lm.data.embedded import write_embedded_corpus
    from lm.tokenizer import Tokenizer, load_tokenizer, save_tokenizer, train_bpe

    t0 = time.perf_counter()
    manifest = build_debian_warcs(out / "all", pages_per_shard=250, wet_shards=0)
    records = [r for f in manifest["files"] for r in read_warc(f)]
    split = {"train": [r for r in records if not _held_out(r.url, config.held_out)],
             "heldout": [r for r in records if _held_out(r.url, config.held_out)]}
    for name, recs in split.items():
        for k in range(0, len(recs), 250):
            write_warc(out / name / f"{name}-{k // 250:05d}.warc.gz",
                       [(r.url, r.payload, f"{r.content_type}; charset={r.charset}" if r.charset else r.content_type)
                        for r in recs[k:k + 250]])
    unfiltered = [t for r in split["train"] for t, why in [extract_text(r.payload, r.content_type, r.charset)]
                  if not why]
    cur = {}
    for name in ("train", "heldout"):
        res = run_curation(CurationConfig(input=str(out / name / "*.warc.gz"), out=str(out / f"curated-{name}"),
                                          tokenize=False, workers=config.workers), progress=False)
        cur[name] = [d.text for p in res["clean_shards"] for d in read_jsonl(p)]
    print(f"pages: {len(split['train'])} train, {len(split['heldout'])} held out; curated train docs "
          f"{len(cur['train'])}, held-out clean docs {len(cur['heldout'])} ({time.perf_counter() - t0:.0f} s)")
    tok_dir = out / "tokenizer"
    if not (tok_dir / "tokenizer.json").is_file():
        vocab, merges = train_bpe(write_embedded_corpus(out / "embedded.txt"), config.vocab_size, [EOT],
                                  progress=False)
        save_tokenizer(Tokenizer(vocab, merges, [EOT]), tok_dir)
    tok = load_tokenizer(tok_dir)
    prep = {"pages_train": len(split["train"]), "pages_heldout": len(split["heldout"]),
            "val_docs": len(cur["heldout"])}
    for name, texts in (("unfiltered", unfiltered), ("curated", cur["train"])):
        d = out / name
        d.mkdir(parents=True, exist_ok=True)
        save_tokenizer(tok, d)
        prep[name] = {"docs": len(texts), "chars": sum(map(len, texts)),
                      "train_tokens": _encode(tok, texts, d / "train.npy")}
        prep["val_tokens"] = _encode(tok, cur["heldout"], d / "val.npy")
    return prep


def compare(config: CompareConfig = CompareConfig()) -> dict:
    from experiments.pretrain import PretrainConfig, pretrain

    out = Path(config.out)
    prep_file = out / "prep.json"
    if prep_file.is_file():  # data already prepared by an earlier run: train only
        prep = json.loads(prep_file.read_text())
    else:
        prep = _prepare(config, out)
        prep_file.write_text(json.dumps(prep, indent=1))
    rows = {}
    optim = dataclasses.replace(PretrainConfig().optim, warmup_steps=max(1, config.steps // 10))
    for name in ("unfiltered", "curated"):
        t = time.perf_counter()
        r = pretrain(PretrainConfig(tokens=str(out / name), steps=config.steps, optim=optim, eval_every=config.steps,
                                    save_every=config.steps, eval_batches=0, out=str(out / "runs"),
                                    name=f"{name}-{config.steps}", sample_tokens=0))
        rows[name] = {**prep[name], "val_loss": r["val_loss"], "val_perplexity": r["val_perplexity"],
                      "seconds": time.perf_counter() - t}
    table = ["| training text | documents | characters | train tokens | held-out clean loss | perplexity "
             "| train time |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, r in rows.items():
        table.append(f"| {name} | {r['docs']:,} | {r['chars']:,} | {r['train_tokens']:,} | {r['val_loss']:.3f} | "
                     f"{r['val_perplexity']:.1f} | {r['seconds']:.0f} s |")
    return {"rows": rows, "table": "\n".join(table), "steps": config.steps, "val_docs": prep["val_docs"],
            "val_tokens": prep["val_tokens"]}


def main(argv=None) -> int:
    from lm.config import add_dataclass_args, dataclass_from_args

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dataclass_args(parser, CompareConfig)
    config = dataclass_from_args(CompareConfig, parser.parse_args(argv))
    try:
        r = compare(config)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"\n{r['steps']} steps of the tiny model each; validation: {r['val_docs']} held-out curated pages\n")
    print(r["table"])
    return 0


if __name__ == "__main__":
    prepare_process()
    sys.exit(main())
