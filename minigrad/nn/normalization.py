"""Layer normalisation (Ba et al., 2016), as ``torch.nn.LayerNorm``."""
import math

import numpy as np

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
    Kept      xhat (rows, D) and 1 / sqrt(var + eps) (rows, 1).
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
        rows = x.reshape(-1, math.prod(self.normalized_shape)).astype(dtype, copy=False)
        centred = rows - rows.mean(axis=1, keepdims=True)
        self.invstd = 1 / np.sqrt((centred * centred).mean(axis=1, keepdims=True) + self.eps)
        self.xhat = centred * self.invstd
        y = self.xhat
        if self.weight is not None:
            y = y * self.weight.data.reshape(-1)
        if self.bias is not None:
            y = y + self.bias.data.reshape(-1)
        return y.astype(dtype, copy=False).reshape(x.shape)

    def backward(self, grad_output):
        g = grad_output.reshape(self.xhat.shape)
        if self.weight is not None:
            self.weight.grad += (g * self.xhat).sum(axis=0).reshape(self.normalized_shape)
            g_hat = g * self.weight.data.reshape(-1)
        else:
            g_hat = g
        if self.bias is not None:
            self.bias.grad += g.sum(axis=0).reshape(self.normalized_shape)
        grad_input = self.invstd * (g_hat - g_hat.mean(axis=1, keepdims=True)
                                    - self.xhat * (g_hat * self.xhat).mean(axis=1, keepdims=True))
        return grad_input.astype(self.xhat.dtype, copy=False).reshape(grad_output.shape)

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"
