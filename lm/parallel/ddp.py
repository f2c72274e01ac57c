"""Data parallelism with explicit collectives: `shard_map` over `data`, gradients `pmean`'d.

This is what the compiler builds from a replicated-params, sharded-batch jit
(`ParallelConfig(data=N)`), written out by hand: every device holds the whole
train state, computes gradients of its own rows, averages them with one
all-reduce, and applies the same update. No gradient bucketing: XLA combines
the per-leaf all-reduces itself.
"""

from __future__ import annotations

import jax
from jax.sharding import Mesh, PartitionSpec

from lm.train.config import TrainConfig
from lm.train.step import apply_gradients, compute_grads


def average_metrics(loss, metrics: dict, axis: str):
    """Means over the data shards (token counts add up)."""
    metrics = {k: (jax.lax.psum(v, axis) if k == "num_tokens" else jax.lax.pmean(v, axis)) for k, v in metrics.items()}
    return jax.lax.pmean(loss, axis), metrics


def local_grads(params, batch, config: TrainConfig, axis: str):
    """Gradients of this device's rows only.

    The params are replicated (device-invariant); marking them varying first keeps
    autodiff from summing gradients over devices behind our back, so the one
    collective of the step is the explicit `pmean` that follows.
    """
    params = jax.tree.map(lambda p: jax.lax.pcast(p, axis, to="varying"), params)
    return compute_grads(params, batch, config)


def ddp_train_step(state, batch: jax.Array, config: TrainConfig, mesh: Mesh):
    """One step on a global batch [batch, seq + 1] split over the `data` axis."""

    def body(state, rows):
        loss, metrics, grads = local_grads(state.params, rows, config, "data")
        grads = jax.lax.pmean(grads, "data")  # the all-reduce
        loss, metrics = average_metrics(loss, metrics, "data")
        return apply_gradients(state, grads, loss, metrics, config)

    return jax.shard_map(body, mesh=mesh, in_specs=(PartitionSpec(), PartitionSpec("data")),
                         out_specs=(PartitionSpec(), PartitionSpec()), check_vma=True)(state, batch)
