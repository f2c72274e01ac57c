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


def write_run(run_dir, c: ModelConfig, seed: int = 9):
    """A run directory as `experiments.pretrain` writes it (checkpoint + byte tokenizer), without the
    training: random parameters for `c` saved as step 1. Returns the parameters."""
    import jax

    from lm.config import to_dict
    from lm.tokenizer import save_tokenizer
    from lm.train.checkpoint import checkpoint_manager, save_checkpoint
    from lm.train.config import TrainConfig
    from lm.train.step import make_optimizer

    train = TrainConfig(model=c)
    params = jax.tree.map(np.asarray, random_params(train.model, seed))
    state = {"step": np.zeros([], np.int32), "params": params, "opt_state": make_optimizer(train).init(params),
             "rng": np.asarray(jax.random.PRNGKey(0))}
    manager = checkpoint_manager(run_dir / "checkpoints", async_save=False)
    save_checkpoint(manager, 1, state, {"next_index": 0}, {"train": to_dict(train)})
    manager.close()
    save_tokenizer(byte_tokenizer(), run_dir)
    return params
