"""Keep SciPy's bundled OpenBLAS on one thread while running many tiny L-BFGS fits.

L-BFGS-B calls BLAS/LAPACK on 5-variable problems every iteration; with a
thread pool each call pays a thread hand-off, which on a busy 2-core machine
made one fit ~10x slower (0.9 ms per iteration instead of 0.02 ms). There is
no public SciPy switch for this (threadpoolctl is not a dependency), so we
call OpenBLAS's own setter through ctypes, and do nothing when the library is
not there (another BLAS, another platform).
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import os


def _scipy_openblas():
    import scipy

    libs_dir = os.path.join(os.path.dirname(scipy.__file__), os.pardir, "scipy.libs")
    for path in sorted(glob.glob(os.path.join(libs_dir, "libscipy_openblas*.so*"))):
        try:
            lib = ctypes.CDLL(path)
            if hasattr(lib, "scipy_openblas_set_num_threads") and hasattr(lib, "scipy_openblas_get_num_threads"):
                return lib
        except OSError:
            continue
    return None


@contextlib.contextmanager
def single_threaded_blas():
    """Within the block SciPy's OpenBLAS uses one thread; restored afterwards."""
    lib = _scipy_openblas()
    if lib is None:
        yield
        return
    before = lib.scipy_openblas_get_num_threads()
    lib.scipy_openblas_set_num_threads(1)
    try:
        yield
    finally:
        lib.scipy_openblas_set_num_threads(before)
