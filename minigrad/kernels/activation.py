"""Numba kernels for the activations: one pass over memory each way.

The formulas (y the output, g the upstream gradient)::

    ReLU       y = x if x > 0 else 0                    dx = g if y > 0 else 0
    LeakyReLU  y = x if x >= 0 else a * x               dx = g if x > 0 else a * g
    Tanh       (y = tanh(x): NumPy's vectorised tanh)   dx = g * (1 - y^2)
    SELU       y = s * x if x > 0 else s * a * expm1(x) dx = g * s if y > 0 else g * (y + s * a)
    Sigmoid    z = exp(-|x|),                            dx = g * y * (1 - y)
               y = 1 / (1 + z) if x >= 0 else z / (1 + z)

NumPy needs several passes (a comparison, a product, a ``where``) and temporaries for these; after
every convolution of a deep VGG that is most of an activation's cost. All arrays are flat and C-contiguous;
``out`` is written in place. NaN propagates (a diverging run must still show NaN downstream). There is
no vectorised exp inside Numba here (no SVML), so the float32 forwards of Sigmoid and SELU are one pass
each with their own exp and expm1 (``_exp_nonpositive``, ``_expm1_nonpositive``: range reduction and a
Taylor polynomial, which LLVM vectorises with fused multiply-adds). In float64 they take exp and expm1
from NumPy (SIMD, in place), with the select around them a kernel; Tanh's forward is NumPy's tanh in both
(as fast as such a kernel here, and within 1.3 ulp). Loops that divide are compiled with
``error_model="numpy"``: Python's model checks every divisor for zero, a branch that keeps LLVM from
vectorising the loop (4.7 ms instead of about 1 ms on 3.3M floats).

Each kernel is a ``*_loop`` over whole arrays. Arrays of at least ``PARALLEL_MIN_SIZE`` elements are
cut into ``CHUNK``-sized views run by Numba's threads (when there is more than one); smaller ones run on
the calling thread, because waking the thread pool costs more than the work (milliseconds on a busy
machine).
"""
import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from ._threading import CHUNK, SERIAL_BELOW, use_threads  # importing it also makes idle OpenMP workers sleep

__all__ = ["relu_forward", "relu_backward", "leaky_relu_forward", "leaky_relu_backward", "tanh_backward",
           "selu_forward", "selu_backward", "sigmoid_forward", "sigmoid_backward", "PARALLEL_MIN_SIZE"]

PARALLEL_MIN_SIZE = SERIAL_BELOW


# Each loop covers whole arrays (the threaded drivers pass CHUNK-sized views): with runtime start/stop
# bounds LLVM did not vectorise the ReLU backward's conditional load (35x slower: 76 ms vs 2 ms on 3.3M
# floats). The zeros are typed as the data for the same reason: a select, not a branch.
@numba.njit(cache=True)
def _relu_loop(x, out):
    zero = x.dtype.type(0)
    for i in range(x.size):
        v = x[i]
        out[i] = zero if v < 0 else v


@numba.njit(cache=True)
def _relu_backward_loop(y, grad_output, out):
    zero = grad_output.dtype.type(0)
    for i in range(y.size):
        out[i] = zero if y[i] <= 0 else grad_output[i]


@numba.njit(cache=True)
def _leaky_relu_loop(x, slope, out):
    for i in range(x.size):
        v = x[i]
        out[i] = v if v >= 0 else slope * v


@numba.njit(cache=True)
def _leaky_relu_backward_loop(sign_source, grad_output, slope, out):
    for i in range(grad_output.size):
        g = grad_output[i]
        out[i] = g if sign_source[i] > 0 else slope * g


@numba.njit(cache=True)
def _tanh_backward_loop(y, grad_output, out):
    one = y.dtype.type(1)
    for i in range(y.size):
        v = y[i]
        out[i] = grad_output[i] * (one - v * v)


@numba.njit(cache=True)
def _selu_loop(x, expm1_negative, scale, scale_alpha, out):
    # expm1_negative = expm1(min(x, 0)), computed by NumPy (see the module docstring)
    for i in range(x.size):
        v = x[i]
        out[i] = scale * v if v > 0 else scale_alpha * expm1_negative[i]


@numba.njit(cache=True)
def _selu_backward_loop(y, grad_output, scale, scale_alpha, out):
    # for x <= 0: dy/dx = scale * alpha * exp(x) = y + scale * alpha
    for i in range(y.size):
        v = y[i]
        out[i] = grad_output[i] * (scale if v > 0 else v + scale_alpha)


@numba.njit(cache=True)
def _negative_abs_loop(x, out):
    for i in range(x.size):
        v = x[i]
        out[i] = -v if v >= 0 else v  # -|x|; NaN stays NaN


@numba.njit(cache=True, error_model="numpy")
def _sigmoid_loop(x, z, out):
    # z = exp(-|x|) (NumPy's); may be ``out`` itself: each element is read before it is written
    one = x.dtype.type(1)
    for i in range(x.size):
        e = z[i]
        out[i] = (one if x[i] >= 0 else e) / (one + e)


@intrinsic
def _float32_from_bits(typingctx, bits):
    """The float32 whose IEEE-754 bits are the low 32 bits of the integer ``bits``."""
    if not isinstance(bits, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        low = builder.trunc(args[0], ir.IntType(32)) if bits.bitwidth > 32 else args[0]
        return builder.bitcast(low, ir.FloatType())

    return types.float32(bits), codegen


_LOG2E = np.float32(1.4426950408889634)
_LN2_HI = np.float32(0.693359375)  # ln 2 to 9 bits: k * _LN2_HI is exact for |k| <= 150
_LN2_LO = np.float32(0.6931471805599453 - 0.693359375)
_T_MIN = np.float32(-104.0)  # exp(-104) = 6.8e-46 rounds to 0 in float32
_K_MIN = np.float32(-150.0)
_ZERO, _HALF, _ONE = np.float32(0.0), np.float32(0.5), np.float32(1.0)
_C2, _C3, _C4, _C5, _C6, _C7 = (np.float32(1 / f) for f in (2, 6, 24, 120, 720, 5040))


@numba.njit(inline="always")
def _reduce(t, t_min, k_min):
    """``(k, r)`` with t = k ln 2 + r, k = round(t / ln 2) and r in [-ln2/2, ln2/2], for float32 t clamped
    to >= ``t_min`` (NaN stays NaN in r; its k becomes ``k_min``, so that an integer made from k is
    defined). ln 2 is split in two (_LN2_HI + _LN2_LO) so that r keeps its low bits."""
    t = t_min if t < t_min else t
    k = np.floor(t * _LOG2E + _HALF)
    k = k if k >= k_min else k_min
    return k, t - k * _LN2_HI - k * _LN2_LO


@numba.njit(inline="always")
def _exp_nonpositive(t):
    """exp(t) for float32 t <= 0 (or NaN), within 1.2 ulp of the exact value, denormals included.

    exp(t) = 2^k * exp(r) with k = round(t / ln 2) and r = t - k ln 2 in [-ln2/2, ln2/2]; exp(r) is its
    Taylor series to r^7 (the next term is below 5e-9), and 2^k is built from its exponent bits, as two
    factors 2^(k//2) 2^(k - k//2) so that each stays a normal float down to k = -150 (``_reduce``). No
    branches and no calls: LLVM vectorises the loop.
    """
    k, r = _reduce(t, _T_MIN, _K_MIN)
    exp_r = _ONE + r * (_ONE + r * (_C2 + r * (_C3 + r * (_C4 + r * (_C5 + r * (_C6 + r * _C7))))))
    n = np.int32(k)
    half = n >> 1
    return exp_r * _float32_from_bits((half + 127) << 23) * _float32_from_bits((n - half + 127) << 23)


# "contract" lets LLVM fuse each multiply-add of _exp_nonpositive into one FMA (rounded once: no less
# accurate): a third fewer vector instructions, 56 -> 37 us per 32K floats in cache (Intel AVX-512).
@numba.njit(cache=True, error_model="numpy", fastmath={"contract"})
def _sigmoid_float32_loop(x, out):
    for i in range(x.size):
        v = x[i]
        z = _exp_nonpositive(-abs(v))
        out[i] = (_ONE if v >= 0 else z) / (_ONE + z)


_T_MIN_EXPM1 = np.float32(-87.0)  # expm1(t) rounds to -1 below; keeps 2^k a normal float (k >= -126)
_K_MIN_EXPM1 = np.float32(-126.0)


@numba.njit(inline="always")
def _expm1_nonpositive(t):
    """expm1(t) = exp(t) - 1 for float32 t <= 0 (or NaN), accurate to a few ulp also near 0.

    With k = round(t / ln 2) and r = t - k ln 2 in [-ln2/2, ln2/2] (``_reduce``, as ``_exp_nonpositive``),
    expm1(t) = 2^k (1 + expm1(r)) - 1 = 2^k expm1(r) + (2^k - 1), and expm1(r) is the Taylor series
    r + r^2/2 + ... + r^7/7! (the next term is 2e-8 of it). For k = 0 (|t| < ln2/2) that is expm1(r)
    itself, with no 1 - 1 to cancel; for k < 0 the result is below -0.29, far from 0. Below t = -87 it is
    -1 in float32.
    """
    k, r = _reduce(t, _T_MIN_EXPM1, _K_MIN_EXPM1)
    expm1_r = r + r * r * (_HALF + r * (_C3 + r * (_C4 + r * (_C5 + r * (_C6 + r * _C7)))))
    two_k = _float32_from_bits((np.int32(k) + 127) << 23)
    return two_k * expm1_r + (two_k - _ONE)


@numba.njit(cache=True, fastmath={"contract"})
def _selu_float32_loop(x, scale, scale_alpha, out):
    for i in range(x.size):
        v = x[i]
        out[i] = scale * v if v > 0 else scale_alpha * _expm1_nonpositive(min(v, _ZERO))


@numba.njit(cache=True)
def _sigmoid_backward_loop(y, grad_output, out):
    one = y.dtype.type(1)
    for i in range(y.size):
        v = y[i]
        out[i] = grad_output[i] * v * (one - v)


# Threaded drivers: the same loops over CHUNK-element views, one chunk per task.
@numba.njit(parallel=True, cache=True)
def _negative_abs_parallel(x, out):
    for k in numba.prange((x.size + CHUNK - 1) // CHUNK):
        a, b = k * CHUNK, min((k + 1) * CHUNK, x.size)
        _negative_abs_loop(x[a:b], out[a:b])


@numba.njit(parallel=True, cache=True)
def _sigmoid_parallel(x, z, out):
    for k in numba.prange((x.size + CHUNK - 1) // CHUNK):
        a, b = k * CHUNK, min((k + 1) * CHUNK, x.size)
        _sigmoid_loop(x[a:b], z[a:b], out[a:b])


@numba.njit(parallel=True, cache=True)
def _sigmoid_float32_parallel(x, out):
    for k in numba.prange((x.size + CHUNK - 1) // CHUNK):
        a, b = k * CHUNK, min((k + 1) * CHUNK, x.size)
        _sigmoid_float32_loop(x[a:b], out[a:b])


@numba.njit(parallel=True, cache=True)
def _selu_float32_parallel(x, scale, scale_alpha, out):
    for k in numba.prange((x.size + CHUNK - 1) // CHUNK):
        a, b = k * CHUNK, min((k + 1) * CHUNK, x.size)
        _selu_float32_loop(x[a:b], scale, scale_alpha, out[a:b])


@numba.njit(parallel=True, cache=True)
def _sigmoid_backward_parallel(y, grad_output, out):
    for k in numba.prange((y.size + CHUNK - 1) // CHUNK):
        a, b = k * CHUNK, min((k + 1) * CHUNK, y.size)
        _sigmoid_backward_loop(y[a:b], grad_output[a:b], out[a:b])


@numba.njit(parallel=True, cache=True)
def _relu_parallel(x, out):
    for k in numba.prange((x.size + CHUNK - 1) // CHUNK):
        a, b = k * CHUNK, min((k + 1) * CHUNK, x.size)
        _relu_loop(x[a:b], out[a:b])


@numba.njit(parallel=True, cache=True)
def _relu_backward_parallel(y, grad_output, out):
    for k in numba.prange((y.size + CHUNK - 1) // CHUNK):
        a, b = k * CHUNK, min((k + 1) * CHUNK, y.size)
        _relu_backward_loop(y[a:b], grad_output[a:b], out[a:b])


@numba.njit(parallel=True, cache=True)
def _leaky_relu_parallel(x, slope, out):
    for k in numba.prange((x.size + CHUNK - 1) // CHUNK):
        a, b = k * CHUNK, min((k + 1) * CHUNK, x.size)
        _leaky_relu_loop(x[a:b], slope, out[a:b])


@numba.njit(parallel=True, cache=True)
def _leaky_relu_backward_parallel(sign_source, grad_output, slope, out):
    for k in numba.prange((grad_output.size + CHUNK - 1) // CHUNK):
        a, b = k * CHUNK, min((k + 1) * CHUNK, grad_output.size)
        _leaky_relu_backward_loop(sign_source[a:b], grad_output[a:b], slope, out[a:b])


@numba.njit(parallel=True, cache=True)
def _tanh_backward_parallel(y, grad_output, out):
    for k in numba.prange((y.size + CHUNK - 1) // CHUNK):
        a, b = k * CHUNK, min((k + 1) * CHUNK, y.size)
        _tanh_backward_loop(y[a:b], grad_output[a:b], out[a:b])


@numba.njit(parallel=True, cache=True)
def _selu_parallel(x, expm1_negative, scale, scale_alpha, out):
    for k in numba.prange((x.size + CHUNK - 1) // CHUNK):
        a, b = k * CHUNK, min((k + 1) * CHUNK, x.size)
        _selu_loop(x[a:b], expm1_negative[a:b], scale, scale_alpha, out[a:b])


@numba.njit(parallel=True, cache=True)
def _selu_backward_parallel(y, grad_output, scale, scale_alpha, out):
    for k in numba.prange((y.size + CHUNK - 1) // CHUNK):
        a, b = k * CHUNK, min((k + 1) * CHUNK, y.size)
        _selu_backward_loop(y[a:b], grad_output[a:b], scale, scale_alpha, out[a:b])


def relu_forward(x, out):
    """``out = max(x, 0)``, NaN kept."""
    if use_threads(x.size):
        _relu_parallel(x, out)
    else:
        _relu_loop(x, out)


def relu_backward(y, grad_output, out):
    """``out = grad_output * (y > 0)``, from the forward's output ``y`` (PyTorch's threshold_backward)."""
    if use_threads(y.size):
        _relu_backward_parallel(y, grad_output, out)
    else:
        _relu_backward_loop(y, grad_output, out)


def leaky_relu_forward(x, slope, out):
    """``out = x if x >= 0 else slope * x``."""
    if use_threads(x.size):
        _leaky_relu_parallel(x, slope, out)
    else:
        _leaky_relu_loop(x, slope, out)


def leaky_relu_backward(sign_source, grad_output, slope, out):
    """``out = grad_output if sign_source > 0 else slope * grad_output``."""
    if use_threads(grad_output.size):
        _leaky_relu_backward_parallel(sign_source, grad_output, slope, out)
    else:
        _leaky_relu_backward_loop(sign_source, grad_output, slope, out)


def tanh_backward(y, grad_output, out):
    """``out = grad_output * (1 - y^2)``, from the forward's output ``y = tanh(x)``."""
    if use_threads(y.size):
        _tanh_backward_parallel(y, grad_output, out)
    else:
        _tanh_backward_loop(y, grad_output, out)


def selu_forward(x, scale, alpha, out):
    """``out = scale * x if x > 0 else scale * alpha * expm1(x)``. float32: one pass with
    ``_expm1_nonpositive``; float64: NumPy's expm1 of min(x, 0), then the select."""
    if x.dtype == np.float32:
        args = (x, x.dtype.type(scale), x.dtype.type(scale * alpha), out)
        (_selu_float32_parallel if use_threads(x.size) else _selu_float32_loop)(*args)
        return
    expm1_negative = np.minimum(x, 0)
    np.expm1(expm1_negative, out=expm1_negative)
    args = (x, expm1_negative, x.dtype.type(scale), x.dtype.type(scale * alpha), out)
    if use_threads(x.size):
        _selu_parallel(*args)
    else:
        _selu_loop(*args)


def selu_backward(y, grad_output, scale, alpha, out):
    """``out = grad_output * scale if y > 0 else grad_output * (y + scale * alpha)``, from the output ``y``."""
    args = (y, grad_output, y.dtype.type(scale), y.dtype.type(scale * alpha), out)
    if use_threads(y.size):
        _selu_backward_parallel(*args)
    else:
        _selu_backward_loop(*args)


def sigmoid_forward(x, out):
    """``out = 1 / (1 + exp(-x))`` without overflow: z = exp(-|x|), then 1 / (1 + z) for x >= 0 and
    z / (1 + z) otherwise (tiny outputs keep their relative precision). float32: one pass, z from
    ``_exp_nonpositive``; float64: z = NumPy's exp (in ``out``), then the select."""
    threaded = use_threads(x.size)
    if x.dtype == np.float32:
        (_sigmoid_float32_parallel if threaded else _sigmoid_float32_loop)(x, out)
        return
    (_negative_abs_parallel if threaded else _negative_abs_loop)(x, out)
    np.exp(out, out=out)
    (_sigmoid_parallel if threaded else _sigmoid_loop)(x, out, out)


def sigmoid_backward(y, grad_output, out):
    """``out = grad_output * y * (1 - y)``, from the forward's output ``y``."""
    if use_threads(y.size):
        _sigmoid_backward_parallel(y, grad_output, out)
    else:
        _sigmoid_backward_loop(y, grad_output, out)
