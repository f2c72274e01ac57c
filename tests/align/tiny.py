"""A tiny random model and a byte tokenizer shared by the alignment tests."""

import functools

import jax
import numpy as np

from lm.model import ModelConfig, init
from lm.tokenizer import Tokenizer

EOT = "<|endoftext|>"
CONFIG = ModelConfig(vocab_size=257, context_length=32, d_model=32, n_layers=2, n_heads=4, d_ff=64)


def tokenizer() -> Tokenizer:
    """Bytes as tokens (no merges) plus <|endoftext|> = 256: one token per digit."""
    return Tokenizer({i: bytes([i]) for i in range(256)}, [], [EOT])


@functools.lru_cache(maxsize=4)
def _params(config: ModelConfig, seed: int):
    """Drawn with NumPy in init's tree (compiling jax's initialisers costs seconds on a small CPU)."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(functools.partial(init, config), jax.ShapeDtypeStruct((2,), np.uint32))

    def draw(path, leaf):
        if jax.tree_util.keystr(path).endswith("['scale']"):
            return np.ones(leaf.shape, np.float32)
        return (0.1 * rng.standard_normal(leaf.shape)).astype(np.float32)

    return jax.tree_util.tree_map_with_path(draw, shapes)


def params(config: ModelConfig = CONFIG, seed: int = 0) -> dict:
    return jax.tree.map(np.copy, _params(config, seed))
