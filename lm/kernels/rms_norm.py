"""Fused RMSNorm, forward and backward, in Pallas and in Triton (through jax-triton).

    y = rms_norm_pallas(x, scale, eps)      # x [..., d], scale [d]; y in x's dtype
    y = rms_norm_triton(x, scale, eps)      # the same kernel in Triton; GPU only
    y = reference_rms_norm(x, scale, eps)   # plain jnp

y = x / sqrt(mean(x^2) + eps) * scale, computed in float32. Each kernel reads a row once:
the forward writes y and the row's 1/rms (a float32 per row, the only residual besides x);
the backward reads x, dy and 1/rms and writes dx, plus per-program partial sums of
dy * x / rms that XLA adds up into d(scale). `jax.custom_vjp` ties each pair together.

The Pallas version is the one that runs everywhere (interpret mode on CPU, Pallas's Triton
backend on GPU; see lm/kernels/flash_attention.py for the jax 0.10 Triton / jax 0.11 Mosaic GPU
situation). It pads d to a power of two and the rows to a whole number of blocks, so shapes
whose row count is a multiple of the block (the usual batch * seq) pay no copy. The Triton
version masks instead of padding; it imports triton and jax_triton lazily and needs a GPU.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from lm.kernels.flash_attention import default_interpret


def reference_rms_norm(x: jax.Array, scale: jax.Array, eps: float = 1e-5) -> jax.Array:
    xf = x.astype(jnp.float32)
    y = xf * lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + eps)
    return (y * scale.astype(jnp.float32)).astype(x.dtype)


@dataclasses.dataclass(frozen=True)
class NormBlocks:
    """Rows per program (forward; the backward loops `bwd_steps` such blocks per program so that
    the d(scale) partials stay small) and Triton's warps. 0 means choose from the row width."""

    block_rows: int = 0
    bwd_steps: int = 0
    num_warps: int = 4

    def __post_init__(self):
        for name in ("block_rows", "bwd_steps"):
            v = getattr(self, name)
            if v < 0 or (v and v & (v - 1)):
                raise ValueError(f"NormBlocks.{name} must be 0 (auto) or a power of two, got {v}")


@dataclasses.dataclass(frozen=True)
class _Static:
    eps: float
    d: int  # true width; the padded columns are zeros
    rows: int  # rows per forward program
    steps: int  # forward blocks per backward program
    num_warps: int
    interpret: bool


def _params(st: _Static):
    from jax.experimental.pallas import triton as plt

    return plt.CompilerParams(num_warps=st.num_warps, num_stages=1)


def _fwd_kernel(x_ref, w_ref, y_ref, rstd_ref, *, st: _Static):
    x = x_ref[...].astype(jnp.float32)  # [rows, dp]
    rstd = lax.rsqrt(jnp.sum(x * x, axis=1) / st.d + st.eps)
    y_ref[...] = (x * rstd[:, None] * w_ref[...].astype(jnp.float32)[None, :]).astype(y_ref.dtype)
    rstd_ref[...] = rstd


def _bwd_kernel(x_ref, w_ref, dy_ref, rstd_ref, dx_ref, dw_ref, *, st: _Static):
    w = w_ref[...].astype(jnp.float32)

    def body(i, dw):
        rows = pl.ds(pl.multiple_of(i * st.rows, st.rows), st.rows)
        x, dy = x_ref[rows, :].astype(jnp.float32), dy_ref[rows, :].astype(jnp.float32)
        rstd = rstd_ref[rows]
        xhat = x * rstd[:, None]
        g = dy * w[None, :]
        # d/dx of x * rstd(x): rstd * (g - xhat * mean(g * xhat)), the rstd term's share removed.
        dx = rstd[:, None] * (g - xhat * (jnp.sum(g * xhat, axis=1) / st.d)[:, None])
        dx_ref[rows, :] = dx.astype(dx_ref.dtype)
        return dw + jnp.sum(dy * xhat, axis=0)

    dw_ref[...] = lax.fori_loop(0, st.steps, body, jnp.zeros(w.shape, jnp.float32))[None, :]


def _forward(x, w, st: _Static):
    n, dp = x.shape
    row_spec = pl.BlockSpec((st.rows, dp), lambda i: (i, 0))
    return pl.pallas_call(
        functools.partial(_fwd_kernel, st=st), grid=(n // st.rows,),
        in_specs=[row_spec, pl.BlockSpec((dp,), lambda i: (0,))],
        out_specs=[row_spec, pl.BlockSpec((st.rows,), lambda i: (i,))],
        out_shape=[jax.ShapeDtypeStruct(x.shape, x.dtype), jax.ShapeDtypeStruct((n,), jnp.float32)],
        compiler_params=_params(st), interpret=st.interpret, name="rms_norm_fwd",
    )(x, w)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _rms_norm(x, w, st):
    return _forward(x, w, st)[0]


def _rms_norm_fwd(x, w, st):
    y, rstd = _forward(x, w, st)
    return y, (x, w, rstd)


def _rms_norm_bwd(st, res, dy):
    x, w, rstd = res
    n, dp = x.shape
    big = st.rows * st.steps
    row_spec = pl.BlockSpec((big, dp), lambda i: (i, 0))
    dx, dw = pl.pallas_call(
        functools.partial(_bwd_kernel, st=st), grid=(n // big,),
        in_specs=[row_spec, pl.BlockSpec((dp,), lambda i: (0,)), row_spec, pl.BlockSpec((big,), lambda i: (i,))],
        out_specs=[row_spec, pl.BlockSpec((1, dp), lambda i: (i, 0))],
        out_shape=[jax.ShapeDtypeStruct(x.shape, x.dtype), jax.ShapeDtypeStruct((n // big, dp), jnp.float32)],
        compiler_params=_params(st), interpret=st.interpret, name="rms_norm_bwd",
    )(x, w, dy, rstd)
    return dx, jnp.sum(dw, axis=0).astype(w.dtype)


_rms_norm.defvjp(_rms_norm_fwd, _rms_norm_bwd)


def _pow2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


def rms_norm_pallas(x: jax.Array, scale: jax.Array, eps: float = 1e-5, *, blocks: NormBlocks = NormBlocks(),
                    interpret: bool | None = None) -> jax.Array:
    """Fused RMSNorm of x [..., d] with scale [d]; differentiable in both."""
    d = x.shape[-1]
    if scale.shape != (d,):
        raise ValueError(f"scale must have shape ({d},) for x {x.shape}, got {scale.shape}")
    interpret = default_interpret() if interpret is None else interpret
    dp = max(16, _pow2(d))
    n = max(1, x.size // d)
    # Forward tiles of about 8k elements on GPU; on CPU (interpreted) fewer, bigger steps are faster.
    rows = blocks.block_rows or (min(256, _pow2(n)) if interpret else max(1, min(64, 8192 // dp)))
    # The backward takes up to ~256 programs' worth of rows each so the d(scale) partials stay small.
    steps = blocks.bwd_steps or min(_pow2(-(-n // (rows * 256))), max(1, _pow2(-(-n // rows))))
    st = _Static(eps=float(eps), d=d, rows=rows, steps=steps, num_warps=blocks.num_warps, interpret=bool(interpret))
    n_pad = -(-n // (rows * steps)) * rows * steps
    x2 = jnp.pad(x.reshape(n, d), ((0, n_pad - n), (0, dp - d))) if (n_pad, dp) != (n, d) else x.reshape(n, d)
    w = jnp.pad(scale, (0, dp - d)) if dp != d else scale
    return _rms_norm(x2, w, st)[:n, :d].reshape(x.shape)


def rms_norm_triton(x: jax.Array, scale: jax.Array, eps: float = 1e-5) -> jax.Array:
    """The same fused RMSNorm written in Triton and called through jax-triton (GPU only)."""
    from lm.kernels.rms_norm_triton import rms_norm as triton_rms_norm  # imports triton: GPU machines only

    return triton_rms_norm(x, scale, eps)
