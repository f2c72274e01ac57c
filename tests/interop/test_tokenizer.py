"""HFTokenizer: same ids, text and chat prompts as transformers; our BPE exported as an HF tokenizer."""

import json

import numpy as np
import pytest

pytest.importorskip("tokenizers")
pytest.importorskip("jinja2")

from lm.interop import HFTokenizer, load_hf, save_hf  # noqa: E402
from lm.interop.bpe import to_hf_tokenizer  # noqa: E402
from lm.model import ModelConfig  # noqa: E402
from lm.tokenizer import Tokenizer, train_bpe  # noqa: E402
from tests.interop.tiny_hf import random_params  # noqa: E402

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TEXTS = ["Hello, world! It's 2024 and we're  testing  BPE's limits...\n\n\tTabs too.",
         "naïve café — 日本語のテキスト 🙂 <|im_end|> after a special",
         "<|im_start|>user\nWhat's 7*6?<|im_end|>\n", "   leading spaces and trailing   ", ""]
# A ChatML template using the features transformers provides: loop.first, tojson, raise_exception, trim_blocks.
CHATML = """{% for message in messages %}
{% if message['role'] not in ['system', 'user', 'assistant'] %}{{ raise_exception('bad role ' + message['role']) }}{% endif %}
{% if loop.first and message['role'] != 'system' %}{{ '<|im_start|>system\\nYou are helpful.<|im_end|>\\n' }}{% endif %}
{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}
{% endfor %}
{% if tools %}{{ tools | tojson }}{% endif %}
{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"""  # noqa: E501 (a template)
CHAT = [{"role": "user", "content": "What is 7 * 6?"}, {"role": "assistant", "content": "42"},
        {"role": "user", "content": "And 8 * 9? Answer with «a number»."}]


@pytest.fixture(scope="module")
def ours(tmp_path_factory) -> Tokenizer:
    """A small byte-level BPE trained on the module's own text."""
    path = tmp_path_factory.mktemp("bpe") / "corpus.txt"
    path.write_text(open(__file__, encoding="utf-8").read() * 3 + "".join(TEXTS), encoding="utf-8")
    vocab, merges = train_bpe(path, 400, SPECIALS, num_workers=1)
    return Tokenizer(vocab, merges, SPECIALS)


@pytest.fixture(scope="module")
def hf_dir(ours, tmp_path_factory):
    """Our tokenizer saved as an HF tokenizer directory with a chat template."""
    path = tmp_path_factory.mktemp("hf_tok")
    tok = to_hf_tokenizer(ours)
    tok.chat_template = CHATML
    tok.special_tokens.update(bos_token="<|im_start|>", eos_token="<|im_end|>")
    tok.save(path)
    return path


def test_our_bpe_as_hf_tokenizer_gives_the_same_ids(ours):
    tok = to_hf_tokenizer(ours)
    for text in TEXTS:
        assert tok.encode(text) == ours.encode(text), text
        assert tok.decode(tok.encode(text)) == text
        assert tok.decode_bytes(tok.encode(text)) == text.encode("utf-8")
    assert tok.special_ids == ours.special_ids
    assert tok.vocab_size == ours.vocab_size


def test_matches_transformers_autotokenizer(hf_dir):
    transformers = pytest.importorskip("transformers")
    ref = transformers.AutoTokenizer.from_pretrained(hf_dir)
    tok = HFTokenizer.from_dir(hf_dir)
    for text in TEXTS:
        ids = tok.encode(text)
        assert ids == ref(text)["input_ids"], text
        assert tok.decode(ids) == ref.decode(ids)
    for gen in (True, False):
        want = ref.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=gen)
        assert tok.apply_chat_template(CHAT, add_generation_prompt=gen) == want
    tools = [{"name": "calc", "description": "évalue"}]
    assert tok.apply_chat_template(CHAT, tools=tools) == ref.apply_chat_template(
        CHAT, tools=tools, tokenize=False, add_generation_prompt=True)
    assert tok.apply_chat_template(CHAT, tokenize=True) == tok.encode(tok.apply_chat_template(CHAT))


def test_chat_template_errors(hf_dir, ours):
    import jinja2

    tok = HFTokenizer.from_dir(hf_dir)
    with pytest.raises(jinja2.TemplateError, match="bad role tool"):
        tok.apply_chat_template([{"role": "tool", "content": "x"}])
    with pytest.raises(ValueError, match="list of"):
        tok.apply_chat_template("hello")
    with pytest.raises(ValueError, match="no chat template"):
        to_hf_tokenizer(ours).apply_chat_template(CHAT)


def test_stop_ids_from_eos_token_and_generation_config(hf_dir, ours):
    end, im_end = ours.special_ids["<|endoftext|>"], ours.special_ids["<|im_end|>"]
    (hf_dir / "generation_config.json").write_text(json.dumps({"eos_token_id": [end]}))
    try:
        tok = HFTokenizer.from_dir(hf_dir)
    finally:
        (hf_dir / "generation_config.json").unlink()
    assert tok.special_ids == {"<|endoftext|>": end, "<|im_end|>": im_end}  # the second is eos_token
    assert set(tok.added_special_ids) == set(SPECIALS)


def test_bos_added_once(ours, tmp_path):
    """A post-processor that prepends BOS adds it to plain text, not to a chat prompt that starts with it."""
    from tokenizers.processors import TemplateProcessing

    tok = to_hf_tokenizer(ours)
    bos = tok.tokenizer.token_to_id("<|im_start|>")
    tok.tokenizer.post_processor = TemplateProcessing(single="<|im_start|> $A", special_tokens=[("<|im_start|>", bos)])
    tok.special_tokens["bos_token"] = "<|im_start|>"
    assert tok.encode("hi")[0] == bos and tok.encode("hi")[1] != bos
    assert tok.encode("<|im_start|>user")[:2] != [bos, bos]
    assert tok.encode("hi", add_special_tokens=False) == ours.encode("hi")


def test_save_hf_with_our_tokenizer(ours, tmp_path):
    """A model exported with our tokenizer reloads with an HFTokenizer that encodes, decodes and stops alike
    (generation through it is checked in test_cli.py and test_smollm2.py)."""
    config = ModelConfig(vocab_size=ours.vocab_size, context_length=64, d_model=32, n_layers=1, n_heads=2, d_ff=64)
    params = random_params(config, 0)
    save_hf(params, config, tmp_path, tokenizer=ours)
    hf = json.loads((tmp_path / "config.json").read_text())
    assert hf["eos_token_id"] == [ours.special_ids[s] for s in SPECIALS]
    params2, config2, tok = load_hf(tmp_path)
    assert isinstance(tok, HFTokenizer) and tok.special_ids == ours.special_ids
    assert config2 == config
    np.testing.assert_array_equal(params2["blocks"]["attn"]["wq"], params["blocks"]["attn"]["wq"])
    for text in TEXTS:
        assert tok.encode(text) == ours.encode(text) and tok.decode(ours.encode(text)) == text


def test_missing_tokenizer_json(tmp_path):
    with pytest.raises(FileNotFoundError, match="no tokenizer.json"):
        HFTokenizer.from_dir(tmp_path)


def test_decode_rejects_unknown_ids(ours):
    tok = to_hf_tokenizer(ours)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.decode_bytes([tok.vocab_size + 5])
    assert np.all(np.array(tok.encode("abc")) < tok.vocab_size)
