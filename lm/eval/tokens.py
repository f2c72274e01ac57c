"""Tokenizer glue shared by the tasks: ours (`lm.tokenizer.Tokenizer`) and imported ones
(`lm.interop.HFTokenizer`, whose post-processor may add a BOS token) behave the same here."""

from __future__ import annotations

import inspect
from collections.abc import Iterable


def encode(tokenizer, text: str, add_special_tokens: bool = True) -> list[int]:
    """Ids of `text`. add_special_tokens=False for a piece that continues a prompt (an answer) or a
    string that already holds its special tokens (a chat template's output): no BOS in the middle."""
    if not add_special_tokens and "add_special_tokens" in inspect.signature(tokenizer.encode).parameters:
        return list(tokenizer.encode(text, add_special_tokens=False))
    return list(tokenizer.encode(text))


def special_ids(tokenizer) -> set[int]:
    """Ids of every special token (end of text, end of turn, BOS, ...) the tokenizer knows."""
    ids = set(getattr(tokenizer, "special_ids", {}).values())
    return ids | set(getattr(tokenizer, "added_special_ids", {}).values())


def text_bytes(tokenizer, ids: Iterable[int]) -> int:
    """UTF-8 bytes of the text `ids` spell, special tokens left out (they mark documents, not text)."""
    special = special_ids(tokenizer)
    ids = [int(i) for i in ids if int(i) not in special]
    if hasattr(tokenizer, "decode_bytes"):
        return len(tokenizer.decode_bytes(ids))
    return len(tokenizer.decode(ids).encode("utf-8"))
