"""Batch normalisation (Ioffe & Szegedy, 2015), as ``torch.nn.BatchNorm1d`` / ``BatchNorm2d``.

Statistics are per channel (axis 1) over every other axis. The arithmetic runs in the Numba kernels of
``minigrad.kernels.batchnorm`` (float64 sums, two-pass variance, one thread per channel).
"""
import numpy as np

from ..kernels.batchnorm import batchnorm_backward, batchnorm_forward
from .module import Module, Parameter, positive_int

__all__ = ["BatchNorm1d", "BatchNorm2d"]


class _BatchNorm(Module):
    r"""Per-channel normalisation with learnable scale and shift; the dimensions come from subclasses.

    Forward   y = (x - mu) / sqrt(var + eps) * gamma + beta,   mu, var per channel c over the
              other axes (n = values per channel). Training: the batch mean and BIASED variance;
              eval (when track_running_stats): running_mean, running_var.
    Running   r <- (1 - momentum) r + momentum * batch statistic, storing the UNBIASED variance
              var * n / (n - 1); momentum=None gives the cumulative average (factor 1/num_batches_tracked).
    Backward  xhat = (x - mu) / sqrt(var + eps);  dgamma = sum g * xhat;  dbeta = sum g;
              batch stats:  dx = gamma / sqrt(var + eps) * (g - mean(g) - xhat * mean(g * xhat))
              running stats (eval): dx = gamma / sqrt(var + eps) * g   (a fixed affine map)
    State     weight (gamma, ones), bias (beta, zeros); buffers running_mean (zeros), running_var
              (ones), num_batches_tracked (int64 0); no buffers when track_running_stats=False.
    Kept      ``x3`` (the input as (N, C, L)), ``mean`` and ``invstd`` = 1 / sqrt(var + eps) per channel
              (float64), ``used_batch_stats`` (training or no running statistics).
    """

    _ndims = None  # allowed input ndims, set by each subclass

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True):
        super().__init__()
        self.num_features = positive_int(type(self).__name__, "num_features", num_features)
        self.eps = float(eps)
        self.momentum = momentum
        self.affine = bool(affine)
        self.track_running_stats = bool(track_running_stats)
        if self.affine:
            self.weight = Parameter(np.ones(self.num_features, dtype=np.float32))
            self.bias = Parameter(np.zeros(self.num_features, dtype=np.float32))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if self.track_running_stats:
            self.register_buffer("running_mean", np.zeros(self.num_features, dtype=np.float32))
            self.register_buffer("running_var", np.ones(self.num_features, dtype=np.float32))
            self.register_buffer("num_batches_tracked", np.array(0, dtype=np.int64))
        else:  # plain attributes, as PyTorch's None buffers: absent from state_dict
            self.running_mean = self.running_var = self.num_batches_tracked = None

    def reset_running_stats(self):
        if self.track_running_stats:
            # In place: assigning the attribute would go around register_buffer.
            self.running_mean[...] = 0
            self.running_var[...] = 1
            self.num_batches_tracked[...] = 0

    def reset_parameters(self):
        self.reset_running_stats()
        if self.affine:
            self.weight.data[...] = 1
            self.bias.data[...] = 0

    def forward(self, x):
        x = self._check_input(x, ndim=self._ndims, channels=self.num_features)
        # float16 computes in float32 (the kernels are compiled for float32 and float64 only).
        dtype = np.result_type(self._compute_dtype(x), np.float32)
        if dtype not in (np.float32, np.float64):
            raise TypeError(f"{self._display_name()}: input must be float16, float32 or float64, got {x.dtype}")
        if x.size == 0:  # no values: as PyTorch, an empty output; the running statistics stay, the call counts
            if self.training and self.track_running_stats:
                self.num_batches_tracked[...] += 1
            return np.empty(x.shape, dtype)
        x3 = np.ascontiguousarray(x, dtype=dtype).reshape(x.shape[0], self.num_features, -1)
        count = x3.shape[0] * x3.shape[2]
        use_batch_stats = self.training or not self.track_running_stats
        if use_batch_stats and count <= 1:
            raise ValueError(f"{self._display_name()}: expected more than 1 value per channel when "
                             f"training, got input shape {x.shape}")
        if use_batch_stats:
            mean = np.empty(self.num_features)
            var = np.empty(self.num_features)
        else:
            mean = self.running_mean.astype(np.float64)
            var = self.running_var.astype(np.float64)
        weight, bias = self._affine_float64()
        out = np.empty(x3.shape, dtype)
        batchnorm_forward(x3, weight, bias, self.eps, use_batch_stats, mean, var, out)
        if self.training and self.track_running_stats:
            self._update_running_stats(mean, var, count)
        self.save_for_backward(x3=x3, mean=mean, invstd=1.0 / np.sqrt(var + self.eps),
                               used_batch_stats=use_batch_stats)
        return out.reshape(x.shape)

    def _affine_float64(self):
        if self.affine:
            return self.weight.data.astype(np.float64), self.bias.data.astype(np.float64)
        return np.ones(self.num_features), np.zeros(self.num_features)

    def _update_running_stats(self, mean, var, count):
        self.num_batches_tracked[...] += 1
        factor = 1.0 / int(self.num_batches_tracked) if self.momentum is None else self.momentum
        unbiased_var = var * (count / (count - 1))
        self.running_mean[...] = (1 - factor) * self.running_mean + factor * mean
        self.running_var[...] = (1 - factor) * self.running_var + factor * unbiased_var

    def backward(self, grad_output):
        saved = self.saved
        x3 = saved.x3
        g3 = np.ascontiguousarray(grad_output, dtype=x3.dtype).reshape(x3.shape)
        weight, _ = self._affine_float64()
        grad_input = np.empty(x3.shape, x3.dtype)
        grad_weight = np.empty(self.num_features)
        grad_bias = np.empty(self.num_features)
        batchnorm_backward(x3, g3, saved.mean, saved.invstd, weight, saved.used_batch_stats,
                           grad_input, grad_weight, grad_bias)
        if self.affine and self.weight.requires_grad:
            self.weight.grad += grad_weight
        if self.affine and self.bias.requires_grad:
            self.bias.grad += grad_bias
        return grad_input.reshape(grad_output.shape)

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"track_running_stats={self.track_running_stats}")


class BatchNorm1d(_BatchNorm):
    """Batch norm over (N, C) or (N, C, L) input; statistics per feature C over N (and L)."""

    _ndims = (2, 3)


class BatchNorm2d(_BatchNorm):
    """Batch norm over (N, C, H, W) input; statistics per channel C over N, H, W."""

    _ndims = (4,)
