"""Fused RMSNorm kernels against float64 NumPy: Pallas in interpret mode here, Triton on a GPU."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from lm.kernels.rms_norm import NormBlocks, reference_rms_norm, rms_norm_pallas, rms_norm_triton
from tests.kernels import reference
from tests.kernels.helpers import rel_err, run

TOL = {"float32": 1e-5, "bfloat16": 1e-2}


def _inputs(shape, dtype, seed=0):
    ks = jax.random.split(jax.random.PRNGKey(seed), 3)
    x = (3.0 * jax.random.normal(ks[0], shape)).astype(dtype)
    w = 1.0 + 0.3 * jax.random.normal(ks[1], shape[-1:])
    dy = jax.random.normal(ks[2], shape).astype(dtype)
    return x, w, dy


def check(norm, shape, dtype, run_fn=run):
    x, w, dy = _inputs(shape, jnp.dtype(dtype))

    def loss(x, w):
        y = norm(x, w)
        return jnp.vdot(y.astype(jnp.float32), dy.astype(jnp.float32)), y

    (_, y), (dx, dw) = run_fn(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True), x, w)
    assert y.dtype == dx.dtype == x.dtype and dw.dtype == w.dtype
    want = reference.rms_norm(x, w, dy, 1e-5)
    errs = {n: rel_err(g, r) for n, g, r in zip(("y", "dx", "dscale"), (y, dx, dw), want)}
    assert max(errs.values()) < TOL[dtype], errs


@pytest.mark.parametrize("shape,dtype,blocks", [
    ((3, 7, 48), "float32", NormBlocks(4, 2)),  # 21 rows, d not a power of two: both padded
    ((64, 128), "float32", NormBlocks()),
    ((5, 96), "bfloat16", NormBlocks(2, 2)),
])
def test_pallas_matches_float64(shape, dtype, blocks):
    check(lambda x, w: rms_norm_pallas(x, w, 1e-5, blocks=blocks, interpret=True), shape, dtype)


def test_reference_matches_model_norm():
    from lm.model.layers import rms_norm

    x, w, _ = _inputs((4, 40), jnp.float32, seed=1)
    assert rel_err(*jax.jit(lambda x, w: (reference_rms_norm(x, w), rms_norm(x, w)))(x, w)) < 1e-6


def test_bad_scale_shape():
    with pytest.raises(ValueError, match="scale must have shape"):
        rms_norm_pallas(jnp.ones((2, 8)), jnp.ones(4), interpret=True)
    with pytest.raises(ValueError, match="power of two"):
        NormBlocks(block_rows=3)


@pytest.mark.gpu
@pytest.mark.parametrize("shape,dtype", [((3, 7, 48), "float32"), ((1000, 4096), "bfloat16"), ((300, 512), "float32")])
def test_triton_matches_float64(shape, dtype):
    if jax.default_backend() != "gpu":
        pytest.skip("the jax-triton RMSNorm needs a CUDA GPU (this machine has none)")
    pytest.importorskip("jax_triton", reason="jax-triton is not installed (pip install -e '.[gpu]')")
    check(lambda x, w: rms_norm_triton(x, w, 1e-5), shape, dtype, run_fn=lambda f, *a: jax.jit(f)(*a))


@pytest.mark.parametrize("d", [48, 4096])
def test_triton_kernels_compile_for_h100(d):
    """The Triton kernels compile to H100 machine code (sm_90) with triton alone; no GPU needed."""
    triton = pytest.importorskip("triton", reason="triton is not installed (it comes with '.[gpu]')")
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from lm.kernels import rms_norm_triton as k

    block = triton.next_power_of_2(d)
    kernels = {
        k._fwd: ({"x_ptr": "*bf16", "w_ptr": "*fp32", "y_ptr": "*bf16", "rstd_ptr": "*fp32"},
                 {"D": d, "EPS": 1e-5, "BLOCK_D": block}),
        k._bwd: ({"x_ptr": "*bf16", "w_ptr": "*fp32", "dy_ptr": "*bf16", "rstd_ptr": "*fp32", "dx_ptr": "*bf16",
                  "dw_ptr": "*fp32"}, {"N": 1000, "D": d, "PROGRAMS": 256, "BLOCK_D": block}),
    }
    for fn, (pointers, constants) in kernels.items():
        signature = {**pointers, **{name: "constexpr" for name in constants}}
        compiled = triton.compile(ASTSource(fn=fn, signature=signature, constexprs=constants),
                                  target=GPUTarget("cuda", 90, 32))
        assert "cubin" in compiled.asm and ".entry" in compiled.asm["ptx"]
