"""A Hugging Face tokenizer behind the interface our inference and training use.

    tok = HFTokenizer.from_dir("runs/smollm2-135m-instruct")
    prompt = tok.apply_chat_template([{"role": "user", "content": "Hi"}])   # str
    ids = tok.encode(prompt)                                                 # no second BOS
    text = tok.decode(ids)
    tok.special_ids        # {"<|im_end|>": 2}: the tokens that end generation

Encoding is the `tokenizers` library on the directory's tokenizer.json (what
transformers' fast tokenizers run). Chat templates render with Jinja2 the way
transformers renders them (sandboxed, trim_blocks, lstrip_blocks, `tojson`,
`raise_exception`), from chat_template.jinja or tokenizer_config.json.
`special_ids` holds the end-of-sequence tokens (the config's and generation
config's eos_token_id, and the tokenizer's eos_token), since `lm.inference`
stops at every id in it; `added_special_ids` has all special tokens.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path

from lm.tokenizer.io import gpt2_bytes_to_unicode


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _token_str(t) -> str | None:
    return t.get("content") if isinstance(t, dict) else t  # older configs store AddedToken dicts


def _ids(v) -> list[int]:
    if v is None:
        return []
    return [int(i) for i in (v if isinstance(v, (list, tuple)) else [v])]


def _chat_template(path: Path, tok_config: dict) -> str | None:
    if (path / "chat_template.jinja").is_file():
        return (path / "chat_template.jinja").read_text()
    t = tok_config.get("chat_template")
    if isinstance(t, list):  # named templates: use the default one
        t = {x["name"]: x["template"] for x in t}.get("default")
    return t


class HFTokenizer:
    """encode / decode / special_ids / apply_chat_template over a `tokenizers.Tokenizer`.

    special_tokens: {"bos_token": "<s>", "eos_token": ...} (the strings chat templates see).
    stop_ids: ids that end generation (become `special_ids`).
    """

    def __init__(self, tokenizer, chat_template: str | None = None, special_tokens: dict | None = None,
                 stop_ids: list[int] = (), config: dict | None = None):
        self.tokenizer = tokenizer
        self.chat_template = chat_template
        self.special_tokens = {k: v for k, v in (special_tokens or {}).items() if v is not None}
        self.config = dict(config or {})  # tokenizer_config.json, written back by `save`
        stops = list(stop_ids)
        if self.eos_token is not None and tokenizer.token_to_id(self.eos_token) is not None:
            stops.append(tokenizer.token_to_id(self.eos_token))
        self.special_ids: dict[str, int] = {tokenizer.id_to_token(i): i for i in dict.fromkeys(stops)}
        self.added_special_ids: dict[str, int] = {t.content: i for i, t in tokenizer.get_added_tokens_decoder().items()
                                                  if t.special}
        self._added = {i: t.content for i, t in tokenizer.get_added_tokens_decoder().items()}
        self._byte_of = None
        if type(tokenizer.decoder).__name__ == "ByteLevel":
            self._byte_of = {c: b for b, c in gpt2_bytes_to_unicode().items()}

    @classmethod
    def from_dir(cls, path: str | os.PathLike) -> HFTokenizer:
        """Read tokenizer.json, tokenizer_config.json, chat_template.jinja and the eos ids of
        config.json / generation_config.json from a Hugging Face model directory."""
        from tokenizers import Tokenizer

        path = Path(path)
        if not (path / "tokenizer.json").is_file():
            raise FileNotFoundError(f"{path} has no tokenizer.json (only fast, tokenizers-format HF tokenizers load)")
        tok_config = _read_json(path / "tokenizer_config.json")
        special = {k: _token_str(tok_config.get(k)) for k in ("bos_token", "eos_token", "unk_token", "pad_token")}
        stops = _ids(_read_json(path / "generation_config.json").get("eos_token_id"))
        stops += _ids(_read_json(path / "config.json").get("eos_token_id"))
        return cls(Tokenizer.from_file(str(path / "tokenizer.json")), _chat_template(path, tok_config), special,
                   stops, tok_config)

    # ----------------------------------------------------------------- the interface
    def encode(self, text: str, add_special_tokens: bool | None = None) -> list[int]:
        """Ids of `text`. add_special_tokens: add what the tokenizer's post-processor adds (e.g. a BOS);
        None (default) adds them unless `text` already starts with the BOS token, as a string from
        `apply_chat_template` does, so a chat prompt never gets two."""
        if add_special_tokens is None:
            add_special_tokens = not (self.bos_token and text.startswith(self.bos_token))
        return self.tokenizer.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def decode_bytes(self, ids) -> bytes:
        """The raw bytes of `ids` (so a stream of ids can be decoded incrementally without splitting a
        UTF-8 character); exact for byte-level BPE, `decode(ids).encode()` otherwise."""
        ids = [int(i) for i in ids]
        if self._byte_of is None:
            return self.decode(ids).encode("utf-8")
        out = []
        for i in ids:
            t = self.tokenizer.id_to_token(i)
            if t is None:
                raise ValueError(f"token id {i} is outside the vocabulary (size {self.vocab_size})")
            out.append(self._added[i].encode("utf-8") if i in self._added else bytes(self._byte_of[c] for c in t))
        return b"".join(out)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    @property
    def bos_token(self) -> str | None:
        return self.special_tokens.get("bos_token")

    @property
    def eos_token(self) -> str | None:
        return self.special_tokens.get("eos_token")

    def token_id(self, token: str | None) -> int | None:
        return None if token is None else self.tokenizer.token_to_id(token)

    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True,
                            tokenize: bool = False, **kwargs):
        """The conversation as the model was trained to see it: a string (or its ids with tokenize=True).

        messages: [{"role": "system" | "user" | "assistant", "content": str}, ...].
        kwargs reach the template (e.g. tools=..., enable_thinking=...).
        """
        if not self.chat_template:
            raise ValueError("this tokenizer has no chat template (no chat_template.jinja and no chat_template in "
                             "tokenizer_config.json); format the prompt yourself")
        if not isinstance(messages, (list, tuple)) or not all(isinstance(m, dict) and "role" in m for m in messages):
            raise ValueError("messages must be a list of {'role': ..., 'content': ...} dicts")
        text = _compile(self.chat_template).render(messages=list(messages), add_generation_prompt=add_generation_prompt,
                                                   **self.special_tokens, **kwargs)
        return self.encode(text, add_special_tokens=False) if tokenize else text

    # ----------------------------------------------------------------- saving
    def save(self, path: str | os.PathLike) -> dict:
        """Write tokenizer.json, tokenizer_config.json and chat_template.jinja; returns the bos/eos/pad ids
        for config.json."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save(str(path / "tokenizer.json"))
        config = {k: v for k, v in self.config.items() if k != "chat_template"}
        config.update(self.special_tokens)
        config.setdefault("tokenizer_class", "PreTrainedTokenizerFast")
        (path / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
        if self.chat_template:
            (path / "chat_template.jinja").write_text(self.chat_template)
        ids = {"bos_token_id": self.token_id(self.bos_token), "pad_token_id": self.token_id(
            self.special_tokens.get("pad_token"))}
        ids = {k: v for k, v in ids.items() if v is not None}
        if self.special_ids:
            stops = list(self.special_ids.values())
            ids["eos_token_id"] = stops[0] if len(stops) == 1 else stops
        return ids

    def __repr__(self) -> str:
        return (f"HFTokenizer(vocab_size={self.vocab_size}, stop={list(self.special_ids)}, "
                f"chat_template={'yes' if self.chat_template else 'no'})")


_TEMPLATES: dict[str, object] = {}


def _compile(source: str):
    """A Jinja2 template compiled as transformers compiles chat templates (cached by source)."""
    if source not in _TEMPLATES:
        import jinja2
        from jinja2.ext import loopcontrols
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(message):
            raise jinja2.exceptions.TemplateError(message)

        def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
            return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
        env.filters["tojson"] = tojson
        env.globals["raise_exception"] = raise_exception
        env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
        _TEMPLATES[source] = env.from_string(source)
    return _TEMPLATES[source]

