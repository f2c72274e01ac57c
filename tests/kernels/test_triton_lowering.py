"""Without a GPU, lower the kernels for CUDA: Pallas's Triton lowering must accept every operation
and tile shape (power-of-two tiles, supported primitives, indexing), the part of GPU compilation
that interpret mode cannot check. Compiling the Triton IR to PTX still needs a GPU."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import pytest

from lm.kernels.flash_attention import flash_attention
from lm.kernels.rms_norm import rms_norm_pallas


def _triton_calls(fn, *args) -> set[str]:
    text = jax.jit(fn).trace(*args).lower(lowering_platforms=("cuda",)).as_text()
    return set(re.findall(r"custom_call @([\w$.]+)", text))


@pytest.mark.parametrize("dtype,t,s,h,kvh,d,kw", [
    ("bfloat16", 256, 256, 4, 2, 64, dict()),
    ("float32", 200, 200, 4, 1, 128, dict(window=64, k_valid=True, positions=True)),
    ("bfloat16", 100, 300, 2, 2, 48, dict(causal=False, k_valid=True)),
], ids=["bf16-causal-gqa2-hd64", "f32-window-positions-gqa4-hd128", "bf16-cross-hd48"])
def test_flash_attention_lowers_to_triton(dtype, t, s, h, kvh, d, kw):
    q = jnp.zeros((2, t, h, d), dtype)
    k = jnp.zeros((2, s, kvh, d), dtype)
    opts = dict(causal=kw.get("causal", True), window=kw.get("window", 0), interpret=False)
    if kw.get("k_valid"):
        opts["k_valid"] = jnp.ones((2, s), bool)
    if kw.get("positions"):
        opts["q_positions"], opts["k_positions"] = jnp.zeros((2, t), jnp.int32), jnp.zeros((2, s), jnp.int32)

    def loss(q, k, v):
        return flash_attention(q, k, v, **opts).astype(jnp.float32).sum()

    assert _triton_calls(jax.grad(loss, argnums=(0, 1, 2)), q, k, k) == {"__gpu$xla.gpu.triton"}


@pytest.mark.parametrize("shape", [(4, 64, 4096), (3, 7, 48)])
def test_rms_norm_lowers_to_triton(shape):
    x, w = jnp.zeros(shape, jnp.bfloat16), jnp.ones(shape[-1:])

    def loss(x, w):
        return rms_norm_pallas(x, w, interpret=False).astype(jnp.float32).sum()

    assert _triton_calls(jax.grad(loss, argnums=(0, 1)), x, w) == {"__gpu$xla.gpu.triton"}
