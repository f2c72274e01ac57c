"""Training data: token arrays on disk and deterministic batches of windows."""

from lm.data.windows import TokenData, batch_at, eval_batches, load_tokens, make_train_iterator, split_tokens

__all__ = ["TokenData", "batch_at", "eval_batches", "load_tokens", "make_train_iterator", "split_tokens"]
