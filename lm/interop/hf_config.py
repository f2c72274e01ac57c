"""Hugging Face `config.json` <-> `ModelConfig` for Llama and Qwen2 decoders.

    config = config_from_hf(json.load(open("config.json")))
    hf = config_to_hf(config)          # a dict for config.json

Both architectures are our pre-norm RMSNorm / SwiGLU / RoPE Transformer;
Qwen2 adds biases on the q, k and v projections (`qkv_bias`). Anything in the
config that would change the math and that we do not implement (RoPE scaling,
an o_proj or MLP bias, sliding windows, a head_dim other than d_model /
n_heads) is refused with an `UnsupportedCheckpointError` naming the field,
rather than loaded into a model that would silently compute something else.
"""

from __future__ import annotations

import dataclasses

from lm.model import ModelConfig

SUPPORTED = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}


class UnsupportedCheckpointError(ValueError):
    """The checkpoint uses an architecture or option this model does not implement."""


def _unsupported(what: str) -> UnsupportedCheckpointError:
    return UnsupportedCheckpointError(f"unsupported checkpoint: {what}. lm.interop loads Llama and Qwen2 decoders "
                                      "with default RoPE, SwiGLU, RMSNorm and full causal attention")


def rope_theta_from_hf(hf: dict) -> float:
    """RoPE base from `rope_parameters` (transformers 5) or `rope_theta` / `rope_scaling` (older configs)."""
    params = hf.get("rope_parameters") or {}
    if params and any(isinstance(v, dict) for v in params.values()):
        raise _unsupported(f"per-layer-type rope_parameters {sorted(params)}")
    scaling = hf.get("rope_scaling") or {}
    for source in (params, scaling):
        kind = source.get("rope_type", source.get("type", "default"))
        if kind not in ("default", None):
            raise _unsupported(f"RoPE scaling of type {kind!r} ({source})")
    partial = hf.get("partial_rotary_factor", params.get("partial_rotary_factor", 1.0))
    if float(partial) != 1.0:
        raise _unsupported(f"partial_rotary_factor={partial}")
    return float(params.get("rope_theta", hf.get("rope_theta", 10000.0)))


def config_from_hf(hf: dict, dtype: str = "float32") -> ModelConfig:
    """Our `ModelConfig` for a Hugging Face config dict; params and compute in `dtype`."""
    kind = hf.get("model_type")
    if kind not in SUPPORTED:
        arch = hf.get("architectures")
        raise _unsupported(f"model_type={kind!r} (architectures={arch}); supported model types: {sorted(SUPPORTED)}")
    act = hf.get("hidden_act", "silu")
    if act != "silu":
        raise _unsupported(f"hidden_act={act!r} (only SwiGLU, i.e. 'silu')")
    if hf.get("mlp_bias"):
        raise _unsupported("mlp_bias=True (biases on gate/up/down projections)")
    if kind == "llama" and hf.get("attention_bias"):
        raise _unsupported("attention_bias=True, which puts a bias on o_proj as well as q/k/v; "
                           "only q/k/v biases (Qwen2) are implemented")
    if hf.get("use_sliding_window") or any(t != "full_attention" for t in hf.get("layer_types") or []):
        raise _unsupported(f"sliding-window attention (use_sliding_window={hf.get('use_sliding_window')}, "
                           f"layer_types={sorted(set(hf.get('layer_types') or []))})")
    missing = [k for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                           "num_attention_heads") if k not in hf]
    if missing:
        raise ValueError(f"config.json lacks {missing}; is this a Hugging Face causal LM config?")
    d, heads = hf["hidden_size"], hf["num_attention_heads"]
    head_dim = hf.get("head_dim") or d // heads
    if head_dim * heads != d:
        raise _unsupported(f"head_dim={head_dim} with {heads} heads != hidden_size={d} "
                           "(our head_dim is d_model / n_heads)")
    theta = rope_theta_from_hf(hf)
    kv = hf.get("num_key_value_heads") or heads
    return ModelConfig(
        vocab_size=hf["vocab_size"], context_length=hf.get("max_position_embeddings", 2048), d_model=d,
        n_layers=hf["num_hidden_layers"], n_heads=heads, n_kv_heads=0 if kv == heads else kv,
        d_ff=hf["intermediate_size"], rope_theta=theta, norm="rmsnorm", norm_position="pre",
        norm_eps=float(hf.get("rms_norm_eps", 1e-6)), activation="swiglu", positions="rope",
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)), qkv_bias=kind == "qwen2",
        dtype=dtype, param_dtype=dtype)


def check_exportable(config: ModelConfig) -> None:
    """Raise naming the first field that no Llama/Qwen2 config can express."""
    want = {"norm": "rmsnorm", "norm_position": "pre", "activation": "swiglu", "positions": "rope",
            "sliding_window": 0, "n_experts": 0, "qk_norm": False, "logit_softcap": 0.0}
    for name, value in want.items():
        if getattr(config, name) != value:
            raise ValueError(f"cannot export ModelConfig.{name}={getattr(config, name)!r} as a Llama/Qwen2 "
                             f"checkpoint; it needs {name}={value!r}")


def config_to_hf(config: ModelConfig, **extra) -> dict:
    """config.json for `config`: Qwen2 when it has q/k/v biases, Llama otherwise. `extra` adds keys
    (e.g. bos_token_id, eos_token_id)."""
    check_exportable(config)
    kind = "qwen2" if config.qkv_bias else "llama"
    hf = {
        "architectures": [SUPPORTED[kind]], "model_type": kind, "vocab_size": config.vocab_size,
        "hidden_size": config.d_model, "intermediate_size": config.d_ff, "num_hidden_layers": config.n_layers,
        "num_attention_heads": config.n_heads, "num_key_value_heads": config.kv_heads,
        "head_dim": config.head_dim, "hidden_act": "silu", "max_position_embeddings": config.context_length,
        "rms_norm_eps": config.norm_eps, "tie_word_embeddings": config.tie_embeddings,
        # Both spellings, so transformers 4 and 5 read the same base.
        "rope_theta": config.rope_theta, "rope_parameters": {"rope_type": "default", "rope_theta": config.rope_theta},
        "attention_dropout": 0.0, "dtype": config.param_dtype,
    }
    if kind == "llama":
        hf.update(attention_bias=False, mlp_bias=False)
    else:
        hf.update(use_sliding_window=False, layer_types=["full_attention"] * config.n_layers)
    hf.update(extra)
    return hf


def same_architecture(a: ModelConfig, b: ModelConfig) -> bool:
    """Equal up to dtypes and kernel choices (what a round trip through config.json can keep)."""
    def key(c: ModelConfig) -> ModelConfig:
        # rope_layout: an interleaved model is exported permuted into the half-split order, the same function.
        return dataclasses.replace(c, dtype="float32", param_dtype="float32", attention_impl="xla", norm_impl="xla",
                                   n_kv_heads=c.kv_heads, rope_layout="half", remat="none", scan_layers=True)

    return key(a) == key(b)
