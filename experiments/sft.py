"""Supervised fine-tuning on a verifiable task, with held-out accuracy before and after.

    python -m experiments.sft --init runs/arith-pretrain --task arithmetic-qa --name arith-sft
    python -m experiments.sft --init runs/smollm2-135m --task gsm8k-chat \\
        --data-dir ../shared/data/corpora/a5_eval_data/gsm8k --sft.steps 30 --sft.batch_size 4 --n-eval 20

`--init` is a run directory of ours or a Hugging Face checkpoint directory
(lm.interop). Training problems never include a held-out question. Writes
runs/NAME/: sft_metrics.jsonl, summary.json, samples.json and (with --save)
a checkpoint that experiments.grpo and experiments.generate can load. From a notebook:

    from experiments.sft import SFTRun, run_sft
    result = run_sft(SFTRun(init="runs/arith-pretrain"))    # {"before", "after", "history", ...}
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

from lm.align.config import SFTConfig
from lm.align.run import AlignRun, prepare


@dataclasses.dataclass(frozen=True)
class SFTRun(AlignRun):
    name: str = "sft"
    eval_every: int = 0  # steps between held-out evaluations (0: before and after only)
    max_new_tokens: int = 8
    sft: SFTConfig = dataclasses.field(default_factory=SFTConfig)

    def __post_init__(self):
        super().__post_init__()
        if self.max_new_tokens < 1 or self.eval_every < 0:
            raise ValueError("max_new_tokens must be positive and eval_every >= 0")


def run_sft(config: SFTRun, progress: bool = True) -> dict:
    """Load, evaluate, fine-tune, evaluate, save; returns {"before", "after", "history", "run_dir", "params"}."""
    from lm.align.checkpoint import save_policy
    from lm.align.evaluate import evaluate_task
    from lm.align.sft_loop import train_sft

    task, params, model, tokenizer, train, held, run_dir = prepare(config)
    ev = dict(max_new_tokens=config.max_new_tokens, batch_size=config.eval_batch_size, progress=progress)
    before = evaluate_task(params, model, tokenizer, task, held, **ev)
    t0 = time.perf_counter()
    result = train_sft(params, model, tokenizer, task, train, config.sft, held if config.eval_every else (),
                       config.eval_every, config.max_new_tokens, config.eval_batch_size, run_dir, progress=progress)
    seconds = time.perf_counter() - t0
    params = result["state"]["params"]
    after = evaluate_task(params, model, tokenizer, task, held, **ev)
    summary = {"task": task.name, "n_eval": after["n"], "accuracy_before": before["accuracy"],
               "accuracy_after": after["accuracy"], "train_seconds": seconds, "steps": config.sft.steps}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    (run_dir / "samples.json").write_text(json.dumps({"before": before["samples"], "after": after["samples"]},
                                                     indent=2))
    if config.save:
        from lm.config import to_dict

        save_policy(run_dir, result["state"], result["train_config"], tokenizer, {"sft": to_dict(config)})
    return {"before": before, "after": after, "history": result["history"], "evals": result["evals"],
            "run_dir": str(run_dir), "params": params, "model": model, "tokenizer": tokenizer, **summary}


def parse_config(cls, argv=None):
    from lm.config import add_dataclass_args, dataclass_from_args

    parser = argparse.ArgumentParser(description=sys.modules[cls.__module__].__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dataclass_args(parser, cls)
    # Nested configs keep their default_factory values (e.g. fine-tuning optimizer settings) as the base.
    return dataclass_from_args(cls, parser.parse_args(argv), base=cls())


def report(result: dict) -> None:
    print(f"\n{result['task']}: held-out accuracy {result['accuracy_before']:.1%} -> {result['accuracy_after']:.1%} "
          f"on {result['n_eval']} problems ({result['train_seconds']:.0f} s of training); run: {result['run_dir']}")
    for s in result["after"]["samples"][:3]:
        print(f"  {s['prompt']!r} -> {s['completion']!r} (gold {s['gold']}, {'right' if s['correct'] else 'wrong'})")


def cli(cls, run, argv=None, show=report) -> int:
    """Parse flags into `cls`, call `run` on it and `show` the result; bad input prints a clear error, exit 2."""
    try:
        result = run(parse_config(cls, argv))
    except (ValueError, FileNotFoundError, FloatingPointError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    show(result)
    return 0


def main(argv=None) -> int:
    return cli(SFTRun, run_sft, argv)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
