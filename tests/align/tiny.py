"""A tiny random model and a byte tokenizer shared by the alignment tests."""

import functools

import jax
import numpy as np

from lm.model import ModelConfig
from lm.tokenizer import Tokenizer
from tests.inference.tiny import random_params

EOT = "<|endoftext|>"
CONFIG = ModelConfig(vocab_size=257, context_length=32, d_model=32, n_layers=2, n_heads=4, d_ff=64)


def tokenizer() -> Tokenizer:
    """Bytes as tokens (no merges) plus <|endoftext|> = 256: one token per digit."""
    return Tokenizer({i: bytes([i]) for i in range(256)}, [], [EOT])


@functools.lru_cache(maxsize=4)
def _params(config: ModelConfig, seed: int):
    return random_params(config, seed, scale=0.1)


def params(config: ModelConfig = CONFIG, seed: int = 0) -> dict:
    return jax.tree.map(np.copy, _params(config, seed))
