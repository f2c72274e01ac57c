"""LoRA against full fine-tuning: SFT of the `tiny` model on a new prompt format, same data and steps, on the
real SFT loop's plan and step.

    python -m benchmarks.lora_sft --write        # the table, written to the `lora_sft` section of RESULTS.md
    python -m benchmarks.lora_sft --quick        # fewer steps, nothing written

A base model is made first with `lm.align.sft_loop.train_sft` itself: the `tiny` preset (byte
vocabulary) fully fine-tuned on the `arithmetic` task ("37+58=" -> reversed digits). Each method
then fine-tunes that base on `arithmetic-qa` ("Q: What is 37 + 58?\\nA:" -> " 59") through what
`train_sft` runs: `lm.trainer.fine_tune_plan` (with `SFTConfig.lora` for LoRA: adapters as the
state, the frozen base passed to the step) around `lm.align.sft.sft_train_step`, on the batches
train_sft would draw (`sft_rows`, `random_rows`), with lm.optim's AdamW. The methods step in turn
(one step each, round-robin) so the machine's load falls on all alike, which train_sft's own loop
cannot do; the last method is then run once more through `train_sft` and must end with the same
parameters, bit for bit. Step time is the median over steps after compilation. Held-out loss and
greedy accuracy are on 200 test problems, with LoRA's adapters merged (`plan.policy`).
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.results import commit as results_commit
from benchmarks.results import machine_description, markdown_table, write_section
from lm.align.config import SFTConfig, fine_tuning
from lm.align.data import tokenize_pairs
from lm.align.evaluate import evaluate_task
from lm.align.sft import sft_loss, sft_train_step
from lm.align.sft_loop import random_rows, sft_rows, train_sft
from lm.align.step import loss_weights
from lm.align.tasks import ARITHMETIC, ARITHMETIC_QA, task_problems
from lm.cli_env import prepare_process
from lm.model import get_preset, init
from lm.model.lora import LoRAConfig, param_count
from lm.tokenizer import Tokenizer
from lm.trainer import RunOptions, fine_tune_plan

MODEL = get_preset("tiny", vocab_size=257, context_length=64)
BATCH = 32


def sft_config(steps: int, lr: float, lora: LoRAConfig | None) -> SFTConfig:
    return SFTConfig(train=fine_tuning(steps, BATCH, lr, 0, "constant", log_every=10_000, save_every=10_000),
                     lora=lora)


def base_model(tok, steps: int):
    """The base: `steps` full SFT steps of train_sft on 'arithmetic' from a random init."""
    params = jax.jit(init, static_argnums=0)(MODEL, jax.random.PRNGKey(0))
    problems = task_problems(ARITHMETIC, "train", 4096, seed=1)
    result = train_sft(params, MODEL, tok, ARITHMETIC, problems, sft_config(steps, 1e-3, None),
                       options=RunOptions(progress=False))
    print(f"base: {steps} full SFT steps of train_sft on 'arithmetic', last loss {result.history[-1]['loss']:.3f}")
    return jax.device_get(result.params)


def held_out(params, tok, test) -> tuple[float, float]:
    prompts = [ARITHMETIC_QA.prompt_ids(tok, p) for p in test]
    targets = [ARITHMETIC_QA.target_ids(tok, p) for p in test]
    data = {k: jnp.asarray(v) for k, v in tokenize_pairs(prompts, targets, MODEL.context_length).items()}
    data["weights"] = loss_weights(data["response_mask"])
    config = sft_config(1, 1e-3, None).train_config(MODEL)
    loss = float(jax.jit(lambda p, b: sft_loss(p, b, config, with_entropy=False)[0])(params, data))
    acc = evaluate_task(params, MODEL, tok, ARITHMETIC_QA, test, max_new_tokens=8, batch_size=100)["accuracy"]
    return loss, acc


def method(base, name: str, lora: LoRAConfig | None, lr: float, steps: int) -> dict:
    """What train_sft builds for this config: its plan (LoRA or full) and its initial state."""
    config = sft_config(steps, lr, lora)
    tc = config.train_config(MODEL)
    step = functools.partial(sft_train_step, config=tc, length_norm=config.length_norm,
                             norm_constant=config.norm_constant)
    plan = fine_tune_plan(step, tc, base, lora=lora)
    return {"name": name, "lr": lr, "config": config, "plan": plan, "state": plan.init(base), "losses": [],
            "times": []}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--base-steps", type=int, default=400)
    ap.add_argument("--quick", action="store_true", help="20 steps after a 40-step base, RESULTS.md untouched")
    ap.add_argument("--write", action="store_true", help="write the table to the lora_sft section of RESULTS.md")
    args = ap.parse_args()
    steps, base_steps = (20, 40) if args.quick else (args.steps, args.base_steps)
    tok = Tokenizer({i: bytes([i]) for i in range(256)}, [], ["<|endoftext|>"])
    load = [os.getloadavg()[0]]
    base = base_model(tok, base_steps)
    test = task_problems(ARITHMETIC_QA, "test", 200)
    base_loss, base_acc = held_out(base, tok, test)
    lora_all = LoRAConfig(rank=8, alpha=16.0, targets=("attn", "mlp"))
    lora_qv = LoRAConfig(rank=8, alpha=16.0, targets=("q", "v"))
    runs = [method(base, "full", None, 1e-3, steps), method(base, "LoRA r=8 attn+mlp", lora_all, 1e-2, steps),
            method(base, "LoRA r=8 attn+mlp", lora_all, 3e-3, steps),
            method(base, "LoRA r=8 q,v", lora_qv, 1e-2, steps)]
    problems = task_problems(ARITHMETIC_QA, "train", 4096, seed=2)
    data = sft_rows(tok, ARITHMETIC_QA, problems, MODEL, runs[0]["config"])  # every method: the same rows
    rows_of = random_rows(data["input_ids"].shape[0], BATCH, runs[0]["config"].train.seed, 0)
    for i in range(steps):
        idx = next(rows_of)
        batch = {k: v[idx] for k, v in data.items()}
        for r in runs:
            t0 = time.perf_counter()
            r["state"], metrics = r["plan"].train_step(r["state"], r["plan"].put_batch(batch))
            r["losses"].append(float(metrics["loss"]))  # float() waits for the step
            if i:
                r["times"].append(time.perf_counter() - t0)
    load.append(os.getloadavg()[0])
    # The same method through train_sft's own loop: the interleaved plan steps are exactly that run.
    last = runs[-1]
    check = train_sft(base, MODEL, tok, ARITHMETIC_QA, problems, last["config"], options=RunOptions(progress=False))
    same = all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(jax.device_get(check.state.params)),
                                                    jax.tree.leaves(jax.device_get(last["state"].params)), strict=True))
    print(f"{last['name']} lr {last['lr']:g} through train_sft: the same parameters bit for bit: {same}")
    if not same:
        raise SystemExit("the interleaved plan steps did not reproduce train_sft's run")
    table_rows = [["base (no fine-tuning)", "-", "-", "-", "-", f"{base_loss:.3f}", f"{base_acc:.1%}", "-"]]
    for r in runs:
        loss, acc = held_out(r["plan"].policy(r["state"].params), tok, test)
        n = param_count(r["state"].params)
        table_rows.append([r["name"], f"{r['lr']:g}", f"{n:,} ({n / param_count(base):.1%})",
                           f"{param_count(r['state'].opt_state):,}", f"{np.mean(r['losses'][-10:]):.3f}",
                           f"{loss:.3f}", f"{acc:.1%}", f"{statistics.median(r['times']) * 1e3:.1f}"])
        print(table_rows[-1])
    full_ms = statistics.median(runs[0]["times"])
    ratios = ", ".join(f"{r['name']} lr {r['lr']:g}: {statistics.median(r['times']) / full_ms:.2f}x"
                       for r in runs[1:])
    table = markdown_table(["method", "lr", "trainable params", "optimizer state", f"train loss (last 10 of {steps})",
                            "held-out loss", "held-out accuracy", "step (ms, median)"], table_rows)
    print(table)
    print(f"step time relative to full fine-tuning (same run, interleaved): {ratios}")
    if not args.write or args.quick:
        return
    body = (f"## LoRA vs full SFT (`python -m benchmarks.lora_sft --write`)\n\nCommit {results_commit()}; "
            f"{machine_description()}; 1-minute load average {load[0]:.1f} at the start, {load[1]:.1f} at the end "
            f"(shared machine). The `tiny` preset ({param_count(base):,} parameters, byte vocabulary, context 64) "
            f"after {base_steps} full SFT steps of `train_sft` on `arithmetic`, then {steps} steps of batch {BATCH} "
            "on `arithmetic-qa` per method through the SFT loop's plan and step (`fine_tune_plan` + "
            "`sft_train_step`, LoRA via `SFTConfig.lora`), the batches `train_sft` draws, interleaved one step "
            "per method; the last method rerun through `train_sft` itself ended bit for bit equal. AdamW without "
            "weight decay at a constant rate; held-out: 200 test problems, greedy, adapters merged. Step time "
            f"relative to full: {ratios}.\n\n" + table)
    write_section("lora_sft", body)


if __name__ == "__main__":
    prepare_process()
    main()
