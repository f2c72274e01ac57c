"""XLA CPU flags that `lm` turns on by default, because they make training much faster.

jaxlib 0.10's CPU backend sends matmuls to YNNPACK but leaves the elementwise
work around them (SwiGLU, residual adds, gradient products) to separate XLA
loops, which read and write every [tokens, d_ff] activation again. Letting
YNNPACK fuse elementwise ops into its graphs is worth about 1.3-1.5x on the
MLP's forward and backward pass (profile in benchmarks/RESULTS.md).

XLA aborts the process on a flag it does not know, so flags are only added
for jaxlib versions where they were checked, and never over a value the user
set. Set LM_XLA_DEFAULTS=0 to leave XLA_FLAGS alone. Flags take effect only
if set before JAX initialises its backend (the first computation), so the
entry points apply them first thing (`lm.cli_env.prepare_process`); importing
`lm` never does.
"""

from __future__ import annotations

import os
from importlib import metadata

CHECKED_JAXLIB = ("0.10.",)
CPU_FLAGS = {
    "xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_ELTWISE",
}


def default_flags(jaxlib_version: str) -> dict[str, str]:
    """The flags `lm` adds for this jaxlib version (none for versions not checked)."""
    return dict(CPU_FLAGS) if jaxlib_version.startswith(CHECKED_JAXLIB) else {}


def apply_default_flags(environ=os.environ) -> str:
    """Add missing default flags to environ["XLA_FLAGS"]; returns the resulting value."""
    current = environ.get("XLA_FLAGS", "")
    if environ.get("LM_XLA_DEFAULTS", "1") == "0":
        return current
    try:
        version = metadata.version("jaxlib")
    except metadata.PackageNotFoundError:
        return current
    extra = [f"--{k}={v}" for k, v in default_flags(version).items() if f"--{k}" not in current]
    if extra:
        environ["XLA_FLAGS"] = " ".join([current, *extra]).strip()
    return environ.get("XLA_FLAGS", "")
