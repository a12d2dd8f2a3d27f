"""Numba kernels for group normalisation over ``(N, G, Cg, S)`` arrays, one (sample, group) per task.

The input ``x`` of shape ``(N, C, *)`` is viewed as ``(N, G, Cg, S)``: ``G`` groups of ``Cg = C / G``
channels, ``S`` spatial positions. A group ``(n, g)`` holds ``M = Cg * S`` values; channel ``c = g * Cg + j``
has its own ``gamma[c]``, ``beta[c]`` (passed here as ``(G, Cg)`` float64 arrays). The textbook formulas::

    # mean, var = mean(x), mean((x - mean)^2) over the group's M values     (biased variance)
    # invstd = 1 / sqrt(var + eps);  x_hat = (x - mean) * invstd;  y = x_hat * gamma[c] + beta[c]
    # g' = g * gamma[c]
    # dx = invstd * (g' - mean(g') - x_hat * mean(g' * x_hat))            means over the group's M values
    # dgamma[c] = sum over n and the channel's S positions of g * x_hat;  dbeta[c] = sum of g

The backward below reads the group twice: once for the per-channel sums ``sum g`` and
``sum g * (x - mean)``, from which ``mean(g') = sum_j gamma_j sum g / M`` and
``mean(g' * x_hat) = invstd * sum_j gamma_j sum g (x - mean) / M``; then once to write
``dx = gamma[c] invstd g - invstd mean(g') - (x - mean) invstd^3 sum_j gamma_j sum g (x - mean) / M``.
The per-(sample, channel) sums are written to ``(N, G, Cg)`` arrays and summed over ``N`` by the caller,
so the parameter gradients do not depend on how the tasks were scheduled.

As in ``batchnorm.py``: sums accumulate in float64, per-group scalars are float64 and the element-wise
loops run in the data's dtype (float32 or float64). The forward reads the group once for its statistics,
about its first value c: mean = c + S1 / M and var = S2 / M - (S1 / M)^2 with S1 = sum (x - c) and
S2 = sum (x - c)^2 in float64. c is a value of the group, so |mean - c| is a few standard deviations and
the subtraction cancels about 2 log2(|mean - c| / std) of float64's 53 bits: float32 data keeps all
of its own (the textbook two-pass formula read the group once more: 1.6 instead of 1.0 ms here).
"""
import numba
import numpy as np

from ._threading import serial_when_small  # importing it also makes idle OpenMP workers sleep (see there)

__all__ = ["groupnorm_forward", "groupnorm_backward"]

_FASTMATH = {"reassoc", "contract"}  # rounding order only; NaN and Inf behave as written


@numba.njit(cache=True, fastmath=_FASTMATH)
def _forward_group(task, x, weight, bias, eps, mean, var, out):
    _, n_groups, per_group, size = x.shape
    n, g = task // n_groups, task % n_groups
    count = per_group * size
    # One pass for the statistics, about the group's first value c (see the module docstring).
    centre = np.float64(x[n, g, 0, 0])
    total = 0.0    # sum (x - c)
    squares = 0.0  # sum (x - c)^2
    for j in range(per_group):
        row = x[n, g, j]  # rows as views indexed from 0: LLVM vectorises their loops
        for s in range(size):
            d = row[s] - centre
            total += d
            squares += d * d
    offset = total / count  # mean - c
    mu = centre + offset
    mean[n, g] = mu
    var[n, g] = max(squares / count - offset * offset, 0.0)
    inv = 1.0 / np.sqrt(var[n, g] + eps)
    # The mean as hi + lo in the data's dtype: x - hi is exact near the mean (see batchnorm.py).
    hi = x.dtype.type(mu)
    lo = x.dtype.type(mu - hi)
    for j in range(per_group):
        scale = x.dtype.type(weight[g, j] * inv)
        shift = x.dtype.type(bias[g, j])
        row, out_row = x[n, g, j], out[n, g, j]
        for s in range(size):
            out_row[s] = ((row[s] - hi) - lo) * scale + shift


@numba.njit(cache=True, fastmath=_FASTMATH)
def _backward_group(task, x, grad_output, weight, mean, invstd, grad_input, sum_g, sum_g_xhat):
    _, n_groups, per_group, size = x.shape
    n, g = task // n_groups, task % n_groups
    count = per_group * size
    mu, inv = mean[n, g], invstd[n, g]
    total_h = 0.0         # sum over the group of g' = g * gamma
    total_h_centred = 0.0  # sum over the group of g' * (x - mean); times invstd it is sum g' * x_hat
    for j in range(per_group):
        sg = 0.0
        sgc = 0.0
        row, g_row = x[n, g, j], grad_output[n, g, j]
        for s in range(size):
            gv = g_row[s]
            sg += gv
            sgc += gv * (row[s] - mu)
        sum_g[n, g, j] = sg
        sum_g_xhat[n, g, j] = sgc * inv
        total_h += weight[g, j] * sg
        total_h_centred += weight[g, j] * sgc
    # dx = k g - a - (x - mean) b:  k = gamma invstd,  a = invstd mean(g'),
    # and invstd x_hat mean(g' x_hat) = (x - mean) invstd^3 total_h_centred / count, so b is that factor.
    a = x.dtype.type(inv * total_h / count)
    b = x.dtype.type(inv * inv * inv * total_h_centred / count)
    hi = x.dtype.type(mu)
    lo = x.dtype.type(mu - hi)
    for j in range(per_group):
        k = x.dtype.type(weight[g, j] * inv)
        row, g_row, dx_row = x[n, g, j], grad_output[n, g, j], grad_input[n, g, j]
        for s in range(size):
            dx_row[s] = k * g_row[s] - a - ((row[s] - hi) - lo) * b


@serial_when_small
@numba.njit(parallel=True, cache=True)
def groupnorm_forward(x, weight, bias, eps, mean, var, out):
    """``out = (x - mean) / sqrt(var + eps) * weight + bias`` per group; writes each group's ``mean`` and
    biased ``var`` (``(N, G)`` float64). ``x``, ``out``: ``(N, G, Cg, S)`` C-contiguous, ``Cg * S >= 1``."""
    for task in numba.prange(x.shape[0] * x.shape[1]):
        _forward_group(task, x, weight, bias, eps, mean, var, out)


@serial_when_small
@numba.njit(parallel=True, cache=True)
def groupnorm_backward(x, grad_output, weight, mean, invstd, grad_input, sum_g, sum_g_xhat):
    """Writes ``grad_input`` (the formula in the module docstring) and, per sample and channel,
    ``sum_g = sum g`` and ``sum_g_xhat = sum g * x_hat`` (``(N, G, Cg)`` float64; sum them over N)."""
    for task in numba.prange(x.shape[0] * x.shape[1]):
        _backward_group(task, x, grad_output, weight, mean, invstd, grad_input, sum_g, sum_g_xhat)
