"""Scaling laws: reproduce published Chinchilla fits, and run an IsoFLOP sweep with our trainer.

    python -m experiments.scaling --data-dir ../shared/data/scaling --out runs/scaling
    python -m experiments.scaling sweep --out runs/scaling-sweep --budgets 3e11 1e12 3e12

The first form fits Approach 2 (IsoFLOP profiles) to the CS336 IsoFLOP runs and
Approach 3 (L(N, D) = E + A/N^alpha + B/D^beta) to Epoch AI's digitisation of
Chinchilla's Figure 4, prints our values next to the published ones and writes
PNGs. The `sweep` form trains an IsoFLOP grid of tiny models on the embedded
corpus (or --data / --tokens), fits both approaches, predicts the optimum at
10x and 100x the largest budget, trains the 10x prediction and reports predicted
against measured loss. Finished runs are not rerun. From a notebook:

    from experiments.scaling import load_isoflops, fit_isoflops, fit_parametric, predict
    fit = fit_isoflops(load_isoflops("../shared/data/scaling/isoflops_curves.json"))
    predict(1e24, fit)          # N_opt, D_opt with bootstrap intervals
    predict(1e24)               # Epoch AI's published Chinchilla law
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

from lm.cli_env import prepare_process
from lm.config import add_dataclass_args, dataclass_from_args, format_config, to_dict
from lm.scaling import (
    IsoFlopFit, ParametricConfig, ParametricFit, ParametricLaw, PowerLaw, Prediction, Runs, fit_isoflop,
)
from lm.scaling import fit_parametric as _fit_parametric
from lm.scaling.flops import count_flops

CHINCHILLA_FILE = "chinchilla_svg_extracted_data.csv"
ISOFLOPS_FILE = "isoflops_curves.json"

# Published values, from ../shared/data/scaling/README.md (sources cited there).
PUBLISHED_LAWS: dict[str, ParametricLaw] = {
    "Hoffmann 2022 (rounded)": ParametricLaw(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28),
    "Hoffmann 2022 (unrounded)": ParametricLaw(E=1.6934, A=406.40, B=410.72, alpha=0.33917, beta=0.28491),
    "Epoch 2024 (Table 1)": ParametricLaw(E=1.817, A=482.01, B=2085.43, alpha=0.3478, beta=0.3658),
    "Epoch grid L-BFGS": ParametricLaw(E=1.8172, A=477.8, B=2143.9, alpha=0.3473, beta=0.3672),
}
EPOCH_CI95 = {"E": (1.769, 1.871), "A": (285.2, 743.6), "B": (1042.4, 5810.3), "alpha": (0.317, 0.373),
              "beta": (0.331, 0.415)}  # Epoch's bootstrap (4000 resamples)
EPOCH_OPTIMA = {1e23: (29.4e9, 566e9), 1e24: (95.9e9, 1.74e12)}  # (N_opt, D_opt) from Epoch's law
PUBLISHED_ISOFLOP = {  # CS336 IsoFLOP data: N_opt law, D_opt law, {C: (N_opt, D_opt)}
    "argmin": (PowerLaw(1.1634, 0.46868), PowerLaw(0.14326, 0.53132),
               {1e23: (7.00e10, 2.38e11), 1e24: (2.06e11, 8.09e11)}),
    "parabola": (PowerLaw(0.133, 0.515), None, {1e23: (9.1e10, 1.83e11), 1e24: (2.98e11, 5.59e11)}),
}
DEFAULT_LAW = "Epoch 2024 (Table 1)"


# ---------------------------------------------------------------- loading

def _require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {str(path)!r}")
    return path


def _number(value, row: int, column: str, path) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{path}: row {row} column {column!r} is not a number: {value!r}") from None


def load_chinchilla(path, drop_highest: int = 5) -> Runs:
    """Epoch AI's digitised Chinchilla Figure 4 (CSV with `Model Size`, `Training FLOP`, `loss`).

    D = C / (6 N), as Epoch's notebook derives it. Like Epoch, the `drop_highest`
    highest-loss points are left out (loss >= the 5th largest): 245 -> 240 rows."""
    path = _require_file(Path(path), "Chinchilla data (CSV)")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        need = ("Model Size", "Training FLOP", "loss")
        missing = [c for c in need if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: malformed CSV, missing column(s) {missing}; found {reader.fieldnames}")
        rows = [[_number(r[c], i + 2, c, path) for c in need] for i, r in enumerate(reader)]
    if not rows:
        raise ValueError(f"{path}: no data rows")
    n, c, loss = np.array(rows).T
    if drop_highest:
        if len(loss) <= drop_highest:
            raise ValueError(f"{path}: {len(loss)} rows, cannot drop the {drop_highest} highest losses")
        keep = loss < np.sort(loss)[-drop_highest]
        n, c, loss = n[keep], c[keep], loss[keep]
    return Runs.from_arrays(n, loss, compute=c)


def load_isoflops(path) -> Runs:
    """The CS336 IsoFLOP runs: a JSON list of {parameters, compute_budget, final_loss}; D = C / (6 N)."""
    path = _require_file(Path(path), "IsoFLOP data (JSON)")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, list) or not data:
        raise ValueError(f"{path}: expected a non-empty JSON list of runs")
    need = ("parameters", "compute_budget", "final_loss")
    rows = []
    for i, r in enumerate(data):
        if not isinstance(r, dict) or any(k not in r for k in need):
            raise ValueError(f"{path}: run {i} must be an object with keys {list(need)}, got {r!r}")
        rows.append([_number(r[k], i, k, path) for k in need])
    n, c, loss = np.array(rows).T
    return Runs.from_arrays(n, loss, compute=c)


def load_published(data_dir) -> tuple[Runs, Runs]:
    """(Chinchilla Figure 4 runs, CS336 IsoFLOP runs) from the shared data folder."""
    d = Path(data_dir)
    if not d.is_dir():
        raise FileNotFoundError(f"data directory not found: {str(d)!r} (expected {CHINCHILLA_FILE} and "
                                f"{ISOFLOPS_FILE}; pass --data-dir, e.g. ../shared/data/scaling)")
    return load_chinchilla(d / CHINCHILLA_FILE), load_isoflops(d / ISOFLOPS_FILE)


def _as_runs(data) -> Runs:
    if isinstance(data, Runs):
        return data
    if isinstance(data, (str, os.PathLike)):
        path = Path(data)
        if path.suffix == ".json":
            return load_isoflops(path)
        if path.suffix == ".csv":
            return load_chinchilla(path)
        raise ValueError(f"{path}: expected a .json (IsoFLOP runs) or .csv (Chinchilla) file")
    raise TypeError(f"expected Runs or a path to a data file, got {type(data).__name__}")


# ---------------------------------------------------------------- the three entry points

def fit_isoflops(data, method: str = "parabola", n_bootstrap: int = 1000, seed: int = 0) -> IsoFlopFit:
    """Approach 2 on `data` (Runs, or a path to an IsoFLOP JSON / Chinchilla CSV)."""
    return fit_isoflop(_as_runs(data), method=method, n_bootstrap=n_bootstrap, seed=seed)


def fit_parametric(data, config: ParametricConfig = ParametricConfig()) -> ParametricFit:
    """Approach 3 on `data` (Runs, or a path to an IsoFLOP JSON / Chinchilla CSV)."""
    return _fit_parametric(_as_runs(data), config)


def predict(compute: float, fit: IsoFlopFit | ParametricFit | ParametricLaw | None = None) -> Prediction:
    """Compute-optimal N, D (and loss, for a parametric law) at `compute` FLOPs.

    `fit` defaults to Epoch AI's published refit of Chinchilla (Besiroglu et al. 2024)."""
    if not isinstance(compute, (int, float)) or not compute > 0 or not math.isfinite(compute):
        raise ValueError(f"compute must be a positive number of FLOPs, got {compute!r}")
    if fit is None:
        fit = PUBLISHED_LAWS[DEFAULT_LAW]
    if isinstance(fit, ParametricLaw):
        n, d = fit.optimal(compute)
        return Prediction(compute, float(n), float(d), float(fit.optimal_loss(compute)), source="parametric law")
    if isinstance(fit, (IsoFlopFit, ParametricFit)):
        return fit.predict(compute)
    raise TypeError(f"fit must be an IsoFlopFit, ParametricFit or ParametricLaw, got {type(fit).__name__}")


# ---------------------------------------------------------------- reporting helpers

def format_table(headers: list[str], rows: list[list[str]]) -> str:
    """A Markdown table, columns padded so it also reads as plain text."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def _ci(interval) -> str:
    return "" if interval is None else f" {interval}"


def flops_table(names_and_configs, n_tokens: float = 1e9) -> str:
    """C = 6ND next to the exact count (attention included) for some model configs."""
    rows = []
    for name, cfg in names_and_configs:
        fc = count_flops(cfg, n_tokens)
        rows.append([name, f"{fc.n_params:,}", f"{fc.n_params_total:,}", f"{fc.flops_per_token_6n:.4g}",
                     f"{fc.flops_per_token:,}", f"{fc.attention_flops_per_token / fc.flops_per_token:.1%}",
                     f"{fc.ratio:.3f}"])
    return format_table(["model", "N (no input emb.)", "N total", "6N FLOPs/token", "exact FLOPs/token",
                         "attention share", "exact/6ND"], rows)


# ---------------------------------------------------------------- reproduction on published data

@dataclasses.dataclass(frozen=True)
class ReproduceConfig:
    data_dir: str = dataclasses.field(default="../shared/data/scaling",
                                      metadata={"help": f"folder with {CHINCHILLA_FILE} and {ISOFLOPS_FILE}"})
    out: str = dataclasses.field(default="runs/scaling", metadata={"help": "where PNGs and results.json go"})
    isoflop_bootstrap: int = dataclasses.field(default=1000, metadata={"help": "IsoFLOP bootstrap resamples"})
    predict_at: tuple[float, ...] = dataclasses.field(default=(1e23, 1e24), metadata={"help": "budgets to predict at"})
    extrapolate_to: float = 1e24
    seed: int = 0
    parametric: ParametricConfig = dataclasses.field(default_factory=ParametricConfig)

    def __post_init__(self):
        if self.isoflop_bootstrap < 0:
            raise ValueError(f"isoflop_bootstrap must be >= 0, got {self.isoflop_bootstrap}")
        if any(not c > 0 for c in self.predict_at):
            raise ValueError(f"predict_at budgets must be positive, got {self.predict_at}")


def reproduce(config: ReproduceConfig = ReproduceConfig(), progress: bool = True) -> dict:
    """Fit both approaches to the published data, write PNGs and results.json; returns
    {"isoflop": {method: IsoFlopFit}, "parametric": ParametricFit, "report": str, "files": [...]}."""
    from lm.scaling.plots import plot_isoflop_profiles, plot_optimal_scaling, plot_parametric_contours

    chinchilla, isoflops = load_published(config.data_dir)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    say = print if progress else (lambda *a, **k: None)
    sections = []

    iso = {}
    for method in ("argmin", "parabola"):
        t0 = time.perf_counter()
        iso[method] = fit_isoflop(isoflops, method, config.isoflop_bootstrap, config.seed)
        say(f"IsoFLOP fit ({method}, {config.isoflop_bootstrap} resamples): {time.perf_counter() - t0:.1f} s")
    rows = []
    for method, fit in iso.items():
        pub_n, pub_d, pub_pred = PUBLISHED_ISOFLOP[method]
        rows.append([method, "N_opt", f"{fit.n_opt}{_ci(fit.alpha_ci)}", str(pub_n)])
        rows.append([method, "D_opt", f"{fit.d_opt}{_ci(fit.beta_ci)}", str(pub_d) if pub_d else "-"])
        for c in config.predict_at:
            p = fit.predict(c)
            pub = pub_pred.get(c)
            rows.append([method, f"N_opt({c:.0e})", f"{p.n_opt:.3g}{_ci(p.n_opt_ci)}", f"{pub[0]:.3g}" if pub else "-"])
            rows.append([method, f"D_opt({c:.0e})", f"{p.d_opt:.3g}{_ci(p.d_opt_ci)}", f"{pub[1]:.3g}" if pub else "-"])
    sections.append(f"## Approach 2: IsoFLOP profiles (CS336 data, {len(isoflops)} runs, "
                    f"{len(iso['parabola'].profiles)} budgets; 95% bootstrap CI on exponents and predictions)\n\n"
                    + format_table(["method", "quantity", "ours", "published"], rows))

    t0 = time.perf_counter()
    par = _fit_parametric(chinchilla, config.parametric)
    say(f"parametric fit ({par.n_starts} starts, {config.parametric.n_bootstrap} resamples): "
        f"{time.perf_counter() - t0:.1f} s")
    law = par.law
    epoch, replicate = PUBLISHED_LAWS["Epoch 2024 (Table 1)"], PUBLISHED_LAWS["Epoch grid L-BFGS"]
    hoffmann = PUBLISHED_LAWS["Hoffmann 2022 (unrounded)"]
    rows = []
    for name in ("E", "A", "B", "alpha", "beta", "a"):
        ours = getattr(law, name)
        ci = par.intervals.get(name) if par.intervals else None
        pub_ci = EPOCH_CI95.get(name)
        rows.append([name, f"{ours:.4g}{_ci(ci)}", f"{getattr(replicate, name):.4g}",
                     f"{getattr(epoch, name):.4g}" + (f" ({pub_ci[0]:.4g}, {pub_ci[1]:.4g})" if pub_ci else ""),
                     f"{getattr(hoffmann, name):.4g}"])
    for c in config.predict_at:
        p = par.predict(c)
        pub = EPOCH_OPTIMA.get(c)
        rows.append([f"N_opt({c:.0e})", f"{p.n_opt:.3g}{_ci(p.n_opt_ci)}", "-", f"{pub[0]:.3g}" if pub else "-",
                     f"{hoffmann.optimal(c)[0]:.3g}"])
        rows.append([f"D_opt({c:.0e})", f"{p.d_opt:.3g}{_ci(p.d_opt_ci)}", "-", f"{pub[1]:.3g}" if pub else "-",
                     f"{hoffmann.optimal(c)[1]:.3g}"])
    chin = 5.76e23
    rows.append([f"D/N at {chin:.3g}", f"{predict(chin, par).tokens_per_param:.1f}", "-",
                 f"{predict(chin, epoch).tokens_per_param:.1f}", f"{predict(chin, hoffmann).tokens_per_param:.1f}"])
    sections.append("## Approach 3: L(N, D) = E + A/N^alpha + B/D^beta (Chinchilla Fig. 4 via Epoch, "
                    f"{len(chinchilla)} points; Huber delta {config.parametric.delta:g}, L-BFGS from {par.n_starts} "
                    f"starts, objective {par.objective:.6g}; 95% bootstrap CI, {config.parametric.n_bootstrap} "
                    "resamples)\n\n"
                    + format_table(["quantity", "ours", "Epoch grid L-BFGS", "Epoch Table 1 (bootstrap 95% CI)",
                                    "Hoffmann (unrounded)"], rows))

    from lm.model import PRESETS

    sections.append("## FLOP accounting (per token; 6ND vs exact with attention)\n\n"
                    + flops_table(sorted(PRESETS.items())))

    files = [
        plot_isoflop_profiles(isoflops, iso["parabola"], out / "isoflop_profiles.png",
                              "IsoFLOP profiles (CS336 data)"),
        plot_optimal_scaling(iso["parabola"], out / "isoflop_optimal_parabola.png", config.extrapolate_to,
                             config.predict_at, title="IsoFLOP optima, parabola vertex (CS336 data)"),
        plot_optimal_scaling(iso["argmin"], out / "isoflop_optimal_argmin.png", config.extrapolate_to,
                             config.predict_at, title="IsoFLOP optima, best run per budget (CS336 data)"),
        plot_parametric_contours(chinchilla, law, out / "parametric_contours.png",
                                 "Parametric fit to Chinchilla Fig. 4 (Epoch's digitisation)"),
    ]
    report = "\n\n".join(sections)
    results = {
        "isoflop": {m: {"n_opt": dataclasses.asdict(f.n_opt), "d_opt": dataclasses.asdict(f.d_opt),
                        "alpha_ci": _asdict(f.alpha_ci), "beta_ci": _asdict(f.beta_ci),
                        "profiles": [dataclasses.asdict(p) for p in f.profiles]} for m, f in iso.items()},
        "parametric": {"law": dataclasses.asdict(law), "objective": par.objective,
                       "intervals": {k: _asdict(v) for k, v in (par.intervals or {}).items()}},
        "config": to_dict(config),
    }
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "report.md").write_text(report + "\n")
    return {"isoflop": iso, "parametric": par, "report": report, "files": [*files, str(out / "results.json")]}


def _asdict(x):
    return None if x is None else dataclasses.asdict(x)


# ---------------------------------------------------------------- our own IsoFLOP sweep

@dataclasses.dataclass(frozen=True)
class SweepConfig:
    """An IsoFLOP sweep with our trainer. Budgets are in FLOPs under C = 6ND."""

    out: str = dataclasses.field(default="runs/scaling-sweep", metadata={"help": "sweep directory"})
    budgets: tuple[float, ...] = dataclasses.field(default=(3e11, 1e12, 3e12), metadata={"help": "compute budgets"})
    data: str = dataclasses.field(default="", metadata={"help": "raw text (default: the embedded corpus)"})
    tokens: str = dataclasses.field(default="", metadata={"help": "directory with train.npy [val.npy]"})
    vocab_size: int = 1024  # small, so the output head does not dwarf the tiny models
    context_length: int = 128
    batch_size: int = 16
    lr: float = 3e-3
    warmup_fraction: float = 0.05
    min_steps: int = 30
    max_steps: int = 20_000
    min_sizes: int = 4
    min_tokens_per_param: float = 2.0  # sizes outside this D/N window are not trained
    max_tokens_per_param: float = 200.0
    shapes: tuple[str, ...] = dataclasses.field(
        default=(), metadata={"flag": "--shape", "help": "model shape D_MODELxLAYERSxHEADS, e.g. 64x2x2 "
                                                         "(default: lm.scaling.sweep.DEFAULT_SHAPES)"})
    eval_batches: int = dataclasses.field(default=0, metadata={"help": "validation batches (0: whole split)"})
    isoflop_bootstrap: int = 1000
    verify: bool = dataclasses.field(default=True, metadata={"help": "train the 10x-budget prediction"})
    seed: int = 0
    parametric: ParametricConfig = dataclasses.field(default_factory=ParametricConfig)

    def __post_init__(self):
        self.shape_tuples()  # fail early on a malformed --shape
        if not self.budgets or any(not c > 0 for c in self.budgets):
            raise ValueError(f"budgets must be positive FLOP counts, got {self.budgets}")
        if len(set(self.budgets)) < 2:
            raise ValueError("an IsoFLOP sweep needs at least 2 distinct budgets (3 or more recommended)")
        if not 0 <= self.warmup_fraction < 1:
            raise ValueError(f"warmup_fraction must be in [0, 1), got {self.warmup_fraction}")

    def shape_tuples(self) -> tuple[tuple[int, int, int], ...]:
        """(d_model, n_layers, n_heads) per shape."""
        from lm.scaling.sweep import DEFAULT_SHAPES

        if not self.shapes:
            return DEFAULT_SHAPES
        out = []
        for text in self.shapes:
            parts = text.lower().split("x")
            if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
                raise ValueError(f"shape {text!r} must be D_MODELxLAYERSxHEADS with positive integers, e.g. 64x2x2")
            out.append(tuple(int(p) for p in parts))
        return tuple(out)


def _base_model(config: SweepConfig):
    from lm.model import ModelConfig

    return ModelConfig(vocab_size=config.vocab_size, context_length=config.context_length)


def _pretrain_config(run, config: SweepConfig, peak_flops: float):
    from experiments.pretrain import PretrainConfig
    from lm.optim import OptimizerConfig

    return PretrainConfig(
        model=run.model, steps=run.steps, batch_size=config.batch_size, seed=config.seed,
        optim=OptimizerConfig(lr=config.lr, warmup_steps=max(1, round(config.warmup_fraction * run.steps))),
        eval_every=run.steps, eval_batches=config.eval_batches, log_every=max(1, run.steps // 20),
        save_every=max(1, run.steps // 2), peak_flops=peak_flops, data=config.data, tokens=config.tokens,
        out=str(Path(config.out) / "runs"), name=run.name, resume=True, sample_tokens=0)


# Training settings every run of one sweep directory shares. Run names carry the
# budget, shape and step count, not these, so a changed setting needs a new --out.
RUN_SETTINGS = ("data", "tokens", "vocab_size", "context_length", "batch_size", "lr", "warmup_fraction",
                "eval_batches", "seed")


def _check_settings(out: Path, config: SweepConfig) -> None:
    settings = {k: getattr(config, k) for k in RUN_SETTINGS}
    path = out / "settings.json"
    if not path.is_file():
        path.write_text(json.dumps(settings, indent=2))
        return
    old = json.loads(path.read_text())
    changed = {k: (old.get(k), v) for k, v in settings.items() if old.get(k) != v}
    if changed:
        what = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changed.items())
        raise ValueError(f"{out} holds runs trained with other settings ({what}); "
                         "use a new --out, or delete that directory to retrain")


def train_planned(plan, config: SweepConfig, progress: bool = True, trainer=None) -> list[dict]:
    """Train every planned run not yet in `out/sweep.jsonl`; returns all records, in plan order.

    A record is appended as soon as a run finishes, so an interrupted sweep
    resumes at the first unfinished run (and that run from its last checkpoint).
    `trainer(PretrainConfig, progress=...) -> {"val_loss": ...}` defaults to
    `experiments.pretrain.pretrain`; tests swap in a synthetic one."""
    from tqdm.auto import tqdm

    if trainer is None:
        from experiments.pretrain import pretrain as trainer

    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    _check_settings(out, config)
    log = out / "sweep.jsonl"
    done = {}
    if log.is_file():
        for line in log.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                done[r["name"]] = r
    todo = [r for r in plan if r.name not in done]
    peak = 0.0
    if todo:
        from lm.train.mfu import device_peak_flops

        peak = device_peak_flops()[0]  # once, not once per run
    bar = tqdm(total=len(plan), initial=len(plan) - len(todo), desc="sweep", unit="run", disable=not progress,
               dynamic_ncols=True)
    try:
        for run in todo:
            bar.set_postfix_str(run.name)
            run_dir = Path(config.out) / "runs" / run.name
            run_dir.mkdir(parents=True, exist_ok=True)
            t0 = time.perf_counter()
            with open(run_dir / "stdout.txt", "a") as f, contextlib.redirect_stdout(f):
                result = trainer(_pretrain_config(run, config, peak), progress=False)
            if result["val_loss"] is None:
                raise ValueError(f"run {run.name} finished without a validation loss; delete {run_dir} and rerun")
            record = {"name": run.name, "compute": run.compute, "n_params": run.n_params,
                      "n_params_total": run.model.num_params(), "n_tokens": run.n_tokens, "steps": run.steps,
                      "flops_6nd": run.flops_6nd, "flops_exact": run.exact_flops, "val_loss": result["val_loss"],
                      "seconds": time.perf_counter() - t0, "model": to_dict(run.model)}
            with open(log, "a") as f:
                f.write(json.dumps(record) + "\n")
            done[run.name] = record
            bar.update(1)
            bar.write(f"{run.name}: N={run.n_params:,} D={run.n_tokens:,} loss {record['val_loss']:.4f} "
                      f"({record['seconds']:.0f} s)")
    finally:
        bar.close()
    return [done[r.name] for r in plan]


def records_to_runs(records: list[dict]) -> Runs:
    """Runs labelled by planned budget (the IsoFLOP grouping) with the tokens actually trained on."""
    return Runs(n_params=[r["n_params"] for r in records], n_tokens=[r["n_tokens"] for r in records],
                compute=[r["compute"] for r in records], loss=[r["val_loss"] for r in records])


def sweep(config: SweepConfig = SweepConfig(), progress: bool = True, trainer=None) -> dict:
    """The whole sweep: train (resumably), fit both approaches, predict at 10x and 100x the
    largest budget, train the 10x prediction (if `config.verify`), plot and write report.md."""
    from lm.scaling.plots import plot_isoflop_profiles, plot_optimal_scaling, plot_parametric_contours
    from lm.scaling.sweep import nearest_shape, plan_run, plan_sweep

    base = _base_model(config)
    shapes = config.shape_tuples()
    plan = plan_sweep(config.budgets, base, shapes, batch_size=config.batch_size, min_steps=config.min_steps,
                      max_steps=config.max_steps, min_sizes=config.min_sizes,
                      tokens_per_param=(config.min_tokens_per_param, config.max_tokens_per_param))
    records = train_planned(plan, config, progress, trainer)
    runs = records_to_runs(records)
    # Tiny-model profiles can miss their minimum (the grid is coarse); such a budget
    # would pin the power law to an extrapolated vertex, so it is left out and reported.
    iso = fit_isoflop(runs, "parabola", config.isoflop_bootstrap, config.seed, bracketed_only=True)
    par = _fit_parametric(runs, config.parametric)
    top = max(config.budgets)
    targets = (10 * top, 100 * top)
    preds = {c: (iso.predict(c), par.predict(c)) for c in targets}

    out = Path(config.out)
    sections = [f"## Runs ({len(records)}; budgets in FLOPs under C = 6ND, exact count beside it)\n\n" + format_table(
        ["run", "N", "N total", "D", "steps", "6ND", "exact FLOPs", "val loss", "seconds"],
        [[r["name"], f"{r['n_params']:,}", f"{r['n_params_total']:,}", f"{r['n_tokens']:,}", str(r["steps"]),
          f"{r['flops_6nd']:.3g}", f"{r['flops_exact']:.3g}", f"{r['val_loss']:.4f}", f"{r['seconds']:.0f}"]
         for r in records])]
    sections.append("## Fits\n\n" + format_table(["fit", "value"], [
        ["IsoFLOP N_opt(C)", f"{iso.n_opt}{_ci(iso.alpha_ci)}"],
        ["IsoFLOP D_opt(C)", f"{iso.d_opt}{_ci(iso.beta_ci)}"],
        ["parametric", str(par.law)],
        *[[f"parametric {k}", str(v)] for k, v in (par.intervals or {}).items()],
        *[[f"profile C={p.compute:.3g}", f"N_opt {p.n_opt:.3g}, D_opt {p.d_opt:.3g}, loss {p.loss_opt:.4f}"
           + ("" if p.bracketed else f" (not bracketed by the sampled [{p.n_min:.3g}, {p.n_max:.3g}]: left out)")]
          for p in sorted([*iso.profiles, *iso.dropped], key=lambda p: p.compute)]]))
    sections.append("## Predictions\n\n" + format_table(["budget", "approach", "prediction"], [
        [f"{c:.3g} ({c / top:.0f}x)", src, str(p)]
        for c, pair in preds.items() for src, p in zip(("IsoFLOP", "parametric"), pair)]))

    verification = None
    if config.verify:
        c10 = targets[0]
        n_target = preds[c10][1].n_opt  # the parametric law also predicts the loss we will compare to
        model = nearest_shape(n_target, base, shapes)
        run = plan_run(c10, model, config.batch_size)
        run = dataclasses.replace(run, name="verify-" + run.name)
        measured = train_planned([run], config, progress, trainer)[0]
        predicted = float(par.law.loss(run.n_params, run.n_tokens))
        verification = {"compute": c10, "n_target": n_target, "isoflop_n_opt": preds[c10][0].n_opt,
                        "n_params": run.n_params, "n_tokens": run.n_tokens, "predicted_loss": predicted,
                        "predicted_loss_at_optimum": preds[c10][1].loss, "measured_loss": measured["val_loss"],
                        "run": run.name}
        sections.append("## 10x budget: predicted vs measured\n\n" + format_table(["quantity", "value"], [
            ["budget", f"{c10:.3g} FLOPs"],
            ["predicted N_opt (parametric / IsoFLOP)", f"{n_target:.3g} / {preds[c10][0].n_opt:.3g}"],
            ["trained (nearest shape)", f"d{model.d_model}-L{model.n_layers}: N={run.n_params:,}, D={run.n_tokens:,}"],
            ["predicted loss L(N, D)", f"{predicted:.4f}"],
            ["predicted loss at the optimum", f"{preds[c10][1].loss:.4f}{_ci(preds[c10][1].loss_ci)}"],
            ["measured validation loss", f"{measured['val_loss']:.4f}"],
            ["error", f"{measured['val_loss'] - predicted:+.4f} nats ({(measured['val_loss'] / predicted - 1):+.1%})"],
        ]))

    files = [
        plot_isoflop_profiles(runs, iso, out / "isoflop_profiles.png", "IsoFLOP profiles (our sweep)"),
        plot_optimal_scaling(iso, out / "optimal_scaling.png", 100 * top, targets, law=par.law,
                             title="Compute-optimal allocation (our sweep)"),
        plot_parametric_contours(runs, par.law, out / "parametric_contours.png", "Parametric fit (our sweep)"),
    ]
    report = "\n\n".join(sections)
    (out / "report.md").write_text(report + "\n")
    return {"records": records, "isoflop": iso, "parametric": par, "predictions": preds,
            "verification": verification, "report": report, "files": [*files, str(out / "report.md")]}


# ---------------------------------------------------------------- command line

def _parser(cls, prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dataclass_args(parser, cls)
    return parser


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv[:1] == ["sweep"]:
            args = _parser(SweepConfig, "python -m experiments.scaling sweep").parse_args(argv[1:])
            config = dataclass_from_args(SweepConfig, args)
            print(format_config(config))
            result = sweep(config)
        else:
            args = _parser(ReproduceConfig, "python -m experiments.scaling [sweep]").parse_args(argv)
            config = dataclass_from_args(ReproduceConfig, args)
            result = reproduce(config)
    except (ValueError, FileNotFoundError, FloatingPointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print()
    print(result["report"])
    print("\nwrote " + ", ".join(result["files"]))
    return 0


if __name__ == "__main__":
    prepare_process()
    sys.exit(main())
