"""lm: a functional JAX/Flax language-model stack. See README.md."""

from lm.xla_flags import apply_default_flags

apply_default_flags()
