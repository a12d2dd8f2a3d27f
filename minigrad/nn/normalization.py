"""Layer, group and instance normalisation, as ``torch.nn.LayerNorm``, ``GroupNorm``, ``InstanceNorm2d``."""
import math
import warnings

import numpy as np

from ..kernels.batchnorm import (batchnorm_backward, batchnorm_forward, feature_affine_backward,
                                 feature_affine_forward)
from ..kernels.groupnorm import groupnorm_backward, groupnorm_forward
from .module import Module, Parameter

__all__ = ["LayerNorm", "GroupNorm", "InstanceNorm2d"]


class LayerNorm(Module):
    r"""Normalise each example over its trailing ``normalized_shape`` dims, then scale and shift.

    Forward   y = (x - mu) / sqrt(var + eps) * gamma + beta,  mu and the BIASED var taken over the
              last D = prod(normalized_shape) values of each row; gamma, beta of shape normalized_shape.
              The same in training and eval (no running statistics).
    Backward  xhat = (x - mu) / sqrt(var + eps),  h = g * gamma  (h = g without affine)
              dx = (h - mean(h) - xhat * mean(h * xhat)) / sqrt(var + eps)   (means over the D values)
              dgamma = sum_rows g * xhat,  dbeta = sum_rows g
    Shapes    x (*, *normalized_shape) -> y of x's shape.
    Kernels   batch norm's, on the rows as (1, rows, D): each row is one "channel" whose statistics are
              taken over its D values, so normalisation and its gradient are written once, in
              ``minigrad.kernels.batchnorm``; gamma and beta (per feature, not per row) are applied here.
    Kept      the rows (1, rows, D), their mean and invstd (float64), xhat when there is a gamma, the dtype.
    """

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True):
        super().__init__()
        shape = (normalized_shape,) if isinstance(normalized_shape, (int, np.integer)) else normalized_shape
        if not isinstance(shape, (tuple, list)) or not shape or not all(
                isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d >= 1 for d in shape):
            raise ValueError(f"LayerNorm: normalized_shape must be a positive int or a non-empty tuple of them, "
                             f"got {normalized_shape!r}")
        self.normalized_shape = tuple(int(d) for d in shape)
        self.eps = float(eps)
        self.elementwise_affine = bool(elementwise_affine)
        if self.elementwise_affine:
            self.weight = Parameter(np.ones(self.normalized_shape, dtype=np.float32))
        else:
            self.register_parameter("weight", None)
        if self.elementwise_affine and bias:
            self.bias = Parameter(np.zeros(self.normalized_shape, dtype=np.float32))
        else:
            self.register_parameter("bias", None)

    def forward(self, x):
        x = self._check_input(x)
        k = len(self.normalized_shape)
        if x.shape[x.ndim - k:] != self.normalized_shape or x.ndim < k:
            raise ValueError(f"{self._display_name()}: input must end with normalized_shape "
                             f"{self.normalized_shape}, got shape {x.shape}")
        dtype = self._compute_dtype(x)
        kernel_dtype = np.promote_types(dtype, np.float32)  # the kernels exist for float32 and float64
        size = math.prod(self.normalized_shape)
        rows = np.ascontiguousarray(x, dtype=kernel_dtype).reshape(1, -1, size)
        n_rows = rows.shape[1]
        mean, var = np.empty(n_rows), np.empty(n_rows)
        xhat = np.empty_like(rows)
        batchnorm_forward(rows, np.ones(n_rows), np.zeros(n_rows), self.eps, True, mean, var, xhat)
        self.save_for_backward(rows=rows, mean=mean, invstd=1.0 / np.sqrt(var + self.eps), dtype=dtype,
                               xhat=xhat if self.weight is not None else None)
        y = xhat
        if self.weight is not None:  # y = xhat * weight + bias, per feature
            y = np.empty_like(xhat)
            weight, bias = self._affine(kernel_dtype)
            feature_affine_forward(xhat.reshape(n_rows, size), weight, bias, y.reshape(n_rows, size))
        return y.astype(dtype, copy=False).reshape(x.shape)

    def _affine(self, dtype):
        """The per-feature weight and bias as flat arrays of ``dtype`` (zeros for a layer without bias)."""
        weight = self.weight.data.reshape(-1).astype(dtype, copy=False)
        bias = np.zeros_like(weight) if self.bias is None else self.bias.data.reshape(-1).astype(dtype, copy=False)
        return weight, bias

    def backward(self, grad_output):
        saved = self.saved
        rows = saved.rows
        g = np.ascontiguousarray(grad_output, dtype=rows.dtype).reshape(rows.shape)
        h = g  # the gradient w.r.t. xhat
        if self.weight is not None:  # dweight = sum over rows of g * xhat, dbias = sum of g, h = g * weight
            h, shape = np.empty_like(g), (g.shape[1], g.shape[2])
            grad_weight, grad_bias = np.empty(shape[1]), np.empty(shape[1])
            feature_affine_backward(g.reshape(shape), saved.xhat.reshape(shape), self._affine(g.dtype)[0],
                                    h.reshape(shape), grad_weight, grad_bias)
            if self.weight.requires_grad:
                self.weight.grad += grad_weight.reshape(self.normalized_shape)
            if self.bias is not None and self.bias.requires_grad:
                self.bias.grad += grad_bias.reshape(self.normalized_shape)
        n_rows = rows.shape[1]
        grad_input = np.empty_like(rows)
        batchnorm_backward(rows, h, saved.mean, saved.invstd, np.ones(n_rows), True,
                           grad_input, np.empty(n_rows), np.empty(n_rows))
        return grad_input.astype(saved.dtype, copy=False).reshape(grad_output.shape)

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"


def _count(value, layer, name):
    """``value`` as a positive int; a TypeError or ValueError naming the layer and the argument otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{layer}: {name} must be an int, got {value!r}")
    if value < 1:
        raise ValueError(f"{layer}: {name} must be at least 1, got {value}")
    return int(value)


class _GroupStatsNorm(Module):
    r"""The arithmetic GroupNorm and InstanceNorm2d share (``minigrad/kernels/groupnorm.py``).

    Statistics per sample n and group g of consecutive channels, over the group's M = C/G * S values
    (S = positions). ``weight``/``bias`` (or None) are per channel. Forward keeps the input as
    ``x4`` (N, G, C/G, S), ``mean`` and ``invstd``, and whether they were this input's own statistics
    (``batch_stats``) or fixed running ones, per channel, as InstanceNorm2d in eval with running stats.
    """

    def _dtype(self, x):
        # float16 computes in float32, as BatchNorm (the kernels are compiled for float32 and float64).
        dtype = np.result_type(self._compute_dtype(x), np.float32)
        if dtype not in (np.float32, np.float64):
            raise TypeError(f"{self._display_name()}: input must be float16, float32 or float64, got {x.dtype}")
        return dtype

    def _affine(self, channels):
        """gamma and beta as float64 (channels,) arrays (ones and zeros without affine)."""
        weight = self.weight.data.astype(np.float64) if self.weight is not None else np.ones(channels)
        bias = self.bias.data.astype(np.float64) if self.bias is not None else np.zeros(channels)
        return weight, bias

    def _normalise(self, x, groups):
        """y for (N, C, *) input ``x`` with its own group statistics; returns y and (mean, var) per (n, g)."""
        n, channels = x.shape[:2]
        x4 = np.ascontiguousarray(x, dtype=self._dtype(x)).reshape(n, groups, channels // groups,
                                                                    math.prod(x.shape[2:]))
        weight, bias = self._affine(channels)
        mean, var = np.zeros((n, groups)), np.zeros((n, groups))
        out = np.empty_like(x4)
        if x4.size:  # an empty batch or image has no statistics (PyTorch returns the empty output too)
            groupnorm_forward(x4, weight.reshape(groups, -1), bias.reshape(groups, -1), self.eps, mean, var, out)
        self.save_for_backward(x4=x4, mean=mean, invstd=1.0 / np.sqrt(var + self.eps), batch_stats=True)
        return out.reshape(x.shape), mean, var

    def _normalise_fixed(self, x, mean, var):
        """y for (N, C, *) input with fixed per-channel statistics (running ones): an affine map per channel."""
        n, channels = x.shape[:2]
        x3 = np.ascontiguousarray(x, dtype=self._dtype(x)).reshape(n, channels, math.prod(x.shape[2:]))
        weight, bias = self._affine(channels)
        mean, var = np.asarray(mean, np.float64), np.asarray(var, np.float64)
        out = np.empty_like(x3)
        batchnorm_forward(x3, weight, bias, self.eps, False, mean, var, out)
        self.save_for_backward(x4=x3.reshape(n, channels, 1, x3.shape[2]), mean=mean,
                               invstd=1.0 / np.sqrt(var + self.eps), batch_stats=False)
        return out.reshape(x.shape)

    def backward(self, grad_output):
        s = self.saved
        n, groups, per_group, size = s.x4.shape
        channels = groups * per_group
        weight, _ = self._affine(channels)
        g4 = np.ascontiguousarray(grad_output, dtype=s.x4.dtype).reshape(s.x4.shape)
        grad_input = np.empty_like(s.x4)  # every element is written below
        if s.batch_stats:
            sum_g, sum_g_xhat = np.zeros((n, groups, per_group)), np.zeros((n, groups, per_group))
            if s.x4.size:
                groupnorm_backward(s.x4, g4, weight.reshape(groups, -1), s.mean, s.invstd, grad_input,
                                   sum_g, sum_g_xhat)
            grad_weight, grad_bias = sum_g_xhat.sum(axis=0).reshape(-1), sum_g.sum(axis=0).reshape(-1)
        else:  # fixed statistics: dx = gamma * invstd * g, the same kernel as BatchNorm in eval
            grad_weight, grad_bias = np.empty(channels), np.empty(channels)
            batchnorm_backward(s.x4.reshape(n, channels, size), g4.reshape(n, channels, size), s.mean,
                               s.invstd, weight, False, grad_input.reshape(n, channels, size),
                               grad_weight, grad_bias)
        if self.weight is not None:
            self.weight.grad += grad_weight
        if self.bias is not None:
            self.bias.grad += grad_bias
        return grad_input.reshape(grad_output.shape)


class GroupNorm(_GroupStatsNorm):
    r"""Normalise each sample over groups of channels, then scale and shift per channel, as
    ``torch.nn.GroupNorm`` (Wu & He, 2018).

    Forward   the C channels form G = num_groups groups of C/G consecutive channels; for each sample n and
              group g, mu and the BIASED var are taken over the group's M = C/G * S values (S = the
              product of the trailing sizes): y = (x - mu) / sqrt(var + eps) * gamma[c] + beta[c].
              The same in training and eval (no running statistics).
    Backward  invstd = 1 / sqrt(var + eps),  x_hat = (x - mu) * invstd,  g' = g * gamma[c]:
              dx = invstd * (g' - mean(g') - x_hat * mean(g' * x_hat))      means over the group's M values
              dgamma[c] = sum over n and positions of g * x_hat,   dbeta[c] = sum of g
    Shapes    x (N, C, *) -> y of x's shape (at least 2 dims; (N, C) has S = 1); weight (gamma, ones) and
              bias (beta, zeros) of shape (C,), absent without ``affine`` (bias also without ``bias``).
    Limits    G = 1 is LayerNorm over (C, *) with a per-channel affine; G = C is InstanceNorm with affine.
    Errors    as PyTorch: num_channels not divisible by num_groups; fewer than 2 dims; and a single value
              overall (N * C/G * S == 1). Unlike PyTorch, C must equal num_channels even without affine,
              and num_groups, num_channels must be positive ints.
    """

    def __init__(self, num_groups, num_channels, eps=1e-5, affine=True, *, bias=True):
        super().__init__()
        self.num_groups = _count(num_groups, "GroupNorm", "num_groups")
        self.num_channels = _count(num_channels, "GroupNorm", "num_channels")
        if self.num_channels % self.num_groups:
            raise ValueError(f"GroupNorm: num_channels ({self.num_channels}) must be divisible by "
                             f"num_groups ({self.num_groups})")
        self.eps = float(eps)
        self.affine = bool(affine)
        if self.affine:
            self.weight = Parameter(np.ones(self.num_channels, dtype=np.float32))
        else:
            self.register_parameter("weight", None)
        if self.affine and bias:
            self.bias = Parameter(np.zeros(self.num_channels, dtype=np.float32))
        else:
            self.register_parameter("bias", None)

    def reset_parameters(self):
        if self.weight is not None:
            self.weight.data[...] = 1
        if self.bias is not None:
            self.bias.data[...] = 0

    def forward(self, x):
        x = self._check_input(x)
        name = self._display_name()
        if x.ndim < 2:
            raise ValueError(f"{name}: input must have shape (N, {self.num_channels}, *), at least 2 "
                             f"dimensions, got shape {x.shape}")
        x = self._check_input(x, channels=self.num_channels)
        if x.shape[0] * (self.num_channels // self.num_groups) * math.prod(x.shape[2:]) == 1:
            raise ValueError(f"{name}: expected more than 1 value per group or more than 1 sample "
                             f"(as torch.nn.GroupNorm), got input shape {x.shape}")
        y, _, _ = self._normalise(x, self.num_groups)
        return y

    def extra_repr(self):
        return (f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}, "
                f"bias={self.bias is not None}")


class InstanceNorm2d(_GroupStatsNorm):
    r"""Normalise each sample's channels over their own H x W positions, as ``torch.nn.InstanceNorm2d``.

    Forward   per sample n and channel c, mu and the BIASED var over the channel's H*W values:
              y = (x - mu) / sqrt(var + eps) * gamma[c] + beta[c]   (GroupNorm with one channel per group).
              With track_running_stats, eval uses running_mean, running_var instead (per channel).
    Running   in training with track_running_stats: r <- (1 - momentum) r + momentum * (the batch
              average of the per-sample statistic), the variance UNBIASED (* HW / (HW - 1)). As PyTorch,
              momentum=None means 0 (the running statistics stay put: no cumulative average as in
              BatchNorm) and num_batches_tracked is kept in state_dict but never counts.
    Backward  own statistics: dx = invstd * (g' - mean(g') - x_hat * mean(g' * x_hat)), g' = g * gamma[c],
              means over the H*W values; running statistics: dx = gamma * invstd * g (affine per channel);
              dgamma = sum g * x_hat,  dbeta = sum g.
    Shapes    x (N, C, H, W) -> y of x's shape; unbatched (C, H, W) is accepted, as PyTorch, and treated
              as N = 1. weight, bias (C,) only with affine (default off); buffers running_mean (zeros),
              running_var (ones), num_batches_tracked (int64 0) only with track_running_stats.
    Errors    as PyTorch: not 3 or 4 dims; H*W == 1 when using the input's statistics; a channel count
              other than num_features with affine or running statistics (without either, PyTorch and
              this layer only warn: num_features is then unused).
    """

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=False, track_running_stats=False, *,
                 bias=True):
        super().__init__()
        self.num_features = _count(num_features, "InstanceNorm2d", "num_features")
        self.eps = float(eps)
        self.momentum = momentum
        self.affine = bool(affine)
        self.track_running_stats = bool(track_running_stats)
        if self.affine:
            self.weight = Parameter(np.ones(self.num_features, dtype=np.float32))
        else:
            self.register_parameter("weight", None)
        if self.affine and bias:
            self.bias = Parameter(np.zeros(self.num_features, dtype=np.float32))
        else:
            self.register_parameter("bias", None)
        if self.track_running_stats:
            self.register_buffer("running_mean", np.zeros(self.num_features, dtype=np.float32))
            self.register_buffer("running_var", np.ones(self.num_features, dtype=np.float32))
            self.register_buffer("num_batches_tracked", np.array(0, dtype=np.int64))
        else:  # plain attributes, as PyTorch's None buffers: absent from state_dict
            self.running_mean = self.running_var = self.num_batches_tracked = None

    def reset_running_stats(self):
        if self.track_running_stats:
            self.running_mean[...] = 0
            self.running_var[...] = 1
            self.num_batches_tracked[...] = 0

    def reset_parameters(self):
        self.reset_running_stats()
        if self.weight is not None:
            self.weight.data[...] = 1
        if self.bias is not None:
            self.bias.data[...] = 0

    def forward(self, x):
        x = self._check_input(x)
        name = self._display_name()
        if x.ndim not in (3, 4):
            raise ValueError(f"{name}: input must have shape (N, C, H, W) or unbatched (C, H, W), "
                             f"got shape {x.shape}")
        batch = x if x.ndim == 4 else x[np.newaxis]
        channels = batch.shape[1]
        if channels != self.num_features:
            message = (f"{name}: input must have num_features={self.num_features} channels on axis "
                       f"{x.ndim - 3}, got shape {x.shape}")
            if self.affine or self.track_running_stats:
                raise ValueError(message)
            warnings.warn(message + "; num_features is not used without affine or track_running_stats",
                          stacklevel=2)
        use_input_stats = self.training or not self.track_running_stats
        if not use_input_stats:
            return self._normalise_fixed(batch, self.running_mean, self.running_var).reshape(x.shape)
        spatial = batch.shape[2] * batch.shape[3]
        if spatial == 1:
            raise ValueError(f"{name}: expected more than 1 spatial element when using the input's "
                             f"statistics (training, or track_running_stats=False), got shape {x.shape}")
        y, mean, var = self._normalise(batch, channels)
        if self.track_running_stats and batch.shape[0] and spatial:  # an empty batch leaves them (PyTorch: NaN)
            factor = 0.0 if self.momentum is None else self.momentum
            self.running_mean[...] = (1 - factor) * self.running_mean + factor * mean.mean(axis=0)
            unbiased = var * (spatial / (spatial - 1))
            self.running_var[...] = (1 - factor) * self.running_var + factor * unbiased.mean(axis=0)
        return y.reshape(x.shape)

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"bias={self.bias is not None}, track_running_stats={self.track_running_stats}")
