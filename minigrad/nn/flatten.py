"""``Flatten``: merge a range of axes into one, as ``torch.nn.Flatten``."""
import math

import numpy as np

from .module import Module

__all__ = ["Flatten"]


class Flatten(Module):
    r"""Merge axes ``start_dim..end_dim`` (inclusive, negative counts from the end) into one.

    Forward   y = x.reshape(shape[:start] + (prod(shape[start:end+1]),) + shape[end+1:])   (a view)
    Backward  dx = dY.reshape(x.shape)
    Shapes    default (N, C, H, W) -> (N, C*H*W)
    """

    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        for name, value in (("start_dim", start_dim), ("end_dim", end_dim)):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
                raise TypeError(f"Flatten: {name} must be an int, got {value!r}")
        self.start_dim, self.end_dim = int(start_dim), int(end_dim)

    def forward(self, x):
        x = self._check_input(x)
        ndim = max(x.ndim, 1)  # a scalar flattens to shape (1,), as torch.flatten
        start, end = (d + ndim if d < 0 else d for d in (self.start_dim, self.end_dim))
        if not (0 <= start < ndim and 0 <= end < ndim):
            raise ValueError(f"{self._display_name()}: start_dim={self.start_dim}, end_dim={self.end_dim} out "
                             f"of range for an input of shape {x.shape}")
        if start > end:
            raise ValueError(f"{self._display_name()}: start_dim={self.start_dim} comes after "
                             f"end_dim={self.end_dim} for an input of shape {x.shape}")
        self.save_for_backward(input_shape=x.shape)
        shape = x.shape or (1,)
        return x.reshape(shape[:start] + (math.prod(shape[start:end + 1]),) + shape[end + 1:])

    def backward(self, grad_output):
        return np.asarray(grad_output).reshape(self.saved.input_shape)

    def extra_repr(self):
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"
