"""Naive loop versions of the fast kernels and layers, used as oracles by the tests (float64, slow, obvious).

Each function follows the textbook definition with explicit loops over output pixels and window
elements; nothing here is shared with the code under test.
"""
import math

import numpy as np


def out_size(size, kernel, stride, padding, ceil_mode=False):
    """PyTorch's output size (``pooling_output_shape`` with dilation 1; ceil_mode only for pooling)."""
    if ceil_mode:
        out = math.ceil((size + 2 * padding - kernel) / stride) + 1
        if (out - 1) * stride >= size + padding:  # the last window may not start in the right padding
            out -= 1
        return out
    return math.floor((size + 2 * padding - kernel) / stride) + 1


def pad(x, padding, value=0.0):
    ph, pw = padding
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=value)


def im2col(x, kernel, stride, padding):
    """cols[(c*kh + i)*kw + j, (n*H_out + h)*W_out + w] = x_pad[n, c, h*sh + i, w*sw + j]."""
    (kh, kw), (sh, sw) = kernel, stride
    n, c, height, width = x.shape
    h_out, w_out = out_size(height, kh, sh, padding[0]), out_size(width, kw, sw, padding[1])
    xp = pad(x, padding)
    cols = np.zeros((c * kh * kw, n * h_out * w_out), x.dtype)
    for b in range(n):
        for ch in range(c):
            for i in range(kh):
                for j in range(kw):
                    for h in range(h_out):
                        for w in range(w_out):
                            cols[(ch * kh + i) * kw + j, (b * h_out + h) * w_out + w] = xp[b, ch, h * sh + i, w * sw + j]
    return cols


def col2im(cols, x_shape, kernel, stride, padding):
    """The adjoint of ``im2col``: scatter-add every column entry back to its (unpadded) pixel."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    n, c, height, width = x_shape
    h_out, w_out = out_size(height, kh, sh, ph), out_size(width, kw, sw, pw)
    xp = np.zeros((n, c, height + 2 * ph, width + 2 * pw), cols.dtype)
    for b in range(n):
        for ch in range(c):
            for i in range(kh):
                for j in range(kw):
                    for h in range(h_out):
                        for w in range(w_out):
                            xp[b, ch, h * sh + i, w * sw + j] += cols[(ch * kh + i) * kw + j, (b * h_out + h) * w_out + w]
    return xp[:, :, ph:ph + height, pw:pw + width]


def conv2d(x, weight, bias, stride, padding):
    """y[n,o,h,w] = b[o] + sum_{c,i,j} weight[o,c,i,j] * x_pad[n, c, h*sh + i, w*sw + j]."""
    (sh, sw) = stride
    n, _, height, width = x.shape
    c_out, _, kh, kw = weight.shape
    h_out, w_out = out_size(height, kh, sh, padding[0]), out_size(width, kw, sw, padding[1])
    xp = pad(x, padding)
    y = np.zeros((n, c_out, h_out, w_out))
    for b in range(n):
        for o in range(c_out):
            for h in range(h_out):
                for w in range(w_out):
                    window = xp[b, :, h * sh:h * sh + kh, w * sw:w * sw + kw]
                    y[b, o, h, w] = np.sum(window * weight[o]) + (0.0 if bias is None else bias[o])
    return y


def conv2d_backward(x, weight, grad_output, stride, padding):
    """(dx, dW, db) of ``conv2d`` by the chain rule on each term of the forward sum."""
    (sh, sw), (ph, pw) = stride, padding
    n, _, height, width = x.shape
    c_out, _, kh, kw = weight.shape
    h_out, w_out = grad_output.shape[2:]
    xp = pad(x, padding)
    dxp = np.zeros_like(xp)
    dw = np.zeros(weight.shape)
    for b in range(n):
        for o in range(c_out):
            for h in range(h_out):
                for w in range(w_out):
                    g = grad_output[b, o, h, w]
                    dw[o] += g * xp[b, :, h * sh:h * sh + kh, w * sw:w * sw + kw]
                    dxp[b, :, h * sh:h * sh + kh, w * sw:w * sw + kw] += g * weight[o]
    db = grad_output.sum(axis=(0, 2, 3))
    return dxp[:, :, ph:ph + height, pw:pw + width], dw, db


def max_pool2d(x, kernel, stride, padding, ceil_mode=False):
    """(y, argmax): the window maximum over -inf padding, and the (row, col) of its first occurrence."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    n, c, height, width = x.shape
    h_out = out_size(height, kh, sh, ph, ceil_mode)
    w_out = out_size(width, kw, sw, pw, ceil_mode)
    y = np.empty((n, c, h_out, w_out))
    where = np.empty((n, c, h_out, w_out, 2), int)
    for b in range(n):
        for ch in range(c):
            for h in range(h_out):
                for w in range(w_out):
                    best, arg = -np.inf, None
                    for i in range(kh):
                        for j in range(kw):
                            r, s = h * sh - ph + i, w * sw - pw + j
                            if 0 <= r < height and 0 <= s < width and (arg is None or x[b, ch, r, s] > best):
                                best, arg = x[b, ch, r, s], (r, s)
                    y[b, ch, h, w], where[b, ch, h, w] = best, arg
    return y, where


def max_pool2d_backward(grad_output, where, x_shape):
    dx = np.zeros(x_shape)
    n, c, h_out, w_out = grad_output.shape
    for b in range(n):
        for ch in range(c):
            for h in range(h_out):
                for w in range(w_out):
                    r, s = where[b, ch, h, w]
                    dx[b, ch, r, s] += grad_output[b, ch, h, w]
    return dx


def avg_pool2d(x, kernel, stride, padding, ceil_mode=False, count_include_pad=True, divisor_override=None):
    """Window sums over zero padding divided as PyTorch's ``avg_pool2d``: by ``divisor_override``, else by
    the window's area clipped to the padded input (count_include_pad), else by its real pixels."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    n, c, height, width = x.shape
    h_out = out_size(height, kh, sh, ph, ceil_mode)
    w_out = out_size(width, kw, sw, pw, ceil_mode)
    y = np.zeros((n, c, h_out, w_out))
    for h in range(h_out):
        for w in range(w_out):
            r0, s0 = h * sh - ph, w * sw - pw
            r1, s1 = min(r0 + kh, height + ph), min(s0 + kw, width + pw)
            padded_area = (r1 - r0) * (s1 - s0)
            r0, s0, r1, s1 = max(r0, 0), max(s0, 0), min(r1, height), min(s1, width)
            real_area = (r1 - r0) * (s1 - s0)
            divisor = divisor_override or (padded_area if count_include_pad else real_area)
            for b in range(n):
                for ch in range(c):
                    total = 0.0
                    for r in range(r0, r1):
                        for s in range(s0, s1):
                            total += x[b, ch, r, s]
                    y[b, ch, h, w] = total / divisor
    return y


def adaptive_avg_pool2d(x, output_size):
    """PyTorch's adaptive windows: rows floor(i*H/H_out) .. ceil((i+1)*H/H_out) - 1, the same for columns."""
    h_out, w_out = output_size
    n, c, height, width = x.shape
    y = np.zeros((n, c, h_out, w_out))
    for i in range(h_out):
        r0, r1 = math.floor(i * height / h_out), math.ceil((i + 1) * height / h_out)
        for j in range(w_out):
            s0, s1 = math.floor(j * width / w_out), math.ceil((j + 1) * width / w_out)
            y[:, :, i, j] = x[:, :, r0:r1, s0:s1].reshape(n, c, -1).mean(axis=2)
    return y


def group_norm(x, num_groups, weight, bias, eps):
    """GroupNorm by the textbook formula, one (sample, group) at a time: returns y, mean, var (biased),
    the last two of shape (N, G). ``weight``/``bias`` per channel (None: ones/zeros)."""
    n, c = x.shape[:2]
    per = c // num_groups
    weight = np.ones(c) if weight is None else np.asarray(weight, np.float64)
    bias = np.zeros(c) if bias is None else np.asarray(bias, np.float64)
    y = np.empty(x.shape)
    mean, var = np.empty((n, num_groups)), np.empty((n, num_groups))
    for b in range(n):
        for g in range(num_groups):
            block = x[b, g * per:(g + 1) * per].astype(np.float64)
            mean[b, g] = block.sum() / block.size
            var[b, g] = ((block - mean[b, g]) ** 2).sum() / block.size
            xhat = (block - mean[b, g]) / math.sqrt(var[b, g] + eps)
            for j in range(per):
                y[b, g * per + j] = xhat[j] * weight[g * per + j] + bias[g * per + j]
    return y, mean, var


def group_norm_backward(x, num_groups, weight, grad_output, eps):
    """(dx, dgamma, dbeta) of ``group_norm``: per group dx = invstd * (g' - mean(g') - xhat * mean(g' xhat)),
    g' = g * gamma[c]; dgamma[c] = sum g * xhat, dbeta[c] = sum g (over samples and positions)."""
    n, c = x.shape[:2]
    per = c // num_groups
    weight = np.ones(c) if weight is None else np.asarray(weight, np.float64)
    dx = np.empty(x.shape)
    dgamma, dbeta = np.zeros(c), np.zeros(c)
    for b in range(n):
        for g in range(num_groups):
            block = x[b, g * per:(g + 1) * per].astype(np.float64)
            gout = grad_output[b, g * per:(g + 1) * per].astype(np.float64)
            invstd = 1 / math.sqrt(((block - block.mean()) ** 2).mean() + eps)
            xhat = (block - block.mean()) * invstd
            gamma = weight[g * per:(g + 1) * per].reshape((per,) + (1,) * (x.ndim - 2))
            h = gout * gamma
            dx[b, g * per:(g + 1) * per] = invstd * (h - h.mean() - xhat * (h * xhat).mean())
            for j in range(per):
                dgamma[g * per + j] += (gout[j] * xhat[j]).sum()
                dbeta[g * per + j] += gout[j].sum()
    return dx, dgamma, dbeta


# ----------------------------------------------------------------------------------------- activations
# The textbook formulas in NumPy, the oracles of the kernels in minigrad/kernels/activation.py.
def relu(x):
    return np.where(x < 0, 0, x)


def relu_backward(y, grad_output):
    """dx = g where the output is positive, 0 elsewhere (the derivative at 0 taken as 0)."""
    return np.where(y <= 0, 0, grad_output)


def leaky_relu(x, slope):
    return np.where(x >= 0, x, slope * x)


def leaky_relu_backward(sign_source, grad_output, slope):
    """dx = g where x > 0 (read from ``sign_source``: the output for slope >= 0, else the input), a * g elsewhere."""
    return np.where(sign_source > 0, grad_output, slope * grad_output)


def tanh_backward(y, grad_output):
    return grad_output * (1 - y * y)


SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


def selu(x):
    return np.where(x > 0, SELU_SCALE * x, SELU_SCALE * SELU_ALPHA * np.expm1(np.minimum(x, 0)))


def selu_backward(y, grad_output):
    """dx = g * scale for x > 0, g * scale * alpha * exp(x) = g * (y + scale * alpha) otherwise."""
    return grad_output * np.where(y > 0, SELU_SCALE, y + SELU_SCALE * SELU_ALPHA)


# ----------------------------------------------------------------------------------------- normalisation
# The oracles of minigrad/kernels/batchnorm.py (which both BatchNorm and LayerNorm run), in float64.
def normalize(x, axes, eps, mean=None, var=None):
    """(xhat, invstd) with statistics over ``axes`` (kept as size-1 axes): the batch's biased mean and
    variance, or the given ``mean`` and ``var`` (broadcastable, e.g. running statistics)."""
    x = np.asarray(x, np.float64)
    mean = x.mean(axis=axes, keepdims=True) if mean is None else mean
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True) if var is None else var
    invstd = 1.0 / np.sqrt(var + eps)
    return (x - mean) * invstd, invstd


def normalize_backward(grad_output, xhat, invstd, axes, batch_stats=True):
    """dx of xhat = (x - mean) * invstd: invstd * (g - mean(g) - xhat * mean(g * xhat)) with batch
    statistics (means over ``axes``), invstd * g with fixed statistics."""
    g = np.asarray(grad_output, np.float64)
    if not batch_stats:
        return invstd * g
    return invstd * (g - g.mean(axis=axes, keepdims=True) - xhat * (g * xhat).mean(axis=axes, keepdims=True))


def batch_norm(x, weight, bias, eps, mean=None, var=None):
    """y = xhat * weight + bias, statistics per channel (axis 1) over every other axis."""
    axes = (0,) + tuple(range(2, np.ndim(x)))
    shape = (1, -1) + (1,) * (np.ndim(x) - 2)
    xhat, _ = normalize(x, axes, eps, None if mean is None else mean.reshape(shape),
                        None if var is None else var.reshape(shape))
    return xhat * weight.reshape(shape) + bias.reshape(shape)


def batch_norm_backward(x, grad_output, weight, eps, mean=None, var=None):
    """(dx, dweight, dbias) of ``batch_norm``; batch statistics unless ``mean`` and ``var`` are given."""
    axes = (0,) + tuple(range(2, np.ndim(x)))
    shape = (1, -1) + (1,) * (np.ndim(x) - 2)
    fixed = mean is not None
    xhat, invstd = normalize(x, axes, eps, mean.reshape(shape) if fixed else None,
                             var.reshape(shape) if fixed else None)
    g = np.asarray(grad_output, np.float64)
    dx = weight.reshape(shape) * normalize_backward(g, xhat, invstd, axes, batch_stats=not fixed)
    return dx, (g * xhat).sum(axis=axes), g.sum(axis=axes)


def layer_norm(x, normalized_ndim, eps, weight=None, bias=None):
    """y = xhat * weight + bias, statistics per example over its last ``normalized_ndim`` axes."""
    axes = tuple(range(np.ndim(x) - normalized_ndim, np.ndim(x)))
    y, _ = normalize(x, axes, eps)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y


def layer_norm_backward(x, grad_output, normalized_ndim, eps, weight=None):
    """(dx, dweight, dbias) of ``layer_norm``: h = g * weight, dx = invstd * (h - mean(h) - xhat * mean(h * xhat))."""
    axes = tuple(range(np.ndim(x) - normalized_ndim, np.ndim(x)))
    rows = tuple(range(np.ndim(x) - normalized_ndim))
    xhat, invstd = normalize(x, axes, eps)
    g = np.asarray(grad_output, np.float64)
    h = g if weight is None else g * weight
    return normalize_backward(h, xhat, invstd, axes), (g * xhat).sum(axis=rows), g.sum(axis=rows)
