"""The Transformer language model as pure functions over a parameter pytree."""

from lm.model.attention import attention
from lm.model.config import GPU_PRESETS, PRESETS, ModelConfig, get_preset
from lm.model.transformer import bind, forward, init, logical_axes

__all__ = ["GPU_PRESETS", "PRESETS", "ModelConfig", "attention", "bind", "forward", "get_preset", "init",
           "logical_axes"]
