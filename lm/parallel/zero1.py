"""ZeRO-1 with explicit collectives: optimizer state sharded over `data`, parameters replicated.

Each parameter leaf is split along its first dimension that the data axis
divides (leaves with none stay whole everywhere). A step:
  1. gradients of the device's own rows (as in DDP);
  2. reduce-scatter: each device receives the mean gradient of its slice only;
  3. global gradient norm from the slices (one psum of a scalar) and clipping;
  4. the optimizer updates its slice of the parameters with its slice of the state;
  5. all-gather the updated slices into whole parameters on every device.
Reduce-scatter plus all-gather move the same bytes as DDP's all-reduce, while
optimizer memory per device falls to 1/N (Rajbhandari et al., 2020).
The update is elementwise per slice, so this needs AdamW (Muon reads whole matrices).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from lm.optim import OptimizerConfig, build_optimizer, global_norm
from lm.parallel.ddp import average_metrics, local_grads
from lm.parallel.sharding import mirror_param_shardings

WHOLE = -1  # a leaf no dimension of which the data axis divides: every device keeps it all


def shard_dims(abstract_params, n: int):
    """Per leaf: the dimension split over the data axis, or -1 to keep it whole."""
    return jax.tree.map(lambda p: next((d for d, size in enumerate(p.shape) if size % n == 0), WHOLE),
                        abstract_params)


def _spec(dim: int) -> PartitionSpec:
    return PartitionSpec() if dim == WHOLE else PartitionSpec(*([None] * dim + ["data"]))


def zero1_state_shardings(abstract_state, mesh: Mesh):
    """Params replicated; param-shaped optimizer state split by `shard_dims`; the rest replicated.
    `abstract_state`: a TrainState (or its eval_shape); the result has its structure."""
    rep = NamedSharding(mesh, PartitionSpec())
    dims = shard_dims(abstract_state.params, mesh.shape["data"])
    split = jax.tree.map(lambda d: NamedSharding(mesh, _spec(d)), dims)
    opt = mirror_param_shardings(abstract_state.opt_state, abstract_state.params, split, rep)
    params = jax.tree.map(lambda _: rep, abstract_state.params)
    return abstract_state._replace(step=rep, params=params, opt_state=opt)


def check_zero1(optim: OptimizerConfig) -> None:
    if optim.name != "adamw":
        raise ValueError("ZeRO-1 here supports AdamW only: Muon orthogonalises whole matrices, which a "
                         "device holding a slice cannot do; use mode 'jit' or 'ddp' with Muon")


def zero1_train_step(state, batch, grads_fn: Callable, optim: OptimizerConfig, total_steps: int, mesh: Mesh,
                     opt_specs):
    """One step of `grads_fn(params, rows) -> (loss, metrics, grads)` with the optimizer `optim` (its
    schedule over `total_steps`); `opt_specs` are the optimizer state's PartitionSpecs (zero1_state_shardings)."""
    n = mesh.shape["data"]
    dims = shard_dims(state.params, n)
    clip = optim.grad_clip
    inner = build_optimizer(dataclasses.replace(optim, grad_clip=0.0), total_steps)

    def body(state, rows):
        me = jax.lax.axis_index("data")
        loss, metrics, grads = local_grads(state.params, rows, grads_fn, "data")

        def scatter(g, d):  # mean gradient of this device's slice
            return jax.lax.pmean(g, "data") if d == WHOLE else jax.lax.psum_scatter(
                g, "data", scatter_dimension=d, tiled=True) / n

        def own(p, d):
            return p if d == WHOLE else jax.lax.dynamic_slice_in_dim(p, me * (p.shape[d] // n), p.shape[d] // n, d)

        grads = jax.tree.map(scatter, grads, dims)
        pairs = list(zip(jax.tree.leaves(grads), jax.tree.leaves(dims)))
        sliced = sum(jnp.sum(jnp.square(g.astype(jnp.float32))) for g, d in pairs if d != WHOLE)
        whole = sum(jnp.sum(jnp.square(g.astype(jnp.float32))) for g, d in pairs if d == WHOLE)
        grad_norm = jnp.sqrt(jax.lax.psum(sliced, "data") + whole)
        if clip > 0:  # lm.optim.clip_by_global_norm's rule, with the norm of the whole gradient
            factor = clip / jnp.maximum(grad_norm, clip)
            grads = jax.tree.map(lambda g: (g * factor).astype(g.dtype), grads)
        opt_state = state.opt_state
        inner_state = opt_state[1] if clip > 0 else opt_state
        mine = jax.tree.map(own, state.params, dims)
        updates, inner_state = inner.update(grads, inner_state, mine)
        mine = optax.apply_updates(mine, updates)
        params = jax.tree.map(lambda p, d: p if d == WHOLE else jax.lax.all_gather(p, "data", axis=d, tiled=True),
                              mine, dims)
        loss, metrics = average_metrics(loss, metrics, "data")
        metrics = dict(metrics, loss=loss, grad_norm=grad_norm, param_norm=global_norm(params))
        opt_state = (opt_state[0], inner_state) if clip > 0 else inner_state
        return state._replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

    rep = PartitionSpec()
    state_specs = state._replace(step=rep, params=rep, opt_state=opt_specs)
    # check_vma=False: all_gather's result is the same on every device, but jax 0.10's type checker
    # cannot tell (its all_gather_invariant is private); the equivalence tests check it instead.
    return jax.shard_map(body, mesh=mesh, in_specs=(state_specs, PartitionSpec("data")),
                         out_specs=(state_specs, rep), check_vma=False)(state, batch)
