"""DPO on a verifiable task: the policy's own wrong answers become the rejected side of each pair.

    python -m experiments.dpo --init runs/arith/pretrain --task arithmetic --name arith-dpo
    python -m experiments.dpo --init runs/arith/pretrain --dpo.beta 0.2 --dpo.steps 100

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
import functools
import json
import os
import random
import sys
import time

from experiments.sft import cli, report
from lm.align.config import DPOConfig
from lm.align.run import AlignRun, prepare


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
        if min(self.samples, self.max_new_tokens) < 1:
            raise ValueError("samples and max_new_tokens must be positive")


def run_dpo(config: DPORun, progress: bool = True) -> dict:
    import jax
    import numpy as np
    from tqdm.auto import tqdm

    from lm.align.checkpoint import save_policy
    from lm.align.dpo import dpo_batch_loss, dpo_train_step
    from lm.align.evaluate import evaluate_task
    from lm.align.logprobs import sequence_logprobs
    from lm.align.preferences import preference_batch, sample_preference_pairs, take
    from lm.align.sft import init_train_state

    task, params, model, tokenizer, train, held, run_dir = prepare(config)
    ev = dict(max_new_tokens=config.max_new_tokens, batch_size=config.eval_batch_size)
    before = evaluate_task(params, model, tokenizer, task, held, **ev)

    t0 = time.perf_counter()
    kw = dict(samples=config.samples, max_new_tokens=config.max_new_tokens)
    pairs = sample_preference_pairs(params, model, tokenizer, task, train, seed=config.dpo.seed, **kw)
    eval_pairs = sample_preference_pairs(params, model, tokenizer, task, held, seed=config.dpo.seed + 1, **kw)
    if len(pairs) < config.dpo.batch_size:
        raise ValueError(f"only {len(pairs)} preference pairs (the policy rarely errs); raise --n-train")
    width = max(len(p["prompt"]) + max(len(p["chosen"]), len(p["rejected"])) for p in pairs + eval_pairs) - 1
    data, eval_data = preference_batch(pairs, model.context_length, width), preference_batch(eval_pairs,
                                                                                           model.context_length, width)
    ref = jax.jit(lambda p, b: sequence_logprobs(p, model, b))
    for d in (data, eval_data):  # the frozen reference's log-probs, once
        d["ref_chosen"], d["ref_rejected"] = ref(params, d["chosen"]), ref(params, d["rejected"])
    train_config = config.dpo.train_config(model)
    state = init_train_state(params, train_config, config.dpo.seed)
    step = jax.jit(functools.partial(dpo_train_step, config=train_config, beta=config.dpo.beta), donate_argnums=0)
    heldout_metrics = jax.jit(lambda p, b: dpo_batch_loss(p, b, train_config, config.dpo.beta))
    rng = random.Random(config.dpo.seed)
    history = []
    for i in tqdm(range(config.dpo.steps), desc="dpo", disable=not progress):
        idx = np.array([rng.randrange(len(pairs)) for _ in range(config.dpo.batch_size)])
        state, m = step(state, take(data, idx))
        if (i + 1) % 10 == 0 or i + 1 == config.dpo.steps:
            loss, hm = heldout_metrics(state["params"], eval_data)
            history.append({"step": i + 1, **{k: float(v) for k, v in m.items()}, "heldout_loss": float(loss),
                            "heldout_reward_accuracy": float(hm["reward_accuracy"])})
    seconds = time.perf_counter() - t0
    after = evaluate_task(state["params"], model, tokenizer, task, held, **ev)
    summary = {"task": task.name, "n_eval": after["n"], "accuracy_before": before["accuracy"],
               "accuracy_after": after["accuracy"], "train_seconds": seconds, "steps": config.dpo.steps,
               "train_pairs": len(pairs), "heldout_pairs": len(eval_pairs),
               "heldout_reward_accuracy": history[-1]["heldout_reward_accuracy"]}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    (run_dir / "dpo_metrics.jsonl").write_text("".join(json.dumps(h) + "\n" for h in history))
    (run_dir / "samples.json").write_text(json.dumps(
        [{"prompt": tokenizer.decode(p["prompt"]), "chosen": tokenizer.decode(p["chosen"]),
          "rejected": p["rejected_text"]} for p in pairs[:8]], indent=2))
    if config.save:
        from lm.config import to_dict

        save_policy(run_dir, state, train_config, tokenizer, {"dpo": to_dict(config)})
    return {**summary, "before": before, "after": after, "history": history, "run_dir": str(run_dir),
            "params": state["params"]}


def show(result: dict) -> None:
    report(result)
    print(f"implicit-reward accuracy on {result['heldout_pairs']} held-out pairs: "
          f"{result['heldout_reward_accuracy']:.1%} ({result['train_pairs']} training pairs)")


def main(argv=None) -> int:
    return cli(DPORun, run_dpo, argv, show)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
