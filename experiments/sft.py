"""Supervised fine-tuning on a verifiable task, with held-out accuracy before and after.

    python -m experiments.sft --init runs/arith-pretrain --task arithmetic-qa --name arith-sft
    python -m experiments.sft --init runs/smollm2-135m --task gsm8k-chat \\
        --data-dir ../shared/data/corpora/a5_eval_data/gsm8k --sft.train.steps 30 --sft.train.batch_size 4 --n-eval 20
    python -m experiments.sft --init runs/arith-pretrain --name arith-sft --resume    # continue after a kill
    python -m experiments.sft --init runs/arith-pretrain --name arith-lora --sft.lora.rank 8 --sft.lora.targets q,v

`--init` is a run directory of ours or a Hugging Face checkpoint directory
(lm.interop). Training problems never include a held-out question. Training
runs on `lm.trainer` (`--sft.train.*`: steps, batch, optimizer, eval_every,
save_every, parallel mesh). Writes runs/NAME/: sft_metrics.jsonl,
summary.json, samples.json, run.json and (with --save, the default)
checkpoints that experiments.grpo and experiments.generate can load (with `--sft.lora.*`, only LoRA
adapters train: the checkpoints hold them, runs/NAME/lora_base the frozen base, and loading the run
gives the merged model). From a notebook:

    from experiments.sft import SFTRun, run_sft
    result = run_sft(SFTRun(init="runs/arith-pretrain"))    # {"before", "after", "history", ...}
"""

from __future__ import annotations

import dataclasses
import sys
import time

from lm.cli_env import prepare_process
from lm.align.config import SFTConfig
from lm.align.run import AlignRun, prepare
from lm.config import check_positive, cli, to_dict
from lm.train.files import atomic_write_json


@dataclasses.dataclass(frozen=True)
class SFTRun(AlignRun):
    name: str = "sft"
    max_new_tokens: int = 8
    sft: SFTConfig = dataclasses.field(default_factory=SFTConfig)

    def __post_init__(self):
        super().__post_init__()
        check_positive(self, "max_new_tokens")


def run_sft(config: SFTRun, progress: bool = True) -> dict:
    """Load, evaluate, fine-tune, evaluate, save; returns {"before", "after", "history", "run_dir", "params"}."""
    from lm.align.evaluate import evaluate_task
    from lm.align.sft_loop import evals, train_sft

    task, params, model, tokenizer, train, held, run_dir = prepare(config)
    ev = dict(max_new_tokens=config.max_new_tokens, batch_size=config.eval_batch_size, progress=progress)
    before = evaluate_task(params, model, tokenizer, task, held, **ev)
    t0 = time.perf_counter()
    result = train_sft(params, model, tokenizer, task, train, config.sft, run_dir,
                       eval_problems=held if config.sft.train.eval_every else (), max_new_tokens=config.max_new_tokens,
                       eval_batch_size=config.eval_batch_size, options=config.options(progress),
                       record={"train": to_dict(config.sft.train_config(model)), "sft": to_dict(config)})
    seconds = time.perf_counter() - t0
    params = result.params  # with --sft.lora.*: the base with the trained adapters merged
    after = evaluate_task(params, model, tokenizer, task, held, **ev)
    summary = {"task": task.name, "n_eval": after["n"], "accuracy_before": before["accuracy"],
               "accuracy_after": after["accuracy"], "train_seconds": seconds, "steps": config.sft.train.steps}
    atomic_write_json(run_dir / "summary.json", summary)
    atomic_write_json(run_dir / "samples.json", {"before": before["samples"], "after": after["samples"]})
    return {"before": before, "after": after, "history": result.history, "evals": evals(result.history),
            "run_dir": str(run_dir), "params": params, "model": model, "tokenizer": tokenizer,
            "state": result.state, **summary}


def report(result: dict) -> None:
    print(f"\n{result['task']}: held-out accuracy {result['accuracy_before']:.1%} -> {result['accuracy_after']:.1%} "
          f"on {result['n_eval']} problems ({result['train_seconds']:.0f} s of training); run: {result['run_dir']}")
    for s in result["after"]["samples"][:3]:
        print(f"  {s['prompt']!r} -> {s['completion']!r} (gold {s['gold']}, {'right' if s['correct'] else 'wrong'})")


def main(argv=None) -> int:
    return cli(SFTRun, run_sft, argv, report)


if __name__ == "__main__":
    prepare_process()
    sys.exit(main())
