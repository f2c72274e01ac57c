"""Byte-level BPE: training, encoding, file formats.

Importing this package loads no accelerator runtime (no jax), so data workers
stay light.
"""

from lm.tokenizer.corpus import encode_file, token_dtype
from lm.tokenizer.io import (
    load_gpt2_tokenizer,
    load_tokenizer,
    mergeable_ranks,
    save_gpt2_tokenizer,
    save_tiktoken_ranks,
    save_tokenizer,
)
from lm.tokenizer.pretokenize import GPT2_PATTERN, count_pretokens
from lm.tokenizer.tokenizer import Tokenizer
from lm.tokenizer.train import train_bpe

__all__ = [
    "GPT2_PATTERN",
    "Tokenizer",
    "count_pretokens",
    "encode_file",
    "load_gpt2_tokenizer",
    "load_tokenizer",
    "mergeable_ranks",
    "save_gpt2_tokenizer",
    "save_tiktoken_ranks",
    "save_tokenizer",
    "token_dtype",
    "train_bpe",
]
