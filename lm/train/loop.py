"""The training loop: data in, jitted steps, metrics, evaluation and checkpoints out.

The host never waits on the device between steps: step t+1 is dispatched
before step t's metrics are read (nanodo's pattern), and checkpoints save
asynchronously.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from lm.config import to_dict
from lm.data import TokenData, eval_batches, make_train_iterator
from lm.train.checkpoint import checkpoint_manager, restore_checkpoint, save_checkpoint
from lm.train.config import TrainConfig
from lm.train.mfu import device_peak_flops
from lm.train.plot import plot_losses
from lm.train.step import compiled_steps


@dataclasses.dataclass
class TrainResult:
    run_dir: Path
    history: list[dict]  # one dict per logged step or evaluation
    state: dict  # final train state (params, opt_state, step, rng)
    final_val_loss: float | None

    @property
    def final_val_perplexity(self) -> float | None:
        return None if self.final_val_loss is None else math.exp(self.final_val_loss)


def evaluate(params, data: np.ndarray, config: TrainConfig, plan=None) -> float:
    """Mean validation loss (nats/token) over `config.eval_batches` batches of the split.

    `plan` (lm.parallel.make_plan) evaluates sharded params; default: one device.
    """
    eval_fn, put = (compiled_steps(config)[1], np.asarray) if plan is None else (plan.eval_step, plan.put_eval_batch)
    limit = config.eval_batches or None
    total, tokens = 0.0, 0.0
    for batch in eval_batches(data, config.batch_size, config.model.context_length, limit):
        out = eval_fn(params, put(batch))
        total += float(out["nll_sum"])
        tokens += float(out["tokens"])
    return total / tokens


class _NonFiniteLoss(FloatingPointError):
    pass


def _tensorboard_writer(run_dir: Path):
    """A tensorboardX writer into run_dir/tensorboard (`tensorboard --logdir runs` reads it)."""
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        raise ImportError("tensorboard=True needs tensorboardX: pip install -e '.[tensorboard]' "
                          "(or leave tensorboard off; metrics.jsonl has the same numbers)") from None
    return SummaryWriter(str(run_dir / "tensorboard"))


def train(
    config: TrainConfig,
    data: TokenData,
    run_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    extra_config: dict | None = None,
    stop_after: int | None = None,
) -> TrainResult:
    """Train for `config.steps` steps (continuing a checkpoint when `resume`).

    `stop_after` ends this call early at that step, with a checkpoint, as a
    preemption would; the schedule still spans `config.steps`.

    Writes under `run_dir`: checkpoints/, metrics.jsonl, loss.png. Raises
    FloatingPointError on a NaN or infinite loss, keeping the last good checkpoint.
    """
    from tqdm.auto import tqdm

    from lm.parallel.plan import make_plan  # here, not at the top: lm.parallel imports lm.train

    plan = make_plan(config)  # one device by default; a mesh when config.parallel asks for one
    main = jax.process_index() == 0  # only process 0 of a multi-process run writes logs
    if plan.mesh is not None:
        index, count = plan.rows
        print(f"{plan.description} on {plan.mesh.size} devices; process {jax.process_index()} of "
              f"{jax.process_count()} reads rows {index}::{count} of every batch", flush=True)
    progress = progress and main
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    manager = checkpoint_manager(run_dir / "checkpoints", config.keep_checkpoints, config.async_checkpoints)
    config_record = {"train": to_dict(config), **(extra_config or {})}

    state = plan.init(jax.random.PRNGKey(config.seed))
    start = 0
    if resume:
        import shlex

        from lm.train.convert import saved_layout

        latest = manager.latest_step()
        if latest is not None and saved_layout(run_dir / "checkpoints" / str(latest)) == "legacy":
            manager.close()
            new = run_dir.with_name(f"{run_dir.name}-stacked")
            raise ValueError(
                f"{run_dir} was saved before the layers were stacked (checkpoint step {latest} holds "
                f"params['block_0'], ...), which training no longer reads. Convert it into a new run directory "
                f"with `python -m experiments.convert_checkpoint {shlex.quote(str(run_dir))} "
                f"{shlex.quote(str(new))}` and resume from {new} (the converter prints the full command: "
                f"`python -m experiments.pretrain --out {new.parent} --name {new.name} --resume true` plus this "
                f"run's other flags; from Python, train(config, data, {str(new)!r}, resume=True))")
        restored = restore_checkpoint(manager, state)
        if restored is None:
            print(f"no checkpoint in {run_dir / 'checkpoints'}; starting from step 0")
        else:
            state, data_state, _ = restored
            start = int(data_state["next_index"])
    train_fn = plan.train_step
    batches = make_train_iterator(data.train, config.batch_size, config.model.context_length, config.seed,
                                  start_step=start, num_steps=config.steps - start, shard=plan.rows)

    peak, peak_source = (config.peak_flops, "configured") if config.peak_flops else device_peak_flops(config.model.dtype)
    if plan.mesh is not None and not config.peak_flops:  # the measured peak is one device's
        peak, peak_source = peak * plan.mesh.size, f"{peak_source} x {plan.mesh.size} devices"
    flops_per_step = config.model.flops_per_token() * config.tokens_per_step
    log_path = run_dir / "metrics.jsonl"
    history: list[dict] = []
    if resume and log_path.exists():
        history = [h for h in map(json.loads, log_path.read_text().splitlines()) if h["step"] <= start]
    log_file = open(log_path, "w") if main else None
    tb = _tensorboard_writer(run_dir) if config.tensorboard and main else None
    for h in (history if main else ()):
        log_file.write(json.dumps(h) + "\n")

    def log(record: dict) -> None:
        history.append(record)
        if log_file is None:
            return
        log_file.write(json.dumps(record) + "\n")
        log_file.flush()
        if tb is not None:
            for k, v in record.items():
                if k != "step":
                    tb.add_scalar(k, v, record["step"])

    bar = tqdm(total=config.steps, initial=start, desc="training", unit="step", disable=not progress, dynamic_ncols=True)
    pending: tuple[int, Any] | None = None  # (step, metrics on device) not yet read
    window_t0, window_tokens = time.perf_counter(), 0
    final_val = None

    def pull(step: int, metrics) -> dict:
        m = {k: float(v) for k, v in jax.device_get(metrics).items()}
        if not (math.isfinite(m["loss"]) and math.isfinite(m["param_norm"])):
            raise _NonFiniteLoss(step, m["loss"] if not math.isfinite(m["loss"]) else "finite, but the parameters are not")
        return m

    end = config.steps if stop_after is None else min(stop_after, config.steps)
    try:
        for step in range(start, end):
            batch = plan.put_batch(next(batches))
            state, metrics = train_fn(state, batch)
            window_tokens += config.tokens_per_step
            if pending is not None:
                done_step, done_metrics = pending
                m = pull(done_step, done_metrics)
                if done_step % config.log_every == 0 or done_step == config.steps:
                    now = time.perf_counter()
                    tok_s = window_tokens / (now - window_t0)
                    window_t0, window_tokens = now, 0
                    record = {"step": done_step, **m, "tokens_per_s": tok_s, "mfu": tok_s / config.tokens_per_step * flops_per_step / peak}
                    log(record)
                    bar.set_postfix(loss=f"{m['loss']:.3f}", tok_s=f"{tok_s:,.0f}", mfu=f"{record['mfu']:.1%}")
            pending = (step + 1, metrics)
            bar.update(1)
            done = step + 1
            last = done == end
            if done % config.eval_every == 0 or done % config.save_every == 0 or last:
                m = pull(*pending)  # never save or evaluate a diverged state
                if last or done % config.log_every == 0:
                    log({"step": done, **m})
                pending = None
            if done % config.eval_every == 0 or last:
                final_val = evaluate(state["params"], data.val, config, plan)
                log({"step": done, "val_loss": final_val, "val_perplexity": math.exp(final_val)})
                bar.write(f"step {done}: validation loss {final_val:.4f}, perplexity {math.exp(final_val):.2f}")
            if done % config.save_every == 0 or last:
                save_checkpoint(manager, done, state, {"next_index": done}, config_record)
    except _NonFiniteLoss as e:
        step, value = e.args
        manager.wait_until_finished()
        kept = manager.latest_step()
        raise FloatingPointError(
            f"loss became {value} at step {step}; training stopped. The last good checkpoint is "
            f"{'step ' + str(kept) if kept is not None else 'none (no checkpoint was saved yet)'} in "
            f"{run_dir / 'checkpoints'}. Try a lower learning rate, more warmup, or gradient clipping."
        ) from None
    finally:
        bar.close()
        if log_file is not None:
            log_file.close()
        if tb is not None:
            tb.close()
        manager.wait_until_finished()
    if main:
        plot_losses(history, run_dir / "loss.png", title=f"{run_dir.name}")
        (run_dir / "peak_flops.json").write_text(json.dumps({"peak_flops": peak, "source": peak_source}))
    return TrainResult(run_dir=run_dir, history=history, state=state, final_val_loss=final_val)
