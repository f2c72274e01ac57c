"""The process environment every command-line entry point sets up before JAX starts its backend.

    if __name__ == "__main__":
        prepare_process()
        sys.exit(main())

Importing `lm` changes nothing in the environment; only programs that own their process (the
`python -m experiments.X` and `python -m benchmarks.X` mains, and the test suite's conftest) call
this. XLA reads `XLA_FLAGS` when the backend starts (the first computation), not when jax is
imported, so calling it at the top of the main block is early enough as long as nothing computed at
import time (tests/test_imports.py checks that importing every `lm` module starts no backend).
"""

from __future__ import annotations

import os

from lm.xla_flags import apply_default_flags


def prepare_process(environ=os.environ) -> None:
    """Quiet TensorFlow-style C++ logging (unless set) and add `lm`'s default XLA CPU flags
    (`lm.xla_flags`: never over a value the user set; `LM_XLA_DEFAULTS=0` leaves XLA_FLAGS alone)."""
    environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    apply_default_flags(environ)
