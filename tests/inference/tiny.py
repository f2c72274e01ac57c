"""Tiny random models shared by the inference tests (float32, a few thousand parameters)."""

import functools

import jax
import numpy as np

from lm.model import ModelConfig, forward, init

BASE = dict(vocab_size=257, context_length=32, d_model=32, n_layers=2, n_heads=4, d_ff=64)

VARIANTS = {
    "gqa-window": dict(n_kv_heads=2, sliding_window=5),
    "mqa-post-tied-learned": dict(n_kv_heads=1, norm_position="post", tie_embeddings=True, positions="learned"),
    "moe-sinusoidal-layernorm": dict(n_experts=4, positions="sinusoidal", norm="layernorm", activation="gelu"),
}

DRAFT = dict(d_model=16, n_layers=1, n_heads=2, d_ff=32)


def config(**overrides) -> ModelConfig:
    return ModelConfig(**{**BASE, **overrides})


def random_params(c: ModelConfig, seed: int, scale: float = 0.2) -> dict:
    """Parameters shaped like `init(c, key)`, drawn with NumPy: compiling jax's initialisers costs
    seconds per config on a small CPU, which would dominate these tests. Norm gains are 1, biases 0,
    every matrix N(0, scale^2) (0.2 is about init's scale here; the embedding too, so that tied-head logits
    are O(1), where an absolute 1e-5 is a meaningful float32 tolerance)."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(functools.partial(init, c), jax.ShapeDtypeStruct((2,), np.uint32))

    def draw(path, shape):
        name = jax.tree_util.keystr(path)
        if name.endswith("['scale']"):
            return np.ones(shape, np.float32)
        if name.endswith("['bias']"):
            return np.zeros(shape, np.float32)
        return (scale * rng.standard_normal(shape)).astype(np.float32)

    # Drawn layer by layer in the order of the per-layer layout the model had before its layers were
    # stacked (block_0, block_1, ... sorted as strings, then the rest), so every test model keeps the
    # exact numbers its assertions were written against.
    layers = {}
    for i in sorted(range(c.n_layers), key=lambda i: f"block_{i}"):
        layers[i] = jax.tree_util.tree_map_with_path(lambda p, leaf: draw(p, leaf.shape[1:]), shapes["blocks"])
    rest = {k: v for k, v in shapes.items() if k != "blocks"}
    params = jax.tree_util.tree_map_with_path(lambda p, leaf: draw(p, leaf.shape), rest)
    params["blocks"] = jax.tree.map(lambda *xs: np.stack(xs), *(layers[i] for i in range(c.n_layers)))
    return params


@functools.lru_cache(maxsize=None)
def model(name: str = "gqa-window", seed: int = 0, **overrides):
    """(params, config) of a named variant, or of the draft shape with name "draft"."""
    c = config(**{**(DRAFT if name == "draft" else VARIANTS[name]), **overrides})
    return random_params(c, seed), c


full_forward = jax.jit(forward, static_argnames="config")  # eager op-by-op dispatch is slow on CPU
