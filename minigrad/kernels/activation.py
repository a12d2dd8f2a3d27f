"""Numba kernels for the piecewise-linear activations: one pass over memory each way.

NumPy needs several passes (a comparison, a product, a ``where``) and temporaries for LeakyReLU; after
every convolution of a deep VGG that is most of an activation's cost. All arrays are flat and C-contiguous;
``out`` is written in place. NaN propagates (a diverging run must still show NaN downstream).

Each kernel is a ``*_span`` loop over ``[start, stop)``. Arrays of at least ``PARALLEL_MIN_SIZE``
elements are cut into ``CHUNK``-sized spans run by Numba's threads; smaller ones run on the calling
thread, because waking the thread pool costs more than the work (milliseconds on a busy machine).
"""
import numba
import numpy as np

from ._threading import SERIAL_BELOW  # importing it also makes idle OpenMP workers sleep (see there)

__all__ = ["relu_forward", "relu_backward", "leaky_relu_forward", "leaky_relu_backward", "supported",
           "PARALLEL_MIN_SIZE"]

PARALLEL_MIN_SIZE = SERIAL_BELOW
CHUNK = 1 << 15


@numba.njit(cache=True)
def _relu_span(x, out, start, stop):
    for i in range(start, stop):
        v = x[i]
        out[i] = 0 if v < 0 else v


@numba.njit(cache=True)
def _relu_backward_span(y, grad_output, out, start, stop):
    for i in range(start, stop):
        out[i] = 0 if y[i] <= 0 else grad_output[i]


@numba.njit(cache=True)
def _leaky_relu_span(x, slope, out, start, stop):
    for i in range(start, stop):
        v = x[i]
        out[i] = v if v >= 0 else slope * v


@numba.njit(cache=True)
def _leaky_relu_backward_span(sign_source, grad_output, slope, out, start, stop):
    for i in range(start, stop):
        g = grad_output[i]
        out[i] = g if sign_source[i] > 0 else slope * g


# Threaded drivers: the same spans, CHUNK elements per task.
@numba.njit(parallel=True, cache=True)
def _relu_parallel(x, out):
    for k in numba.prange((x.size + CHUNK - 1) // CHUNK):
        _relu_span(x, out, k * CHUNK, min((k + 1) * CHUNK, x.size))


@numba.njit(parallel=True, cache=True)
def _relu_backward_parallel(y, grad_output, out):
    for k in numba.prange((y.size + CHUNK - 1) // CHUNK):
        _relu_backward_span(y, grad_output, out, k * CHUNK, min((k + 1) * CHUNK, y.size))


@numba.njit(parallel=True, cache=True)
def _leaky_relu_parallel(x, slope, out):
    for k in numba.prange((x.size + CHUNK - 1) // CHUNK):
        _leaky_relu_span(x, slope, out, k * CHUNK, min((k + 1) * CHUNK, x.size))


@numba.njit(parallel=True, cache=True)
def _leaky_relu_backward_parallel(sign_source, grad_output, slope, out):
    for k in numba.prange((grad_output.size + CHUNK - 1) // CHUNK):
        _leaky_relu_backward_span(sign_source, grad_output, slope, out, k * CHUNK,
                                  min((k + 1) * CHUNK, grad_output.size))


def relu_forward(x, out):
    """``out = max(x, 0)``, NaN kept."""
    if x.size >= PARALLEL_MIN_SIZE:
        _relu_parallel(x, out)
    else:
        _relu_span(x, out, 0, x.size)


def relu_backward(y, grad_output, out):
    """``out = grad_output * (y > 0)``, from the forward's output ``y`` (PyTorch's threshold_backward)."""
    if y.size >= PARALLEL_MIN_SIZE:
        _relu_backward_parallel(y, grad_output, out)
    else:
        _relu_backward_span(y, grad_output, out, 0, y.size)


def leaky_relu_forward(x, slope, out):
    """``out = x if x >= 0 else slope * x``."""
    if x.size >= PARALLEL_MIN_SIZE:
        _leaky_relu_parallel(x, slope, out)
    else:
        _leaky_relu_span(x, slope, out, 0, x.size)


def leaky_relu_backward(sign_source, grad_output, slope, out):
    """``out = grad_output if sign_source > 0 else slope * grad_output``."""
    if grad_output.size >= PARALLEL_MIN_SIZE:
        _leaky_relu_backward_parallel(sign_source, grad_output, slope, out)
    else:
        _leaky_relu_backward_span(sign_source, grad_output, slope, out, 0, grad_output.size)


def supported(*arrays):
    """True when the kernels are compiled for these arrays' dtype (float32 or float64, all equal)."""
    dtype = arrays[0].dtype
    return dtype in (np.float32, np.float64) and all(a.dtype == dtype for a in arrays)
