"""NamedShardings for the train state and batches, derived from the rules table.

Parameters get specs from their logical names. Optimizer states mirror the
parameter tree (optax's mu, nu, momentum buffers...), so a state leaf whose
trailing key path and shape match a parameter takes that parameter's sharding;
everything else (step counts, scalars) is replicated. No optimizer-specific code.
"""

from __future__ import annotations

import contextlib

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from lm.model.sharding import sharding_rules
from lm.parallel.mesh import mesh_sizes
from lm.parallel.rules import PARAM_RULES, activation_spec, param_specs


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def _dict_suffix(path) -> tuple:
    """The trailing dict keys of a key path: where a param-shaped leaf sits inside an optimizer state."""
    keys = []
    for entry in reversed(path):
        if not isinstance(entry, jax.tree_util.DictKey):
            break
        keys.append(entry.key)
    return tuple(reversed(keys))


def mirror_param_shardings(tree, abstract_params, param_shardings, default):
    """Shardings for a tree (an optimizer state) whose param-shaped leaves take their param's sharding."""
    by_path = {}
    for (path, leaf), sharding in zip(jax.tree_util.tree_leaves_with_path(abstract_params),
                                      jax.tree.leaves(param_shardings)):
        by_path[tuple(e.key for e in path)] = (leaf.shape, sharding)

    def one(path, leaf):
        match = by_path.get(_dict_suffix(path))
        return match[1] if match is not None and match[0] == leaf.shape else default

    return jax.tree_util.tree_map_with_path(one, tree)


def state_shardings(abstract_state, logical: dict, mesh: Mesh, rules: dict = PARAM_RULES):
    """NamedShardings for a train state (any pytree with a `params` entry: lm.train's TrainState)
    given the params' logical-name specs: params by `rules`, optimizer leaves mirroring their
    parameter, everything else (the step count) replicated. Same tree structure as the state."""
    params = abstract_state["params"]
    specs = param_specs(logical, params, mesh_sizes(mesh), rules)
    shardings = jax.tree.map(lambda s: NamedSharding(mesh, s), specs, is_leaf=lambda x: isinstance(x, PartitionSpec))
    out = mirror_param_shardings(abstract_state, params, shardings, replicated(mesh))
    return {**out, "params": shardings} if isinstance(out, dict) else out  # a dict's params paths start "params"


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Token batches [batch, seq + 1]: rows split over the data-like axes."""
    return NamedSharding(mesh, activation_spec(("batch", None), mesh_sizes(mesh)))


def activation_resolver(mesh: Mesh):
    """(names, shape) -> NamedSharding; axes that do not divide a dimension are left out of it."""
    sizes = mesh_sizes(mesh)

    def resolve(names, shape):
        s = activation_spec(names, sizes)
        fits = []
        for dim, entry in zip(shape, tuple(s) + (None,) * (len(shape) - len(s))):
            axes = () if entry is None else ((entry,) if isinstance(entry, str) else tuple(entry))
            k = 1
            for a in axes:
                k *= sizes[a]
            fits.append(entry if dim % k == 0 else None)
        return NamedSharding(mesh, PartitionSpec(*fits))

    return resolve


@contextlib.contextmanager
def activation_sharding(mesh: Mesh):
    """Activate the model's activation constraints (lm.model.sharding) for `mesh` while tracing."""
    with sharding_rules(activation_resolver(mesh)):
        yield


def bytes_per_device(tree) -> dict:
    """{device: bytes of the shards it holds} for the arrays of `tree` (measured from the shards)."""
    out: dict = {}
    for leaf in jax.tree.leaves(tree):
        for shard in leaf.addressable_shards:
            out[shard.device] = out.get(shard.device, 0) + shard.data.nbytes
    return out
