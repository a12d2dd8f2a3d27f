r"""Matrix products called from inside Numba kernels: numpy's own BLAS (``gemm``), or a plain loop.

    gemm(routines, trans_a, a, b, c):   c = a @ b     (trans_a False)   a (m, k), b (k, n), c (m, n)
                                        c = a.T @ b   (trans_a True)    a (k, m)
                                        c[i, j] = sum_p a[i, p] b[p, j]  (the textbook product)

Why. A Winograd convolution chunk is 36 small products between its transforms. Called from Python
(``np.matmul``), each chunk returns to the interpreter between stages, and the worker threads then take
turns holding Python's global lock: measured on 2 cores, a chunk's Python glue and the waits for the
lock cost more than its products. Called from here, a whole chunk is one compiled call that runs
without the lock.

How. ``routines()`` finds, once, the BLAS library numpy has loaded (threadpoolctl lists it) and the
addresses of its ``cblas_sgemm`` and ``cblas_dgemm`` (OpenBLAS as in numpy's wheels, with their
``scipy_`` prefix and ``64_`` suffix, or MKL and other CBLAS libraries), checks them on a small product
against numpy, and returns ``(sgemm, dgemm, ints64)``. The kernels take that triple as an argument (an
address is not a compile-time constant, so the compiled kernels can still be cached on disk). Where no
CBLAS is found, the addresses are 0 and ``gemm`` runs the plain triple loop: the same products, slower.
The BLAS runs on the calling thread's count of BLAS threads (``minigrad.threads`` sets it to 1 inside
worker chunks).

Numba's disk cache keys a compiled kernel on its own source file only: after editing this file, delete
the cached kernels of the files that call ``gemm`` (``minigrad/kernels/__pycache__/winograd.*.nb?``).
"""
import ctypes

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

__all__ = ["routines", "gemm", "NO_BLAS"]

NO_BLAS = (0, 0, 0)  # use the plain loop
_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112  # the CBLAS enum values
_found = None


def _address(function):
    return ctypes.cast(function, ctypes.c_void_p).value


def _candidates(info):
    """``(sgemm name, dgemm name, ints64)`` to look for in a BLAS that threadpoolctl describes."""
    ints64 = "USE64BITINT" in (info.get("config") or "") if info.get("internal_api") == "openblas" else False
    yield "scipy_cblas_sgemm64_", "scipy_cblas_dgemm64_", True  # numpy >= 2 wheels (OpenBLAS, 64-bit ints)
    yield "cblas_sgemm64_", "cblas_dgemm64_", True  # OpenBLAS built with 64-bit ints and suffixed symbols
    yield "cblas_sgemm", "cblas_dgemm", ints64


def _openblas_config(lib):
    try:
        function = lib.openblas_get_config
    except AttributeError:
        return ""
    function.restype = ctypes.c_char_p
    return (function() or b"").decode(errors="replace")


def _works(found):
    """Whether ``gemm`` with these routines agrees with numpy on small products of both dtypes."""
    rng = np.random.default_rng(0)
    for dtype, tolerance in ((np.float32, 1e-5), (np.float64, 1e-12)):
        a, b, b_t = (rng.standard_normal(shape).astype(dtype) for shape in ((5, 3), (3, 4), (5, 4)))
        c, c_t = np.empty((5, 4), dtype), np.empty((3, 4), dtype)
        gemm(found, False, a, b, c)
        gemm(found, True, a, b_t, c_t)
        if not (np.allclose(c, a @ b, atol=tolerance) and np.allclose(c_t, a.T @ b_t, atol=tolerance)):
            return False
    return True


def routines():
    """``(sgemm address, dgemm address, ints64)`` of numpy's BLAS, or ``NO_BLAS`` (found once, then cached)."""
    global _found
    if _found is None:
        _found = NO_BLAS
        from threadpoolctl import threadpool_info
        for info in threadpool_info():
            if info.get("user_api") != "blas":
                continue
            try:
                lib = ctypes.CDLL(info["filepath"])
            except OSError:
                continue
            info = dict(info, config=_openblas_config(lib))
            for sgemm, dgemm, ints64 in _candidates(info):
                if hasattr(lib, sgemm) and hasattr(lib, dgemm):
                    found = (_address(getattr(lib, sgemm)), _address(getattr(lib, dgemm)), int(ints64))
                    if _works(found):
                        _found = found
                        return _found
                    break
    return _found


@intrinsic
def _cblas_gemm(typingctx, address, ints64, trans_a, m, n, k, a, lda, b, ldb, c, ldc):
    """``cblas_?gemm(RowMajor, trans_a, NoTrans, m, n, k, 1, a, lda, b, ldb, 0, c, ldc)`` at ``address``,
    with 64-bit integer arguments if ``ints64`` is true, else 32-bit ones."""
    signature = types.void(address, ints64, trans_a, m, n, k, a, lda, b, ldb, c, ldc)

    def codegen(context, builder, sig, args):
        address, ints64, trans_a, m, n, k, a, lda, b, ldb, c, ldc = args
        real = context.get_value_type(sig.args[6].dtype)
        pointer = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)

        def data(array, array_type):
            return builder.bitcast(context.make_array(array_type)(context, builder, array).data, pointer)

        operands = (data(a, sig.args[6]), data(b, sig.args[8]), data(c, sig.args[10]))
        one, zero = ir.Constant(real, 1.0), ir.Constant(real, 0.0)
        with builder.if_else(builder.icmp_unsigned("!=", ints64, ir.Constant(ints64.type, 0))) as (wide, narrow):
            for block, integer in ((wide, ir.IntType(64)), (narrow, i32)):
                with block:
                    def cast(value):
                        return builder.sext(value, integer) if value.type.width < integer.width else \
                            builder.trunc(value, integer) if value.type.width > integer.width else value
                    function_type = ir.FunctionType(ir.VoidType(), [i32, i32, i32, integer, integer, integer, real,
                                                                    pointer, integer, pointer, integer, real,
                                                                    pointer, integer])
                    function = builder.inttoptr(address, function_type.as_pointer())
                    builder.call(function, [ir.Constant(i32, _ROW_MAJOR), builder.trunc(trans_a, i32),
                                            ir.Constant(i32, _NO_TRANS), cast(m), cast(n), cast(k), one,
                                            operands[0], cast(lda), operands[1], cast(ldb), zero, operands[2],
                                            cast(ldc)])
        return context.get_dummy_value()

    return signature, codegen


@numba.njit(nogil=True, cache=True)
def _gemm_loop(trans_a, a, b, c):
    """The textbook product, ``c[i, j] = sum_p a[i, p] b[p, j]`` (a transposed if ``trans_a``)."""
    c[:] = 0
    for p in range(b.shape[0]):
        for i in range(c.shape[0]):
            scale = a[p, i] if trans_a else a[i, p]
            for j in range(c.shape[1]):
                c[i, j] += scale * b[p, j]


@numba.njit(nogil=True, cache=True)
def _leading_dimension(a):
    """The distance between rows of ``a`` in elements (BLAS's ``lda``), its rows being contiguous. A
    length-1 axis may carry any stride in numpy: then the shape alone decides."""
    if a.shape[0] > 0 and a.shape[1] > 1 and a.strides[1] != a.itemsize:
        raise ValueError("gemm: the rows of a, b and c must be contiguous")
    if a.shape[0] <= 1:
        return max(1, a.shape[1])
    return a.strides[0] // a.itemsize


@numba.njit(nogil=True, cache=True)
def gemm(routines, trans_a, a, b, c):
    """``c = a @ b`` (``a.T @ b`` if ``trans_a``) for 2-D arrays of one dtype whose rows are contiguous."""
    lda, ldb, ldc = _leading_dimension(a), _leading_dimension(b), _leading_dimension(c)
    address = routines[0] if a.itemsize == 4 else routines[1]
    if address == 0 or c.shape[0] == 0 or c.shape[1] == 0 or b.shape[0] == 0:
        _gemm_loop(trans_a, a, b, c)
        return
    _cblas_gemm(address, routines[2], _TRANS if trans_a else _NO_TRANS, c.shape[0], c.shape[1], b.shape[0],
                a, lda, b, ldb, c, ldc)
