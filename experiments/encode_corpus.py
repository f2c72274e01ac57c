"""Encode a text corpus into a token array on disk (`.npy`, uint16 when the vocab fits).

    python -m experiments.encode_corpus --tokenizer runs/tok --input corpus.txt --out runs/tok/corpus.npy

From a notebook: `from experiments.encode_corpus import encode_corpus`.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time

from lm.cli_env import prepare_process
from lm.config import add_dataclass_args, dataclass_from_args
from lm.tokenizer import encode_file, load_tokenizer


@dataclasses.dataclass(frozen=True)
class EncodeCorpusConfig:
    tokenizer: str = dataclasses.field(default="", metadata={"help": "tokenizer directory or tokenizer.json"})
    input: str = dataclasses.field(default="", metadata={"help": "UTF-8 text to encode"})
    out: str = dataclasses.field(default="", metadata={"help": "output .npy path"})
    num_workers: int = 0  # 0: all cores

    def __post_init__(self):
        for name in ("tokenizer", "input", "out"):
            if not getattr(self, name):
                raise ValueError(f"--{name} is required")


def encode_corpus(config: EncodeCorpusConfig, progress: bool = True) -> dict:
    """Encode `config.input` to `config.out`; returns tokens, bytes/token, MB/s."""
    tok = load_tokenizer(config.tokenizer)
    t0 = time.perf_counter()
    summary = encode_file(tok, config.input, config.out, num_workers=config.num_workers or None, progress=progress)
    summary["seconds"] = time.perf_counter() - t0
    summary["mb_per_s"] = summary["bytes"] / summary["seconds"] / 1e6
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dataclass_args(parser, EncodeCorpusConfig)
    try:
        s = encode_corpus(dataclass_from_args(EncodeCorpusConfig, parser.parse_args(argv)))
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {s['path']}: {s['tokens']:,} {s['dtype']} tokens, {s['bytes_per_token']:.2f} bytes/token, "
          f"{s['seconds']:.1f} s ({s['mb_per_s']:.1f} MB/s)")
    return 0


if __name__ == "__main__":
    prepare_process()
    sys.exit(main())
