"""A plan: one kind of training step jitted for a device mesh, with its sharded init and batches.

    mesh = make_mesh(ParallelConfig(fsdp=4, tensor=2))          # or ParallelConfig(): one device
    plan = make_plan(init_fn, step_fn, eval_fn, logical=logical_axes(model), mesh=mesh,
                     example=(key,), batch_size=16)
    state = plan.init(key)                                        # sharded from the start
    state, metrics = plan.train_step(state, plan.put_batch(rows))

Any step works: `step_fn(state, batch) -> (state, metrics)` over a state with a `params` entry
(lm.train's TrainState) and a batch pytree whose leaves all lead with the batch dimension
(pretraining's token windows, SFT's padded pairs, GRPO's scored rollouts). Parameters are
sharded by the rules table from their logical axis names, optimizer state mirrors them, and every
batch leaf is split by rows over the data-like axes. Nothing parallel is a one-device mesh, so
there is one code path. The pretraining plans (DP, FSDP, TP, pipeline, shard_map DDP and ZeRO-1)
are assembled in `lm.trainer.pretrain_plan`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import jax
import numpy as np
from jax.sharding import Mesh

from lm.parallel.mesh import mesh_sizes
from lm.parallel.rules import PARAM_RULES, strategy_name
from lm.parallel.sharding import activation_sharding, batch_sharding, replicated, state_shardings


@dataclasses.dataclass(frozen=True)
class Plan:
    mesh: Mesh
    init: Callable  # (*example) -> train state, placed as `state_shardings`
    train_step: Callable  # (state, global batch) -> (state, metrics); donates the state
    eval_step: Callable  # (params, global batch) -> the eval function's sums, replicated
    state_shardings: Any
    rows: tuple[int, int] = (0, 1)  # this process reads rows index::count of every batch
    description: str = "single device"

    def place(self, state):
        """A train state made elsewhere (one device, a checkpoint) in this plan's shardings; a dict with
        the state's fields (an older state, extra keys such as "rng" ignored) becomes the state's type."""
        fields = getattr(self.state_shardings, "_fields", None)
        if fields is not None and isinstance(state, dict):
            state = type(self.state_shardings)(*(state[f] for f in fields))
        return jax.device_put(state, self.state_shardings)

    def put_batch(self, rows):
        """This process's rows of a batch (a pytree of [batch / count, ...] arrays) -> global arrays."""
        sharding = batch_sharding(self.mesh)

        def put(x):
            x = np.asarray(x)
            return jax.make_array_from_process_local_data(sharding, x, (x.shape[0] * self.rows[1], *x.shape[1:]))
        return jax.tree.map(put, rows)

    def put_eval_batch(self, batch):
        """A whole batch every process holds (validation): split over the data axes when it divides."""
        k = math.prod(mesh_sizes(self.mesh)[a] for a in ("data", "fsdp"))

        def put(x):
            x = np.asarray(x)
            sharding = replicated(self.mesh) if x.shape[0] % k else batch_sharding(self.mesh)
            return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])
        return jax.tree.map(put, batch)


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


def check_batch(batch_size: int, grad_accum: int, sizes: dict[str, int]) -> None:
    k = sizes["data"] * sizes["fsdp"]
    if batch_size % k or (batch_size // grad_accum) % k:
        raise ValueError(f"batch_size={batch_size} (grad_accum={grad_accum}) must split evenly over "
                         f"data x fsdp = {k} devices per microbatch; change --batch-size or the mesh")


def make_plan(init_fn: Callable, step_fn: Callable, eval_fn: Callable | None, *, logical, mesh: Mesh,
              example: tuple, batch_size: int, grad_accum: int = 1, rules: dict = PARAM_RULES,
              shardings=None, constrain_step: bool = True, description: str | None = None) -> Plan:
    """Jit `init_fn(*example)`, `step_fn(state, batch)` and `eval_fn(params, batch)` for `mesh`.

    logical: the params' tree of logical-axis PartitionSpecs (`lm.model.logical_axes`); `rules` maps
    them to mesh axes. `example`: init_fn's arguments (arrays or ShapeDtypeStructs), to derive the
    state's shardings (`shardings` overrides them, as ZeRO-1 does). `constrain_step=False` leaves out
    the model's activation constraints (for steps that are a shard_map of their own).
    """
    sizes = mesh_sizes(mesh)
    check_batch(batch_size, grad_accum, sizes)
    if shardings is None:
        shardings = state_shardings(jax.eval_shape(init_fn, *example), logical, mesh, rules)
    rep, bsh = replicated(mesh), batch_sharding(mesh)

    def step(state, batch):
        if not constrain_step:
            return step_fn(state, batch)
        with activation_sharding(mesh):
            return step_fn(state, batch)

    def evaluate(params, batch):
        with activation_sharding(mesh):
            return eval_fn(params, batch)

    init = jax.jit(init_fn, out_shardings=shardings)
    train = jax.jit(step, in_shardings=(shardings, bsh), out_shardings=(shardings, rep), donate_argnums=0)
    evaluate = None if eval_fn is None else jax.jit(evaluate, in_shardings=(shardings["params"], None),
                                                    out_shardings=rep)
    return Plan(mesh, init, train, evaluate, shardings, process_rows(mesh, batch_size),
                description or strategy_name(sizes))
