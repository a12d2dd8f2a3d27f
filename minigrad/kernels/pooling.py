r"""Numba kernels for 2-D max and average pooling over NCHW arrays.

Window of output pixel (h, w) in the padded input, clipped to the real image::

    rows  max(h*sh - ph, 0) ... min(h*sh - ph + kh, H) - 1
    cols  max(w*sw - pw, 0) ... min(w*sw - pw + kw, W) - 1

Max pooling pads with -inf (padding never wins); average pooling pads with zeros. With ceil_mode a last
window may hang over the padding; it always starts inside the image or the left padding. Every kernel
runs its outer loop in parallel over the N*C image planes (``prange``), so threads never write the same
element even when windows overlap. Arrays are C-contiguous float32 or float64; ``out`` arrays are
overwritten. 2x2 windows with stride 2 (the usual downsampling) have an unrolled fast path.
"""
import numba
import numpy as np
from numba import prange

from ._threading import serial_when_small  # also sets the OpenMP wait policy before Numba starts

__all__ = ["max_pool_forward", "max_pool_backward", "avg_pool_forward", "avg_pool_backward", "avg_pool_divisor",
           "global_avg_pool_forward", "global_avg_pool_backward"]


@numba.njit(inline="always")
def _valid_range(out_len, stride, offset, in_len):
    """Output positions ``[lo, hi)`` whose input position ``o*stride + offset`` lies in ``[0, in_len)``.
    (A copy of im2col's helper: Numba's cache would not notice a change in another file.)"""
    lo = 0 if offset >= 0 else -(offset // stride)
    hi = -((offset - in_len) // stride)
    lo = min(lo, out_len)
    hi = min(max(hi, lo), out_len)
    return lo, hi


@numba.njit(inline="always")
def avg_pool_divisor(h, w, kh, kw, sh, sw, ph, pw, height, width, count_include_pad, divisor_override):
    """PyTorch's divisor: ``divisor_override`` if > 0; else the window's area inside the padded input
    (``count_include_pad``; kh*kw except where ceil_mode lets a window hang over the padding), else the
    number of real pixels in the window."""
    if divisor_override > 0:
        return divisor_override
    r0, s0 = h * sh - ph, w * sw - pw
    if count_include_pad:
        return (min(r0 + kh, height + ph) - r0) * (min(s0 + kw, width + pw) - s0)
    return (min(r0 + kh, height) - max(r0, 0)) * (min(s0 + kw, width) - max(s0, 0))


@numba.njit(inline="always")
def _is_two_by_two(kh, kw, sh, sw, ph, pw, h_out, w_out, height, width):
    """2x2 windows, stride 2, no padding, every window inside the image: the case with a fast path."""
    return kh == 2 and kw == 2 and sh == 2 and sw == 2 and ph == 0 and pw == 0 and \
        2 * h_out <= height and 2 * w_out <= width


# The loops below visit, for one output row h, each window offset (i, j) in row-major order and sweep
# the whole output row w for that offset: long inner loops, no per-window set-up. Arrays are used
# through flat views with explicit offsets (plane p of x starts at p*H*W).

@serial_when_small
@numba.njit(parallel=True, nogil=True, cache=True)
def max_pool_forward(x, kh, kw, sh, sw, ph, pw, out, argmax):
    """``out[n,c,h,w]`` = max over the window; ``argmax[n,c,h,w]`` = flat index ``r*W + s`` of the
    first maximum in row-major window order (PyTorch's choice on ties); NaN wins, as in PyTorch."""
    n, channels, height, width = x.shape
    h_out, w_out = out.shape[2], out.shape[3]
    xf, of, af = x.reshape(x.size), out.reshape(out.size), argmax.reshape(argmax.size)
    if _is_two_by_two(kh, kw, sh, sw, ph, pw, h_out, w_out, height, width):
        # The common case as a branch-free tournament (6x faster than the general loops below; in a
        # separate parallel loop, since sharing one loop body with them made it slow too):
        # y[h, w] = max(max(a, b), max(c, d)) over the window  a b / c d,  argmax the first maximum
        # in row-major order (a later value wins only if strictly larger, or NaN).
        for plane in prange(n * channels):
            xs, os = plane * height * width, plane * h_out * w_out
            for h in range(h_out):
                for w in range(w_out):
                    k = 2 * h * width + 2 * w
                    a, b = xf[xs + k], xf[xs + k + 1]
                    c, d = xf[xs + k + width], xf[xs + k + width + 1]
                    top = (b > a) | np.isnan(b)  # a later value wins only if larger, or NaN (PyTorch)
                    m1 = b if top else a  # scalar selects (not tuples) compile to branch-free code
                    i1 = k + 1 if top else k
                    bottom = (d > c) | np.isnan(d)
                    m2 = d if bottom else c
                    i2 = k + width + 1 if bottom else k + width
                    last = (m2 > m1) | np.isnan(m2)
                    of[os + h * w_out + w] = m2 if last else m1
                    af[os + h * w_out + w] = i2 if last else i1
        return
    for plane in prange(n * channels):
        xs, os = plane * height * width, plane * h_out * w_out
        for h in range(h_out):
            o = os + h * w_out
            of[o:o + w_out] = -np.inf
            af[o:o + w_out] = -1  # "nothing seen yet": the first real pixel always wins (even -inf)
            for i in range(kh):
                r = h * sh - ph + i
                if r < 0 or r >= height:
                    continue
                for j in range(kw):
                    w_lo, w_hi = _valid_range(w_out, sw, j - pw, width)
                    for w in range(w_lo, w_hi):
                        k = r * width + w * sw + j - pw
                        v = xf[xs + k]
                        if v > of[o + w] or af[o + w] < 0 or np.isnan(v):
                            of[o + w] = v
                            af[o + w] = k


@serial_when_small
@numba.njit(parallel=True, nogil=True, cache=True)
def max_pool_backward(grad_output, argmax, grad_input):
    """``grad_input[n, c].flat[argmax[n,c,h,w]] += grad_output[n,c,h,w]``, zero elsewhere."""
    n, channels, height, width = grad_input.shape
    plane_out = grad_output.shape[2] * grad_output.shape[3]
    gf, af, df = grad_output.reshape(grad_output.size), argmax.reshape(argmax.size), grad_input.reshape(grad_input.size)
    for plane in prange(n * channels):
        xs, os = plane * height * width, plane * plane_out
        df[xs:xs + height * width] = 0
        for o in range(os, os + plane_out):
            df[xs + af[o]] += gf[o]


@serial_when_small
@numba.njit(parallel=True, nogil=True, cache=True)
def avg_pool_forward(x, kh, kw, sh, sw, ph, pw, count_include_pad, divisor_override, out):
    """``out[n,c,h,w]`` = (sum of the window's real pixels) / divisor (see ``avg_pool_divisor``)."""
    n, channels, height, width = x.shape
    h_out, w_out = out.shape[2], out.shape[3]
    xf, of = x.reshape(x.size), out.reshape(out.size)
    if _is_two_by_two(kh, kw, sh, sw, ph, pw, h_out, w_out, height, width) and divisor_override == 0:
        for plane in prange(n * channels):  # the common case, unrolled (divisor 4: windows inside the image)
            xs, os = plane * height * width, plane * h_out * w_out
            for h in range(h_out):
                for w in range(w_out):
                    k = xs + 2 * h * width + 2 * w
                    of[os + h * w_out + w] = ((xf[k] + xf[k + 1]) + (xf[k + width] + xf[k + width + 1])) * 0.25
        return
    for plane in prange(n * channels):
        xs, os = plane * height * width, plane * h_out * w_out
        for h in range(h_out):
            o = os + h * w_out
            of[o:o + w_out] = 0
            for i in range(kh):
                r = h * sh - ph + i
                if r < 0 or r >= height:
                    continue
                for j in range(kw):
                    w_lo, w_hi = _valid_range(w_out, sw, j - pw, width)
                    t = xs + r * width + j - pw
                    for w in range(w_lo, w_hi):
                        of[o + w] += xf[t + w * sw]
            for w in range(w_out):
                of[o + w] /= avg_pool_divisor(h, w, kh, kw, sh, sw, ph, pw, height, width, count_include_pad,
                                      divisor_override)


@serial_when_small
@numba.njit(parallel=True, nogil=True, cache=True)
def avg_pool_backward(grad_output, kh, kw, sh, sw, ph, pw, count_include_pad, divisor_override, grad_input):
    """Each real pixel of a window receives ``grad_output[n,c,h,w] / divisor`` (overlaps add up)."""
    n, channels, height, width = grad_input.shape
    h_out, w_out = grad_output.shape[2], grad_output.shape[3]
    gf, df = grad_output.reshape(grad_output.size), grad_input.reshape(grad_input.size)
    if _is_two_by_two(kh, kw, sh, sw, ph, pw, h_out, w_out, height, width) and divisor_override == 0:
        # dx[n, c, 2h + i, 2w + j] = g[n, c, h, w] / 4  for i, j in {0, 1}: the windows do not overlap
        for plane in prange(n * channels):  # the common case, unrolled
            xs, os = plane * height * width, plane * h_out * w_out
            df[xs:xs + height * width] = 0  # rows/columns past the last window (odd sizes) get nothing
            for h in range(h_out):
                for w in range(w_out):
                    k = xs + 2 * h * width + 2 * w
                    share = gf[os + h * w_out + w] * 0.25
                    df[k] = share
                    df[k + 1] = share
                    df[k + width] = share
                    df[k + width + 1] = share
        return
    for plane in prange(n * channels):
        xs, os = plane * height * width, plane * h_out * w_out
        df[xs:xs + height * width] = 0
        for h in range(h_out):
            o = os + h * w_out
            for i in range(kh):
                r = h * sh - ph + i
                if r < 0 or r >= height:
                    continue
                for j in range(kw):
                    w_lo, w_hi = _valid_range(w_out, sw, j - pw, width)
                    t = xs + r * width + j - pw
                    for w in range(w_lo, w_hi):
                        df[t + w * sw] += gf[o + w] / avg_pool_divisor(h, w, kh, kw, sh, sw, ph, pw, height,
                                                                       width, count_include_pad, divisor_override)


@serial_when_small
@numba.njit(parallel=True, nogil=True, cache=True, fastmath={"reassoc"})
def global_avg_pool_forward(x, out):
    """``out[p] = mean of plane p of x`` for x viewed as (N*C, H*W) planes, summed in float64 ("reassoc"
    lets the sum vectorise: a fixed order, the same every run)."""
    for p in prange(x.shape[0]):
        total = 0.0
        for i in range(x.shape[1]):
            total += x[p, i]
        out[p] = total / x.shape[1]


@serial_when_small
@numba.njit(parallel=True, nogil=True, cache=True)
def global_avg_pool_backward(grad_output, grad_input):
    """``grad_input[p, :] = grad_output[p] / (H*W)``: each pixel had weight 1/(H*W) in its plane's mean."""
    for p in prange(grad_input.shape[0]):
        value = grad_input.dtype.type(grad_output[p] / grad_input.shape[1])
        for i in range(grad_input.shape[1]):
            grad_input[p, i] = value
