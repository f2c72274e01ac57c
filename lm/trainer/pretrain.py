"""Pretraining on the driver: next-token batches, held-out loss, and its plan for every strategy.

    result = train(config, data, "runs/x")                 # lm.data.TokenData -> TrainResult
    plan = pretrain_plan(config)                            # DP/FSDP/TP/pipeline/DDP/ZeRO-1 or one device
"""

from __future__ import annotations

import functools
import math
import shlex
from pathlib import Path

import jax
import numpy as np

from lm.config import to_dict
from lm.data import TokenData, eval_batches, make_train_iterator
from lm.model import logical_axes
from lm.parallel.ddp import ddp_train_step
from lm.parallel.mesh import make_mesh, mesh_sizes
from lm.parallel.plan import Plan, make_plan
from lm.parallel.rules import check_model, strategy_name
from lm.parallel.sharding import replicated
from lm.parallel.zero1 import check_zero1, zero1_state_shardings, zero1_train_step
from lm.train.checkpoint import checkpoint_manager
from lm.train.config import TrainConfig
from lm.train.convert import saved_layout
from lm.train.files import atomic_write_json
from lm.train.mfu import cached_peak_flops
from lm.train.pipeline import check_pipeline, pipeline_train_step
from lm.train.plot import plot_losses
from lm.train.step import apply_gradients, compute_grads, eval_step, init_state, train_step
from lm.trainer.loop import Loop, RunOptions, TrainResult, fit


def _step_and_shardings(config: TrainConfig, mesh, abstract):
    """(step_fn, state shardings or None for the rules table's, whether the step is its own shard_map)."""
    par, sizes = config.parallel, mesh_sizes(mesh)
    if sizes["pipe"] > 1:
        if sizes["fsdp"] > 1 or sizes["tensor"] > 1:
            raise ValueError("pipeline parallelism combines with the data axis only; set fsdp and tensor to 1")
        stages, micro = par.stages_microbatches(len(mesh.devices.flat))
        check_pipeline(config, stages, micro, sizes["data"])
        return functools.partial(pipeline_train_step, config=config, mesh=mesh, microbatches=micro), None, False
    grads = functools.partial(compute_grads, config=config)
    if par.mode == "ddp":
        apply = functools.partial(apply_gradients, config=config)
        return (functools.partial(ddp_train_step, grads_fn=grads, apply_fn=apply, mesh=mesh),
                jax.tree.map(lambda _: replicated(mesh), abstract), False)
    if par.mode == "zero1":
        check_zero1(config.optim)
        shardings = zero1_state_shardings(abstract, mesh)
        specs = jax.tree.map(lambda s: s.spec, shardings.opt_state)
        return (functools.partial(zero1_train_step, grads_fn=grads, optim=config.optim, total_steps=config.steps,
                                  mesh=mesh, opt_specs=specs), shardings, False)
    return functools.partial(train_step, config=config), None, True


@functools.lru_cache(maxsize=8)
def pretrain_plan(config: TrainConfig, devices: tuple | None = None) -> Plan:
    """The plan for `config.parallel` on `devices` (default: all; one device when nothing is parallel);
    raises ValueError naming what cannot shard. Cached, so runs of one config compile once."""
    mesh = make_mesh(config.parallel, devices)
    sizes = mesh_sizes(mesh)
    check_model(config.model, sizes)
    key = jax.ShapeDtypeStruct((2,), np.uint32)
    init_fn = functools.partial(init_state, config)
    step, shardings, constrain = _step_and_shardings(config, mesh, jax.eval_shape(init_fn, key))
    name = strategy_name(sizes) + ("" if config.parallel.mode == "jit" else f" ({config.parallel.mode}, shard_map)")
    if sizes["pipe"] > 1:
        name += f", {config.parallel.stages_microbatches(len(mesh.devices.flat))[1]} microbatches"
    return make_plan(init_fn, step, functools.partial(eval_step, config=config), logical=logical_axes(config.model),
                     mesh=mesh, example=(key,), batch_size=config.batch_size, grad_accum=config.grad_accum,
                     shardings=shardings, constrain_step=constrain, description=name)


def evaluate(params, data: np.ndarray, config: TrainConfig, plan: Plan | None = None) -> float:
    """Mean validation loss (nats/token) over `config.eval_batches` batches of the split."""
    plan = plan or pretrain_plan(config)
    total, tokens = 0.0, 0.0
    for batch in eval_batches(data, config.batch_size, config.model.context_length, config.eval_batches or None):
        out = plan.eval_step(params, plan.put_eval_batch(batch))
        total += float(out["nll_sum"])
        tokens += float(out["tokens"])
    return total / tokens


def check_resumable(run_dir: Path) -> None:
    """A run saved before the layers were stacked cannot be trained on: name the conversion command."""
    manager = checkpoint_manager(run_dir / "checkpoints", async_save=False)
    latest = manager.latest_step()
    manager.close()
    if latest is None or saved_layout(run_dir / "checkpoints" / str(latest)) != "legacy":
        return
    new = run_dir.with_name(f"{run_dir.name}-stacked")
    raise ValueError(
        f"{run_dir} was saved before the layers were stacked (checkpoint step {latest} holds "
        f"params['block_0'], ...), which training no longer reads. Convert it into a new run directory "
        f"with `python -m experiments.convert_checkpoint {shlex.quote(str(run_dir))} "
        f"{shlex.quote(str(new))}` and resume from {new} (the converter prints the full command: "
        f"`python -m experiments.pretrain --out {new.parent} --name {new.name} --resume true` plus this "
        f"run's other flags; from Python, train(config, data, {str(new)!r}, resume=True))")


def _peak(config: TrainConfig, plan: Plan, run_dir: Path) -> tuple[float, str]:
    if config.peak_flops:
        return config.peak_flops, "configured"
    peak, source = cached_peak_flops(config.model.dtype, run_dir.parent / "_cache" / "peak_flops.json")
    n = plan.mesh.size  # the measured or published peak is one device's
    return (peak * n, f"{source} x {n} devices") if n > 1 else (peak, source)


def pretrain_loop(config: TrainConfig, data: TokenData, plan: Plan, peak: float) -> Loop:
    def batches(start: int):
        rows = make_train_iterator(data.train, config.batch_size, config.model.context_length, config.seed,
                                   start_step=start, num_steps=config.steps - start, shard=plan.rows)
        return (plan.put_batch(b) for b in rows)

    def validation(state):
        loss = evaluate(state.params, data.val, config, plan)
        return {"val_loss": loss, "val_perplexity": math.exp(loss)}

    return Loop(plan.train_step, batches, validation, "training", config.tokens_per_step,
                config.model.flops_per_token() * config.tokens_per_step, peak)


def train(config: TrainConfig, data: TokenData, run_dir: str | Path, *, resume: bool = False,
          overwrite: bool = False, progress: bool = True, extra_config: dict | None = None,
          stop_after: int | None = None, fingerprint: dict | None = None,
          allow_data_change: bool = False) -> TrainResult:
    """Train for `config.steps` steps (continuing the latest checkpoint when `resume`).

    Writes under `run_dir`: checkpoints/, metrics.jsonl, loss.png, run.json. `stop_after` ends this
    call early at that step, with a checkpoint, as a preemption would. `fingerprint` describes the
    training data (lm.trainer.run_dir.data_fingerprint) and is checked on resume.
    """
    run_dir = Path(run_dir)
    plan = pretrain_plan(config)
    main = jax.process_index() == 0
    if plan.mesh.size > 1:
        index, count = plan.rows
        print(f"{plan.description} on {plan.mesh.size} devices; process {jax.process_index()} of "
              f"{jax.process_count()} reads rows {index}::{count} of every batch", flush=True)
    if resume:
        check_resumable(run_dir)
    peak, source = _peak(config, plan, run_dir)
    options = RunOptions(resume, overwrite, allow_data_change, progress, stop_after)
    result = fit(pretrain_loop(config, data, plan, peak), plan.init(jax.random.PRNGKey(config.seed)), config,
                 run_dir, record={"train": to_dict(config), **(extra_config or {})}, data=fingerprint,
                 options=options)
    if main and not result.complete:
        plot_losses(result.history, run_dir / "loss.png", title=run_dir.name)
        atomic_write_json(run_dir / "peak_flops.json", {"peak_flops": peak, "source": source}, indent=None)
    return result
