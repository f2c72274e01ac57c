"""The one table that chooses a parallelism strategy: logical axis names -> mesh axes.

Every parameter of `lm.model` names its dimensions (`embed`, `heads`, `mlp`, ...;
see `lm.model.logical_axes`), and activations are constrained by the same kind
of names inside the model. This module maps those names to mesh axes. Mesh
axes of size 1 drop out, so the mesh shape alone picks the strategy:

    data   -> batch split, parameters replicated           (DP)
    fsdp   -> batch split, parameters and optimizer state split on `embed` (FSDP / ZeRO-3)
    tensor -> heads, kv_heads, mlp and vocab split; activations the same way (Megatron TP)
    pipe   -> stacked layers split into consecutive stages (GPipe)

A layer is column-parallel where its output dimension is split (wq/wk/wv on
heads, w1/w3 on mlp, the head on vocab) and row-parallel where its input is
(wo on heads, w2 on mlp), so each attention and MLP block needs one
all-reduce forward and one backward, as in Megatron-LM.
"""

from __future__ import annotations

import math

import jax
from jax.sharding import PartitionSpec

# Parameters (and, by structure, the optimizer state).
PARAM_RULES: dict[str, tuple[str, ...]] = {
    "vocab": ("tensor",),
    "embed": ("fsdp",),
    "heads": ("tensor",),
    "kv_heads": ("tensor",),
    "head_dim": (),
    "mlp": ("tensor",),
    "experts": (),
    "layers": ("pipe",),
}

# Activations: the batch is split over every data-like axis; the residual stream stays whole
# on each tensor-parallel device, heads and the MLP hidden are split as their weights are.
ACTIVATION_RULES: dict[str, tuple[str, ...]] = {
    "batch": ("data", "fsdp"),
    "seq": (),
    "embed": (),
    "heads": ("tensor",),
    "kv_heads": ("tensor",),
    "head_dim": (),
    "mlp": ("tensor",),
    "vocab": ("tensor",),
    "experts": (),
}

# What to change when a dimension does not divide: the ModelConfig field behind each name.
_FIELD = {"vocab": "vocab_size", "embed": "d_model", "heads": "n_heads", "kv_heads": "n_kv_heads",
          "mlp": "d_ff", "layers": "n_layers", "experts": "n_experts", "batch": "batch_size"}


def spec(names, rules: dict, sizes: dict[str, int]) -> PartitionSpec:
    """PartitionSpec of mesh axes for a tuple of logical names (None = unnamed, replicated)."""
    entries, used = [], set()
    for name in names:
        if name is not None and name not in rules:
            raise ValueError(f"logical axis {name!r} has no rule in lm/parallel/rules.py; add it to the table")
        axes = tuple(a for a in (rules[name] if name is not None else ()) if sizes.get(a, 1) > 1)
        if used & set(axes):
            raise ValueError(f"mesh axes {sorted(used & set(axes))} would shard two dimensions of {names}; "
                             "fix the rules table")
        used |= set(axes)
        entries.append(axes[0] if len(axes) == 1 else (axes or None))
    while entries and entries[-1] is None:
        entries.pop()
    return PartitionSpec(*entries)


def _axes_size(entry, sizes) -> int:
    if entry is None:
        return 1
    return math.prod(sizes[a] for a in ((entry,) if isinstance(entry, str) else entry))


def check_divisible(shape, pspec: PartitionSpec, names, sizes: dict[str, int], where: str) -> None:
    """Raise a ValueError naming the config field when a sharded dimension does not divide."""
    for dim, entry, name in zip(shape, tuple(pspec) + (None,) * len(shape), names):
        k = _axes_size(entry, sizes)
        if dim % k:
            field = _FIELD.get(name, name)
            raise ValueError(
                f"cannot shard {where}: its {name!r} dimension has size {dim} ({field}), which the mesh axes "
                f"{entry!r} of total size {k} do not divide. Choose mesh sizes that divide {field}={dim} "
                f"(or change {field})")


def check_model(model_config, sizes: dict[str, int]) -> None:
    """Name the model dimension a mesh cannot split, before any per-parameter check does."""
    checks = [("tensor", "n_heads", model_config.n_heads, "each device computes whole attention heads"),
              ("tensor", "n_kv_heads", model_config.kv_heads, "each device keeps whole key/value heads"),
              ("tensor", "d_ff", model_config.d_ff, "the MLP hidden layer is split column-wise"),
              ("tensor", "vocab_size", model_config.vocab_size, "the embedding and head are split by vocabulary"),
              ("fsdp", "d_model", model_config.d_model, "FSDP splits every weight along d_model")]
    for axis, field, value, why in checks:
        k = sizes.get(axis, 1)
        if value % k:
            raise ValueError(f"{field}={value} is not divisible by the {axis} axis ({k}): {why}. "
                             f"Choose --parallel.{axis} dividing {value}, or change --model.{field}")


def param_specs(logical: dict, abstract_params: dict, sizes: dict[str, int], rules: dict = PARAM_RULES) -> dict:
    """PartitionSpecs of mesh axes for a params tree, checked against its shapes.

    `logical`: the tree of PartitionSpecs of logical names (`lm.model.logical_axes`);
    `abstract_params`: arrays or ShapeDtypeStructs of the same tree.
    """
    def one(path, names, leaf):
        s = spec(tuple(names), rules, sizes)
        check_divisible(leaf.shape, s, tuple(names), sizes, "parameter " + jax.tree_util.keystr(path))
        return s

    return jax.tree_util.tree_map_with_path(one, logical, abstract_params,
                                            is_leaf=lambda x: isinstance(x, PartitionSpec))


def activation_spec(names, sizes: dict[str, int]) -> PartitionSpec:
    return spec(tuple(names), ACTIVATION_RULES, sizes)


def strategy_name(sizes: dict[str, int]) -> str:
    """e.g. 'dp2 x tp4' for the axes with more than one device; 'single device' when none."""
    short = {"data": "dp", "fsdp": "fsdp", "tensor": "tp", "pipe": "pp"}
    parts = [f"{short[a]}{sizes[a]}" for a in ("data", "fsdp", "tensor", "pipe") if sizes.get(a, 1) > 1]
    return " x ".join(parts) or "single device"
