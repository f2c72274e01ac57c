"""The whole alignment story on a model we pretrain ourselves, on a CPU in minutes:

    pretrain on arithmetic text -> SFT on question/answer pairs -> GRPO with a verifier

    python -m experiments.align_arithmetic                       # ~6 minutes on 2 CPU cores
    python -m experiments.align_arithmetic --grpo.train.steps 500 --pretrain-steps 650
    python -m experiments.align_arithmetic --overwrite true      # replace an earlier runs/arith

The task is 2-digit addition with the sum written least-significant digit
first ("37+58=" -> "59"), a format small transformers learn far faster than
the usual one (Lee et al. 2023). Pretraining text is lines "37+58=59" cut into
random windows; SFT trains on the answers only, ended by <|endoftext|> (so the
model learns to answer a bare question and stop); GRPO samples 16 answers per
question and rewards exact ones. 200 held-out questions never appear in any
training data; every stage is scored on them with greedy decoding.
Each stage's greedy held-out accuracy goes to runs/NAME/report.md and
pipeline.png (with GRPO's reward, accuracy and KL curves). From a notebook:

    from experiments.align_arithmetic import PipelineConfig, run_pipeline
    result = run_pipeline(PipelineConfig(pretrain_steps=650))
"""

from __future__ import annotations

import dataclasses
import shutil
import sys
import time
from pathlib import Path

from lm.cli_env import prepare_process
from lm.align.config import GRPOConfig, SFTConfig, fine_tuning, grpo_cli
from lm.config import check_positive
from lm.model import ModelConfig
from lm.train.files import atomic_write_json, atomic_write_text

EOT = "<|endoftext|>"


def _model() -> ModelConfig:
    return ModelConfig(vocab_size=257, context_length=32, d_model=64, n_layers=2, n_heads=4, d_ff=256)


def _grpo() -> GRPOConfig:
    # Tuned on held-out accuracy (runs of 200-500 steps): lr 2e-4 and above, or T=1 rollouts (whose
    # samples trail the answer with junk bytes), made greedy accuracy fall; groups of 16 beat 8.
    return GRPOConfig(prompts_per_step=16, group_size=16, epochs=1, temperature=0.7, max_new_tokens=5,
                      train=fine_tuning(300, 128, 1e-4, 0, "constant", eval_every=50, log_every=1, save_every=50))


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    out: str = "runs"
    name: str = "arith"
    model: ModelConfig = dataclasses.field(default_factory=_model)
    pretrain_steps: int = 500  # mid-way up the learning curve (1000 steps solve the task outright)
    pretrain_batch_size: int = 64
    pretrain_lines: int = 100_000  # equations in the pretraining text
    pretrain_optimizer: str = "muon"  # AdamW sits on a loss plateau here for ~1000 steps; Muon leaves it in ~300
    pretrain_lr: float = 3e-3  # AdamW's rate (for muon: of embeddings, head and norms)
    pretrain_muon_lr: float = 0.02
    pretrain_schedule: str = "cosine"
    sft_steps: int = 60
    sft_lr: float = 2e-4  # 1e-3 taught the end token but cost accuracy
    n_eval: int = 200
    sampled_draws: int = 4  # temperature-1 evaluations per stage, averaged (what GRPO's reward sees)
    grpo: GRPOConfig = dataclasses.field(default_factory=_grpo)
    seed: int = dataclasses.field(default=0, metadata={"help": "seeds every stage: init, pretraining data and "
                                  "batches, SFT batches, GRPO prompts and samples (held-out problems stay fixed)"})
    overwrite: bool = dataclasses.field(default=False, metadata={"help": "replace the stages of an earlier run"})

    def __post_init__(self):
        check_positive(self, "pretrain_steps", "pretrain_lines", "sft_steps", "n_eval", "sampled_draws")


def byte_tokenizer():
    """One token per byte (so one per digit) plus <|endoftext|> = 256: no merges to hide digits."""
    from lm.tokenizer import Tokenizer

    return Tokenizer({i: bytes([i]) for i in range(256)}, [], [EOT])


def write_pretraining_data(directory: Path, lines: int, seed: int) -> Path:
    """train.npy / val.npy / tokenizer.json of arithmetic text (held-out questions excluded)."""
    import numpy as np

    from lm.align.tasks import ARITHMETIC, task_problems
    from lm.tokenizer import save_tokenizer

    tok = byte_tokenizer()
    problems = task_problems(ARITHMETIC, "train", lines, seed=seed + 1)
    ids = np.array(tok.encode("".join(f"{p['question']}{p['answer']}\n" for p in problems)), np.uint16)
    directory.mkdir(parents=True, exist_ok=True)
    cut = int(len(ids) * 0.95)
    np.save(directory / "train.npy", ids[:cut])
    np.save(directory / "val.npy", ids[cut:])
    save_tokenizer(tok, directory)
    return directory


def _seeded(grpo: GRPOConfig, seed: int) -> GRPOConfig:
    """GRPO under the pipeline's seed: without this every pipeline seed drew the same prompts and samples."""
    return dataclasses.replace(grpo, train=dataclasses.replace(grpo.train, seed=seed))


def run_pipeline(config: PipelineConfig = PipelineConfig(), progress: bool = True) -> dict:
    """All stages; returns {"stages": [{"name", "accuracy", "n", "seconds"}], "report", "run_dir", ...}."""
    import jax

    from experiments.grpo import GRPORun, run_grpo
    from experiments.pretrain import PretrainConfig, pretrain
    from experiments.sft import SFTRun, run_sft
    from lm.align.evaluate import evaluate_task
    from lm.align.plots import plot_pipeline
    from lm.align.tasks import ARITHMETIC, task_problems
    from lm.model import init
    from lm.optim import OptimizerConfig

    root = Path(config.out) / config.name
    stale = [d for d in ("pretrain", "sft", "grpo") if (root / d).exists()]
    if stale and not config.overwrite:
        raise ValueError(f"{root} already holds the stages {stale} of a pipeline run; pass --overwrite true to "
                         "replace them, or choose another --name")
    for stage_dir in stale:  # a rerun starts over: no stale checkpoint may be loaded
        shutil.rmtree(root / stage_dir)
    root.mkdir(parents=True, exist_ok=True)
    held = task_problems(ARITHMETIC, "test", config.n_eval)
    tok = byte_tokenizer()
    stages = []

    def stage(name, params, task, seconds):
        kw = dict(max_new_tokens=5, batch_size=config.n_eval)
        r = evaluate_task(params, config.model, tok, task, held, **kw)
        # Sampled answers (at GRPO's rollout temperature, what its reward averages), over a few draws.
        t = config.grpo.temperature
        sampled = [evaluate_task(params, config.model, tok, task, held, temperature=t, seed=k, **kw)["accuracy"]
                   for k in range(config.sampled_draws)]
        stages.append({"name": name, "task": task.name, "accuracy": r["accuracy"], "n": r["n"], "stopped": r["stopped"],
                       "sampled_accuracy": sum(sampled) / len(sampled), "seconds": seconds,
                       "samples": r["samples"][:4]})
        print(f"[{name}] {task.name}: greedy {r['correct']}/{r['n']} = {r['accuracy']:.1%}, "
              f"sampled {stages[-1]['sampled_accuracy']:.1%}", flush=True)

    random_params = init(config.model, jax.random.PRNGKey(config.seed))
    stage("random init", random_params, ARITHMETIC, 0.0)

    t0 = time.perf_counter()
    data = write_pretraining_data(root / "data", config.pretrain_lines, config.seed)
    pre = PretrainConfig(model=config.model, tokens=str(data), out=str(root), name="pretrain",
                         steps=config.pretrain_steps, batch_size=config.pretrain_batch_size,
                         eval_every=config.pretrain_steps, save_every=config.pretrain_steps, log_every=50,
                         sample_tokens=0, seed=config.seed, async_checkpoints=False,
                         optim=OptimizerConfig(name=config.pretrain_optimizer, lr=config.pretrain_lr,
                                               muon_lr=config.pretrain_muon_lr, warmup_steps=30,
                                               schedule=config.pretrain_schedule))
    pre_result = pretrain(pre, progress=progress)
    seconds = time.perf_counter() - t0
    stage("pretrained", pre_result["state"]["params"], ARITHMETIC, seconds)

    sft = run_sft(SFTRun(init=str(root / "pretrain"), task=ARITHMETIC.name, out=str(root), name="sft",
                         n_eval=config.n_eval, max_new_tokens=5, eval_batch_size=config.n_eval,
                         sft=SFTConfig(train=fine_tuning(config.sft_steps, 64, config.sft_lr, 10, "constant",
                                                         seed=config.seed))), progress=progress)
    stage("SFT", sft["params"], ARITHMETIC, sft["train_seconds"])

    grpo_run = GRPORun(init=str(root / "sft"), task=ARITHMETIC.name, out=str(root), name="grpo",
                       n_eval=config.n_eval, eval_batch_size=config.n_eval, grpo=_seeded(config.grpo, config.seed))
    grpo = run_grpo(grpo_run, progress=progress)
    stage("GRPO", grpo["params"], ARITHMETIC, grpo["train_seconds"])

    plot = plot_pipeline(stages, grpo["history"], root / "pipeline.png", config.n_eval)
    report = format_report(config, stages, grpo["history"])
    atomic_write_text(root / "report.md", report)
    atomic_write_json(root / "stages.json", stages)
    return {"stages": stages, "report": report, "run_dir": str(root), "plot": str(plot),
            "grpo_history": grpo["history"]}


def format_report(config: PipelineConfig, stages: list[dict], grpo_history: list[dict]) -> str:
    rows = "\n".join(f"| {s['name']} | {round(s['accuracy'] * s['n'])}/{s['n']} | {s['accuracy']:.1%} "
                     f"| {s['sampled_accuracy']:.1%} | {s['stopped']:.0%} | {s['seconds']:.0f} |" for s in stages)
    train = [h for h in grpo_history if "reward" in h]
    first, last = train[0], train[-1]
    return (f"Model: {config.model.num_params():,} parameters (d_model={config.model.d_model}, "
            f"n_layers={config.model.n_layers}); held-out: {config.n_eval} problems, greedy decoding.\n\n"
            f"| stage | greedy correct | greedy accuracy | sampled accuracy (T={config.grpo.temperature:g}, "
            f"mean of {config.sampled_draws}) "
            "| ends with <|endoftext|> "
            "| stage seconds |\n|---|---|---|---|---|---|\n"
            f"{rows}\n\nGRPO rollout reward {first['reward']:.3f} (step 1) -> {last['reward']:.3f} "
            f"(step {last['step']}); KL to the SFT model {last['kl_to_ref']:.4f} nats/token at the end.\n")


def show(result: dict) -> None:
    print("\n" + result["report"])
    print(f"plot: {result['plot']}")


def main(argv=None) -> int:
    return grpo_cli(PipelineConfig, run_pipeline, argv, show)


if __name__ == "__main__":
    prepare_process()
    sys.exit(main())
