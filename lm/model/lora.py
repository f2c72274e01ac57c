"""LoRA (Hu et al. 2021): rank-r adapters on chosen projections, kept as their own parameter tree.

    lora = LoRAConfig(rank=8, alpha=16.0, targets=("attn",))        # q, k, v, o; "mlp" adds w1, w2, w3
    adapters = init_lora(params, lora, key)      # {"q": {"a": [layers, d_in, r], "b": [layers, r, d_out]}, ...}
    merged = merge(params, adapters, lora)       # the model's own tree, W + (alpha / r) A B on each target
    loss, grads = jax.value_and_grad(lambda a: loss_fn(merge(params, a, lora), batch))(adapters)

Training differentiates with respect to the adapters only, so the base parameters get no gradient
and no optimizer state (`optimizer.init(adapters)`), and the model needs no change: the loss merges
the adapters into the weights it reads. Inference and export (`lm.interop.save_hf`) take the
merged tree. A starts uniform in +-1/sqrt(d_in) and B at zero (peft's defaults), so the merged
model starts as the base model.

Each target weight is stacked over layers, [layers, *in_axes, *out_axes] (wq [L, d_model, heads,
head_dim], wo [L, heads, head_dim, d_model], MLP kernels [L, d_in, d_out]); its adapter treats the
in and out axes flattened, as Hugging Face's q_proj / o_proj / gate_proj matrices do. Names follow
the params tree: w1 is Llama's gate_proj, w3 its up_proj and w2 its down_proj.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

TARGETS = {"q": ("attn", "wq"), "k": ("attn", "wk"), "v": ("attn", "wv"), "o": ("attn", "wo"),
           "w1": ("mlp", "w1", "kernel"), "w2": ("mlp", "w2", "kernel"), "w3": ("mlp", "w3", "kernel")}
IN_AXES = {"o": 2}  # input axes after the layer axis (wo reads heads x head_dim); the others read one
GROUPS = {"attn": ("q", "k", "v", "o"), "mlp": ("w1", "w2", "w3")}


@dataclasses.dataclass(frozen=True)
class LoRAConfig:
    """rank: r; alpha: the update is scaled by alpha / r; targets: names of TARGETS or of GROUPS
    ("mlp" takes the MLP matrices the model has: w3 only in SwiGLU MLPs)."""

    rank: int = 8
    alpha: float = 16.0
    targets: tuple[str, ...] = ("q", "k", "v", "o")

    def __post_init__(self):
        # "q,v" or ("q", "v"): a comma list is how the command line gives them (--sft.lora.targets q,v)
        names = (self.targets,) if isinstance(self.targets, str) else tuple(self.targets)
        object.__setattr__(self, "targets", tuple(t.strip() for s in names for t in str(s).split(",") if t.strip()))
        if not isinstance(self.rank, int) or self.rank < 1:
            raise ValueError(f"LoRAConfig.rank must be a positive integer, got {self.rank!r}")
        if not self.alpha > 0:
            raise ValueError(f"LoRAConfig.alpha must be > 0, got {self.alpha}")
        unknown = [t for t in self.targets if t not in TARGETS and t not in GROUPS]
        if unknown or not self.targets:
            raise ValueError(f"LoRAConfig.targets must be a non-empty selection of {sorted(TARGETS)} or groups "
                             f"{sorted(GROUPS)}, got {self.targets!r}")

    @property
    def scale(self) -> float:
        return self.alpha / self.rank


def _weight(params: dict, name: str):
    node = params["blocks"]
    for key in TARGETS[name]:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def target_names(params: dict, config: LoRAConfig) -> tuple[str, ...]:
    """The adapted weights' names, groups expanded to the members the model has."""
    names = []
    for t in config.targets:
        for name in GROUPS.get(t, (t,)):
            w = _weight(params, name)
            if w is None:
                if t in GROUPS and name == "w3" and _weight(params, "w1") is not None:
                    continue  # a non-gated MLP has no w3
                raise ValueError(f"LoRA target {name!r} ({'/'.join(TARGETS[name])}) is not a dense weight of this "
                                 "model (a mixture-of-experts MLP has no w1/w2/w3 kernels); choose other targets")
            if name not in names:
                names.append(name)
    return tuple(names)


def _split(name: str, shape: tuple[int, ...]) -> tuple[int, int]:
    """(d_in, d_out) of a stacked weight [layers, *in_axes, *out_axes] seen as a matrix per layer."""
    n_in = IN_AXES.get(name, 1)
    return math.prod(shape[1: 1 + n_in]), math.prod(shape[1 + n_in:])


def init_lora(params: dict, config: LoRAConfig, key: jax.Array) -> dict:
    """Adapters {name: {"a": float32 [layers, d_in, r], "b": float32 [layers, r, d_out] of zeros}}."""
    keys = dict(zip(TARGETS, jax.random.split(key, len(TARGETS))))  # by name: a target's draw ignores the others
    adapters = {}
    for name in target_names(params, config):
        k = keys[name]
        shape = jnp.shape(_weight(params, name))
        d_in, d_out = _split(name, shape)
        bound = 1.0 / math.sqrt(d_in)
        adapters[name] = {"a": jax.random.uniform(k, (shape[0], d_in, config.rank), jnp.float32, -bound, bound),
                          "b": jnp.zeros((shape[0], config.rank, d_out), jnp.float32)}
    return adapters


def delta(adapter: dict, shape: tuple[int, ...], scale: float) -> jax.Array:
    """(alpha / r) A B per layer, reshaped to the weight's `shape` [layers, *in_axes, *out_axes]."""
    return (scale * jnp.einsum("lir,lro->lio", adapter["a"], adapter["b"])).reshape(shape)


def merge(params: dict, adapters: dict, config: LoRAConfig) -> dict:
    """The params tree with W + (alpha / r) A B on every adapted weight (other leaves shared, not copied).
    Pure and differentiable: inside a loss, gradients reach the adapters through it."""
    blocks = jax.tree.map(lambda x: x, params["blocks"])  # new dicts, same leaves
    for name, adapter in adapters.items():
        *parents, leaf = TARGETS[name]
        node = blocks
        for key in parents:
            node = node[key]
        w = node[leaf]
        node[leaf] = (w + delta(adapter, jnp.shape(w), config.scale)).astype(w.dtype)
    return {**params, "blocks": blocks}


def param_count(tree) -> int:
    """Number of scalars in a pytree's array leaves."""
    return int(sum(np.size(x) for x in jax.tree.leaves(tree)))
