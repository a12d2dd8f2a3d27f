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
        rows = x.reshape(-1, math.prod(self.normalized_shape)).astype(dtype, copy=False)
        centred = rows - rows.mean(axis=1, keepdims=True)
        invstd = 1 / np.sqrt((centred * centred).mean(axis=1, keepdims=True) + self.eps)
        xhat = centred * invstd
        self.save_for_backward(xhat=xhat, invstd=invstd)
        y = xhat
        if self.weight is not None:
            y = y * self.weight.data.reshape(-1)
        if self.bias is not None:
            y = y + self.bias.data.reshape(-1)
        return y.astype(dtype, copy=False).reshape(x.shape)

    def backward(self, grad_output):
        xhat, invstd = self.saved.xhat, self.saved.invstd
        g = grad_output.reshape(xhat.shape)
        if self.weight is not None:
            self.weight.grad += (g * xhat).sum(axis=0).reshape(self.normalized_shape)
            g_hat = g * self.weight.data.reshape(-1)
        else:
            g_hat = g
        if self.bias is not None:
            self.bias.grad += g.sum(axis=0).reshape(self.normalized_shape)
        grad_input = invstd * (g_hat - g_hat.mean(axis=1, keepdims=True)
                               - xhat * (g_hat * xhat).mean(axis=1, keepdims=True))
        return grad_input.astype(xhat.dtype, copy=False).reshape(grad_output.shape)

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"
