"""LoRA against full fine-tuning: SFT of the `tiny` model on a new prompt format, same data and steps.

    python -m benchmarks.lora_sft                # writes the `lora_sft` section of RESULTS.md
    python -m benchmarks.lora_sft --quick        # fewer steps, nothing written

A base model is made first: the `tiny` preset (byte vocabulary) fully trained with SFT on the
`arithmetic` task ("37+58=" -> reversed digits). Each method then fine-tunes that base on
`arithmetic-qa` ("Q: What is 37 + 58?\nA:" -> " 59"), the same batches in the same order, with
lm.optim's AdamW and SFT's response-only loss (`lm.align.sft.sft_loss`); LoRA differentiates only
its adapters through `lm.model.lora.merge`. The methods step in turn (one step each, round-robin)
so the machine's load falls on all alike; step time is the median over steps after compilation.
Held-out loss and greedy accuracy are on 200 test problems, with LoRA's adapters merged.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.results import machine_description, markdown_table, write_section, commit as results_commit
from lm.align.data import tokenize_pairs
from lm.align.evaluate import evaluate_task
from lm.align.sft import sft_loss
from lm.align.step import loss_weights
from lm.align.tasks import ARITHMETIC, ARITHMETIC_QA, task_problems
from lm.cli_env import prepare_process
from lm.model import get_preset, init
from lm.model.lora import LoRAConfig, init_lora, merge, param_count
from lm.optim import OptimizerConfig, build_optimizer
from lm.tokenizer import Tokenizer
from lm.train.config import TrainConfig

REPO = Path(__file__).resolve().parents[1]

MODEL = get_preset("tiny", vocab_size=257, context_length=64)
BATCH = 32


def batches(task, tok, n_steps: int, seed: int) -> list[dict]:
    problems = task_problems(task, "train", n_steps * BATCH, seed=seed)
    prompts = [task.prompt_ids(tok, p) for p in problems]
    targets = [task.target_ids(tok, p) for p in problems]
    width = max(len(p) + len(t) for p, t in zip(prompts, targets)) - 1
    data = tokenize_pairs(prompts, targets, MODEL.context_length, pad_to=width)
    out = []
    for i in range(n_steps):
        b = {k: jnp.asarray(v[i * BATCH: (i + 1) * BATCH]) for k, v in data.items()}
        out.append(dict(b, weights=loss_weights(b["response_mask"])))
    return out


def make_step(optimizer, lora: LoRAConfig | None):
    config = TrainConfig(model=MODEL)

    @jax.jit
    def step(trainable, opt_state, base, batch):
        if lora is None:
            loss_fn = lambda p: sft_loss(p, batch, config, with_entropy=False)[0]  # noqa: E731
        else:
            loss_fn = lambda a: sft_loss(merge(base, a, lora), batch, config, with_entropy=False)[0]  # noqa: E731
        loss, grads = jax.value_and_grad(loss_fn)(trainable)
        updates, opt_state = optimizer.update(grads, opt_state, trainable)
        return jax.tree.map(jnp.add, trainable, updates), opt_state, loss

    return step


def optimizer(lr: float, steps: int):
    return build_optimizer(OptimizerConfig(lr=lr, warmup_steps=0, schedule="constant", weight_decay=0.0), steps)


def base_model(tok, steps: int):
    params = jax.jit(init, static_argnums=0)(MODEL, jax.random.PRNGKey(0))
    opt = optimizer(1e-3, steps)
    step, state = make_step(opt, None), opt.init(params)
    for b in batches(ARITHMETIC, tok, steps, seed=1):
        params, state, loss = step(params, state, None, b)
    print(f"base: {steps} full SFT steps on 'arithmetic', last loss {float(loss):.3f}")
    return params


def held_out(params, tok, test) -> tuple[float, float]:
    prompts = [ARITHMETIC_QA.prompt_ids(tok, p) for p in test]
    targets = [ARITHMETIC_QA.target_ids(tok, p) for p in test]
    data = {k: jnp.asarray(v) for k, v in tokenize_pairs(prompts, targets, MODEL.context_length).items()}
    data["weights"] = loss_weights(data["response_mask"])
    loss = float(jax.jit(lambda p, b: sft_loss(p, b, TrainConfig(model=MODEL), with_entropy=False)[0])(params, data))
    acc = evaluate_task(params, MODEL, tok, ARITHMETIC_QA, test, max_new_tokens=8, batch_size=100)["accuracy"]
    return loss, acc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--base-steps", type=int, default=400)
    ap.add_argument("--quick", action="store_true", help="20 steps after a 40-step base, RESULTS.md untouched")
    args = ap.parse_args()
    steps, base_steps = (20, 40) if args.quick else (args.steps, args.base_steps)
    tok = Tokenizer({i: bytes([i]) for i in range(256)}, [], ["<|endoftext|>"])
    load = [os.getloadavg()[0]]
    base = base_model(tok, base_steps)
    test = task_problems(ARITHMETIC_QA, "test", 200)
    base_loss, base_acc = held_out(base, tok, test)
    lora_all = LoRAConfig(rank=8, alpha=16.0, targets=("attn", "mlp"))
    lora_qv = LoRAConfig(rank=8, alpha=16.0, targets=("q", "v"))
    methods = [("full", None, 1e-3), ("LoRA r=8 attn+mlp", lora_all, 1e-2), ("LoRA r=8 attn+mlp", lora_all, 3e-3),
               ("LoRA r=8 q,v", lora_qv, 1e-2)]
    runs = []
    for name, lora, lr in methods:
        opt = optimizer(lr, steps)
        trainable = jax.tree.map(jnp.copy, base) if lora is None else init_lora(base, lora, jax.random.PRNGKey(1))
        runs.append({"name": name, "lora": lora, "lr": lr, "step": make_step(opt, lora), "trainable": trainable,
                     "opt_state": opt.init(trainable), "losses": [], "times": []})
    for i, b in enumerate(batches(ARITHMETIC_QA, tok, steps, seed=2)):
        for r in runs:
            t0 = time.perf_counter()
            r["trainable"], r["opt_state"], loss = r["step"](r["trainable"], r["opt_state"], base, b)
            r["losses"].append(float(loss))  # float() waits for the step
            if i:
                r["times"].append(time.perf_counter() - t0)
    load.append(os.getloadavg()[0])
    rows = [["base (no fine-tuning)", "-", "-", "-", "-", f"{base_loss:.3f}", f"{base_acc:.1%}", "-"]]
    for r in runs:
        params = r["trainable"] if r["lora"] is None else merge(base, r["trainable"], r["lora"])
        loss, acc = held_out(params, tok, test)
        n = param_count(r["trainable"])
        rows.append([r["name"], f"{r['lr']:g}", f"{n:,} ({n / param_count(base):.1%})",
                     f"{param_count(r['opt_state']):,}", f"{np.mean(r['losses'][-10:]):.3f}", f"{loss:.3f}",
                     f"{acc:.1%}", f"{statistics.median(r['times']) * 1e3:.1f}"])
        print(rows[-1])
    table = markdown_table(["method", "lr", "trainable params", "optimizer state", f"train loss (last 10 of {steps})",
                            "held-out loss", "held-out accuracy", "step (ms, median)"], rows)
    print(table)
    if args.quick:
        return
    commit = results_commit()
    body = (f"## LoRA vs full SFT (`python -m benchmarks.lora_sft`)\n\nCommit {commit}; {machine_description()}; "
            f"1-minute load average {load[0]:.1f} at the start, {load[1]:.1f} at the end (shared machine). The `tiny` "
            f"preset ({param_count(base):,} parameters, byte vocabulary, context 64) after {base_steps} full SFT steps "
            f"on `arithmetic`, then {steps} steps of batch {BATCH} on `arithmetic-qa` per method, the same batches, "
            "AdamW without weight decay at a constant rate; held-out: 200 test problems, greedy, adapters merged.\n\n"
            + table)
    write_section("lora_sft", body)


if __name__ == "__main__":
    prepare_process()
    main()
