"""GRPO, Dr. GRPO, DAPO and GSPO side by side at an equal budget of generated tokens:

    python -m experiments.grpo_compare                                  # arithmetic + countdown, seeds 0 1 2
    python -m experiments.grpo_compare --tasks arithmetic --seeds 0 1 2 3 4 --token-budget 200000
    python -m experiments.grpo_compare --run false                      # the table from the runs already done

For every task and seed one starting policy is built (pretraining on the task's text, then SFT, as
experiments.align_arithmetic does) and shared by the variants, which differ only in their
loss options (`lm.align.policy_gradient.LOSS_PRESETS`: grpo, dr_grpo, dapo, gspo; and "default", the
PGLossConfig a GRPOConfig has unless told otherwise): the same
prompts (GRPO draws them from the step index and seed), the same sampling seeds, the same rollout
size, learning rate and held-out problems. Each run trains until it has generated `token_budget`
response tokens, counting every token sampled, including the extra rounds of DAPO's dynamic
sampling (read per step from the train loop's metrics), and its held-out greedy accuracy is
taken every `eval_every` rollout steps. A run's accuracy "at T tokens" is that of its last
evaluation made after at most T generated tokens (a policy that really used no more than T).

Everything lands in runs/grpo-compare/TASK/seedS/: data/, pretrain/, sft/ (the starting policy),
and one directory per variant with its grpo_metrics.jsonl and result.json. Finished pieces are not
run again (a run whose result.json was made under another config is refused), so a killed
comparison resumes where it stopped. The table (mean and 95% t-interval over seeds of each
variant's accuracy, and of its paired per-seed difference from GRPO) and the plot go into
experiments/results/align.md and grpo_compare.png beside it.

The GSM8K comparison with SmolLM2 is not part of this script: on the 2-core CPU one SmolLM2-135M SFT
step of 8 chat examples took about 18 s (experiments/results/align.md), so one GRPO step of 16 prompts
x 8 samples with ~200-token answers (16 such batches to train on, plus decoding them) is several
minutes, and 4-5 variants x 3 seeds x tens of steps is a day. It is a GPU job.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import sys
import time
from pathlib import Path

from experiments.align_arithmetic import byte_tokenizer
from experiments.align_seeds import provenance, t_interval
from lm.align.config import GRPOConfig, fine_tuning
from lm.align.policy_gradient import LOSS_PRESETS, PGLossConfig
from lm.align.tasks import ARITHMETIC, HELD_OUT_SEED, Task, task_problems
from lm.cli_env import prepare_process
from lm.config import check_positive, cli, to_dict
from lm.model import ModelConfig
from lm.eval import verifiers
from lm.train.files import atomic_write_json

RESULTS = Path(__file__).with_name("results") / "align.md"
SECTION = "grpo_compare"
# The published recipes, and the loss GRPOConfig trains with when none is chosen (PGLossConfig's defaults:
# token aggregation, symmetric clipping, no dynamic sampling): the comparison says whether it should change.
# "dapo_no_penalty" is DAPO without its overlong penalty (token aggregation, clip-higher, dynamic sampling).
LOSSES = {**LOSS_PRESETS, "dapo_no_penalty": dataclasses.replace(LOSS_PRESETS["dapo"], truncation="none"),
          "default": PGLossConfig()}
VARIANTS = ("grpo", "dr_grpo", "dapo", "dapo_no_penalty", "gspo", "default")

# Countdown for a byte-level model: "3,7,5:22=" -> "(3)*5+7" (any expression over the numbers that
# makes the target scores 1). lm.eval.verifiers' countdown problems with 3 numbers from 1 to 9, written
# compactly: with its default 4 numbers up to 25 our 164k-parameter model answered 2.5% of held-out
# problems after pretraining and SFT (0.5% sampled), too few right samples for any variant to learn from.
COUNTDOWN = Task("countdown", reward="countdown", source="countdown", prompt_template="{nums}:{target}=",
                 target_template="{solution}")
COUNTDOWN_NUMBERS, COUNTDOWN_MAX = 3, 9


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """What differs between the tasks: the model's context, the answer budget and the longest right answer."""

    task: Task
    context_length: int
    max_new_tokens: int  # the rollout and evaluation budget
    longest_answer: int  # tokens of the longest correct answer, end token included

    @property
    def overlong_cache(self) -> int:
        """DAPO's overlong-penalty ramp: only answers longer than any correct one are penalised (the
        preset's 4 tokens would penalise correct 3-digit sums of a 5-token budget)."""
        return max(1, self.max_new_tokens - self.longest_answer)


TASKS = {"arithmetic": TaskSpec(ARITHMETIC, 32, 5, 4),
         # The longest countdown solution is "((9)*9)*9": 9 bytes and the end token.
         "countdown": TaskSpec(COUNTDOWN, 32, 12, 10)}


def problems(spec: TaskSpec, split: str, n: int, seed: int) -> list[dict]:
    """Training ("train") or held-out ("test") problems; training never repeats a held-out prompt."""
    task = spec.task
    if task.source == "arithmetic":
        return task_problems(task, split, n, seed=seed)

    def draw(count, draw_seed):
        return [dict(p, nums=",".join(map(str, p["numbers"]))) for p in
                verifiers.countdown_problems(count, draw_seed, n_numbers=COUNTDOWN_NUMBERS, max_number=COUNTDOWN_MAX)]

    held = draw(1000, HELD_OUT_SEED)
    if split == "test":
        return held[:n]
    seen = {task.prompt_text(p) for p in held}
    out, k = [], 0
    while len(out) < n:  # countdown_problems has no exclusion: draw batches and skip held-out prompts
        out += [p for p in draw(n, seed * 7919 + k) if task.prompt_text(p) not in seen]
        k += 1
    return out[:n]


def _grpo() -> GRPOConfig:
    # align_arithmetic's tuned GRPO (16 prompts x 16 samples at T=0.7, lr 1e-4 constant), evaluated
    # more often so that accuracy can be read at fixed token counts. save_every is set per run.
    return GRPOConfig(prompts_per_step=16, group_size=16, epochs=1, temperature=0.7,
                      train=fine_tuning(100, 128, 1e-4, 0, "constant", eval_every=5, log_every=1, save_every=1000))


@dataclasses.dataclass(frozen=True)
class CompareConfig:
    tasks: tuple[str, ...] = ("arithmetic", "countdown")
    variants: tuple[str, ...] = VARIANTS
    seeds: tuple[int, ...] = (0, 1, 2)
    token_budget: int = dataclasses.field(default=60_000, metadata={
        "help": "response tokens each run generates (every sampling round counted), per task"})
    checkpoints: int = dataclasses.field(default=6, metadata={"help": "evenly spaced token counts in the table"})
    grpo: GRPOConfig = dataclasses.field(default_factory=_grpo)
    n_train: int = 20_000
    n_eval: int = 200
    d_model: int = 64
    n_layers: int = 2
    pretrain_steps: int = 500
    pretrain_lines: int = 100_000
    sft_steps: int = 60
    sft_lr: float = 2e-4
    out: str = "runs"
    name: str = "grpo-compare"
    run: bool = dataclasses.field(default=True, metadata={"help": "run the pieces that have no result yet"})
    write: bool = dataclasses.field(default=True, metadata={"help": "write the table into --results"})
    results: str = str(RESULTS)
    progress: bool = False
    xla_cache: str = dataclasses.field(default="runs/_xla_cache", metadata={
        "help": "directory for XLA's persistent compilation cache ('' for none)"})

    def __post_init__(self):
        check_positive(self, "token_budget", "checkpoints", "n_train", "n_eval", "d_model", "n_layers",
                       "pretrain_steps", "pretrain_lines", "sft_steps")
        for name, allowed, got in (("tasks", TASKS, self.tasks), ("variants", LOSSES, self.variants)):
            bad = [x for x in got if x not in allowed]
            if bad or not got or len(set(got)) != len(got):
                raise ValueError(f"{name} must be distinct names from {sorted(allowed)}, got {got}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct and at least one, got {self.seeds}")

    def model(self, spec: TaskSpec) -> ModelConfig:
        return ModelConfig(vocab_size=257, context_length=spec.context_length, d_model=self.d_model,
                           n_layers=self.n_layers, n_heads=4, d_ff=4 * self.d_model)

    def checkpoint_tokens(self) -> list[int]:
        return [round(self.token_budget * (k + 1) / self.checkpoints) for k in range(self.checkpoints)]


def _json(x) -> dict:
    return json.loads(json.dumps(to_dict(x) if dataclasses.is_dataclass(x) else x, default=str))


def same_config(stored, want) -> bool:
    """`stored` (a finished piece's config) matches `want`: every field it recorded is equal. Fields that
    `want` has and `stored` lacks were added to the configs after the piece ran; it ran with the behaviour
    they were added without, which a new field's default keeps, so they do not make it stale."""
    if isinstance(stored, dict) and isinstance(want, dict):
        return all(k in want and same_config(v, want[k]) for k, v in stored.items())
    return stored == want


# --- the starting policy ------------------------------------------------------------------------------

def starting_policy(config: CompareConfig, task_name: str, seed: int) -> Path:
    """Pretrain on the task's text, then SFT, once per task and seed; returns the SFT run directory
    (a policy `lm.align.checkpoint.load_policy` reads). Reused when its start.json matches."""
    import numpy as np

    from experiments.pretrain import PretrainConfig, pretrain
    from lm.align.config import SFTConfig
    from lm.align.sft_loop import train_sft
    from lm.inference import load_run
    from lm.optim import OptimizerConfig
    from lm.tokenizer import save_tokenizer
    from lm.trainer import RunOptions

    spec = TASKS[task_name]
    root = Path(config.out) / config.name / task_name / f"seed{seed}"
    want = {"task": task_name, "seed": seed, "model": _json(config.model(spec)),
            **{k: getattr(config, k) for k in ("pretrain_steps", "pretrain_lines", "sft_steps", "sft_lr", "n_train")}}
    done = root / "start.json"
    if done.exists() and same_config(json.loads(done.read_text())["config"], want):
        return root / "sft"
    if not config.run:
        raise FileNotFoundError(f"{root} has no starting policy; run it (--run true)")
    t0 = time.perf_counter()
    tok, task = byte_tokenizer(), spec.task
    text = "".join(f"{task.prompt_text(p)}{task.target_template.format(**p)}\n"
                   for p in problems(spec, "train", config.pretrain_lines, seed + 1))
    ids = np.array(tok.encode(text), np.uint16)
    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    cut = int(len(ids) * 0.95)
    np.save(data / "train.npy", ids[:cut])
    np.save(data / "val.npy", ids[cut:])
    save_tokenizer(tok, data)
    # align_arithmetic's pretraining: Muon, cosine, 30 warmup steps, batch 64 (see PipelineConfig).
    pre = PretrainConfig(model=config.model(spec), tokens=str(data), out=str(root), name="pretrain",
                         steps=config.pretrain_steps, batch_size=64, eval_every=config.pretrain_steps,
                         save_every=config.pretrain_steps, log_every=50, sample_tokens=0, seed=seed,
                         async_checkpoints=False, overwrite=True,
                         optim=OptimizerConfig(name="muon", lr=3e-3, muon_lr=0.02, warmup_steps=30, schedule="cosine"))
    pretrain(pre, progress=config.progress)
    params, model, _ = load_run(root / "pretrain")
    sft_dir = root / "sft"
    sft = SFTConfig(train=fine_tuning(config.sft_steps, 64, config.sft_lr, 10, "constant", seed=seed))
    train_sft(params, model, tok, task, problems(spec, "train", config.n_train, seed + 1), sft, sft_dir,
              max_new_tokens=spec.max_new_tokens, options=RunOptions(overwrite=True, progress=config.progress))
    save_tokenizer(tok, sft_dir)
    atomic_write_json(done, {"config": want, "seconds": time.perf_counter() - t0})
    return sft_dir


# --- one variant's run -----------------------------------------------------------------------------

def generated_tokens(record: dict, rollout_size: int) -> float:
    """Response tokens sampled in one rollout step, from its metrics record: every sampling round's
    (dynamic sampling draws up to max_sampling_tries rounds and trains on one batch of them)."""
    if "sampled_tokens" in record:  # logged by the loop since 984bc36: every round's tokens, exactly
        return float(record["sampled_tokens"])
    # Before that, the mean length of the rows it trains on and how many rounds it drew ("tries"): exact
    # without dynamic sampling; with it, the dropped groups' answers are taken to be as long as the kept
    # ones (on the runs that logged both, off by at most 0.3% on arithmetic and 2.7% on countdown).
    return float(record["response_tokens"]) * rollout_size * float(record.get("tries", 1))


def token_curve(history: list[dict], rollout_size: int) -> list[dict]:
    """[{"step", "tokens", "accuracy"}] at every held-out evaluation: tokens generated before it."""
    per_step = {int(h["step"]): generated_tokens(h, rollout_size) for h in history if "response_tokens" in h}
    curve = []
    for h in sorted((h for h in history if "eval_accuracy" in h), key=lambda h: h["step"]):
        s = int(h["step"])
        missing = [k for k in range(1, s + 1) if k not in per_step]
        if missing:
            raise ValueError(f"the metrics lack steps {missing[:5]}: log every step (grpo.train.log_every 1)")
        curve.append({"step": s, "tokens": sum(per_step[k] for k in range(1, s + 1)), "accuracy": h["eval_accuracy"]})
    return curve


def accuracy_at(curve: list[dict], tokens: float) -> float:
    """Accuracy of the last evaluation made after at most `tokens` generated tokens."""
    before = [c for c in curve if c["tokens"] <= tokens]
    if not before:
        raise ValueError(f"no evaluation at or before {tokens} tokens")
    return before[-1]["accuracy"]


def _read_history(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def variant_config(config: CompareConfig, spec: TaskSpec, variant: str, seed: int, steps: int) -> GRPOConfig:
    """The shared GRPO config with this variant's loss options, the task's answer budget and the seed."""
    loss = LOSSES[variant]
    if loss.truncation == "penalty":
        loss = dataclasses.replace(loss, overlong_cache=spec.overlong_cache)
    train = dataclasses.replace(config.grpo.train, seed=seed, steps=steps)
    if loss.dynamic_sampling:
        # A step that draws up to max_sampling_tries rounds generates up to that many times the tokens, so
        # evaluations every eval_every steps would land that much further apart in tokens, and the last one
        # before a token count would trail it by up to ~20k tokens: evaluate every step instead.
        train = dataclasses.replace(train, eval_every=1)
    return dataclasses.replace(config.grpo, loss=loss, max_new_tokens=spec.max_new_tokens, train=train)


def run_variant(config: CompareConfig, task_name: str, seed: int, variant: str) -> dict:
    """Train one variant from the seed's starting policy until it has generated the token budget;
    returns (and saves) {"curve", "tokens", "steps", "seconds", "config", "provenance"}."""
    from lm.align.checkpoint import load_policy
    from lm.align.grpo_loop import train_grpo
    from lm.trainer import RunOptions

    spec = TASKS[task_name]
    run_dir = Path(config.out) / config.name / task_name / f"seed{seed}" / variant
    want = {"grpo": _json(variant_config(config, spec, variant, seed, 1)), "token_budget": config.token_budget,
            "n_eval": config.n_eval, "n_train": config.n_train}
    done = run_dir / "result.json"
    if done.exists():
        result = json.loads(done.read_text())
        if not same_config(result["config"], want):
            raise ValueError(f"{done} was run under another config; pass another --name, or delete {run_dir}")
        history = _read_history(run_dir / "grpo_metrics.jsonl")
        if history:  # token counts as generated_tokens reads them now (exact where the loop logged them)
            curve = token_curve(history, config.grpo.rollout_size)
            result = {**result, "curve": curve, "tokens": curve[-1]["tokens"]}
        return result
    if not config.run:
        raise FileNotFoundError(f"{run_dir} has no result.json; run it (--run true)")
    started = provenance()
    start = starting_policy(config, task_name, seed)
    params, model, tok = load_policy(start)
    train, held = problems(spec, "train", config.n_train, seed + 1), problems(spec, "test", config.n_eval, 0)
    rollout = config.grpo.rollout_size
    # Steps to reach the budget are not known in advance (answers change length, dynamic sampling draws
    # a varying number of rounds): train in chunks, each continuing the last one's checkpoint (prompts,
    # samples and minibatches come from the step index, so chunks repeat one uninterrupted run).
    steps, t0, history = 0, time.perf_counter(), []
    # First guess (refined from the metrics): every answer at full length, every sampling round drawn,
    # so that the first chunk stops short of the budget rather than far past it.
    loss = LOSSES[variant]
    per_step = spec.max_new_tokens * rollout * (loss.max_sampling_tries if loss.dynamic_sampling else 1)
    while True:
        tokens = sum(generated_tokens(h, rollout) for h in history if "response_tokens" in h)
        if tokens >= config.token_budget:
            break
        steps += max(1, math.ceil((config.token_budget - tokens) / per_step))
        grpo = variant_config(config, spec, variant, seed, steps)
        grpo = dataclasses.replace(grpo, train=dataclasses.replace(grpo.train, save_every=steps))
        train_grpo(params, model, tok, spec.task, train, grpo, run_dir, eval_problems=held,
                   eval_batch_size=config.n_eval,
                   options=RunOptions(resume=bool(history), overwrite=not history, progress=config.progress))
        history = _read_history(run_dir / "grpo_metrics.jsonl")
        done_steps = [h for h in history if "response_tokens" in h]
        per_step = sum(generated_tokens(h, rollout) for h in done_steps) / len(done_steps)
    curve = token_curve(history, rollout)
    result = {"task": task_name, "seed": seed, "variant": variant, "curve": curve, "tokens": tokens, "steps": steps,
              "seconds": time.perf_counter() - t0, "config": want, "provenance": started}
    atomic_write_json(done, result)
    if config.progress:
        print(f"[{task_name} seed {seed} {variant}] {steps} steps, {tokens:.0f} tokens, accuracy "
              f"{curve[0]['accuracy']:.3f} -> {accuracy_at(curve, config.token_budget):.3f} "
              f"({result['seconds']:.0f} s)", flush=True)
    return result


# --- the table, the plot -------------------------------------------------------------------------

def _interval(values: list[float], signed: bool) -> tuple[str, str]:
    mean, low, high = t_interval(values)
    fmt = "{:+.1f}" if signed else "{:.1f}"
    return fmt.format(mean), "n/a (one seed)" if math.isnan(low) else f"[{fmt.format(low)}, {fmt.format(high)}]"


def format_table(config: CompareConfig, results: list[dict]) -> str:
    """Markdown per task: accuracy (%) of every variant at the token budget, per seed, with mean and 95%
    t-interval over seeds, and each variant's paired per-seed difference from GRPO at the budget and
    averaged over the curve's token counts."""
    out = []
    marks = config.checkpoint_tokens()
    for task_name in config.tasks:
        rows = {(r["variant"], r["seed"]): r for r in results if r["task"] == task_name}
        variants = [v for v in config.variants if any(key[0] == v for key in rows)]
        # Paired rows need every variant of a seed: a seed with some variants missing is left out, and said so.
        seeds = sorted(s for s in {s for _, s in rows} if all((v, s) in rows for v in variants))
        partial = sorted({s for _, s in rows} - set(seeds))
        if not seeds:
            continue
        out.append(f"**{task_name}**, held-out greedy accuracy (%) on {config.n_eval} problems, {len(seeds)} seeds"
                   + (f" (seeds {partial} left out: not every variant has run)" if partial else "") + "\n")
        head = "| variant | tokens | " + " | ".join(f"seed {s}" for s in seeds) + " | mean | 95% t-interval |"
        out += [head, "|---|---|" + "---|" * (len(seeds) + 2)]
        def acc(v, s, mark):  # mark None: the mean over every token count of the table's plot
            if mark is None:
                return sum(100 * accuracy_at(rows[v, s]["curve"], m) for m in marks) / len(marks)
            return 100 * accuracy_at(rows[v, s]["curve"], mark)

        def label(mark):
            return f"{mark:,}" if mark else f"mean of {len(marks)}"

        start = [100 * rows[variants[0], s]["curve"][0]["accuracy"] for s in seeds]
        out.append("| start (SFT) | 0 | " + " | ".join(f"{x:.1f}" for x in start) + " | " +
                   " | ".join(_interval(start, False)) + " |")
        for mark in (marks[-1],):
            for v in variants:
                a = [acc(v, s, mark) for s in seeds]
                out.append(f"| {v} | {label(mark)} | " + " | ".join(f"{x:.1f}" for x in a) + " | " +
                           " | ".join(_interval(a, False)) + " |")
        for mark in (marks[-1], None):
            for v in [v for v in variants if v != "grpo" and "grpo" in variants]:
                diff = [acc(v, s, mark) - acc("grpo", s, mark) for s in seeds]
                out.append(f"| {v} - grpo | {label(mark)} | " + " | ".join(f"{d:+.1f}" for d in diff) + " | " +
                           " | ".join(_interval(diff, True)) + " |")
        read = {v: sum(max(c["tokens"] for c in rows[v, s]["curve"] if c["tokens"] <= marks[-1]) for s in seeds)
                / len(seeds) for v in variants}
        out.append("\nGenerated tokens of the evaluation read at the budget (mean over seeds): " +
                   ", ".join(f"{v} {read[v]:,.0f}" for v in variants) + ".")
        secs = {v: sum(rows[v, s]["seconds"] for s in seeds) / len(seeds) for v in variants}
        steps = {v: sum(rows[v, s]["steps"] for s in seeds) / len(seeds) for v in variants}
        out.append("Rollout steps to the budget (mean over seeds): " +
                   ", ".join(f"{v} {steps[v]:.0f}" for v in variants) +
                   "; wall seconds per run (mean): " + ", ".join(f"{v} {secs[v]:.0f}" for v in variants) + ".\n")
    provs = [r["provenance"] for r in results]
    commits = sorted({p["commit"] for p in provs})
    dirty = sorted({f for p in provs for f in (p["dirty"] or [])})
    loads = [p["load"] for p in provs if p.get("load") is not None]
    machines = sorted({p["machine"] for p in provs})
    dates = sorted({p["date"] for p in provs})
    n = config.n_eval
    g = config.grpo
    variants = "; ".join(f"`{v}`: {_loss_text(config, v)}" for v in config.variants)
    flags = "" if config.seeds == CompareConfig.seeds else " --seeds " + " ".join(map(str, config.seeds))
    setup = (f"## GRPO variants at an equal budget of generated tokens (`python -m experiments.grpo_compare{flags}`)"
             "\n\n"
             f"Every variant starts from the same policy per task and seed (our {config.d_model}-wide, "
             f"{config.n_layers}-layer byte model: {config.pretrain_steps} Muon pretraining steps on the task's text, "
             f"then {config.sft_steps} SFT steps) and sees the same prompts and sampling seeds: "
             f"{g.prompts_per_step} prompts x {g.group_size} samples per rollout step at T={g.temperature:g}, "
             f"optimizer batch {g.train.batch_size}, lr {g.train.optim.lr:g} constant, no KL. Each run stops once it "
             f"has generated {config.token_budget:,} response tokens (dynamic sampling's extra rounds counted). "
             f"Variants (`LOSS_PRESETS`, and `default`: `PGLossConfig()`, what GRPOConfig uses unless told): "
             f"{variants}. Tasks: arithmetic (2-digit sums, reversed digits, 5-token "
             f"answers); countdown with {COUNTDOWN_NUMBERS} numbers from 1 to {COUNTDOWN_MAX} (`3,7,5:22=` -> an "
             f"expression, {TASKS['countdown'].max_new_tokens}-token answers).\n\n")
    intro = setup + ("At each token count a run's accuracy is that of its last evaluation "
             f"made after at most that many generated tokens (evaluations every {config.grpo.train.eval_every} rollout "
             "steps; every step for the variants with dynamic sampling, whose steps draw up to 3 rounds); "
             "\"mean of N\" averages a run's accuracy over the N token counts of the curve "
             f"({', '.join(f'{m:,}' for m in config.checkpoint_tokens())}); \"start\" is the shared starting policy "
             "(SFT). The seeds' starting policies differ by tens of points, so the absolute rows' intervals are wide; "
             "the comparison is in the paired rows. Intervals: mean ± t(0.975, n-1)·sd/√n over "
             "seeds; a \"- grpo\" row is the paired per-seed difference (same starting policy, prompts and "
             f"sampling seeds). One accuracy on {n} problems has a binomial standard error of about "
             f"{100 * math.sqrt(0.25 / n):.1f} points at 50%.\n")
    foot = (f"Produced by commit{'s' if len(commits) > 1 else ''} " + ", ".join(f"`{c}`" for c in commits) +
            (" with uncommitted changes (other work in the shared tree) to " + ", ".join(dirty) if dirty else
             " (clean)") + f", on {'; '.join(machines)}, runs started {dates[0]} to {dates[-1]}" +
            (f", 1-minute load {min(loads):.1f}-{max(loads):.1f} at their starts" if loads else "") +
            f", XLA_FLAGS={provs[0].get('xla_flags') or '(unset)'}.\n")
    return intro + "\n" + "\n".join(out) + "\n" + foot


def _loss_text(config: CompareConfig, variant: str) -> str:
    loss = LOSSES[variant]
    parts = [loss.loss_type, f"{loss.length_norm} aggregation", "std-normalised advantages" if loss.normalize_std
             else "no std", f"clip [{loss.cliprange_low:g}, {loss.cliprange_high:g}]"]
    if loss.dynamic_sampling:
        parts.append(f"dynamic sampling (up to {loss.max_sampling_tries} rounds)")
    if loss.truncation != "none":
        caches = ", ".join(f"{t} {TASKS[t].overlong_cache}" for t in config.tasks)
        parts.append(f"overlong {loss.truncation} (ramp of {caches} tokens)" if loss.truncation == "penalty"
                     else f"truncation {loss.truncation}")
    return ", ".join(parts)


def plot(config: CompareConfig, results: list[dict], path: Path) -> Path:
    """One column per task: mean held-out accuracy against generated tokens (top), and each variant's
    paired per-seed difference from GRPO with its 95% t-band over seeds (bottom; the seeds' starting
    accuracies differ too much for bands on the accuracies themselves to say anything)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = [t for t in config.tasks if any(r["task"] == t for r in results)]
    fig, axes = plt.subplots(2, len(tasks), figsize=(6.2 * len(tasks), 7.6), squeeze=False, sharex=True)
    # accuracy_at is a step function of the token count: drawn on a fine grid, as steps.
    xs = [config.token_budget * k / 120 for k in range(121)]
    for col, task_name in enumerate(tasks):
        top, bottom = axes[0][col], axes[1][col]
        mine = [r for r in results if r["task"] == task_name]
        variants = {r["variant"] for r in mine}
        seeds = sorted(s for s in {r["seed"] for r in mine}  # the table's seeds: those every variant has run
                       if variants <= {r["variant"] for r in mine if r["seed"] == s})
        run = {(r["variant"], r["seed"]): r for r in mine}
        for i, v in enumerate(config.variants):
            if v not in variants:
                continue
            acc = [[100 * accuracy_at(run[v, s]["curve"], x) for s in seeds] for x in xs]
            top.plot(xs, [sum(a) / len(a) for a in acc], drawstyle="steps-post", color=f"C{i}", label=v)
            if v == "grpo" or "grpo" not in variants:
                continue
            base = [[100 * accuracy_at(run["grpo", s]["curve"], x) for s in seeds] for x in xs]
            stats = [t_interval([a - b for a, b in zip(ax_, bx)]) for ax_, bx in zip(acc, base)]
            bottom.plot(xs, [st[0] for st in stats], drawstyle="steps-post", color=f"C{i}", label=f"{v} - grpo")
            if len(seeds) > 1:
                bottom.fill_between(xs, [st[1] for st in stats], [st[2] for st in stats], step="post",
                                    color=f"C{i}", alpha=0.12)
        n = len(seeds)
        top.set(ylabel="held-out greedy accuracy (%)", title=f"{task_name}: mean over {n} seed{'s' if n > 1 else ''}")
        bottom.axhline(0, color="0.3", lw=0.8)
        bottom.set(xlabel="generated response tokens", ylabel="paired difference from grpo (points)",
                   title=f"{task_name}: variant - grpo per seed, mean and 95% t-band")
        for ax in (top, bottom):
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_section(body: str, path: Path) -> None:
    """Replace the text between this script's markers in `path` (appending them at the end the first
    time), leaving the rest of the file alone."""
    start, end = f"<!-- {SECTION}:start -->", f"<!-- {SECTION}:end -->"
    text = path.read_text() if path.exists() else ""
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    block = f"{start}\n{body.rstrip()}\n{end}"
    new = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    path.write_text(new)


def use_compilation_cache(path: str) -> None:
    """Keep XLA's compiled programs on disk: every run of a variant compiles the same train step, rollout and
    evaluation programs (only the seed differs), and each chunk of a run compiles them again. Loading a
    program gives the same executable, so results do not change; on a loaded 2-core machine each
    compilation costs tens of seconds."""
    import jax

    if path:
        jax.config.update("jax_compilation_cache_dir", path)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def run_compare(config: CompareConfig) -> dict:
    t0 = time.perf_counter()
    use_compilation_cache(config.xla_cache)
    results, missing = [], []
    for t in config.tasks:
        for s in config.seeds:
            for v in config.variants:
                try:
                    results.append(run_variant(config, t, s, v))
                except FileNotFoundError:  # only with --run false: tabulate what has run, name the rest
                    if config.run:
                        raise
                    missing.append(f"{t} seed {s} {v}")
    if not results:
        raise FileNotFoundError(f"none of the runs asked for has a result under {Path(config.out) / config.name}")
    table = format_table(config, results)
    if missing:
        table += "\nNot run (no result.json): " + ", ".join(missing) + ".\n"
    png = None
    if config.write:
        results_path = Path(config.results)
        png = plot(config, results, results_path.with_name("grpo_compare.png"))
        write_section(table + f"\n![accuracy against generated tokens]({png.name})\n", results_path)
    return {"results": results, "table": table, "plot": png, "seconds": time.perf_counter() - t0}


def main(argv=None) -> int:
    return cli(CompareConfig, run_compare, argv, lambda r: print("\n" + r["table"] + f"\n({r['seconds']:.0f} s)"))


if __name__ == "__main__":
    prepare_process()
    sys.exit(main())
