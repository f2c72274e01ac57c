"""The Transformer language model as pure functions over a parameter pytree."""

from lm.model.config import PRESETS, ModelConfig, get_preset
from lm.model.transformer import bind, forward, init, logical_axes

__all__ = ["PRESETS", "ModelConfig", "bind", "forward", "get_preset", "init", "logical_axes"]
