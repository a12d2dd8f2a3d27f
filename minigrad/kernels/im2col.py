r"""Numba kernels that turn a convolution into a GEMM: im2col, col2im and the NCHW <-> column reshuffles.

Layout. For a chunk of images ``n0 <= n < n1`` of ``x`` (N, C, H, W), a kernel (kh, kw), stride (sh, sw)
and zero padding (ph, pw), ``cols`` has one row per (channel, kernel row, kernel column) and one column
per (image, output pixel)::

    cols[(c*kh + i)*kw + j, ((n - n0)*H_out + h)*W_out + w] = x_pad[n, c, h*sh + i, w*sw + j]
    x_pad[n, c, r, s] = x[n, c, r - ph, s - pw]  inside the image, 0 outside  (padding is never built)

so ``cols`` is ``(C*kh*kw, (n1-n0)*H_out*W_out)`` and a convolution chunk is ``W_mat @ cols`` with
``W_mat = weight.reshape(C_out, C*kh*kw)``. ``col2im`` is the adjoint (transpose) of ``im2col``: it adds
every column entry back into the pixel it was copied from, so ``<im2col(x), C> = <x, col2im(C)>``.

``rows_to_nchw`` / ``nchw_to_rows`` move a GEMM result ``(C, (n1-n0)*H*W)`` into NCHW images and back
(plain NumPy).

Every function works on one chunk of the batch and writes into an array given by the caller (reused
scratch memory, no allocation). The two Numba kernels run their outer loop in parallel (``prange``) over
rows or channels, so threads never write the same element; they take C-contiguous float32 or float64
arrays (the only compiled signatures) and Python ints, and check no index: the caller passes shapes and a
chunk ``0 <= n0 < n1 <= N`` that agree.
"""
import numba
import numpy as np
from numba import prange

from ._threading import serial_when_small  # also sets the OpenMP wait policy before Numba starts

__all__ = ["im2col", "col2im", "rows_to_nchw", "nchw_to_rows", "output_size"]



def output_size(size, kernel, stride, padding):
    """PyTorch's floor rule: ``floor((size + 2*padding - kernel) / stride) + 1`` (may be <= 0)."""
    return (size + 2 * padding - kernel) // stride + 1


@numba.njit(inline="always")
def _valid_range(out_len, stride, offset, in_len):
    """Output positions ``[lo, hi)`` whose input position ``o*stride + offset`` lies in ``[0, in_len)``."""
    lo = 0 if offset >= 0 else -(offset // stride)  # ceil(-offset / stride)
    hi = -((offset - in_len) // stride)  # ceil((in_len - offset) / stride)
    lo = min(lo, out_len)
    hi = min(max(hi, lo), out_len)
    return lo, hi


@serial_when_small
@numba.njit(parallel=True, nogil=True, cache=True)
def im2col(x, n0, n1, kh, kw, sh, sw, ph, pw, h_out, w_out, cols):
    """Fill ``cols`` (C*kh*kw, (n1-n0)*h_out*w_out) from images ``x[n0:n1]`` (mapping in the module doc).

    Fast path: with stride 1 and ``w_out == W`` (e.g. 3x3 with padding 1), source and destination
    advance together across image rows, so one (channel, i, j) row of an image is a single long slice
    copy (vectorised); the few entries that wrapped around from a neighbouring image row are then zeroed
    (they are the left/right padding). Otherwise entries are copied one by one.
    """
    channels, height, width = x.shape[1], x.shape[2], x.shape[3]
    plane = h_out * w_out
    xf = x.reshape(x.size)  # flat views: cheap index arithmetic in the inner loops
    cf = cols.reshape(cols.size)
    if sw == 1 and sh == 1 and w_out == width:  # a separate loop: sharing a body slows both paths
        for r in prange(channels * kh * kw):  # one row of cols per iteration: threads write disjoint rows
            c, i, j = r // (kh * kw), (r // kw) % kh, r % kw
            w_lo, w_hi = _valid_range(w_out, 1, j - pw, width)
            h_lo, h_hi = _valid_range(h_out, 1, i - ph, height)
            empty = h_hi <= h_lo or w_hi <= w_lo
            start, stop = h_lo * w_out + w_lo, (h_hi - 1) * w_out + w_hi  # the run, in block offsets
            for n in range(n0, n1):
                d = r * cols.shape[1] + (n - n0) * plane  # start of this image's block in row r
                if empty:
                    cf[d:d + plane] = 0
                    continue
                shift = (n * channels + c) * height * width + (i - ph) * width + (j - pw)  # source - dest
                cf[d + start:d + stop] = xf[start + shift:stop + shift]
                if start > 0:  # output rows that read the top padding (and the row's left padding)
                    cf[d:d + start] = 0
                if stop < plane:
                    cf[d + stop:d + plane] = 0
                if w_lo > 0 or w_hi < w_out:  # entries that wrapped around: left and right padding
                    for h in range(h_lo, h_hi):
                        for w in range(w_lo):
                            cf[d + h * w_out + w] = 0
                        for w in range(w_hi, w_out):
                            cf[d + h * w_out + w] = 0
        return
    for r in prange(channels * kh * kw):
        c, i, j = r // (kh * kw), (r // kw) % kh, r % kw
        w_lo, w_hi = _valid_range(w_out, sw, j - pw, width)
        h_lo, h_hi = _valid_range(h_out, sh, i - ph, height)
        for n in range(n0, n1):
            d = r * cols.shape[1] + (n - n0) * plane
            s = (n * channels + c) * height * width  # start of plane x[n, c]
            cf[d:d + h_lo * w_out] = 0
            cf[d + h_hi * w_out:d + plane] = 0
            for h in range(h_lo, h_hi):
                e = d + h * w_out
                t = s + (h * sh + i - ph) * width + j - pw
                cf[e:e + w_lo] = 0
                cf[e + w_hi:e + w_out] = 0
                target = cf[e + w_lo:e + w_hi]  # views indexed from 0: see col2im
                source = xf[t + w_lo * sw:t + (w_hi - 1) * sw + 1:sw]
                for w in range(w_hi - w_lo):
                    target[w] = source[w]


@serial_when_small
@numba.njit(parallel=True, nogil=True, cache=True)
def col2im(cols, n0, n1, kh, kw, sh, sw, ph, pw, h_out, w_out, out):
    """Overwrite ``out[n0:n1]`` with the adjoint of ``im2col``: each entry of ``cols`` added to its pixel.

    ``out[n, c, h*sh + i - ph, w*sw + j - pw] += cols[(c*kh + i)*kw + j, ((n-n0)*h_out + h)*w_out + w]``
    over all (i, j, h, w) landing inside the image; entries that fall in the padding are dropped.
    """
    channels, height, width = out.shape[1], out.shape[2], out.shape[3]
    plane = h_out * w_out
    of = out.reshape(out.size)
    cf = cols.reshape(cols.size)
    for c in prange(channels):  # a thread owns whole channel planes: overlapping windows never race
        for n in range(n0, n1):
            s = (n * channels + c) * height * width
            of[s:s + height * width] = 0
            for i in range(kh):
                h_lo, h_hi = _valid_range(h_out, sh, i - ph, height)
                for j in range(kw):
                    w_lo, w_hi = _valid_range(w_out, sw, j - pw, width)
                    d = ((c * kh + i) * kw + j) * cols.shape[1] + (n - n0) * plane
                    for h in range(h_lo, h_hi):
                        e = d + h * w_out
                        t = s + (h * sh + i - ph) * width + j - pw
                        # Through views indexed from 0 (provably in bounds, no negative-index wrap):
                        # the add is vectorised, 3x faster than indexing the flat arrays.
                        source = cf[e + w_lo:e + w_hi]
                        target = of[t + w_lo * sw:t + (w_hi - 1) * sw + 1:sw]
                        for w in range(w_hi - w_lo):
                            target[w] += source[w]


def rows_to_nchw(rows, bias, n0, n1, out):
    """``out[n, c].flat[p] = rows[c, (n - n0)*H*W + p] + bias[c]`` for n0 <= n < n1 (bias fused).

    Plain NumPy, one strided pass (releases the GIL): a Numba version was no faster and cost compile time.
    """
    channels = out.shape[1]
    target = out[n0:n1].reshape(n1 - n0, channels, -1)  # a view: out is C-contiguous
    np.add(rows.reshape(channels, n1 - n0, -1).transpose(1, 0, 2), bias[:, None], out=target)


def nchw_to_rows(x, n0, n1, rows):
    """``rows[c, (n - n0)*H*W + p] = x[n, c].flat[p]``: images n0..n1-1 side by side, one row per channel."""
    channels = x.shape[1]
    np.copyto(rows.reshape(channels, n1 - n0, -1), x[n0:n1].reshape(n1 - n0, channels, -1).transpose(1, 0, 2))
