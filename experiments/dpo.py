"""DPO on a verifiable task: the policy's own wrong answers become the rejected side of each pair.

    python -m experiments.dpo --init runs/arith/pretrain --task arithmetic --name arith-dpo
    python -m experiments.dpo --init runs/arith/pretrain --dpo.beta 0.2 --dpo.train.steps 100
    python -m experiments.dpo --init runs/arith/pretrain --name arith-dpo --resume     # continue after a kill

For each training problem the policy samples 4 answers; a wrong one is
"rejected" and the reference answer "chosen". The reference model is the
starting policy, frozen: its log-probabilities are computed once. Held-out
accuracy is measured before and after, plus the implicit-reward accuracy on
held-out pairs. From a notebook:

    from experiments.dpo import DPORun, run_dpo
    result = run_dpo(DPORun(init="runs/arith/pretrain"))
"""

from __future__ import annotations

import dataclasses
import sys
import time

from experiments.sft import report
from lm.cli_env import prepare_process
from lm.align.config import DPOConfig
from lm.align.run import AlignRun, prepare
from lm.config import check_positive, cli, to_dict
from lm.train.files import atomic_write_json


@dataclasses.dataclass(frozen=True)
class DPORun(AlignRun):
    task: str = "arithmetic"
    n_train: int = 2048  # problems to draw pairs from (those the policy never gets wrong give none)
    eval_batch_size: int = 200
    name: str = "dpo"
    samples: int = 4  # answers sampled per problem when looking for a wrong one
    max_new_tokens: int = 5
    dpo: DPOConfig = dataclasses.field(default_factory=DPOConfig)

    def __post_init__(self):
        super().__post_init__()
        check_positive(self, "samples", "max_new_tokens")


def run_dpo(config: DPORun, progress: bool = True) -> dict:
    import jax

    from lm.align.dpo_loop import train_dpo
    from lm.align.evaluate import evaluate_task
    from lm.align.logprobs import sequence_logprobs
    from lm.align.preferences import preference_batch, sample_preference_pairs
    from lm.trainer import data_fingerprint

    task, params, model, tokenizer, train, held, run_dir = prepare(config)
    ev = dict(max_new_tokens=config.max_new_tokens, batch_size=config.eval_batch_size)
    before = evaluate_task(params, model, tokenizer, task, held, **ev)

    t0, seed = time.perf_counter(), config.dpo.train.seed
    kw = dict(samples=config.samples, max_new_tokens=config.max_new_tokens)
    pairs = sample_preference_pairs(params, model, tokenizer, task, train, seed=seed, **kw)
    eval_pairs = sample_preference_pairs(params, model, tokenizer, task, held, seed=seed + 1, **kw)
    if len(pairs) < config.dpo.train.batch_size:
        raise ValueError(f"only {len(pairs)} preference pairs (the policy rarely errs); raise --n-train")
    width = max(len(p["prompt"]) + max(len(p["chosen"]), len(p["rejected"])) for p in pairs + eval_pairs) - 1
    data, eval_data = (preference_batch(p, model.context_length, width) for p in (pairs, eval_pairs))
    ref = jax.jit(lambda p, b: sequence_logprobs(p, model, b))
    for d in (data, eval_data):  # the frozen reference's log-probs, once
        d["ref_chosen"], d["ref_rejected"] = ref(params, d["chosen"]), ref(params, d["rejected"])
    result = train_dpo(params, model, data, eval_data, config.dpo, run_dir, options=config.options(progress),
                       fingerprint=data_fingerprint(f"task {task.name}: policy's preference pairs", pairs),
                       record={"train": to_dict(config.dpo.train_config(model)), "dpo": to_dict(config)})
    seconds = time.perf_counter() - t0
    after = evaluate_task(result.state.params, model, tokenizer, task, held, **ev)
    summary = {"task": task.name, "n_eval": after["n"], "accuracy_before": before["accuracy"],
               "accuracy_after": after["accuracy"], "train_seconds": seconds, "steps": config.dpo.train.steps,
               "train_pairs": len(pairs), "heldout_pairs": len(eval_pairs),
               "heldout_reward_accuracy": result.final_eval["heldout_reward_accuracy"]}
    atomic_write_json(run_dir / "summary.json", summary)
    atomic_write_json(run_dir / "samples.json", [{"prompt": tokenizer.decode(p["prompt"]),
                                                  "chosen": tokenizer.decode(p["chosen"]),
                                                  "rejected": p["rejected_text"]} for p in pairs[:8]])
    return {**summary, "before": before, "after": after, "history": result.history, "run_dir": str(run_dir),
            "params": result.state.params, "state": result.state}


def show(result: dict) -> None:
    report(result)
    print(f"implicit-reward accuracy on {result['heldout_pairs']} held-out pairs: "
          f"{result['heldout_reward_accuracy']:.1%} ({result['train_pairs']} training pairs)")


def main(argv=None) -> int:
    return cli(DPORun, run_dpo, argv, show)


if __name__ == "__main__":
    prepare_process()
    sys.exit(main())
