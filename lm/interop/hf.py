"""Load and save Hugging Face Llama / Qwen2 checkpoint directories.

    params, config, tokenizer = load_hf("runs/smollm2-135m-instruct")
    save_hf(params, config, "runs/export", tokenizer=tokenizer)   # transformers loads it back

A directory holds `config.json` and `model.safetensors`, or shards listed in
`model.safetensors.index.json`. Hugging Face's `nn.Linear` weights are
[out, in]; ours are [in, out] kernels, with attention split per head
(wq [d, heads, hd], wo [heads, hd, d]), and the layers stacked: HF's
`model.layers.{i}.*` are row i of our `params["blocks"]` leaves. Both use
half-split RoPE by default, so q and k need no permutation; a model trained
with `rope_layout="interleaved"` is exported with its q and k head dimensions
permuted into the half-split order, which computes exactly the same scores.
Tensors are read and written with safetensors' NumPy API.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from flax import nnx

from lm.interop.bpe import save_tokenizer
from lm.interop.hf_config import UnsupportedCheckpointError, check_exportable, config_from_hf, config_to_hf
from lm.interop.tokenizer import HFTokenizer
from lm.model import ModelConfig
from lm.model.transformer import _abstract

INDEX = "model.safetensors.index.json"
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)  # buffers some older checkpoints stored; recomputed here


class MissingTensorError(KeyError):
    """A checkpoint lacks tensors its config.json implies."""

    def __str__(self):
        return str(self.args[0])


def _layer_map(config: ModelConfig) -> dict[str, tuple[tuple[str, ...], str]]:
    """HF name within `model.layers.{i}.` -> (path under our "blocks", how to convert)."""
    m = {
        "input_layernorm.weight": (("attn_norm", "scale"), "copy"),
        "post_attention_layernorm.weight": (("mlp_norm", "scale"), "copy"),
        "self_attn.q_proj.weight": (("attn", "wq"), "in_heads"),
        "self_attn.k_proj.weight": (("attn", "wk"), "in_heads"),
        "self_attn.v_proj.weight": (("attn", "wv"), "in_heads"),
        "self_attn.o_proj.weight": (("attn", "wo"), "heads_out"),
        "mlp.gate_proj.weight": (("mlp", "w1", "kernel"), "T"),
        "mlp.up_proj.weight": (("mlp", "w3", "kernel"), "T"),
        "mlp.down_proj.weight": (("mlp", "w2", "kernel"), "T"),
    }
    if config.qkv_bias:
        m |= {f"self_attn.{p}_proj.bias": (("attn", f"b{p}"), "heads") for p in "qkv"}
    return m


def name_map(config: ModelConfig) -> dict[str, tuple[tuple[str, ...], str, int | None]]:
    """Every HF tensor name of `config` -> (path in our params, conversion, layer index or None).
    A layer's tensors live at that index of the leading axis of our stacked "blocks" leaves."""
    m = {"model.embed_tokens.weight": (("embed", "embedding"), "copy", None),
         "model.norm.weight": (("final_norm", "scale"), "copy", None)}
    layer = _layer_map(config)
    for i in range(config.n_layers):
        m |= {f"model.layers.{i}.{k}": (("blocks", *path), how, i) for k, (path, how) in layer.items()}
    if not config.tie_embeddings:
        m["lm_head.weight"] = (("head", "kernel"), "T", None)
    return m


def _half_split_order(head_dim: int) -> np.ndarray:
    """Index map taking an interleaved-RoPE head (pairs 2i, 2i+1) to the half-split order (pairs i,
    i + head_dim/2): rotating pair i by the same angle in either order gives the same scores."""
    return np.concatenate([np.arange(0, head_dim, 2), np.arange(1, head_dim, 2)])


def _to_ours(x: np.ndarray, how: str, config: ModelConfig) -> np.ndarray:
    hd = config.head_dim
    if how == "copy":
        return x
    if how == "T":
        return x.T
    if how == "in_heads":  # [heads * hd, d] -> [d, heads, hd]
        return x.T.reshape(x.shape[1], -1, hd)
    if how == "heads_out":  # [d, heads * hd] -> [heads, hd, d]
        return x.T.reshape(-1, hd, x.shape[0])
    if how == "heads":  # bias [heads * hd] -> [heads, hd]
        return x.reshape(-1, hd)
    raise AssertionError(how)


def _to_hf(x: np.ndarray, how: str) -> np.ndarray:
    if how == "copy":
        return x
    if how == "T":
        return x.T
    if how == "in_heads":  # [d, heads, hd] -> [heads * hd, d]
        return x.reshape(x.shape[0], -1).T
    if how == "heads_out":  # [heads, hd, d] -> [d, heads * hd]
        return x.reshape(-1, x.shape[-1]).T
    if how == "heads":
        return x.reshape(-1)
    raise AssertionError(how)


def _shard_files(path: Path) -> list[Path]:
    if (path / INDEX).is_file():
        index = json.loads((path / INDEX).read_text())
        files = sorted(set(index["weight_map"].values()))
        absent = [f for f in files if not (path / f).is_file()]
        if absent:
            raise FileNotFoundError(f"{path / INDEX} lists shard(s) {absent} that are not in {path}")
        return [path / f for f in files]
    files = sorted(path.glob("*.safetensors"))
    if not files:
        found = sorted(p.name for p in path.iterdir())[:10]
        hint = " (PyTorch .bin checkpoints are not read; re-save with safetensors)" if any(
            f.endswith(".bin") for f in found) else ""
        raise FileNotFoundError(f"no *.safetensors files or {INDEX} in {path}; found {found}{hint}")
    return files


def read_config(path: str | os.PathLike) -> dict:
    """The checkpoint directory's config.json as a dict, with clear errors for a wrong path."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint directory {str(path)!r} does not exist")
    if not path.is_dir():
        raise NotADirectoryError(f"{str(path)!r} is a file; give the checkpoint directory (config.json + "
                                 "*.safetensors). For a .gguf file use lm.interop.convert_gguf first")
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} has no config.json; is it a Hugging Face model directory?")
    return json.loads((path / "config.json").read_text())


def _as_dtype(x: np.ndarray, dtype: str) -> np.ndarray:
    target = ml_dtypes.bfloat16 if dtype == "bfloat16" else np.dtype(dtype)
    # float16/bfloat16 widen to float32 exactly; going down rounds once.
    return np.asarray(x, np.float32).astype(target) if x.dtype != target else x


def load_hf(path: str | os.PathLike, dtype: str = "float32", tokenizer: bool = True):
    """(params, ModelConfig, HFTokenizer or None) from a Hugging Face Llama/Qwen2 directory.

    dtype: "float32" or "bfloat16", for both the params and the config's compute dtype.
    The tokenizer is None when the directory has no tokenizer.json (or tokenizer=False).
    """
    from safetensors import safe_open

    if dtype not in ("float32", "bfloat16"):
        raise ValueError(f"dtype must be 'float32' or 'bfloat16', got {dtype!r}")
    path = Path(path)
    config = config_from_hf(read_config(path), dtype)
    wanted = name_map(config)
    expected = _our_shapes(config)
    params: dict = {}
    unexpected = []
    for file in _shard_files(path):
        with safe_open(file, framework="numpy") as f:
            for name in f.keys():
                if name.endswith(_IGNORED_SUFFIXES) or (name == "lm_head.weight" and config.tie_embeddings):
                    continue  # tied checkpoints may still store the head: it is the embedding
                if name not in wanted:
                    unexpected.append(name)
                    continue
                keys, how, layer = wanted.pop(name)
                shape = expected[keys][1:] if layer is not None else expected[keys]
                got, want = tuple(f.get_slice(name).get_shape()), _hf_shape(shape, how)
                if got != want:
                    raise ValueError(f"checkpoint {path}: tensor {name} has shape {got}, but config.json implies "
                                     f"{want}; the weights and config.json do not belong together")
                x = _as_dtype(_to_ours(f.get_tensor(name), how, config), dtype)
                node = params
                for k in keys[:-1]:
                    node = node.setdefault(k, {})
                if layer is None:
                    node[keys[-1]] = x
                else:  # row `layer` of the stacked leaf, filled in place as the layers arrive
                    node.setdefault(keys[-1], np.zeros(expected[keys], x.dtype))[layer] = x
    if wanted:
        names = sorted(wanted)
        raise MissingTensorError(f"checkpoint {path} lacks {len(names)} tensor(s) its config.json needs, e.g. "
                                 f"{names[:5]}; the files are incomplete or do not match config.json")
    if unexpected:
        raise UnsupportedCheckpointError(
            f"checkpoint {path} has {len(unexpected)} tensor(s) this model has no place for, e.g. "
            f"{sorted(unexpected)[:5]}; loading without them would change the model's output")
    params = jax.tree.map(jnp.asarray, params)
    tok = None
    if tokenizer and (path / "tokenizer.json").is_file():
        tok = HFTokenizer.from_dir(path)
    return params, config, tok


def _our_shapes(config: ModelConfig) -> dict[tuple[str, ...], tuple[int, ...]]:
    """Path in our params -> shape, from the model's abstract (never allocated) parameters."""
    shapes = {}
    jax.tree.map_with_path(lambda p, a: shapes.__setitem__(tuple(k.key for k in p), tuple(a.shape)),
                           nnx.to_pure_dict(_abstract(config)[1]))
    return shapes


def _hf_shape(ours: tuple[int, ...], how: str) -> tuple[int, ...]:
    """The HF tensor shape that `_to_ours(how)` turns into `ours`."""
    if how == "T":
        return ours[::-1]
    if how == "in_heads":  # ours [d, heads, hd]
        return (ours[1] * ours[2], ours[0])
    if how == "heads_out":  # ours [heads, hd, d]
        return (ours[2], ours[0] * ours[1])
    if how == "heads":
        return (ours[0] * ours[1],)
    return ours


def save_hf(params: dict, config: ModelConfig, path: str | os.PathLike, tokenizer=None,
            max_shard_bytes: int | None = None) -> Path:
    """Write `params` as a Hugging Face directory that `transformers.AutoModelForCausalLM` loads.

    Tensors keep the params' dtype (float32 or bfloat16). `max_shard_bytes` splits them into
    `model-0000i-of-0000n.safetensors` shards with an index. `tokenizer` (an HFTokenizer, or our
    byte-level BPE `lm.tokenizer.Tokenizer`) is saved beside the model when given.
    """
    from safetensors.numpy import save_file

    check_exportable(config)
    tensors = {}
    order = _half_split_order(config.head_dim) if config.rope_layout == "interleaved" else None
    for name, (keys, how, layer) in name_map(config).items():
        node = params
        for k in keys:
            if not isinstance(node, dict) or k not in node:
                raise KeyError(f"params lack {'/'.join(keys)} (for {name}); are they the params of this config?")
            node = node[k]
        x = np.asarray(node if layer is None else node[layer])
        if order is not None and keys[-1] in ("wq", "wk", "bq", "bk"):
            x = x[..., order]  # [.., heads, head_dim]: into HF's half-split RoPE order
        tensors[name] = np.ascontiguousarray(_to_hf(x, how))
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    extra = {}
    if tokenizer is not None:
        extra = save_tokenizer(tokenizer, path)
    (path / "config.json").write_text(json.dumps(config_to_hf(config, **extra), indent=2) + "\n")
    if extra:
        gen = {k: v for k, v in extra.items() if k in ("bos_token_id", "eos_token_id", "pad_token_id")}
        (path / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")
    shards: list[dict] = [{}]
    size = 0
    for name, x in tensors.items():
        if max_shard_bytes and shards[-1] and size + x.nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = x
        size += x.nbytes
    meta = {"format": "pt"}  # transformers expects this tag on safetensors written for PyTorch models
    if len(shards) == 1:
        save_file(shards[0], path / "model.safetensors", metadata=meta)
        return path
    weight_map = {}
    for i, shard in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, path / fname, metadata=meta)
        weight_map |= dict.fromkeys(shard, fname)
    total = sum(x.nbytes for x in tensors.values())
    (path / INDEX).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    return path
