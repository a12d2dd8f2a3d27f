r"""Numba kernels for 2-D max and average pooling over NCHW arrays.

Window of output pixel (h, w) in the padded input, clipped to the real image::

    rows  max(h*sh - ph, 0) ... min(h*sh - ph + kh, H) - 1
    cols  max(w*sw - pw, 0) ... min(w*sw - pw + kw, W) - 1

Max pooling pads with -inf (padding never wins); average pooling pads with zeros. With ceil_mode a last
window may hang over the padding; it always starts inside the image or the left padding. Every kernel runs its
outer loop in parallel over the N*C image planes (``prange``), so threads never write the same element
even when windows overlap. Arrays are C-contiguous float32 or float64; ``out`` arrays are overwritten.
"""
import numba
import numpy as np
from numba import prange

from ._threading import serial_when_small  # also sets the OpenMP wait policy before Numba starts

__all__ = ["max_pool_forward", "max_pool_backward", "avg_pool_forward", "avg_pool_backward"]



@serial_when_small
@numba.njit(parallel=True, cache=True)
def max_pool_forward(x, kh, kw, sh, sw, ph, pw, out, argmax):
    """``out[n,c,h,w]`` = max over the window; ``argmax[n,c,h,w]`` = flat index ``r*W + s`` of the
    first maximum in row-major window order (PyTorch's choice on ties); NaN wins, as in PyTorch."""
    n, channels, height, width = x.shape
    h_out, w_out = out.shape[2], out.shape[3]
    for plane in prange(n * channels):
        b, c = plane // channels, plane % channels
        for h in range(h_out):
            r0, r1 = max(h * sh - ph, 0), min(h * sh - ph + kh, height)
            for w in range(w_out):
                s0, s1 = max(w * sw - pw, 0), min(w * sw - pw + kw, width)
                best = -np.inf
                where = r0 * width + s0
                for r in range(r0, r1):
                    for s in range(s0, s1):
                        v = x[b, c, r, s]
                        if v > best or np.isnan(v):
                            best = v
                            where = r * width + s
                out[b, c, h, w] = best
                argmax[b, c, h, w] = where


@serial_when_small
@numba.njit(parallel=True, cache=True)
def max_pool_backward(grad_output, argmax, grad_input):
    """``grad_input[n, c].flat[argmax[n,c,h,w]] += grad_output[n,c,h,w]``, zero elsewhere."""
    n, channels, height, width = grad_input.shape
    h_out, w_out = grad_output.shape[2], grad_output.shape[3]
    for plane in prange(n * channels):
        b, c = plane // channels, plane % channels
        grad_input[b, c] = 0
        for h in range(h_out):
            for w in range(w_out):
                k = argmax[b, c, h, w]
                grad_input[b, c, k // width, k % width] += grad_output[b, c, h, w]


@numba.njit(inline="always")
def _divisor(h, w, kh, kw, sh, sw, ph, pw, height, width, count_include_pad, divisor_override):
    """PyTorch's divisor: ``divisor_override`` if > 0; else the window's area inside the padded input
    (``count_include_pad``; kh*kw except where ceil_mode lets a window hang over the padding), else the
    number of real pixels in the window."""
    if divisor_override > 0:
        return divisor_override
    r0, s0 = h * sh - ph, w * sw - pw
    if count_include_pad:
        return (min(r0 + kh, height + ph) - r0) * (min(s0 + kw, width + pw) - s0)
    return (min(r0 + kh, height) - max(r0, 0)) * (min(s0 + kw, width) - max(s0, 0))


@serial_when_small
@numba.njit(parallel=True, cache=True)
def avg_pool_forward(x, kh, kw, sh, sw, ph, pw, count_include_pad, divisor_override, out):
    """``out[n,c,h,w]`` = (sum of the window's real pixels) / divisor (see ``_divisor``)."""
    n, channels, height, width = x.shape
    h_out, w_out = out.shape[2], out.shape[3]
    for plane in prange(n * channels):
        b, c = plane // channels, plane % channels
        for h in range(h_out):
            r0, r1 = max(h * sh - ph, 0), min(h * sh - ph + kh, height)
            for w in range(w_out):
                s0, s1 = max(w * sw - pw, 0), min(w * sw - pw + kw, width)
                total = 0.0  # float64 accumulator: exact enough for float32 windows of any size
                for r in range(r0, r1):
                    for s in range(s0, s1):
                        total += x[b, c, r, s]
                out[b, c, h, w] = total / _divisor(h, w, kh, kw, sh, sw, ph, pw, height, width,
                                                   count_include_pad, divisor_override)


@serial_when_small
@numba.njit(parallel=True, cache=True)
def avg_pool_backward(grad_output, kh, kw, sh, sw, ph, pw, count_include_pad, divisor_override, grad_input):
    """Each real pixel of a window receives ``grad_output[n,c,h,w] / divisor`` (overlaps add up)."""
    n, channels, height, width = grad_input.shape
    h_out, w_out = grad_output.shape[2], grad_output.shape[3]
    for plane in prange(n * channels):
        b, c = plane // channels, plane % channels
        grad_input[b, c] = 0
        for h in range(h_out):
            r0, r1 = max(h * sh - ph, 0), min(h * sh - ph + kh, height)
            for w in range(w_out):
                s0, s1 = max(w * sw - pw, 0), min(w * sw - pw + kw, width)
                share = grad_output[b, c, h, w] / _divisor(h, w, kh, kw, sh, sw, ph, pw, height, width,
                                                            count_include_pad, divisor_override)
                for r in range(r0, r1):
                    for s in range(s0, s1):
                        grad_input[b, c, r, s] += share
