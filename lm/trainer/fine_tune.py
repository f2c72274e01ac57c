"""The plan for fine-tuning existing parameters with any step (SFT, DPO, GRPO) on `config.parallel`'s mesh,
all of them or LoRA adapters only.

    plan = fine_tune_plan(functools.partial(sft_train_step, config=tc), tc, params)
    state = plan.init(params)                   # a TrainState around params, sharded by the rules table
    state, metrics = plan.train_step(state, plan.put_batch(batch))
    plan.policy(state.params)                   # the model's params (here: state.params itself)

    plan = fine_tune_plan(step, tc, params, lora=LoRAConfig(rank=8, targets=("q", "v")))
    state = plan.init(params)                   # TrainState(step, adapters, optimizer state of the adapters)
    plan.policy(state.params)                   # the base with the adapters merged: sample, evaluate, export

With `lora`, the state's params are the adapters (`lm.model.lora.init_lora`) and the optimizer
state is theirs alone; the base `params` is frozen: placed once on the mesh by the rules table
(FSDP / tensor sharding as in full fine-tuning) and passed to every step as an argument, never
donated or updated. The step sees the merged weights through its `params_view` argument
(`lm.model.lora.merge` on the base), so the same step functions train either way, and gradients
reach only the adapters. The adapters and their optimizer state are small and replicated over
the mesh (XLA all-reduces their gradients over the data-like axes). Checkpoints of such a state
hold the adapters; `lm.train.lora` keeps the base beside them so the run loads as a merged policy.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
from jax.sharding import NamedSharding, PartitionSpec

from lm.config import to_dict
from lm.model import logical_axes
from lm.model.lora import LoRAConfig, init_lora, merge
from lm.parallel.mesh import make_mesh, mesh_sizes
from lm.parallel.plan import Plan, make_plan
from lm.parallel.rules import check_model, param_specs
from lm.parallel.sharding import activation_sharding, batch_sharding, replicated
from lm.train.config import TrainConfig
from lm.train.lora import save_base
from lm.train.step import fine_tune_state
from lm.trainer.loop import RunOptions, TrainResult
from lm.trainer.run_dir import has_checkpoints, prepare_run


def _identity(params):
    return params


@dataclasses.dataclass(frozen=True)
class FineTunePlan(Plan):
    """A Plan whose state's params may be LoRA adapters. policy: state.params -> the model's params
    (the identity, or the merge into `base`); base: the frozen parameters on the mesh (None without LoRA)."""

    policy: Callable = _identity
    base: Any = None
    lora: LoRAConfig | None = None


@dataclasses.dataclass
class FineTuneResult(TrainResult):
    """A fit's result with the tuned model's params: `state.params`, or with LoRA the base with the
    adapters merged (what sampling, evaluation, the next stage and export read)."""

    params: Any = None

    @classmethod
    def of(cls, result: TrainResult, plan: FineTunePlan) -> FineTuneResult:
        fields = {f.name: getattr(result, f.name) for f in dataclasses.fields(TrainResult)}
        return cls(**fields, params=plan.policy(result.state.params))


def lora_key(config: TrainConfig) -> jax.Array:
    """The adapters' init key: from the run's seed, so a resumed or repeated run starts from the same A."""
    return jax.random.fold_in(jax.random.PRNGKey(config.seed), 0x10A)


def fine_tune_plan(step_fn: Callable, config: TrainConfig, params, eval_fn: Callable | None = None,
                   devices=None, lora: LoRAConfig | None = None) -> FineTunePlan:
    """Jit `step_fn(state, batch)` (and `eval_fn(params, batch)`) for the mesh of `config.parallel`
    (one device by default); `params` (arrays or their shapes) fixes the state's shardings.

    With `lora`, `params` must be arrays (the frozen base) and the step is called as
    `step_fn(state, batch, params_view=view)` with `view(adapters)` the merged params; `eval_fn`
    gets the merged params."""
    mesh = make_mesh(config.parallel, devices)
    check_model(config.model, mesh_sizes(mesh))
    logical = logical_axes(config.model)
    if lora is None:
        plan = make_plan(functools.partial(fine_tune_state, config=config), step_fn, eval_fn, logical=logical,
                         mesh=mesh, example=(params,), batch_size=config.batch_size, grad_accum=config.grad_accum)
        return FineTunePlan(**{f.name: getattr(plan, f.name) for f in dataclasses.fields(Plan)})
    return _lora_plan(step_fn, config, params, eval_fn, mesh, logical, lora)


def _lora_plan(step_fn, config: TrainConfig, params, eval_fn, mesh, logical, lora: LoRAConfig) -> FineTunePlan:
    base_shardings = jax.tree.map(lambda s: NamedSharding(mesh, s), param_specs(logical, params, mesh_sizes(mesh)),
                                  is_leaf=lambda x: isinstance(x, PartitionSpec))
    # Never donated, so the caller's arrays can be the base as they are (device_put copies only to move them).
    base = jax.device_put(params, base_shardings)
    key = lora_key(config)

    def init_fn(base):  # reads only the base's shapes
        return fine_tune_state(init_lora(base, lora, key), config)

    adapters = jax.eval_shape(init_fn, base).params
    replicate = jax.tree.map(lambda _: PartitionSpec(), adapters)  # rank-r factors: small, kept whole everywhere
    plan = make_plan(init_fn, step_fn, None, logical=replicate, mesh=mesh, example=(base,),
                     batch_size=config.batch_size, grad_accum=config.grad_accum)
    view = functools.partial(merge, config=lora)
    rep, state_shardings = replicated(mesh), plan.state_shardings

    def step(state, base, batch):
        with activation_sharding(mesh):
            return step_fn(state, batch, params_view=lambda a: view(base, a))

    train = jax.jit(step, in_shardings=(state_shardings, base_shardings, batch_sharding(mesh)),
                    out_shardings=(state_shardings, rep), donate_argnums=0)
    evaluate = None
    if eval_fn is not None:
        def evaluate_merged(adapters, base, batch):
            with activation_sharding(mesh):
                return eval_fn(view(base, adapters), batch)

        evaluate_jit = jax.jit(evaluate_merged, in_shardings=(state_shardings.params, base_shardings, None),
                               out_shardings=rep)
        evaluate = lambda adapters, batch: evaluate_jit(adapters, base, batch)  # noqa: E731
    merged = jax.jit(view, out_shardings=base_shardings)
    fields = {f.name: getattr(plan, f.name) for f in dataclasses.fields(Plan)}
    return FineTunePlan(**{**fields, "train_step": lambda state, batch: train(state, base, batch),
                           "eval_step": evaluate, "description": f"{plan.description}, LoRA r={lora.rank}"},
                        policy=lambda adapters: merged(base, adapters), base=base, lora=lora)


def lora_record(record: dict, lora: LoRAConfig | None, run_dir: str | os.PathLike | None, base,
                options: RunOptions) -> dict:
    """The run's record (the config `fit` saves) with {"lora": config} for a LoRA run, whose frozen base
    is then written into `run_dir` (`lm.train.lora.save_base`; checked against the saved one when
    resuming checkpoints), so that the checkpoints load as a merged policy. The run directory is
    checked first (`prepare_run`), so a refused run writes nothing. Without LoRA: `record` as it is."""
    if lora is None:
        return record
    if run_dir is not None and options.checkpoints:
        prepare_run(run_dir, resume=options.resume, overwrite=options.overwrite, write=False)
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        save_base(run_dir, base, keep=options.resume and has_checkpoints(Path(run_dir)))
    return {**record, "lora": to_dict(lora)}
