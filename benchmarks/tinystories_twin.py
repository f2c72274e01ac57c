"""End-to-end check: `lm` and a PyTorch twin trained identically on TinyStories must agree.

    python -m benchmarks.tinystories_twin [--data PATH] [--steps 2400] [--out runs/twin]

Both runs use the `tiny` preset, the same tokenizer and token arrays (the last
10% of the file held out), the same initial weights (ours, copied into
torch), the same batch at every step (`lm.data.batch_at`), AdamW with the same
cosine schedule, clipping and decay mask, and the same validation windows.
The default data is ../shared/data/corpora/tinystories_train_sample_2MiB.txt
(or $LM_SHARED_DIR/data/corpora/...). Writes benchmarks/tinystories_twin.png
and the `tinystories_twin` section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

from benchmarks.results import machine_description, markdown_table, write_section
from lm.cli_env import prepare_process

REPO = Path(__file__).resolve().parents[1]

DEFAULT_DATA = (Path(os.environ.get("LM_SHARED_DIR", REPO.parent / "shared"))
                / "data/corpora/tinystories_train_sample_2MiB.txt")


def run_jax(config) -> tuple[list[dict], float]:
    from experiments.pretrain import pretrain

    t0 = time.perf_counter()
    result = pretrain(config)
    return result["history"], time.perf_counter() - t0


def run_torch(config, threads: int, stop_after: int | None = None) -> tuple[list[dict], float]:
    import jax
    import torch
    import torch.nn.functional as F
    from tqdm.auto import tqdm

    from benchmarks.torch_model import TorchTransformer, cosine_lr, load_params, make_optimizer
    from experiments.pretrain import load_data
    from lm.data import batch_at, eval_batches
    from lm.train.step import init_state

    torch.set_num_threads(threads)
    tc, o, c = config.train_config(), config.optim, config.model
    _, data = load_data(config, progress=False)
    model = TorchTransformer(c)
    load_params(model, jax.jit(init_state, static_argnums=0)(tc, jax.random.PRNGKey(tc.seed))["params"])
    opt = make_optimizer(model, o.lr, o.b1, o.b2, o.eps, o.weight_decay)

    def evaluate() -> float:
        total, count = 0.0, 0
        with torch.no_grad():
            for batch in eval_batches(data.val, tc.batch_size, c.context_length, tc.eval_batches or None):
                x = torch.from_numpy(batch).long()
                logits = model(x[:, :-1])
                total += float(F.cross_entropy(logits.reshape(-1, c.vocab_size), x[:, 1:].reshape(-1), reduction="sum"))
                count += x[:, 1:].numel()
        return total / count

    history: list[dict] = []
    t0 = time.perf_counter()
    for step in tqdm(range(stop_after or tc.steps), desc="torch twin", unit="step"):
        x = torch.from_numpy(batch_at(data.train, step, tc.batch_size, c.context_length, tc.seed)).long()
        for group in opt.param_groups:
            group["lr"] = cosine_lr(step, o.lr, tc.steps, o.warmup_steps, o.min_lr_ratio)
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x[:, :-1]).reshape(-1, c.vocab_size), x[:, 1:].reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), o.grad_clip)
        opt.step()
        done = step + 1
        if done % tc.log_every == 0:
            history.append({"step": done, "loss": loss.item()})
        if done % tc.eval_every == 0 or done in (tc.steps, stop_after):
            history.append({"step": done, "val_loss": evaluate()})
    return history, time.perf_counter() - t0


def plot(jax_hist, torch_hist, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, hist, color in (("lm (JAX)", jax_hist, "C0"), ("PyTorch twin", torch_hist, "C1")):
        train = [(h["step"], h["loss"]) for h in hist if "loss" in h]
        val = [(h["step"], h["val_loss"]) for h in hist if "val_loss" in h]
        ax.plot(*zip(*train), color=color, alpha=0.25, lw=0.8, label=f"{name} train")
        ax.plot(*zip(*val), color=color, marker="o", ms=3, label=f"{name} validation")
    ax.set(xlabel="step", ylabel="loss (nats/token)", title="TinyStories 2 MiB, tiny preset: lm vs PyTorch twin")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    from experiments.pretrain import PretrainConfig

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--steps", type=int, default=2400, help="about 10 minutes of the tiny preset on 2 cores")
    p.add_argument("--eval-every", type=int, default=200)
    p.add_argument("--out", default="runs/twin")
    p.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md and the plot alone")
    p.add_argument("--reuse-jax", action="store_true", help="read the lm run's metrics from --out instead of training")
    p.add_argument("--torch-steps", type=int, default=0,
                   help="stop the PyTorch run after this many steps (same schedule; 0 = all)")
    args = p.parse_args(argv)
    if not args.data.is_file():
        print(f"error: TinyStories sample not found at {args.data}; pass --data or set LM_SHARED_DIR", file=sys.stderr)
        return 2
    config = PretrainConfig(data=str(args.data), steps=args.steps, eval_every=args.eval_every,
                            save_every=args.steps, out=args.out, name="tinystories-jax", val_fraction=0.1)
    if args.reuse_jax:
        metrics = Path(args.out) / config.run_name / "metrics.jsonl"
        jax_hist, jax_s = [json.loads(line) for line in metrics.read_text().splitlines()], float("nan")
    else:
        jax_hist, jax_s = run_jax(config)
    torch_hist, torch_s = run_torch(config, threads=os.cpu_count() or 1, stop_after=args.torch_steps or None)
    (Path(args.out) / "torch_history.json").write_text(json.dumps(torch_hist))

    jv = {h["step"]: h["val_loss"] for h in jax_hist if "val_loss" in h}
    tv = {h["step"]: h["val_loss"] for h in torch_hist if "val_loss" in h}
    rows = [[s, f"{jv[s]:.4f}", f"{tv[s]:.4f}", f"{jv[s] - tv[s]:+.4f}"] for s in sorted(set(jv) & set(tv))]
    table = markdown_table(["step", "lm val loss", "PyTorch val loss", "difference"], rows)
    final = max(set(jv) & set(tv))
    print(table)
    print(f"wall time: lm {jax_s / 60:.1f} min, PyTorch {torch_s / 60:.1f} min; "
          f"final perplexity lm {math.exp(jv[final]):.2f}, PyTorch {math.exp(tv[final]):.2f}")
    if not args.no_write:
        png = Path(__file__).with_name("tinystories_twin.png")
        plot(jax_hist, torch_hist, png)
        torch_note = (f" The PyTorch run stopped after {args.torch_steps} of the {args.steps} steps (same schedule) "
                      "to fit the time available." if args.torch_steps else "")
        body = "\n".join([
            "## TinyStories end-to-end twin (`python -m benchmarks.tinystories_twin`)", "",
            f"Machine: {machine_description()}. `tiny` preset ({config.model.num_params():,} parameters), "
            f"{args.steps} steps of batch {config.batch_size} x {config.model.context_length} tokens, AdamW lr "
            f"{config.optim.lr} cosine with {config.optim.warmup_steps} warmup steps; the last 10% of "
            f"{args.data.name} held out ({config.eval_batches} validation batches per evaluation). Both runs start "
            f"from the same weights and see the same batches. Wall time: lm {jax_s / 60:.1f} min (including "
            f"tokenizer training and encoding, evaluation and checkpoints), PyTorch {torch_s / 60:.1f} min; both "
            f"shared the machine with other jobs, so times are upper bounds.{torch_note}", "",
            f"![validation curves]({png.name})", "", table,
        ])
        write_section("tinystories_twin", body)
    return 0


if __name__ == "__main__":
    prepare_process()
    sys.exit(main())
