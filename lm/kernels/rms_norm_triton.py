"""Fused RMSNorm in Triton, called from JAX through jax-triton (GPU only; imported lazily).

The same algorithm as the Pallas kernels in lm/kernels/rms_norm.py, written in Triton's own
language: one program per row in the forward, a fixed number of programs looping over rows
in the backward (each writing one partial sum of d(scale)). Triton masks ragged edges, so
nothing is padded. Importing this module imports triton and jax_triton: `pip install -e
".[gpu]"` on a CUDA machine.
"""

from __future__ import annotations

import functools
import inspect

import jax
import jax.numpy as jnp
import triton
import triton.language as tl

BWD_PROGRAMS = 256  # backward programs: enough to fill an H100's 132 SMs twice, few partials to sum


@triton.jit
def _fwd(x_ptr, w_ptr, y_ptr, rstd_ptr, D: tl.constexpr, EPS: tl.constexpr, BLOCK_D: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK_D)
    inside = cols < D
    x = tl.load(x_ptr + row * D + cols, mask=inside, other=0.0).to(tl.float32)
    w = tl.load(w_ptr + cols, mask=inside, other=0.0).to(tl.float32)
    rstd = 1.0 / tl.sqrt(tl.sum(x * x, axis=0) / D + EPS)
    tl.store(y_ptr + row * D + cols, (x * rstd * w).to(y_ptr.dtype.element_ty), mask=inside)
    tl.store(rstd_ptr + row, rstd)


@triton.jit
def _bwd(x_ptr, w_ptr, dy_ptr, rstd_ptr, dx_ptr, dw_ptr, N: tl.constexpr, D: tl.constexpr,
         PROGRAMS: tl.constexpr, BLOCK_D: tl.constexpr):
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK_D)
    inside = cols < D
    w = tl.load(w_ptr + cols, mask=inside, other=0.0).to(tl.float32)
    dw = tl.zeros((BLOCK_D,), dtype=tl.float32)
    for row in range(pid, N, PROGRAMS):
        base = row.to(tl.int64) * D
        x = tl.load(x_ptr + base + cols, mask=inside, other=0.0).to(tl.float32)
        dy = tl.load(dy_ptr + base + cols, mask=inside, other=0.0).to(tl.float32)
        rstd = tl.load(rstd_ptr + row)
        xhat = x * rstd
        g = dy * w
        dx = rstd * (g - xhat * (tl.sum(g * xhat, axis=0) / D))
        tl.store(dx_ptr + base + cols, dx.to(dx_ptr.dtype.element_ty), mask=inside)
        dw += dy * xhat
    tl.store(dw_ptr + pid * D + cols, dw, mask=inside)


def _call(*args, out, **kwargs):
    import jax_triton as jt  # here, so the kernels above can be compiled with triton alone

    # jax-triton 0.4 renamed out_shape to out_type.
    key = "out_type" if "out_type" in inspect.signature(jt.triton_call).parameters else "out_shape"
    return jt.triton_call(*args, **{key: out}, **kwargs)


def _warps(d: int) -> int:
    return 4 if d <= 2048 else 8


def _forward(x, w, eps):
    n, d = x.shape
    return _call(x, w, kernel=_fwd, grid=(n,), num_warps=_warps(d),
                 out=[jax.ShapeDtypeStruct(x.shape, x.dtype), jax.ShapeDtypeStruct((n,), jnp.float32)],
                 D=d, EPS=float(eps), BLOCK_D=triton.next_power_of_2(d))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _rms_norm(x, w, eps):
    return _forward(x, w, eps)[0]


def _rms_norm_fwd(x, w, eps):
    y, rstd = _forward(x, w, eps)
    return y, (x, w, rstd)


def _rms_norm_bwd(eps, res, dy):
    x, w, rstd = res
    n, d = x.shape
    programs = min(BWD_PROGRAMS, n)
    dx, dw = _call(x, w, dy, rstd, kernel=_bwd, grid=(programs,), num_warps=_warps(d),
                   out=[jax.ShapeDtypeStruct(x.shape, x.dtype), jax.ShapeDtypeStruct((programs, d), jnp.float32)],
                   N=n, D=d, PROGRAMS=programs, BLOCK_D=triton.next_power_of_2(d))
    return dx, jnp.sum(dw, axis=0).astype(w.dtype)


_rms_norm.defvjp(_rms_norm_fwd, _rms_norm_bwd)


def rms_norm(x: jax.Array, scale: jax.Array, eps: float = 1e-5) -> jax.Array:
    """Fused RMSNorm of x [..., d] with scale [d] (float32 math, output in x's dtype)."""
    d = x.shape[-1]
    if scale.shape != (d,):
        raise ValueError(f"scale must have shape ({d},) for x {x.shape}, got {scale.shape}")
    return _rms_norm(x.reshape(-1, d), scale, float(eps)).reshape(x.shape)
