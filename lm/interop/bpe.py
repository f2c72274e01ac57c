"""Our byte-level BPE `lm.tokenizer.Tokenizer` as a Hugging Face `tokenizers` tokenizer.

    hf_tok = to_hf_tokenizer(tok)      # an HFTokenizer: same ids, saves a tokenizer.json transformers loads
    save_tokenizer(tok_or_hf_tok, path)  # either kind, in Hugging Face's format

Both are GPT-2 byte-level BPE: bytes map to printable characters with GPT-2's
table, pre-tokens come from GPT-2's pattern (the ByteLevel pre-tokenizer's
regex), and merges apply by rank. Special tokens keep their ids and end
generation, as they do in `lm.inference`.
"""

from __future__ import annotations

import os

from lm.interop.tokenizer import HFTokenizer
from lm.tokenizer import Tokenizer
from lm.tokenizer.io import gpt2_bytes_to_unicode


def to_hf_tokenizer(tokenizer: Tokenizer) -> HFTokenizer:
    """The same tokenizer behind the `tokenizers` library (first special token as eos_token)."""
    from tokenizers import AddedToken, decoders, models, pre_tokenizers
    from tokenizers import Tokenizer as HFCore

    table = gpt2_bytes_to_unicode()

    def chars(b: bytes) -> str:
        return "".join(table[x] for x in b)

    specials = {s.encode("utf-8") for s in tokenizer.special_tokens}
    vocab = {t.decode("utf-8") if t in specials else chars(t): i for i, t in tokenizer.vocab.items()}
    merges = [(chars(a), chars(b)) for a, b in tokenizer.merges]
    core = HFCore(models.BPE(vocab=vocab, merges=merges))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    core.decoder = decoders.ByteLevel()
    core.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in tokenizer.special_tokens])
    eos = tokenizer.special_tokens[0] if tokenizer.special_tokens else None
    return HFTokenizer(core, None, {"eos_token": eos}, list(tokenizer.special_ids.values()),
                       {"tokenizer_class": "PreTrainedTokenizerFast"})


def save_tokenizer(tokenizer, path: str | os.PathLike) -> dict:
    """Save an HFTokenizer (or anything with `save(path) -> dict`) beside a model; returns token ids for
    config.json."""
    if isinstance(tokenizer, HFTokenizer):
        return tokenizer.save(path)
    if isinstance(tokenizer, Tokenizer):
        return to_hf_tokenizer(tokenizer).save(path)
    raise TypeError(f"cannot save a {type(tokenizer).__name__} as a Hugging Face tokenizer; give an HFTokenizer "
                    "or an lm.tokenizer.Tokenizer")
