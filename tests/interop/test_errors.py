"""Bad checkpoints and unsupported architectures fail with errors that name what is wrong."""

import json

import numpy as np
import pytest

pytest.importorskip("safetensors")
from safetensors.numpy import load_file, save_file  # noqa: E402

from lm.interop import MissingTensorError, UnsupportedCheckpointError, load_hf, save_hf  # noqa: E402
from lm.interop.hf_config import config_from_hf  # noqa: E402
from lm.model import ModelConfig  # noqa: E402
from tests.interop.tiny_hf import random_params  # noqa: E402

TINY = ModelConfig(vocab_size=96, context_length=64, d_model=48, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=80)


@pytest.fixture
def ckpt(tmp_path):
    """A valid Llama checkpoint directory written by save_hf (no transformers needed)."""
    save_hf(random_params(TINY, 0), TINY, tmp_path)
    return tmp_path


def edit_config(path, **changes):
    cfg = json.loads((path / "config.json").read_text())
    for k, v in changes.items():
        if v is None:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    (path / "config.json").write_text(json.dumps(cfg))


def edit_tensors(path, drop=(), add=None):
    tensors = load_file(path / "model.safetensors")
    for name in drop:
        del tensors[name]
    tensors.update(add or {})
    save_file(tensors, path / "model.safetensors")


def test_valid_fixture_loads(ckpt):
    _, config, _ = load_hf(ckpt)
    assert config.kv_heads == 2


def test_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_hf(tmp_path / "nope")


def test_file_instead_of_directory(ckpt):
    with pytest.raises(NotADirectoryError, match="give the checkpoint directory"):
        load_hf(ckpt / "model.safetensors")


def test_no_config_json(ckpt):
    (ckpt / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_hf(ckpt)


def test_no_weights(ckpt):
    (ckpt / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"no \*\.safetensors"):
        load_hf(ckpt)


def test_missing_tensors_are_named(ckpt):
    edit_tensors(ckpt, drop=["model.layers.1.mlp.up_proj.weight", "model.norm.weight"])
    with pytest.raises(MissingTensorError, match=r"lacks 2 tensor\(s\).*model.layers.1.mlp.up_proj.weight"):
        load_hf(ckpt)


def test_untied_config_without_lm_head(ckpt):
    edit_tensors(ckpt, drop=["lm_head.weight"])
    with pytest.raises(MissingTensorError, match="lm_head.weight"):
        load_hf(ckpt)


def test_index_listing_an_absent_shard(tmp_path):
    save_hf(random_params(TINY, 0), TINY, tmp_path, max_shard_bytes=20_000)
    shards = sorted(tmp_path.glob("model-*.safetensors"))
    shards[-1].unlink()
    with pytest.raises(FileNotFoundError, match=shards[-1].name):
        load_hf(tmp_path)


def test_attention_shape_mismatch(ckpt):
    edit_config(ckpt, num_key_value_heads=4)
    with pytest.raises(ValueError, match=r"k_proj.weight has shape \(24, 48\).*implies \(48, 48\)"):
        load_hf(ckpt)


def test_unexpected_tensor_is_refused(ckpt):
    """An o_proj bias the config does not declare would be silently dropped: refuse instead."""
    edit_tensors(ckpt, add={"model.layers.0.self_attn.o_proj.bias": np.zeros(48, np.float32)})
    with pytest.raises(UnsupportedCheckpointError, match="o_proj.bias"):
        load_hf(ckpt)


def test_shape_mismatch(ckpt):
    edit_config(ckpt, intermediate_size=64)
    with pytest.raises(ValueError, match=r"mlp\.(down|gate|up)_proj\.weight has shape \((80, 48|48, 80)\)"
                                         r".*implies \((64, 48|48, 64)\)"):
        load_hf(ckpt)


@pytest.mark.parametrize("changes, match", [
    (dict(model_type="gpt2", architectures=["GPT2LMHeadModel"]), "model_type='gpt2'"),
    (dict(model_type="mistral"), "model_type='mistral'"),
    (dict(attention_bias=True), "o_proj"),
    (dict(mlp_bias=True), "mlp_bias"),
    (dict(hidden_act="gelu"), "hidden_act='gelu'"),
    (dict(rope_parameters={"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0}), "'llama3'"),
    (dict(rope_parameters=None, rope_theta=1e4, rope_scaling={"type": "linear", "factor": 2.0}), "'linear'"),
    (dict(head_dim=16), "head_dim=16"),
    (dict(model_type="qwen2", use_sliding_window=True), "sliding-window"),
    (dict(vocab_size=None), "lacks"),
])
def test_unsupported_configs(ckpt, changes, match):
    edit_config(ckpt, **changes)
    with pytest.raises(ValueError, match=match):
        load_hf(ckpt)


def test_unsupported_config_error_type():
    with pytest.raises(UnsupportedCheckpointError, match="supported model types"):
        config_from_hf({"model_type": "bert"})


@pytest.mark.parametrize("change", [dict(norm="layernorm"), dict(positions="learned"), dict(sliding_window=8),
                                    dict(norm_position="post"), dict(activation="gelu")])
def test_export_refuses_what_hf_cannot_express(tmp_path, change):
    config = ModelConfig(vocab_size=96, context_length=64, d_model=48, n_layers=1, n_heads=4, d_ff=80, **change)
    with pytest.raises(ValueError, match=f"cannot export ModelConfig.{next(iter(change))}"):
        save_hf(random_params(config, 0), config, tmp_path)
