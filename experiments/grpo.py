"""GRPO with verifiable rewards from a policy (our SFT run or a Hugging Face model), with held-out accuracy.

    python -m experiments.grpo --init runs/arith-sft --name arith-grpo --grpo.train.steps 60
    python -m experiments.grpo --init runs/smollm2-135m --task gsm8k-chat \\
        --data-dir ../shared/data/corpora/a5_eval_data/gsm8k --grpo.train.steps 10 --grpo.prompts_per_step 2 \\
        --grpo.group_size 4 --grpo.train.batch_size 8 --grpo.max_new_tokens 128 --n-eval 20
    python -m experiments.grpo --init runs/arith-sft --name arith-dapo --grpo.preset dapo   # LOSS_PRESETS
    python -m experiments.grpo --init runs/arith-sft --grpo.loss.length_norm sequence --grpo.max_staleness 1

The loss options are --grpo.loss.* (lm.align.policy_gradient.PGLossConfig: loss_type, length_norm,
normalize_std, cliprange_low/high, kl_coef, truncation, dynamic_sampling, ...); --grpo.preset starts
them from a published recipe (grpo, dr_grpo, dapo, gspo) and explicit --grpo.loss flags change it.

Writes runs/NAME/: grpo_metrics.jsonl (reward, KL to the start, entropy, clip
fraction, accuracy), grpo.png, summary.json, samples.json, run.json and (with
--save, the default) checkpoints every grpo.train.save_every rollout steps (`--resume` continues). From a notebook:

    from experiments.grpo import GRPORun, run_grpo
    result = run_grpo(GRPORun(init="runs/arith-sft"))
"""

from __future__ import annotations

import dataclasses
import sys
import time

from lm.cli_env import prepare_process
from lm.align.config import GRPOConfig, grpo_cli
from lm.align.run import AlignRun, prepare
from lm.config import to_dict
from lm.train.files import atomic_write_json


@dataclasses.dataclass(frozen=True)
class GRPORun(AlignRun):
    name: str = "grpo"
    grpo: GRPOConfig = dataclasses.field(default_factory=GRPOConfig)


def run_grpo(config: GRPORun, progress: bool = True) -> dict:
    """Load, train with GRPO (evaluating every grpo.train.eval_every steps), save; returns summary and history."""
    from lm.align.evaluate import evaluate_task
    from lm.align.grpo_loop import train_grpo
    from lm.align.plots import plot_grpo
    from lm.align.sft_loop import evals

    task, params, model, tokenizer, train, held, run_dir = prepare(config)
    t0 = time.perf_counter()
    result = train_grpo(params, model, tokenizer, task, train, config.grpo, run_dir, eval_problems=held,
                        eval_batch_size=config.eval_batch_size, options=config.options(progress),
                        record={"train": to_dict(config.grpo.train_config(model)), "grpo": to_dict(config)})
    seconds = time.perf_counter() - t0
    plot_grpo(result.history, run_dir / "grpo.png", title=f"GRPO on {task.name}")
    scores = evals(result.history)
    summary = {"task": task.name, "n_eval": scores[-1]["n"], "accuracy_before": scores[0]["accuracy"],
               "accuracy_after": scores[-1]["accuracy"], "train_seconds": seconds, "steps": config.grpo.train.steps}
    atomic_write_json(run_dir / "summary.json", summary)
    after = evaluate_task(result.params, model, tokenizer, task, held[:8], config.grpo.max_new_tokens, 8)
    atomic_write_json(run_dir / "samples.json", after["samples"])
    return {**summary, "history": result.history, "evals": scores, "after": after, "run_dir": str(run_dir),
            "params": result.params, "state": result.state, "model": model, "tokenizer": tokenizer}


def main(argv=None) -> int:
    return grpo_cli(GRPORun, run_grpo, argv)


if __name__ == "__main__":
    prepare_process()
    sys.exit(main())
