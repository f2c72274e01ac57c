"""Train a byte-level BPE tokenizer on a text file.

    python -m experiments.train_tokenizer --input corpus.txt --vocab-size 10000 \
        --special-token '<|endoftext|>' --out runs/tok

From a notebook: `from experiments.train_tokenizer import train_tokenizer`.
"""

from __future__ import annotations

import argparse
import dataclasses
import resource
import sys
import time

from lm.cli_env import prepare_process
from lm.config import add_dataclass_args, dataclass_from_args, format_config
from lm.tokenizer import Tokenizer, save_tokenizer, train_bpe


@dataclasses.dataclass(frozen=True)
class TrainTokenizerConfig:
    input: str = dataclasses.field(default="", metadata={"help": "UTF-8 training text"})
    vocab_size: int = 10_000
    special_tokens: tuple[str, ...] = dataclasses.field(
        default=("<|endoftext|>",), metadata={"flag": "--special-token", "help": "special token"})
    out: str = dataclasses.field(default="runs/tokenizer", metadata={"help": "output directory"})
    num_workers: int = 0  # 0: all cores
    sample_bytes: int = 8 << 20  # how much text the compression ratio is measured on

    def __post_init__(self):
        if not self.input:
            raise ValueError("--input is required: the UTF-8 text file to train on")
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0 (0 = all cores), got {self.num_workers}")


def peak_rss_mib() -> float:
    """Peak resident memory of this process and its finished workers, in MiB (Linux KiB units)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, kids) / 1024


def train_tokenizer(config: TrainTokenizerConfig, progress: bool = True) -> dict:
    """Train, save `tokenizer.json` under `config.out`, and return a summary dict."""
    t0 = time.perf_counter()
    stats: dict = {}
    vocab, merges = train_bpe(config.input, config.vocab_size, config.special_tokens,
                              num_workers=config.num_workers or None, progress=progress, stats=stats)
    train_s = time.perf_counter() - t0
    tok = Tokenizer(vocab, merges, config.special_tokens)
    path = save_tokenizer(tok, config.out)
    with open(config.input, "rb") as f:
        sample = f.read(config.sample_bytes).decode("utf-8", errors="ignore")
    n_tokens = len(tok.encode(sample))
    longest = sorted((t for t in vocab.values()), key=len, reverse=True)[:10]
    return {
        "path": str(path),
        "vocab_size": len(vocab),
        "merges": len(merges),
        "train_seconds": train_s,
        "pretokenize_seconds": stats["pretokenize_s"],
        "merge_seconds": stats["merge_s"],
        "peak_rss_mib": peak_rss_mib(),
        "bytes_per_token": len(sample.encode("utf-8")) / max(n_tokens, 1),
        "longest_tokens": [t.decode("utf-8", errors="replace") for t in longest],
    }


def print_summary(summary: dict) -> None:
    print(f"saved {summary['path']}: {summary['vocab_size']} tokens ({summary['merges']} merges)")
    print(f"time {summary['train_seconds']:.2f} s (pre-tokenize {summary['pretokenize_seconds']:.2f} s, "
          f"merges {summary['merge_seconds']:.2f} s), peak RSS {summary['peak_rss_mib']:.0f} MiB")
    print(f"compression {summary['bytes_per_token']:.2f} bytes/token")
    print("longest tokens: " + ", ".join(repr(t) for t in summary["longest_tokens"]))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dataclass_args(parser, TrainTokenizerConfig)
    args = parser.parse_args(argv)
    try:
        config = dataclass_from_args(TrainTokenizerConfig, args)
        print(format_config(config))
        print_summary(train_tokenizer(config))
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    prepare_process()
    sys.exit(main())
