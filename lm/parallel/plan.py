"""A training plan: the mesh, the sharded init and the jitted steps for one TrainConfig.

    plan = make_plan(config)               # validates the config against the devices
    state = plan.init(key)                 # sharded from the start: jit(init, out_shardings=...)
    state, metrics = plan.train_step(state, plan.put_batch(rows))

`lm.train.train` uses a plan for every run. With the default ParallelConfig
(every axis 1) the plan is the original single-device path, unchanged.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable

import jax
import numpy as np
from jax.sharding import Mesh

from lm.model import logical_axes
from lm.parallel.ddp import ddp_train_step
from lm.parallel.mesh import make_mesh, mesh_sizes
from lm.parallel.pipeline import check_pipeline, pipeline_train_step
from lm.parallel.rules import check_model, strategy_name
from lm.parallel.sharding import activation_sharding, batch_sharding, replicated, state_shardings
from lm.parallel.zero1 import check_zero1, zero1_state_shardings, zero1_train_step
from lm.train.config import TrainConfig
from lm.train.step import compiled_steps, eval_step, init_state, train_step


@dataclasses.dataclass(frozen=True)
class Plan:
    config: TrainConfig
    mesh: Mesh | None  # None: the single-device path
    init: Callable  # key -> train state, placed as `state_shardings`
    train_step: Callable  # (state, global batch) -> (state, metrics); donates the state
    eval_step: Callable  # (params, global batch) -> {"nll_sum", "tokens"}
    state_shardings: Any = None
    rows: tuple[int, int] = (0, 1)  # this process reads rows index::count of every batch
    description: str = "single device"

    def place(self, state):
        """A train state made elsewhere (one device, a checkpoint) in this plan's shardings."""
        return state if self.mesh is None else jax.device_put(state, self.state_shardings)

    def put_batch(self, rows: np.ndarray) -> jax.Array:
        """This process's rows of a batch [batch / count, seq + 1] -> the global batch array."""
        if self.mesh is None:
            return rows
        sharding = batch_sharding(self.mesh)
        shape = (rows.shape[0] * self.rows[1], *rows.shape[1:])
        return jax.make_array_from_process_local_data(sharding, rows, shape)

    def put_eval_batch(self, batch: np.ndarray) -> jax.Array:
        """A whole batch every process holds (validation): split over the data axes when it divides."""
        if self.mesh is None:
            return batch
        sharding = batch_sharding(self.mesh)
        k = math.prod(mesh_sizes(self.mesh)[a] for a in ("data", "fsdp"))
        if batch.shape[0] % k:
            sharding = replicated(self.mesh)
        return jax.make_array_from_callback(batch.shape, sharding, lambda index: batch[index])


def process_rows(mesh: Mesh, batch_size: int) -> tuple[int, int]:
    """(index, count): this process's devices hold block `index` of `count` equal row blocks."""
    if jax.process_count() == 1:
        return 0, 1
    rows = batch_sharding(mesh).addressable_devices_indices_map((batch_size, 1))
    starts = sorted({(idx[0].start or 0) for idx in rows.values()})
    stops = sorted({(idx[0].stop or batch_size) for idx in rows.values()})
    lo, hi = starts[0], stops[-1]
    size = hi - lo
    if batch_size % size or lo % size or sum(b - a for a, b in zip(starts, stops)) != size:
        raise ValueError(f"process {jax.process_index()} holds rows {lo}..{hi} of the batch, not one equal block; "
                         "put the data-like mesh axes across processes (outermost)")
    return lo // size, batch_size // size


def check_batch(config: TrainConfig, sizes: dict[str, int]) -> None:
    k = sizes["data"] * sizes["fsdp"]
    if config.batch_size % k or (config.batch_size // config.grad_accum) % k:
        raise ValueError(f"batch_size={config.batch_size} (grad_accum={config.grad_accum}) must split evenly over "
                         f"data x fsdp = {k} devices per microbatch; change --batch-size or the mesh")


def make_plan(config: TrainConfig, devices=None) -> Plan:
    """The plan for `config.parallel` on `devices` (default: all); raises ValueError if it cannot shard."""
    par = config.parallel
    if not par.enabled:
        train, evaluate = compiled_steps(config)
        init = functools.partial(jax.jit(init_state, static_argnums=0), config)
        return Plan(config, None, init, train, evaluate)
    mesh = make_mesh(par, devices)
    sizes = mesh_sizes(mesh)
    check_batch(config, sizes)
    check_model(config.model, sizes)
    rows = process_rows(mesh, config.batch_size)
    rep = replicated(mesh)
    key = jax.ShapeDtypeStruct((2,), np.uint32)
    name = strategy_name(sizes) + ("" if par.mode == "jit" else f" ({par.mode}, shard_map)")

    init_fn = functools.partial(init_state, config)
    abstract = jax.eval_shape(init_fn, key)
    if sizes["pipe"] > 1:
        if sizes["fsdp"] > 1 or sizes["tensor"] > 1:
            raise ValueError("pipeline parallelism combines with the data axis only; set fsdp and tensor to 1")
        stages, micro = par.stages_microbatches(len(mesh.devices.flat))
        check_pipeline(config, stages, micro, sizes["data"])
        shardings = state_shardings(abstract, logical_axes(config.model), mesh)
        step = functools.partial(pipeline_train_step, config=config, mesh=mesh, microbatches=micro)

        def evaluate(params, batch):
            return eval_step(params, batch, config)
        name += f", {micro} microbatches"
    else:
        if par.mode == "ddp":
            shardings = jax.tree.map(lambda _: rep, abstract)
            step = functools.partial(ddp_train_step, config=config, mesh=mesh)
        elif par.mode == "zero1":
            check_zero1(config)
            shardings = zero1_state_shardings(abstract, mesh)
            specs = jax.tree.map(lambda s: s.spec, shardings["opt_state"])
            step = functools.partial(zero1_train_step, config=config, mesh=mesh, opt_specs=specs)
        else:
            shardings = state_shardings(abstract, logical_axes(config.model), mesh)

            def step(state, batch):
                with activation_sharding(mesh):
                    return train_step(state, batch, config)

        def evaluate(params, batch):
            with activation_sharding(mesh):
                return eval_step(params, batch, config)

    bsh = batch_sharding(mesh)
    init = jax.jit(init_fn, out_shardings=shardings)
    train = jax.jit(step, in_shardings=(shardings, bsh), out_shardings=(shardings, rep), donate_argnums=0)
    evaluate = jax.jit(evaluate, in_shardings=(shardings["params"], None), out_shardings=rep)
    return Plan(config, mesh, init, train, evaluate, shardings, rows, name)
