"""Numba kernels for the activations: one pass over memory each way.

The formulas (y the output, g the upstream gradient)::

    ReLU       y = x if x > 0 else 0                    dx = g if y > 0 else 0
    LeakyReLU  y = x if x >= 0 else a * x               dx = g if x > 0 else a * g
    Tanh       (y = tanh(x): NumPy's vectorised tanh)   dx = g * (1 - y^2)
    SELU       y = s * x if x > 0 else s * a * expm1(x) dx = g * s if y > 0 else g * (y + s * a)
    Sigmoid    z = exp(-|x|) (NumPy's vectorised exp),  dx = g * y * (1 - y)
               y = 1 / (1 + z) if x >= 0 else z / (1 + z)

NumPy needs several passes (a comparison, a product, a ``where``) and temporaries for these; after
every convolution of a deep VGG that is most of an activation's cost. All arrays are flat and C-contiguous;
``out`` is written in place. NaN propagates (a diverging run must still show NaN downstream). There is
no vectorised exp inside Numba here (no SVML), so SELU's and Sigmoid's forwards take expm1 and exp from
NumPy (SIMD, in place in ``out``) and the selects around them are kernels.

Each kernel is a ``*_loop`` over whole arrays. Arrays of at least ``PARALLEL_MIN_SIZE`` elements are
cut into ``CHUNK``-sized views run by Numba's threads (when there is more than one); smaller ones run on
the calling thread, because waking the thread pool costs more than the work (milliseconds on a busy
machine).
"""
import numba
import numpy as np

from ._threading import SERIAL_BELOW, use_threads  # importing it also makes idle OpenMP workers sleep

__all__ = ["relu_forward", "relu_backward", "leaky_relu_forward", "leaky_relu_backward", "tanh_backward",
           "selu_forward", "selu_backward", "sigmoid_forward", "sigmoid_backward", "PARALLEL_MIN_SIZE"]

PARALLEL_MIN_SIZE = SERIAL_BELOW
CHUNK = 1 << 15


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


@numba.njit(cache=True)
def _sigmoid_loop(x, z, out):
    # z = exp(-|x|) (NumPy's); may be ``out`` itself: each element is read before it is written
    one = x.dtype.type(1)
    for i in range(x.size):
        e = z[i]
        out[i] = (one if x[i] >= 0 else e) / (one + e)


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
    """``out = scale * x if x > 0 else scale * alpha * expm1(x)``."""
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
    """``out = 1 / (1 + exp(-x))`` without overflow: z = exp(-|x|) (in ``out``), then 1 / (1 + z) for
    x >= 0 and z / (1 + z) otherwise (tiny outputs keep their relative precision)."""
    threaded = use_threads(x.size)
    (_negative_abs_parallel if threaded else _negative_abs_loop)(x, out)
    np.exp(out, out=out)
    (_sigmoid_parallel if threaded else _sigmoid_loop)(x, out, out)


def sigmoid_backward(y, grad_output, out):
    """``out = grad_output * y * (1 - y)``, from the forward's output ``y``."""
    if use_threads(y.size):
        _sigmoid_backward_parallel(y, grad_output, out)
    else:
        _sigmoid_backward_loop(y, grad_output, out)
