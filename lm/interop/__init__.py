"""Hugging Face interop: Llama / Qwen2 checkpoint directories, GGUF conversion, and their tokenizers.

    from lm.interop import load_hf, save_hf, convert_gguf
    params, config, tokenizer = load_hf("runs/smollm2-135m-instruct")     # tokenizer: HFTokenizer or None
    save_hf(params, config, "runs/export", tokenizer=tokenizer)
    convert_gguf("SmolLM2-135M-Instruct.Q4_1.gguf", "runs/smollm2-135m-instruct")

Modules: `hf_config` (config.json <-> ModelConfig), `hf` (weights), `tokenizer`
(the HF tokenizer behind our encode/decode/special_ids interface, with chat
templates), `gguf` (GGUF -> safetensors through transformers).
"""

from lm.interop.gguf import convert_gguf, find_smollm2_gguf
from lm.interop.hf import MissingTensorError, load_hf, save_hf
from lm.interop.hf_config import UnsupportedCheckpointError, config_from_hf, config_to_hf
from lm.interop.tokenizer import HFTokenizer

__all__ = ["HFTokenizer", "MissingTensorError", "UnsupportedCheckpointError", "config_from_hf", "config_to_hf",
           "convert_gguf", "find_smollm2_gguf", "load_hf", "save_hf"]
