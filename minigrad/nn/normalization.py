"""Layer normalisation (Ba et al., 2016), as ``torch.nn.LayerNorm``."""
import math

import numpy as np

from ..kernels.batchnorm import batchnorm_backward, batchnorm_forward
from .module import Module, Parameter

__all__ = ["LayerNorm"]


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
        if isinstance(normalized_shape, (int, np.integer)):
            normalized_shape = (normalized_shape,)
        self.normalized_shape = tuple(int(d) for d in normalized_shape)
        if not self.normalized_shape or min(self.normalized_shape) < 1:
            raise ValueError(f"LayerNorm: normalized_shape must be non-empty with positive sizes, "
                             f"got {normalized_shape!r}")
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
        if self.weight is not None:
            y = y * self.weight.data.reshape(-1)
        if self.bias is not None:
            y = y + self.bias.data.reshape(-1)
        return y.astype(dtype, copy=False).reshape(x.shape)

    def backward(self, grad_output):
        saved = self.saved
        rows = saved.rows
        g = np.ascontiguousarray(grad_output, dtype=rows.dtype).reshape(rows.shape)
        if self.weight is not None and self.weight.requires_grad:
            self.weight.grad += (g * saved.xhat).sum(axis=(0, 1)).reshape(self.normalized_shape)
        if self.bias is not None and self.bias.requires_grad:
            self.bias.grad += g.sum(axis=(0, 1)).reshape(self.normalized_shape)
        h = g if self.weight is None else g * self.weight.data.reshape(-1)
        n_rows = rows.shape[1]
        grad_input = np.empty_like(rows)
        batchnorm_backward(rows, h, saved.mean, saved.invstd, np.ones(n_rows), True,
                           grad_input, np.empty(n_rows), np.empty(n_rows))
        return grad_input.astype(saved.dtype, copy=False).reshape(grad_output.shape)

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"
