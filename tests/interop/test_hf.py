"""load_hf / save_hf against transformers on tiny random Llama and Qwen2 models (float32, logits to 1e-5)."""

import dataclasses
import json

import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("safetensors")

from lm.interop import load_hf, save_hf  # noqa: E402
from lm.interop.hf_config import same_architecture  # noqa: E402
from lm.model import ModelConfig, forward  # noqa: E402
from tests.interop.tiny_hf import CASES, hf_logits, hf_model, random_params  # noqa: E402

TOKENS = np.random.default_rng(0).integers(0, 96, (2, 23))
ATOL = 1e-5


def ours(params, config, tokens=TOKENS):
    return np.asarray(forward(params, jnp.asarray(tokens), config))


@pytest.fixture(scope="module", params=sorted(CASES))
def saved(request, tmp_path_factory):
    """(case name, transformers model, its save_pretrained directory)."""
    kind, overrides = CASES[request.param]
    model = hf_model(kind, seed=len(request.param), **overrides)
    path = tmp_path_factory.mktemp(request.param)
    model.save_pretrained(path)
    return request.param, model, path


def test_logits_match_transformers(saved):
    name, model, path = saved
    kind, overrides = CASES[name]
    params, config, tok = load_hf(path)
    assert tok is None  # no tokenizer files in this directory
    assert config.qkv_bias == (kind == "qwen2")
    assert config.tie_embeddings == overrides["tie_word_embeddings"]
    assert config.kv_heads == overrides["num_key_value_heads"]
    assert config.rope_theta == overrides.get("rope_parameters", {}).get("rope_theta", 10000.0)
    assert config.norm_eps == pytest.approx(overrides.get("rms_norm_eps", 1e-6))
    assert sum(x.size for x in jax_leaves(params)) == config.num_params() == model.num_parameters()
    ref = hf_logits(model, TOKENS)
    assert np.abs(ref).max() > 1.0  # large enough that 1e-5 is a real test
    np.testing.assert_allclose(ours(params, config), ref, rtol=0, atol=ATOL)


def jax_leaves(tree):
    import jax

    return jax.tree.leaves(tree)


def test_sharded_checkpoint_and_old_style_rope_config(tmp_path):
    """Shards listed in model.safetensors.index.json load; a transformers-4 config (top-level rope_theta,
    rope_scaling null) gives the same theta as rope_parameters."""
    kind, overrides = CASES["llama-gqa-untied"]
    model = hf_model(kind, **overrides)
    model.save_pretrained(tmp_path, max_shard_size="40KB")
    assert (tmp_path / "model.safetensors.index.json").is_file() and len(list(tmp_path.glob("*.safetensors"))) > 2
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["rope_theta"] = cfg.pop("rope_parameters")["rope_theta"]
    cfg["rope_scaling"] = None
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    params, config, _ = load_hf(tmp_path)
    assert config.rope_theta == 500.0
    np.testing.assert_allclose(ours(params, config), hf_logits(model, TOKENS), rtol=0, atol=ATOL)


@pytest.mark.parametrize("overrides", [dict(n_kv_heads=2), dict(n_kv_heads=1, tie_embeddings=True, qkv_bias=True)],
                         ids=["llama-gqa", "qwen2-mqa-tied"])
@pytest.mark.parametrize("shard", [None, 30_000], ids=["one-file", "sharded"])
def test_export_then_transformers_load(tmp_path, overrides, shard):
    from transformers import AutoModelForCausalLM

    config = ModelConfig(vocab_size=96, context_length=64, d_model=48, n_layers=2, n_heads=4, d_ff=80,
                         rope_theta=2000.0, norm_eps=1e-6, **overrides)
    params = random_params(config, seed=3)
    save_hf(params, config, tmp_path, max_shard_bytes=shard)
    assert (tmp_path / "model.safetensors.index.json").is_file() == bool(shard)
    model = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert model.config.model_type == ("qwen2" if config.qkv_bias else "llama")
    expected = ours(params, config)
    np.testing.assert_allclose(hf_logits(model, TOKENS), expected, rtol=0, atol=ATOL)
    # ... and our loader reads back exactly what was written.
    params2, config2, _ = load_hf(tmp_path)
    assert same_architecture(config, config2)
    np.testing.assert_array_equal(ours(params2, config2), expected)


def test_interleaved_rope_exports_permuted(tmp_path):
    """A model trained with interleaved RoPE pairs (2i, 2i+1) exports into HF's half-split order by
    permuting q's and k's head dims (and q/k biases): transformers computes the same logits, and the
    model reads back as a half-split one with the same function."""
    from transformers import AutoModelForCausalLM

    config = ModelConfig(vocab_size=96, context_length=64, d_model=48, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=80,
                         rope_theta=2000.0, norm_eps=1e-6, qkv_bias=True, rope_layout="interleaved")
    params = random_params(config, seed=4)
    save_hf(params, config, tmp_path)
    model = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    expected = ours(params, config)
    np.testing.assert_allclose(hf_logits(model, TOKENS), expected, rtol=0, atol=ATOL)
    params2, config2, _ = load_hf(tmp_path)
    assert config2.rope_layout == "half" and same_architecture(config, config2)
    np.testing.assert_allclose(ours(params2, config2), expected, rtol=0, atol=ATOL)


@pytest.mark.parametrize("field,value", [("qk_norm", True), ("logit_softcap", 30.0)])
def test_export_refuses_what_llama_cannot_express(tmp_path, field, value):
    config = dataclasses.replace(ModelConfig(vocab_size=96, context_length=64, d_model=48, n_layers=1, n_heads=4,
                                             d_ff=80), **{field: value})
    with pytest.raises(ValueError, match=f"cannot export ModelConfig.{field}"):
        save_hf(random_params(config, seed=0), config, tmp_path)


def test_bfloat16_load(tmp_path):
    kind, overrides = CASES["qwen2-gqa-tied-bias"]
    model = hf_model(kind, **overrides)
    model.save_pretrained(tmp_path)
    params, config, _ = load_hf(tmp_path, dtype="bfloat16")
    assert config.dtype == config.param_dtype == "bfloat16"
    assert all(x.dtype == jnp.bfloat16 for x in jax_leaves(params))
    ref = hf_logits(model, TOKENS)
    assert np.abs(ours(params, config) - ref).max() < 0.05 * np.abs(ref).max()


def test_bfloat16_checkpoint_loads_as_float32(tmp_path):
    """Checkpoints stored in bf16 (as most are) widen exactly to float32."""
    import torch
    from transformers import AutoModelForCausalLM

    kind, overrides = CASES["llama-gqa-untied"]
    hf_model(kind, **overrides).to(torch.bfloat16).save_pretrained(tmp_path)
    params, config, _ = load_hf(tmp_path)
    assert all(x.dtype == jnp.float32 for x in jax_leaves(params))
    ref = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    np.testing.assert_allclose(ours(params, config), hf_logits(ref, TOKENS), rtol=0, atol=ATOL)


def test_greedy_generation_matches_transformers(tmp_path):
    """20 greedy tokens through lm.inference (KV cache, left-padded batch) equal transformers' generate."""
    import torch

    from lm.inference import SamplingConfig
    from lm.inference.generate import generate_ids

    kind, overrides = CASES["qwen2-gqa-tied-bias"]
    model = hf_model(kind, seed=5, **overrides)
    model.save_pretrained(tmp_path)
    params, config, _ = load_hf(tmp_path)
    prompts = [[5, 17, 33, 2, 90, 41, 8], [60, 3, 22]]
    got, lengths = generate_ids(params, config, prompts, SamplingConfig(temperature=0.0, max_new_tokens=20))
    for i, p in enumerate(prompts):
        with torch.no_grad():
            ref = model.generate(torch.tensor([p]), max_new_tokens=20, min_new_tokens=20, do_sample=False)
        assert lengths[i] == 20
        assert got[i].tolist() == ref[0, len(p):].tolist()


def test_config_dtype_is_validated(saved):
    with pytest.raises(ValueError, match="dtype must be"):
        load_hf(saved[2], dtype="float16")


def test_same_architecture_ignores_dtypes():
    a = ModelConfig()
    assert same_architecture(a, dataclasses.replace(a, dtype="bfloat16", param_dtype="bfloat16"))
    assert same_architecture(a, dataclasses.replace(a, n_kv_heads=a.n_heads))  # 0 means n_heads
    assert not same_architecture(a, dataclasses.replace(a, qkv_bias=True))
