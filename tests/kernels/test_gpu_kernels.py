"""The kernels compiled for a real GPU (not interpreted) against the float64 references.

Marked `gpu`: they skip on a machine without a CUDA GPU, and `python -m benchmarks.gpu_check` runs them
(`pytest -m gpu tests/kernels`) whenever a GPU is at hand.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

from lm.kernels.flash_attention import default_block_sizes
from lm.kernels.rms_norm import rms_norm_pallas
from tests.kernels.test_flash_attention import check as check_attention
from tests.kernels.test_rms_norm import check as check_norm

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(jax.default_backend() != "gpu",
                                                  reason="compiled kernels need a CUDA GPU (this machine has none)")]

_SEG = np.repeat(np.array([[0, 1, 2], [0, 0, 1]]), [70, 90, 140], axis=1)  # [2, 300]: packed documents


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("case", ["causal-gqa", "window-mqa", "segments", "softcap-cross"])
def test_flash_attention_compiled_matches_float64(dtype, case):
    d = 64
    kw = dict(dtype=dtype, blocks=default_block_sizes(d, interpret=False), interpret=False)
    if case == "causal-gqa":
        check_attention(2, 300, 300, 8, 2, d, **kw)
    elif case == "window-mqa":
        check_attention(2, 300, 300, 4, 1, d, window=100, **kw)
    elif case == "segments":
        check_attention(2, 300, 300, 4, 2, d, q_seg=_SEG, k_seg=_SEG, **kw)
    else:
        check_attention(1, 200, 333, 4, 4, d, causal=False, softcap=20.0, **kw)


@pytest.mark.parametrize("shape,dtype", [((3, 7, 48), "float32"), ((1000, 4096), "bfloat16")])
def test_rms_norm_pallas_compiled_matches_float64(shape, dtype):
    check_norm(lambda x, w: rms_norm_pallas(x, w, 1e-5, interpret=False), shape, dtype,
               run_fn=lambda f, *a: jax.jit(f)(*a))
