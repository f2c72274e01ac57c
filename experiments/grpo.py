"""GRPO with verifiable rewards from a policy (our SFT run or a Hugging Face model), with held-out accuracy.

    python -m experiments.grpo --init runs/arith-sft --name arith-grpo --grpo.steps 60
    python -m experiments.grpo --init runs/smollm2-135m --task gsm8k-chat \\
        --data-dir ../shared/data/corpora/a5_eval_data/gsm8k --grpo.steps 10 --grpo.prompts_per_step 2 \\
        --grpo.group_size 4 --grpo.train_batch_size 8 --grpo.max_new_tokens 128 --n-eval 20

Writes runs/NAME/: grpo_metrics.jsonl (reward, KL to the start, entropy, clip
fraction, accuracy), grpo.png, summary.json, samples.json and (with --save) a
checkpoint. From a notebook:

    from experiments.grpo import GRPORun, run_grpo
    result = run_grpo(GRPORun(init="runs/arith-sft"))
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time

from experiments.sft import cli
from lm.align.config import GRPOConfig
from lm.align.run import AlignRun, prepare


@dataclasses.dataclass(frozen=True)
class GRPORun(AlignRun):
    name: str = "grpo"
    grpo: GRPOConfig = dataclasses.field(default_factory=GRPOConfig)


def run_grpo(config: GRPORun, progress: bool = True) -> dict:
    """Load, train with GRPO (evaluating every grpo.eval_every steps), save; returns summary and history."""
    from lm.align.checkpoint import save_policy
    from lm.align.grpo_loop import train_grpo
    from lm.align.plots import plot_grpo

    task, params, model, tokenizer, train, held, run_dir = prepare(config)
    t0 = time.perf_counter()
    result = train_grpo(params, model, tokenizer, task, train, config.grpo, held, run_dir=run_dir,
                        eval_batch_size=config.eval_batch_size, progress=progress)
    seconds = time.perf_counter() - t0
    plot_grpo(result["history"], run_dir / "grpo.png", title=f"GRPO on {task.name}")
    evals = result["evals"]
    summary = {"task": task.name, "n_eval": evals[-1]["n"], "accuracy_before": evals[0]["accuracy"],
               "accuracy_after": evals[-1]["accuracy"], "train_seconds": seconds, "steps": config.grpo.steps}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    from lm.align.evaluate import evaluate_task

    after = evaluate_task(result["params"], model, tokenizer, task, held[:8], config.grpo.max_new_tokens, 8)
    (run_dir / "samples.json").write_text(json.dumps(after["samples"], indent=2))
    if config.save:
        from lm.config import to_dict

        state = {"step": result["state"]["step"], "params": result["params"],
                 "opt_state": result["state"]["opt_state"], "rng": result["state"]["rng"]}
        save_policy(run_dir, state, config.grpo.train_config(model), tokenizer, {"grpo": to_dict(config)})
    return {**summary, "history": result["history"], "evals": evals, "after": after, "run_dir": str(run_dir),
            "params": result["params"], "model": model, "tokenizer": tokenizer}


def main(argv=None) -> int:
    return cli(GRPORun, run_grpo, argv)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
