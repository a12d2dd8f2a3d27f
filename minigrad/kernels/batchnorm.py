r"""Numba kernels for normalisation over ``(N, C, L)`` arrays: per channel c, statistics over (n, l).

The formulas (xhat = (x - mean) * invstd, invstd = 1 / sqrt(var + eps), n = N*L values per channel)::

    forward   mean = mean(x),  var = mean((x - mean)^2)   (biased; two passes, float64 sums)
              y = xhat * weight + bias
    backward  dbias = sum(g),  dweight = sum(g * xhat)
              batch statistics:  dx = weight * invstd * (g - mean(g) - xhat * mean(g * xhat))
              fixed statistics:  dx = weight * invstd * g          (the layer is then affine)

Batch norm runs them on its input as (N, C, H*W); layer norm on its rows as (1, rows, D) (one "channel"
per row, statistics over its D values), so both layers' gradients are these lines.

Two memory orders, one formula. With L > 1 each channel's slice ``x[:, c, :]`` is processed start to
finish by one thread (statistics, then output; a task takes a block of channels), so a (100, 32, 32, 32) float32 batch is streamed from
memory about once per pass while the channel's 400 KB stay in cache for the second look. With L == 1
(BatchNorm1d on (N, C)) a channel is a strided column, so those kernels walk the rows instead, keeping
one accumulator per channel (10x faster on (10000, 100)), in blocks of rows spread over the threads
(each block's sums added in block order: the same numbers on any number of threads).

Sums are accumulated in float64 and the variance uses the two-pass formula, so float32 data with a
large mean keeps its precision. Per-channel vectors (``mean``, ``var``, ``invstd``, ``weight``,
``bias``) are float64; the element-wise loops run in the data's dtype (float32 arithmetic vectorises
twice as wide, and mixing in float64 made the output pass 4x slower). ``fastmath={"reassoc",
"contract"}`` lets the float64 sums vectorise (4x faster) and fuse multiply-adds; it changes only
rounding order, never NaN/Inf handling.
"""
import numba
import numpy as np

from ._threading import SERIAL_BELOW, use_threads  # importing it also makes idle OpenMP workers sleep

__all__ = ["batchnorm_forward", "batchnorm_backward", "feature_affine_forward", "feature_affine_backward",
           "PARALLEL_MIN_SIZE"]

# Below this many elements (or with one Numba thread) the channels run on the calling thread: waking
# Numba's thread pool costs more than the work (milliseconds on a busy machine).
PARALLEL_MIN_SIZE = SERIAL_BELOW
_FASTMATH = {"reassoc", "contract"}
_ROW_BLOCK = 1024  # rows per task of the row-walking kernels


def batchnorm_forward(x, weight, bias, eps, use_batch_stats, mean, var, out):
    """``out[n, c, l] = (x[n, c, l] - mean[c]) / sqrt(var[c] + eps) * weight[c] + bias[c]``.

    With ``use_batch_stats`` the channel's biased batch mean and variance are first written into
    ``mean`` and ``var``; otherwise ``mean`` and ``var`` are read (running statistics).
    """
    parallel = use_threads(x.size)
    if x.shape[2] == 1:
        rows = (_forward_rows_parallel if parallel else _forward_rows_serial)
        rows(x.reshape(x.shape[:2]), weight, bias, eps, use_batch_stats, mean, var, out.reshape(x.shape[:2]))
    elif parallel:
        _forward_parallel(x, weight, bias, eps, use_batch_stats, mean, var, out, _block(x.shape[1]))
    else:
        _forward_channels(0, x.shape[1], x, weight, bias, eps, use_batch_stats, mean, var, out)


def batchnorm_backward(x, grad_output, mean, invstd, weight, use_batch_stats,
                       grad_input, grad_weight, grad_bias):
    """Input gradient and per-channel parameter gradients (``xhat = (x - mean) * invstd``).

    ``grad_bias[c] = sum g``, ``grad_weight[c] = sum g * xhat`` (written, not added). With batch
    statistics ``grad_input = weight * invstd * (g - mean(g) - xhat * mean(g * xhat))``; with fixed
    (running) statistics the layer is affine and ``grad_input = weight * invstd * g``.
    """
    args = (mean, invstd, weight, use_batch_stats)
    parallel = use_threads(x.size)
    if x.shape[2] == 1:
        shape = x.shape[:2]
        rows = (_backward_rows_parallel if parallel else _backward_rows_serial)
        rows(x.reshape(shape), grad_output.reshape(shape), *args, grad_input.reshape(shape), grad_weight, grad_bias)
    elif parallel:
        _backward_parallel(x, grad_output, *args, grad_input, grad_weight, grad_bias, _block(x.shape[1]))
    else:
        _backward_channels(0, x.shape[1], x, grad_output, *args, grad_input, grad_weight, grad_bias)


def _block(channels):
    """Channels per task: about four tasks per thread (a call per channel costs ~0.2 us: layer norm's
    10,000 short rows would pay for it)."""
    return max(1, channels // (4 * numba.get_num_threads()))


# The mean as a sum hi + lo of two values in the data's dtype: (x - hi) - lo is x - mean rounded once,
# exact for x near the mean, so float32 data with |mean| >> std is not shifted by the mean's rounding.
@numba.njit(inline="always")
def _split(value, dtype):
    hi = dtype.type(value)
    return hi, dtype.type(value - hi)


# The backward's per-channel constants, so that  dx = k * (g - a - (x - mean) * b):
#   k = weight * invstd,  a = mean(g) = sum_g / n,
#   b = invstd^2 * sum_g_centred / n   (xhat * mean(g * xhat) = (x - mean) * invstd^2 * mean(g * (x - mean)))
@numba.njit(inline="always")
def _backward_constants(weight, invstd, sum_g, sum_g_centred, count):
    return weight * invstd, sum_g / count, invstd * invstd * sum_g_centred / count


# ------------------------------------------------------------------- L > 1: channels c0..c1, one slice at a time
@numba.njit(cache=True, fastmath=_FASTMATH)
def _forward_channels(c0, c1, x, weight, bias, eps, use_batch_stats, mean, var, out):
    n_batch, _, length = x.shape
    count = n_batch * length
    for c in range(c0, c1):
        if use_batch_stats:
            total = 0.0
            for n in range(n_batch):
                for l in range(length):
                    total += x[n, c, l]
            mu = total / count  # float64 (hi, lo below are in the data's dtype)
            squares = 0.0
            for n in range(n_batch):
                for l in range(length):
                    d = x[n, c, l] - mu
                    squares += d * d
            mean[c] = mu
            var[c] = squares / count
        hi, lo = _split(mean[c], x.dtype)
        scale = x.dtype.type(weight[c] / np.sqrt(var[c] + eps))
        shift = x.dtype.type(bias[c])
        for n in range(n_batch):
            for l in range(length):
                out[n, c, l] = ((x[n, c, l] - hi) - lo) * scale + shift  # y = xhat * weight + bias


@numba.njit(cache=True, fastmath=_FASTMATH)
def _backward_channels(c0, c1, x, grad_output, mean, invstd, weight, use_batch_stats,
                       grad_input, grad_weight, grad_bias):
    n_batch, _, length = x.shape
    for c in range(c0, c1):
        sum_g = 0.0
        sum_g_centred = 0.0  # sum g * (x - mean); times invstd it is sum g * xhat
        for n in range(n_batch):
            for l in range(length):
                g = grad_output[n, c, l]
                sum_g += g
                sum_g_centred += g * (x[n, c, l] - mean[c])
        grad_bias[c] = sum_g
        grad_weight[c] = sum_g_centred * invstd[c]
        k, a, b = _backward_constants(weight[c], invstd[c], sum_g, sum_g_centred, n_batch * length)
        k = x.dtype.type(k)
        if use_batch_stats:
            hi, lo = _split(mean[c], x.dtype)
            a, b = x.dtype.type(a), x.dtype.type(b)
            # dx = weight * invstd * (g - mean(g) - xhat * mean(g * xhat))   per channel, over N*L
            for n in range(n_batch):
                for l in range(length):
                    grad_input[n, c, l] = k * (grad_output[n, c, l] - a - ((x[n, c, l] - hi) - lo) * b)
        else:
            for n in range(n_batch):
                for l in range(length):
                    grad_input[n, c, l] = k * grad_output[n, c, l]


# Threaded drivers: blocks of ``block`` channels, one block per task.
@numba.njit(parallel=True, cache=True)
def _forward_parallel(x, weight, bias, eps, use_batch_stats, mean, var, out, block):
    channels = x.shape[1]
    for k in numba.prange((channels + block - 1) // block):
        _forward_channels(k * block, min((k + 1) * block, channels), x, weight, bias, eps, use_batch_stats,
                          mean, var, out)


@numba.njit(parallel=True, cache=True)
def _backward_parallel(x, grad_output, mean, invstd, weight, use_batch_stats, grad_input, grad_weight, grad_bias,
                       block):
    channels = x.shape[1]
    for k in numba.prange((channels + block - 1) // block):
        _backward_channels(k * block, min((k + 1) * block, channels), x, grad_output, mean, invstd, weight,
                           use_batch_stats, grad_input, grad_weight, grad_bias)


# ------------------------------------------------------------------- L == 1: rows of (N, C), in blocks of rows
# The same formulas as above, walked row by row (the inner loops over contiguous channels). The rows are
# cut into blocks of _ROW_BLOCK: a task takes whole blocks, so two threads never write one cache line
# (a split by channels did: a row is not a whole number of lines), and each block's per-channel sums
# (float64) are added in block order afterwards: the same numbers on any number of threads.
@numba.njit(cache=True, fastmath=_FASTMATH)
def _block_sums(block, x, centre, sums):
    """sums[block, c] = sum over the block's rows of (x[n, c] - centre[c])^2, or of x[n, c] itself when
    ``centre`` is empty."""
    channels = x.shape[1]
    total = np.zeros(channels)  # local: the loop vectorises
    for n in range(block * _ROW_BLOCK, min((block + 1) * _ROW_BLOCK, x.shape[0])):
        if centre.size == 0:
            for c in range(channels):
                total[c] += x[n, c]
        else:
            for c in range(channels):
                d = x[n, c] - centre[c]
                total[c] += d * d
    sums[block, :channels] = total


@numba.njit(cache=True, fastmath=_FASTMATH)
def _block_normalise(block, x, hi, lo, scale, shift, out):
    for n in range(block * _ROW_BLOCK, min((block + 1) * _ROW_BLOCK, x.shape[0])):
        for c in range(x.shape[1]):
            out[n, c] = ((x[n, c] - hi[c]) - lo[c]) * scale[c] + shift[c]  # y = xhat * weight + bias


@numba.njit(cache=True, fastmath=_FASTMATH)
def _block_grad_sums(block, x, grad_output, hi, lo, sums):
    """sums[block, c] = sum of g over the block's rows; sums[block, C + c] = sum of g * (x - mean)."""
    channels = x.shape[1]
    sum_g, sum_g_centred = np.zeros(channels), np.zeros(channels)
    for n in range(block * _ROW_BLOCK, min((block + 1) * _ROW_BLOCK, x.shape[0])):
        for c in range(channels):
            g = grad_output[n, c]
            sum_g[c] += g
            sum_g_centred[c] += g * ((x[n, c] - hi[c]) - lo[c])  # the product in the data's dtype
    sums[block, :channels] = sum_g
    sums[block, channels:] = sum_g_centred


@numba.njit(cache=True, fastmath=_FASTMATH)
def _block_grad_input(block, x, grad_output, hi, lo, k, a, b, use_batch_stats, grad_input):
    for n in range(block * _ROW_BLOCK, min((block + 1) * _ROW_BLOCK, x.shape[0])):
        if use_batch_stats:
            # dx = weight * invstd * (g - mean(g) - xhat * mean(g * xhat))   per channel (column), over the N rows
            for c in range(x.shape[1]):
                grad_input[n, c] = k[c] * (grad_output[n, c] - a[c] - ((x[n, c] - hi[c]) - lo[c]) * b[c])
        else:
            for c in range(x.shape[1]):
                grad_input[n, c] = k[c] * grad_output[n, c]


@numba.njit(cache=True)
def _sum_blocks(sums):
    """The blocks' sums added in block order (float64)."""
    total = np.zeros(sums.shape[1])
    for block in range(sums.shape[0]):
        total += sums[block]
    return total


@numba.njit(cache=True)
def _split_all(mean, dtype_of):
    hi, lo = np.empty(mean.size, dtype_of.dtype), np.empty(mean.size, dtype_of.dtype)
    for c in range(mean.size):
        hi[c], lo[c] = _split(mean[c], dtype_of.dtype)
    return hi, lo


@numba.njit(cache=True)
def _forward_rows_serial(x, weight, bias, eps, use_batch_stats, mean, var, out):
    _forward_rows(x, weight, bias, eps, use_batch_stats, mean, var, out)


@numba.njit(parallel=True, cache=True)
def _forward_rows_parallel(x, weight, bias, eps, use_batch_stats, mean, var, out):
    _forward_rows(x, weight, bias, eps, use_batch_stats, mean, var, out)


@numba.njit(inline="always")
def _forward_rows(x, weight, bias, eps, use_batch_stats, mean, var, out):
    n_rows, channels = x.shape
    blocks = (n_rows + _ROW_BLOCK - 1) // _ROW_BLOCK
    if use_batch_stats:
        sums = np.empty((blocks, channels))
        for block in numba.prange(blocks):  # pass 1: mean
            _block_sums(block, x, np.empty(0, x.dtype), sums)
        mean[:] = _sum_blocks(sums) / n_rows
        centre = mean.astype(x.dtype)
        for block in numba.prange(blocks):  # pass 2: the variance about the mean (two-pass formula)
            _block_sums(block, x, centre, sums)
        squares = _sum_blocks(sums)
        for c in range(channels):
            # about the mean rounded to the data's dtype: mean((x - centre)^2) = var + (mean - centre)^2
            offset = mean[c] - centre[c]
            var[c] = max(squares[c] / n_rows - offset * offset, 0.0)
    hi, lo = _split_all(mean, x)
    scale, shift = np.empty(channels, x.dtype), np.empty(channels, x.dtype)
    for c in range(channels):
        scale[c] = weight[c] / np.sqrt(var[c] + eps)
        shift[c] = bias[c]
    for block in numba.prange(blocks):
        _block_normalise(block, x, hi, lo, scale, shift, out)


@numba.njit(cache=True)
def _backward_rows_serial(x, grad_output, mean, invstd, weight, use_batch_stats, grad_input, grad_weight,
                          grad_bias):
    _backward_rows(x, grad_output, mean, invstd, weight, use_batch_stats, grad_input, grad_weight, grad_bias)


@numba.njit(parallel=True, cache=True)
def _backward_rows_parallel(x, grad_output, mean, invstd, weight, use_batch_stats, grad_input, grad_weight,
                            grad_bias):
    _backward_rows(x, grad_output, mean, invstd, weight, use_batch_stats, grad_input, grad_weight, grad_bias)


@numba.njit(inline="always")
def _backward_rows(x, grad_output, mean, invstd, weight, use_batch_stats, grad_input, grad_weight, grad_bias):
    n_rows, channels = x.shape
    blocks = (n_rows + _ROW_BLOCK - 1) // _ROW_BLOCK
    hi, lo = _split_all(mean, x)
    sums = np.empty((blocks, 2 * channels))
    for block in numba.prange(blocks):
        _block_grad_sums(block, x, grad_output, hi, lo, sums)
    total = _sum_blocks(sums)
    k, a, b = np.empty(channels, x.dtype), np.empty(channels, x.dtype), np.empty(channels, x.dtype)
    for c in range(channels):
        grad_bias[c] = total[c]
        grad_weight[c] = total[channels + c] * invstd[c]
        k[c], a[c], b[c] = _backward_constants(weight[c], invstd[c], total[c], total[channels + c], n_rows)
    for block in numba.prange(blocks):
        _block_grad_input(block, x, grad_output, hi, lo, k, a, b, use_batch_stats, grad_input)


# ------------------------------------------------------------------- per-feature affine (layer norm's weight, bias)
# Layer norm's learnable weight and bias act per feature (the last axis of its (rows, D) view), not per
# normalised row, so they are applied after the normalisation above, with the same row blocks:
#     forward   y = xhat * weight + bias
#     backward  dweight = sum over rows of g * xhat,  dbias = sum over rows of g,  h = g * weight
# (h is the gradient w.r.t. xhat, which the normalisation's backward then takes as its upstream gradient).
def feature_affine_forward(xhat, weight, bias, out):
    """``out[r, d] = xhat[r, d] * weight[d] + bias[d]`` (``weight``, ``bias``: the data's dtype)."""
    (_affine_forward_parallel if use_threads(xhat.size) else _affine_forward_serial)(xhat, weight, bias, out)


def feature_affine_backward(grad_output, xhat, weight, grad_xhat, grad_weight, grad_bias):
    """``grad_xhat = grad_output * weight``; ``grad_weight``, ``grad_bias`` (float64, written) the sums over
    rows of ``grad_output * xhat`` and of ``grad_output``, per block of rows added in block order."""
    sums = np.empty(((xhat.shape[0] + _ROW_BLOCK - 1) // _ROW_BLOCK, 2 * xhat.shape[1]))
    (_affine_backward_parallel if use_threads(xhat.size) else _affine_backward_serial)(
        grad_output, xhat, weight, grad_xhat, sums)
    total = _sum_blocks(sums)
    grad_weight[:] = total[:xhat.shape[1]]
    grad_bias[:] = total[xhat.shape[1]:]


@numba.njit(cache=True, fastmath=_FASTMATH)
def _block_affine_forward(block, xhat, weight, bias, out):
    for r in range(block * _ROW_BLOCK, min((block + 1) * _ROW_BLOCK, xhat.shape[0])):
        for d in range(xhat.shape[1]):
            out[r, d] = xhat[r, d] * weight[d] + bias[d]


@numba.njit(cache=True, fastmath=_FASTMATH)
def _block_affine_backward(block, grad_output, xhat, weight, grad_xhat, sums):
    features = xhat.shape[1]
    sum_g_xhat, sum_g = np.zeros(features), np.zeros(features)  # local: the loop vectorises
    for r in range(block * _ROW_BLOCK, min((block + 1) * _ROW_BLOCK, xhat.shape[0])):
        for d in range(features):
            g = grad_output[r, d]
            grad_xhat[r, d] = g * weight[d]
            sum_g_xhat[d] += g * xhat[r, d]
            sum_g[d] += g
    sums[block, :features] = sum_g_xhat
    sums[block, features:] = sum_g


@numba.njit(cache=True)
def _affine_forward_serial(xhat, weight, bias, out):
    for block in range((xhat.shape[0] + _ROW_BLOCK - 1) // _ROW_BLOCK):
        _block_affine_forward(block, xhat, weight, bias, out)


@numba.njit(parallel=True, cache=True)
def _affine_forward_parallel(xhat, weight, bias, out):
    for block in numba.prange((xhat.shape[0] + _ROW_BLOCK - 1) // _ROW_BLOCK):
        _block_affine_forward(block, xhat, weight, bias, out)


@numba.njit(cache=True)
def _affine_backward_serial(grad_output, xhat, weight, grad_xhat, sums):
    for block in range((xhat.shape[0] + _ROW_BLOCK - 1) // _ROW_BLOCK):
        _block_affine_backward(block, grad_output, xhat, weight, grad_xhat, sums)


@numba.njit(parallel=True, cache=True)
def _affine_backward_parallel(grad_output, xhat, weight, grad_xhat, sums):
    for block in numba.prange((xhat.shape[0] + _ROW_BLOCK - 1) // _ROW_BLOCK):
        _block_affine_backward(block, grad_output, xhat, weight, grad_xhat, sums)
