"""Tiny random Llama / Qwen2 models built by transformers from a config (float32, a few thousand weights)."""

import functools

import jax
import numpy as np

from lm.model import ModelConfig, init

BASE = dict(vocab_size=96, hidden_size=48, intermediate_size=80, num_hidden_layers=2, num_attention_heads=4,
            max_position_embeddings=64, bos_token_id=None, eos_token_id=None, pad_token_id=None)

# name -> (model type, config overrides): GQA, MHA and MQA; tied and untied heads; Qwen2's q/k/v biases;
# non-default RoPE theta and RMSNorm eps (a wrong one shows in the logits).
CASES = {
    "llama-gqa-untied": ("llama", dict(num_key_value_heads=2, tie_word_embeddings=False,
                                       rope_parameters={"rope_type": "default", "rope_theta": 500.0},
                                       rms_norm_eps=1e-5)),
    "llama-mha-tied": ("llama", dict(num_key_value_heads=4, tie_word_embeddings=True, rms_norm_eps=1e-6)),
    "qwen2-gqa-tied-bias": ("qwen2", dict(num_key_value_heads=2, tie_word_embeddings=True,
                                          rope_parameters={"rope_type": "default", "rope_theta": 1000.0})),
    "qwen2-mqa-untied-bias": ("qwen2", dict(num_key_value_heads=1, tie_word_embeddings=False, rms_norm_eps=1e-5)),
}


def hf_config(kind: str, **overrides):
    from transformers import LlamaConfig, Qwen2Config

    return {"llama": LlamaConfig, "qwen2": Qwen2Config}[kind](**{**BASE, **overrides})


def hf_model(kind: str, seed: int = 0, **overrides):
    """A transformers model with every weight random: norm gains around 1, biases nonzero, matrices
    N(0, 0.15^2), so that each kind of tensor, if mapped wrongly, changes the logits."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(hf_config(kind, **overrides), dtype=torch.float32)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            else:
                p.copy_((0.3 if name.endswith("bias") else 0.15) * torch.randn_like(p))
    return model.eval()


def hf_logits(model, tokens: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model(torch.as_tensor(np.asarray(tokens), dtype=torch.long)).logits.numpy()


def random_params(c: ModelConfig, seed: int) -> dict:
    """Our parameters for `c`, drawn with NumPy (norm gains around 1, q/k/v biases nonzero)."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(functools.partial(init, c), jax.ShapeDtypeStruct((2,), np.uint32))

    def draw(path, leaf):
        name = jax.tree_util.keystr(path)
        base = 1.0 if name.endswith("['scale']") else 0.0
        return (base + 0.15 * rng.standard_normal(leaf.shape)).astype(np.float32)

    return jax.tree.map_with_path(draw, shapes)
