"""Curate web archives into clean, deduplicated training tokens.

    python -m experiments.curate --input 'crawl/*.warc.gz' --out DIR [--ray ADDRESS]
    python -m experiments.curate --input 'runs/debian-warc/*' --out runs/curated --language en --language de

Stages: read (WARC/WET, gzip or plain) -> extract (resiliparse) -> language id -> MinHash/LSH
near-duplicate removal -> exact line dedup -> decontamination (--decontaminate) -> Gopher rules
(and --gopher-repetition, --c4, --fineweb) -> harmful filters -> quality classifier (if given) ->
PII masking -> tokenization. Rerunning the same command resumes an interrupted run. DIR gets clean/*.jsonl,
tokens/ (train.npy, val.npy, tokenizer.json for `python -m experiments.pretrain --tokens DIR/tokens`), stats.json
and report.md. `--ray local` starts a local Ray instance; `--ray ADDRESS` joins a cluster.

From a notebook: `from experiments.curate import CurationConfig, curate`.
"""

from __future__ import annotations

import argparse
import sys

from lm.cli_env import prepare_process
from lm.config import add_dataclass_args, dataclass_from_args
from lm.curation.config import CurationConfig


def curate(config: CurationConfig, progress: bool = True) -> dict:
    """Run the pipeline; returns {"stats", "report", "tokens", "clean_shards", "seconds"}."""
    from lm.curation.pipeline import run_curation

    return run_curation(config, progress=progress)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dataclass_args(parser, CurationConfig)
    try:
        config = dataclass_from_args(CurationConfig, parser.parse_args(argv))
        result = curate(config)
    except (ValueError, FileNotFoundError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(result["report"])
    print(f"\nclean shards: {config.out}/clean/  stats: {config.out}/stats.json")
    if result["tokens"]:
        t = result["tokens"]
        print(f"tokens: {t['train_tokens']:,} train / {t['val_tokens']:,} validation in {t['dir']} "
              f"(python -m experiments.pretrain --tokens {t['dir']})")
    return 0


if __name__ == "__main__":
    prepare_process()
    sys.exit(main())
