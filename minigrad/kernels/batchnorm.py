"""Numba kernels for batch normalisation over ``(N, C, L)`` arrays, one channel per task.

Each channel's slice ``x[:, c, :]`` is processed start to finish by one thread (statistics, then output),
so a (100, 32, 32, 32) float32 batch is streamed from memory about once per pass while the channel's
400 KB stay in cache for the second look. Sums are accumulated in float64 and the variance uses the
two-pass formula ``mean((x - mean)^2)``, so float32 data with a large mean keeps its precision.
Per-channel vectors (``mean``, ``var``, ``invstd``, ``weight``, ``bias``) are float64; the element-wise
loops run in the data's dtype (float32 arithmetic vectorises twice as wide, and mixing in float64 made
the output pass 4x slower). ``fastmath={"reassoc", "contract"}`` lets the float64 sums vectorise (4x
faster) and fuse multiply-adds; it changes only rounding order, never NaN/Inf handling.
"""
import numba
import numpy as np

from ._threading import SERIAL_BELOW  # importing it also makes idle OpenMP workers sleep (see there)

__all__ = ["batchnorm_forward", "batchnorm_backward", "PARALLEL_MIN_SIZE"]

# Below this many elements the channels run on the calling thread: waking Numba's thread pool costs
# more than the work (milliseconds on a busy machine).
PARALLEL_MIN_SIZE = SERIAL_BELOW
_FASTMATH = {"reassoc", "contract"}


def batchnorm_forward(x, weight, bias, eps, use_batch_stats, mean, var, out):
    """``out[n, c, l] = (x[n, c, l] - mean[c]) / sqrt(var[c] + eps) * weight[c] + bias[c]``.

    With ``use_batch_stats`` the channel's biased batch mean and variance are first written into
    ``mean`` and ``var``; otherwise ``mean`` and ``var`` are read (running statistics).
    """
    driver = _forward_parallel if x.size >= PARALLEL_MIN_SIZE else _forward_serial
    driver(x, weight, bias, eps, use_batch_stats, mean, var, out)


def batchnorm_backward(x, grad_output, mean, invstd, weight, use_batch_stats,
                       grad_input, grad_weight, grad_bias):
    """Input gradient and per-channel parameter gradients (``xhat = (x - mean) * invstd``).

    ``grad_bias[c] = sum g``, ``grad_weight[c] = sum g * xhat`` (written, not added). With batch
    statistics ``grad_input = weight * invstd * (g - mean(g) - xhat * mean(g * xhat))``; with fixed
    (running) statistics the layer is affine and ``grad_input = weight * invstd * g``.
    """
    driver = _backward_parallel if x.size >= PARALLEL_MIN_SIZE else _backward_serial
    driver(x, grad_output, mean, invstd, weight, use_batch_stats, grad_input, grad_weight, grad_bias)


# One channel's work; the drivers at the end run it for every channel.
@numba.njit(cache=True, fastmath=_FASTMATH)
def _forward_channel(c, x, weight, bias, eps, use_batch_stats, mean, var, out):
    n_batch, _, length = x.shape
    count = n_batch * length
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
    # The mean as a sum hi + lo of two values in the data's dtype: x - hi is exact for x near the
    # mean, so float32 data with |mean| >> std is not shifted by the rounding of the mean.
    hi = x.dtype.type(mean[c])
    lo = x.dtype.type(mean[c] - hi)
    scale = x.dtype.type(weight[c] / np.sqrt(var[c] + eps))
    shift = x.dtype.type(bias[c])
    for n in range(n_batch):
        for l in range(length):
            out[n, c, l] = ((x[n, c, l] - hi) - lo) * scale + shift


@numba.njit(cache=True, fastmath=_FASTMATH)
def _backward_channel(c, x, grad_output, mean, invstd, weight, use_batch_stats,
                      grad_input, grad_weight, grad_bias):
    n_batch, _, length = x.shape
    count = n_batch * length
    sum_g = 0.0
    sum_g_centred = 0.0  # sum g * (x - mean); times invstd it is sum g * xhat
    for n in range(n_batch):
        for l in range(length):
            g = grad_output[n, c, l]
            sum_g += g
            sum_g_centred += g * (x[n, c, l] - mean[c])
    grad_bias[c] = sum_g
    grad_weight[c] = sum_g_centred * invstd[c]
    k = x.dtype.type(weight[c] * invstd[c])
    if use_batch_stats:
        hi = x.dtype.type(mean[c])  # the mean split as in batchnorm_forward
        lo = x.dtype.type(mean[c] - hi)
        a = x.dtype.type(sum_g / count)
        # xhat * mean(g * xhat) = (x - mean) * invstd^2 * sum_g_centred / count
        b = x.dtype.type(invstd[c] * invstd[c] * sum_g_centred / count)
        for n in range(n_batch):
            for l in range(length):
                grad_input[n, c, l] = k * (grad_output[n, c, l] - a - ((x[n, c, l] - hi) - lo) * b)
    else:
        for n in range(n_batch):
            for l in range(length):
                grad_input[n, c, l] = k * grad_output[n, c, l]


# Drivers: every channel on this thread, or one channel per task on Numba's threads.
@numba.njit(cache=True)
def _forward_serial(x, weight, bias, eps, use_batch_stats, mean, var, out):
    for c in range(x.shape[1]):
        _forward_channel(c, x, weight, bias, eps, use_batch_stats, mean, var, out)


@numba.njit(parallel=True, cache=True)
def _forward_parallel(x, weight, bias, eps, use_batch_stats, mean, var, out):
    for c in numba.prange(x.shape[1]):
        _forward_channel(c, x, weight, bias, eps, use_batch_stats, mean, var, out)


@numba.njit(cache=True)
def _backward_serial(x, grad_output, mean, invstd, weight, use_batch_stats, grad_input, grad_weight, grad_bias):
    for c in range(x.shape[1]):
        _backward_channel(c, x, grad_output, mean, invstd, weight, use_batch_stats,
                          grad_input, grad_weight, grad_bias)


@numba.njit(parallel=True, cache=True)
def _backward_parallel(x, grad_output, mean, invstd, weight, use_batch_stats, grad_input, grad_weight, grad_bias):
    for c in numba.prange(x.shape[1]):
        _backward_channel(c, x, grad_output, mean, invstd, weight, use_batch_stats,
                          grad_input, grad_weight, grad_bias)
