"""Tokenizer files: our own lossless format, GPT-2's vocab.json + merges.txt, tiktoken ranks.

Our format is one JSON file whose tokens are hex strings, so any byte sequence
(including invalid UTF-8) survives a round trip.
"""

from __future__ import annotations

import base64
import functools
import json
import os
from pathlib import Path

from lm.tokenizer.tokenizer import Tokenizer

FORMAT = "lm-bpe-v1"


def save_tokenizer(tokenizer: Tokenizer, path: str | os.PathLike) -> Path:
    """Write `tokenizer.json` in our format; `path` may be a directory or a file."""
    path = Path(path)
    if path.suffix != ".json":
        path = path / "tokenizer.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "format": FORMAT,
        "special_tokens": tokenizer.special_tokens,
        "vocab": {str(i): t.hex() for i, t in sorted(tokenizer.vocab.items())},
        "merges": [[a.hex(), b.hex()] for a, b in tokenizer.merges],
    }
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc))
    tmp.replace(path)  # never leave a half-written tokenizer behind
    return path


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
    """Read a tokenizer saved by `save_tokenizer` (a directory or the JSON file)."""
    path = Path(path)
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.is_file():
        raise FileNotFoundError(f"tokenizer file not found: {str(path)!r} (train one with experiments.train_tokenizer)")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not a valid tokenizer JSON file ({e})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError(f"{path}: expected a JSON object with format {FORMAT!r}, got {str(doc)[:80]!r}")
    try:
        vocab = {int(i): bytes.fromhex(h) for i, h in doc["vocab"].items()}
        merges = [(bytes.fromhex(a), bytes.fromhex(b)) for a, b in doc["merges"]]
        specials = list(doc.get("special_tokens", []))
    except (KeyError, ValueError, TypeError) as e:
        raise ValueError(f"{path}: malformed vocab or merges entry ({e!r})") from None
    return Tokenizer(vocab, merges, specials)


@functools.lru_cache(maxsize=1)
def gpt2_bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable unicode characters."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return dict(zip(printable, map(chr, chars)))


def _gpt2_token_to_bytes(token: str, decoder: dict[str, int], where: str) -> bytes:
    try:
        return bytes(decoder[c] for c in token)
    except KeyError as e:
        raise ValueError(f"{where}: character {e.args[0]!r} in token {token!r} is not in GPT-2's byte "
                         "alphabet") from None


def load_gpt2_tokenizer(
    vocab_path: str | os.PathLike, merges_path: str | os.PathLike, special_tokens: list[str] | None = None
) -> Tokenizer:
    """Load GPT-2-style `vocab.json` ({token: id}) and `merges.txt` (`tok1 tok2` lines)."""
    vocab_path, merges_path = Path(vocab_path), Path(merges_path)
    for p in (vocab_path, merges_path):
        if not p.is_file():
            raise FileNotFoundError(f"GPT-2 tokenizer file not found: {str(p)!r}")
    decoder = {c: b for b, c in gpt2_bytes_to_unicode().items()}
    try:
        raw = json.loads(vocab_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{vocab_path}: not valid JSON ({e})") from None
    if not isinstance(raw, dict) or not all(isinstance(v, int) for v in raw.values()):
        raise ValueError(f"{vocab_path}: expected a JSON object mapping token strings to integer ids")
    specials = list(special_tokens or [])
    vocab: dict[int, bytes] = {}
    for token, i in raw.items():
        vocab[i] = token.encode("utf-8") if token in specials else _gpt2_token_to_bytes(token, decoder, str(vocab_path))
    merges = []
    for lineno, line in enumerate(merges_path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or (lineno == 1 and line.startswith("#version")):
            continue
        parts = line.split(" ")
        if len(parts) != 2:
            raise ValueError(f"{merges_path}:{lineno}: expected two space-separated tokens, got {line!r}")
        where = f"{merges_path}:{lineno}"
        merges.append((_gpt2_token_to_bytes(parts[0], decoder, where), _gpt2_token_to_bytes(parts[1], decoder, where)))
    return Tokenizer(vocab, merges, specials)


def save_gpt2_tokenizer(tokenizer: Tokenizer, directory: str | os.PathLike) -> tuple[Path, Path]:
    """Write GPT-2-style `vocab.json` and `merges.txt` (readable by HF tokenizers)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    enc = gpt2_bytes_to_unicode()
    to_str = lambda t: "".join(enc[b] for b in t)  # noqa: E731
    specials = {s.encode("utf-8") for s in tokenizer.special_tokens}
    vocab = {(t.decode("utf-8") if t in specials else to_str(t)): i for i, t in sorted(tokenizer.vocab.items())}
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    lines = ["#version: 0.2"] + [f"{to_str(a)} {to_str(b)}" for a, b in tokenizer.merges]
    (directory / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return directory / "vocab.json", directory / "merges.txt"


def mergeable_ranks(tokenizer: Tokenizer) -> dict[bytes, int]:
    """tiktoken-style ranks: every non-special token's bytes -> its id."""
    specials = {s.encode("utf-8") for s in tokenizer.special_tokens}
    return {t: i for i, t in tokenizer.vocab.items() if t not in specials}


def save_tiktoken_ranks(tokenizer: Tokenizer, path: str | os.PathLike) -> Path:
    """Write a `.tiktoken` file (base64 token, space, rank per line)."""
    path = Path(path)
    ranks = sorted(mergeable_ranks(tokenizer).items(), key=lambda kv: kv[1])
    path.write_text("".join(f"{base64.b64encode(t).decode()} {r}\n" for t, r in ranks))
    return path
