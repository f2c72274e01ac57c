"""The training driver: one loop for every kind of training (pretraining, SFT, DPO, GRPO).

    loop = Loop(step=plan.train_step, batches=lambda start: my_batches(start), evaluate=my_eval)
    result = fit(loop, state, train_config, "runs/x", record={"train": to_dict(train_config)})
    result.state, result.history, result.final_eval

A kind of training brings only what is its own: a step function `(state, batch) -> (state,
metrics)`, the batches for steps start, start + 1, ... (so a resumed run sees the batches an
uninterrupted one would), and an evaluation `state -> {name: number}`. The driver owns the rest:
the run directory's guard rails (lm.trainer.run_dir), the metrics log (JSONL, TensorBoard, the
progress bar with loss, tokens/s, MFU and ETA), the NaN/inf guard, evaluation every
`eval_every` steps, periodic and final checkpoints with exact resume, and reading each step's
metrics one step late, so that the host dispatches step t + 1 before it waits on step t.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jax

from lm.config import to_dict
from lm.train.checkpoint import checkpoint_manager, restore_checkpoint, save_checkpoint
from lm.train.config import TrainConfig
from lm.trainer.log import MetricsLog, read_history
from lm.trainer.run_dir import prepare_run


@dataclasses.dataclass(frozen=True)
class Loop:
    """What one kind of training gives the driver."""

    step: Callable  # (state, batch) -> (state, metrics: {name: scalar}); may donate the state
    batches: Callable[[int], Iterator]  # start step -> the batches of steps start, start + 1, ...
    evaluate: Callable | None = None  # state -> {name: float}; every eval_every steps and at the end
    name: str = "training"
    tokens_per_step: int = 0  # for tokens/s (0: not reported)
    flops_per_step: float = 0.0  # model FLOPs of one step, for MFU (0: not reported)
    peak_flops: float = 0.0  # the devices' peak FLOP/s, for MFU
    finite: tuple[str, ...] = ("loss", "param_norm")  # metrics that must stay finite
    bar_keys: tuple[str, ...] = ("loss", "tokens_per_s", "mfu")
    eval_at_start: bool = False  # also evaluate before the first step of a fresh run
    metrics_file: str = "metrics.jsonl"  # in the run directory


@dataclasses.dataclass(frozen=True)
class RunOptions:
    resume: bool = False  # continue from the run's latest checkpoint
    overwrite: bool = False  # delete the run's checkpoints and start again
    allow_data_change: bool = False  # resume onto data whose fingerprint differs
    progress: bool = True
    stop_after: int | None = None  # end this call at that step, with a checkpoint, as a preemption would
    checkpoints: bool = True  # False: no checkpoints at all (and so no resume)


@dataclasses.dataclass
class TrainResult:
    run_dir: Path | None
    history: list[dict]  # one dict per logged step or evaluation, those before a resume included
    state: Any  # the final TrainState
    final_eval: dict  # the last evaluation's numbers ({} when there was none)
    resumed_from: int | None = None  # the checkpoint step this call continued from
    complete: bool = False  # the run had already reached its last step: nothing was trained

    @property
    def final_val_loss(self) -> float | None:
        return self.final_eval.get("val_loss")

    @property
    def final_val_perplexity(self) -> float | None:
        return None if self.final_val_loss is None else math.exp(self.final_val_loss)


class _NonFinite(FloatingPointError):
    pass


class _Meter:
    """Reads a step's metrics (late), stops on NaN/inf, and logs every `log_every` steps with throughput."""

    def __init__(self, loop: Loop, log: MetricsLog, log_every: int, total: int):
        self.loop, self.log, self.log_every, self.total = loop, log, log_every, total
        self.t0, self.steps = time.perf_counter(), 0

    def read(self, step: int, metrics) -> dict:
        m = {k: float(v) for k, v in jax.device_get(metrics).items()}
        self.steps += 1
        for key in self.loop.finite:
            if key in m and not math.isfinite(m[key]):
                raise _NonFinite(step, key, m[key])
        if step % self.log_every == 0 or step == self.total:
            self.log.write({"step": step, **m, **self._throughput()})
        return m

    def _throughput(self) -> dict:
        now = time.perf_counter()
        steps_s = self.steps / max(now - self.t0, 1e-9)
        self.t0, self.steps = now, 0
        out = {}
        if self.loop.tokens_per_step:
            out["tokens_per_s"] = steps_s * self.loop.tokens_per_step
        if self.loop.flops_per_step and self.loop.peak_flops:
            out["mfu"] = steps_s * self.loop.flops_per_step / self.loop.peak_flops
        return out


def _evaluate(loop: Loop, state, step: int, log: MetricsLog) -> dict:
    numbers = {k: float(v) for k, v in loop.evaluate(state).items()}
    log.write({"step": step, **numbers})
    log.message(f"step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in numbers.items()))
    return numbers


def _run_steps(loop: Loop, state, config: TrainConfig, start: int, end: int, log: MetricsLog, save) -> tuple:
    """Steps start..end-1: dispatch step t + 1, then read step t's metrics; read at once before any
    evaluation or checkpoint, so that neither ever sees a diverged state. Returns (state, final eval)."""
    meter, final = _Meter(loop, log, config.log_every, config.steps), {}
    batches, pending = loop.batches(start), None
    for step in range(start, end):
        state, metrics = loop.step(state, next(batches))
        if pending is not None:
            meter.read(*pending)
        pending, done = (step + 1, metrics), step + 1
        log.advance()
        evaluate = loop.evaluate is not None and ((config.eval_every and done % config.eval_every == 0)
                                                  or done == end)
        if evaluate or done % config.save_every == 0 or done == end:
            meter.read(*pending)
            pending = None
        if evaluate:
            final = _evaluate(loop, state, done, log)
        if done % config.save_every == 0 or done == end:
            save(done, state)
    return state, final


def _restore(manager, state, run_dir: Path, config: TrainConfig, record: dict):
    """(state, start step, saved config) from the latest checkpoint; the fresh state when there is none."""
    restored = restore_checkpoint(manager, state) if manager is not None else None
    if restored is None:
        print(f"no checkpoint to resume in {run_dir}; starting from step 0", flush=True)
        return state, 0, {}
    state, data_state, saved = restored
    start = int(data_state["next_index"])
    if start > config.steps:
        raise ValueError(f"{run_dir} has a checkpoint at step {start}, past the {config.steps} steps asked for; "
                         f"resume with --steps {start} or more (or start a new run)")
    print(f"resumed from step {start} of {run_dir}", flush=True)
    _report_changes(saved.get("train", {}), record.get("train", {}))
    return state, start, saved


def _report_changes(saved: dict, now: dict) -> None:
    """Print the optimizer settings and step count that differ from the checkpoint's config."""
    changes = [f"optim.{k} {v!r} -> {now.get('optim', {}).get(k)!r}" for k, v in saved.get("optim", {}).items()
               if now.get("optim", {}).get(k, v) != v]
    if saved.get("steps") not in (None, now.get("steps")):
        changes.append(f"steps {saved['steps']} -> {now.get('steps')}")
    if changes:
        print("changed since the checkpoint: " + "; ".join(changes), flush=True)


def _last_eval(history: list[dict]) -> dict:
    """The last evaluation in a history: evaluation records carry no training loss."""
    for r in reversed(history):
        if "loss" not in r:
            return {k: v for k, v in r.items() if k != "step"}
    return {}


def fit(loop: Loop, state, config: TrainConfig, run_dir: str | Path | None, *, record: dict | None = None,
        data: dict | None = None, options: RunOptions = RunOptions()) -> TrainResult:
    """Train `state` for `config.steps` steps of `loop`; see the module docstring.

    record: the run's config as JSON (saved in every checkpoint; default {"train": config}); data:
    the training data's fingerprint (lm.trainer.run_dir.data_fingerprint), checked on resume.
    `run_dir` None keeps everything in memory (no files, no checkpoints). Raises
    FloatingPointError on a NaN or infinite loss, naming the last good checkpoint.
    """
    main = jax.process_index() == 0
    record = record or {"train": to_dict(config)}
    if run_dir is not None:
        run_dir = Path(run_dir)
        prepare_run(run_dir, resume=options.resume, overwrite=options.overwrite, data=data, config=record,
                    allow_data_change=options.allow_data_change, write=main)
    manager = (checkpoint_manager(run_dir / "checkpoints", config.keep_checkpoints, config.async_checkpoints)
               if options.checkpoints and run_dir is not None else None)
    try:
        return _fit(loop, state, config, run_dir, record, options, manager, main)
    finally:
        if manager is not None:
            manager.wait_until_finished()
            manager.close()


def _fit(loop: Loop, state, config: TrainConfig, run_dir: Path, record: dict, options: RunOptions, manager,
         main: bool) -> TrainResult:
    start, resumed = 0, None
    if options.resume:
        state, start, _ = _restore(manager, state, run_dir, config, record)
        resumed = start or None
    if start == config.steps:
        history = read_history(run_dir / loop.metrics_file)
        print(f"{run_dir} is complete: it reached its last step ({start}); nothing to train "
              f"(raise --steps to train further)", flush=True)
        return TrainResult(run_dir, history, state, _last_eval(history), resumed, complete=True)
    files = main and run_dir is not None
    log = MetricsLog(run_dir / loop.metrics_file if files else None, config.steps, start, loop.name,
                     run_dir / "tensorboard" if config.tensorboard and files else None,
                     options.progress and main, loop.bar_keys)

    def save(step, state):
        if manager is not None:
            save_checkpoint(manager, step, state, {"next_index": step}, record)

    end = config.steps if options.stop_after is None else min(options.stop_after, config.steps)
    try:
        final = _evaluate(loop, state, 0, log) if loop.eval_at_start and start == 0 and loop.evaluate else {}
        state, last = _run_steps(loop, state, config, start, end, log, save)
    except _NonFinite as e:
        raise FloatingPointError(_nonfinite_message(e, manager, run_dir)) from None
    finally:
        log.close()
    return TrainResult(run_dir, log.history, state, last or final, resumed)


def _nonfinite_message(e: _NonFinite, manager, run_dir: Path) -> str:
    step, key, value = e.args
    if manager is not None:
        manager.wait_until_finished()
    kept = manager.latest_step() if manager is not None else None
    what = (f"the parameters became {value} at step {step} (the loss was still finite)" if key == "param_norm"
            else f"{key} became {value} at step {step}")
    where = (f"step {kept} in {run_dir / 'checkpoints'}" if kept is not None
             else "none (no checkpoint was saved yet)")
    return (f"{what}; training stopped. The last good checkpoint is {where}. "
            "Try a lower learning rate, more warmup, or gradient clipping.")
