"""lm: a functional JAX/Flax language-model stack. See README.md.

Importing it has no side effects; entry points call `lm.cli_env.prepare_process()` for XLA flags."""
