"""Small models for the evaluation tests: random ones, and a 'chain' model whose answers are planted."""

import numpy as np

from lm.model import ModelConfig
from lm.tokenizer import Tokenizer
from tests.inference.tiny import random_params

EOT = "<|endoftext|>"


def byte_tokenizer() -> Tokenizer:
    """Bytes are tokens 0..255 and <|endoftext|> is 256: 257 ids, no merges."""
    return Tokenizer({i: bytes([i]) for i in range(256)}, [], [EOT])


def config(**overrides) -> ModelConfig:
    base = dict(vocab_size=257, context_length=32, d_model=32, n_layers=1, n_heads=4, n_kv_heads=2, d_ff=64)
    return ModelConfig(**{**base, **overrides})


def chain_model(successor: dict[int, int], context_length: int = 128, seed: int = 0):
    """(params, config) of a model that predicts, after byte a, the byte successor.get(a, (a + 1) % 256),
    whatever came before. Attention and MLP outputs are zeroed, so the last layer sees only the
    current token's embedding e_a; the head's column for b is the sum of the (RMS-normalised)
    embeddings of the bytes whose successor is b, so logit b is about d_model = 64 for the
    planted successor and O(sqrt(d_model)) for every other token."""
    c = config(d_model=64, n_layers=1, n_heads=4, n_kv_heads=2, context_length=context_length)
    params = random_params(c, seed)
    blocks = params["blocks"]
    blocks["attn"]["wo"] = np.zeros_like(blocks["attn"]["wo"])
    blocks["mlp"]["w2"]["kernel"] = np.zeros_like(blocks["mlp"]["w2"]["kernel"])
    emb = np.asarray(params["embed"]["embedding"], np.float64)
    unit = emb / np.sqrt(np.mean(emb ** 2, axis=1, keepdims=True) + 1e-5)
    head = np.zeros((c.d_model, c.vocab_size))
    for a in range(256):
        head[:, successor.get(a, (a + 1) % 256)] += unit[a]
    params["head"]["kernel"] = head.astype(np.float32)
    return params, c
