"""Data parallelism with explicit collectives: `shard_map` over `data`, gradients `pmean`'d.

This is what the compiler builds from a replicated-params, sharded-batch jit
(`ParallelConfig(data=N)`), written out by hand: every device holds the whole
train state, computes gradients of its own rows, averages them with one
all-reduce, and applies the same update. No gradient bucketing: XLA combines
the per-leaf all-reduces itself.

Any step works: `grads_fn(params, rows) -> (loss, metrics, grads)` and
`apply_fn(state, grads, loss, metrics) -> (state, metrics)` (lm.trainer binds the pretraining ones).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
from jax.sharding import Mesh, PartitionSpec


def average_metrics(loss, metrics: dict, axis: str):
    """Means over the data shards (token counts add up)."""
    metrics = {k: (jax.lax.psum(v, axis) if k == "num_tokens" else jax.lax.pmean(v, axis)) for k, v in metrics.items()}
    return jax.lax.pmean(loss, axis), metrics


def local_grads(params, batch, grads_fn: Callable, axis: str):
    """Gradients of this device's rows only.

    The params are replicated (device-invariant); marking them varying first keeps
    autodiff from summing gradients over devices behind our back, so the one
    collective of the step is the explicit `pmean` that follows.
    """
    params = jax.tree.map(lambda p: jax.lax.pcast(p, axis, to="varying"), params)
    return grads_fn(params, batch)


def ddp_train_step(state, batch, grads_fn: Callable, apply_fn: Callable, mesh: Mesh):
    """One step on a global batch (leaves [batch, ...]) split over the `data` axis."""

    def body(state, rows):
        loss, metrics, grads = local_grads(state.params, rows, grads_fn, "data")
        grads = jax.lax.pmean(grads, "data")  # the all-reduce
        loss, metrics = average_metrics(loss, metrics, "data")
        return apply_fn(state, grads, loss, metrics)

    return jax.shard_map(body, mesh=mesh, in_specs=(PartitionSpec(), PartitionSpec("data")),
                         out_specs=(PartitionSpec(), PartitionSpec()), check_vma=True)(state, batch)
