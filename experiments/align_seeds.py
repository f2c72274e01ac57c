"""`experiments.align_arithmetic` over several seeds, with each stage's held-out accuracy as a
mean and 95% t-interval over the seeds, written into experiments/results/align.md:

    python -m experiments.align_seeds                          # seeds 0 1 2, one after another
    python -m experiments.align_seeds --seeds 1 --write false  # one seed (start several side by side)
    python -m experiments.align_seeds --run false              # the table from the seeds already finished

Each seed runs in its own directory (runs/arith-seeds/seed0, ...) and leaves result.json there:
its stages, the pipeline config, and the commit, dirty state, machine and date it ran on. A seed
whose result.json exists under the same pipeline config is not run again; one under another
config is refused. The table states the commits and machines of the seeds it reads. A claim that
a stage improves on the one before must hold for the paired per-seed differences, so those get
intervals too. Compare seeds run under the same XLA_FLAGS: lm's default CPU fusion flag
(lm.cli_env.prepare_process, which main applies) moves single runs by several points.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

from scipy import stats

from experiments.align_arithmetic import PipelineConfig, run_pipeline
from lm.cli_env import prepare_process
from lm.config import cli
from lm.train.files import atomic_write_json

RESULTS = Path(__file__).with_name("results") / "align.md"
SECTION = "align_seeds"
STAGES = ("pretrained", "SFT", "GRPO")


@dataclasses.dataclass(frozen=True)
class SeedsConfig:
    seeds: tuple[int, ...] = (0, 1, 2)
    out: str = "runs"
    name: str = "arith-seeds"
    pipeline: PipelineConfig = dataclasses.field(default_factory=PipelineConfig)
    run: bool = dataclasses.field(default=True, metadata={"help": "run the seeds that have no result.json yet"})
    write: bool = dataclasses.field(default=True, metadata={"help": "write the table into --results"})
    results: str = str(RESULTS)

    def __post_init__(self):
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct and at least one, got {self.seeds}")


def provenance(repo: Path = Path(__file__).resolve().parent.parent) -> dict:
    """The commit (and whether lm/ or experiments/ differ from it), machine and UTC date of a run."""
    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return None

    changed = git("status", "--porcelain", "--untracked-files=no", "--", "lm", "experiments")
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"commit": git("rev-parse", "--short", "HEAD") or "unknown",
            # git() strips the output, and with it the first line's leading status column: split, not slice.
            "dirty": None if changed is None else [line.split(maxsplit=1)[1] for line in changed.splitlines()],
            "machine": f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
                       f"Python {platform.python_version()}",
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            # Wall times depend on what else runs: the 1-minute load average at the start says how much.
            "load": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
            # XLA's CPU fusion flags change results in the 7th digit, which training grows into points.
            "xla_flags": os.environ.get("XLA_FLAGS", "")}


def _config_json(config: PipelineConfig) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(config), default=str))


def run_seed(config: SeedsConfig, seed: int, progress: bool = True) -> dict:
    """One seed's pipeline, or its earlier result.json: {"seed", "stages", "config", "provenance", ...}."""
    pipeline = dataclasses.replace(config.pipeline, out=str(Path(config.out) / config.name), name=f"seed{seed}",
                                   seed=seed, overwrite=True)
    path = Path(pipeline.out) / pipeline.name / "result.json"
    want = _config_json(dataclasses.replace(pipeline, overwrite=False))
    if path.exists():
        done = json.loads(path.read_text())
        if done["config"] != want:
            raise ValueError(f"{path} was run under another pipeline config; pass another --name, or delete "
                             f"{path.parent} to run it again")
        return done
    if not config.run:
        raise FileNotFoundError(f"seed {seed} has no {path}; run it (--run true)")
    started = provenance()  # the code a run used is the code at its start
    result = run_pipeline(pipeline, progress=progress)
    stages = [{k: s[k] for k in ("name", "accuracy", "n", "sampled_accuracy", "stopped", "seconds")}
              for s in result["stages"]]
    done = {"seed": seed, "stages": stages, "config": want, "provenance": started, "run_dir": result["run_dir"]}
    atomic_write_json(path, done)
    return done


def t_interval(values: list[float], level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): Student-t interval for the mean of `values` (n-1 degrees of freedom)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, math.nan, math.nan
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = stats.t.ppf(0.5 + level / 2, n - 1) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def grpo_curve(result: dict) -> list[tuple[int, float]]:
    """(step, held-out accuracy) at each of GRPO's evaluations, from the seed's run directory ([] without one)."""
    path = Path(result.get("run_dir", "")) / "grpo" / "grpo_metrics.jsonl"
    if not result.get("run_dir") or not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [(r["step"], r["eval_accuracy"]) for r in sorted(rows, key=lambda r: r["step"]) if "eval_accuracy" in r]


def format_table(results: list[dict]) -> str:
    """Markdown: per-seed greedy held-out accuracy per stage and the paired stage-to-stage changes,
    each with its mean and 95% t-interval over seeds, then the provenance of every seed."""
    results = sorted(results, key=lambda r: r["seed"])
    acc = [{s["name"]: 100 * s["accuracy"] for s in r["stages"]} for r in results]
    rows = [(name, [a[name] for a in acc]) for name in STAGES]
    rows += [(f"{b} - {a}", [x[b] - x[a] for x in acc]) for a, b in zip(STAGES, STAGES[1:])]
    rows.append(("GRPO - pretrained", [x["GRPO"] - x["pretrained"] for x in acc]))
    seeds = [r["seed"] for r in results]
    head = ("| greedy held-out accuracy (%) | " + " | ".join(f"seed {s}" for s in seeds) +
            " | mean | 95% t-interval |\n|---|" + "---|" * (len(seeds) + 2))
    lines = []
    for name, vals in rows:
        mean, low, high = t_interval(vals)
        interval = "n/a (one seed)" if math.isnan(low) else f"[{low:+.1f}, {high:+.1f}]" if " - " in name \
            else f"[{low:.1f}, {high:.1f}]"
        fmt = "{:+.1f}" if " - " in name else "{:.1f}"
        lines.append(f"| {name} | " + " | ".join(fmt.format(v) for v in vals) + f" | {fmt.format(mean)} | {interval} |")
    n_eval = results[0]["stages"][0]["n"]
    prov = []
    for r in results:
        p = r["provenance"]
        dirty = "unknown" if p["dirty"] is None else ("clean" if not p["dirty"] else "dirty: " + ", ".join(p["dirty"]))
        load = "" if p.get("load") is None else f" at load {p['load']:.1f}"
        if "xla_flags" in p:
            load += f", XLA_FLAGS={p['xla_flags'] or '(unset)'}"
        prov.append(f"- seed {r['seed']}: commit `{p['commit']}` ({dirty}), {p['machine']}, {p['date']}, "
                    f"{sum(s['seconds'] for s in r['stages']):.0f} s of training{load}")
    curves = [f"- seed {r['seed']}: " + ", ".join(f"step {k}: {100 * a:.1f}" for k, a in curve)
              for r in results if (curve := grpo_curve(r))]
    if curves:
        prov = ["GRPO's held-out greedy accuracy (%) during its run:", *curves, "", "Produced by:", *prov]
    else:
        prov = ["Produced by:", *prov]
    return (f"{len(seeds)} seeds, {n_eval} held-out problems (the same for every seed), greedy decoding. "
            "Intervals: mean ± t(0.975, n-1)·sd/√n over seeds; a change row is the paired per-seed difference. "
            f"One accuracy on {n_eval} problems has a standard error of about "
            f"{100 * math.sqrt(0.25 / n_eval):.1f} points at 50%.\n\n" + head + "\n" + "\n".join(lines) +
            "\n\n" + "\n".join(prov) + "\n")


def write_section(body: str, path: Path) -> None:
    """Replace the text between this script's markers in `path`, leaving the rest alone."""
    start, end = f"<!-- {SECTION}:start -->", f"<!-- {SECTION}:end -->"
    text = path.read_text()
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        raise ValueError(f"{path} has no '{start}' ... '{end}' markers; add them where the table belongs")
    path.write_text(pattern.sub(lambda _: f"{start}\n{body.rstrip()}\n{end}", text))


def run_seeds(config: SeedsConfig, progress: bool = True) -> dict:
    results = [run_seed(config, seed, progress) for seed in config.seeds]
    table = format_table(results)
    if config.write:
        write_section(table, Path(config.results))
    return {"results": results, "table": table}


def main(argv=None) -> int:
    return cli(SeedsConfig, run_seeds, argv, lambda r: print("\n" + r["table"]))


if __name__ == "__main__":
    prepare_process()
    sys.exit(main())
