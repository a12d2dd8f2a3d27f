"""Fully connected layer, as ``torch.nn.Linear``."""
import numpy as np

from . import init
from .module import Module, Parameter, positive_int

__all__ = ["Linear"]


class Linear(Module):
    r"""Affine map of the last axis: ``y = x W^T + b``, as ``torch.nn.Linear``.

    Forward   y = x @ W.T + b
    Backward  dW = g.T @ x,  db = sum_rows(g),  dx = g @ W      (rows: all leading axes flattened)
    Shapes    x (*, in_features) -> y (*, out_features);  W (out_features, in_features), b (out_features,)
    Init      PyTorch's default: W and b ~ U(-1/sqrt(in_features), 1/sqrt(in_features)).
    """

    def __init__(self, in_features, out_features, bias=True):
        super().__init__()
        self.in_features = positive_int("Linear", "in_features", in_features)
        self.out_features = positive_int("Linear", "out_features", out_features)
        self.weight = Parameter(np.empty((self.out_features, self.in_features), dtype=np.float32))
        if bias:
            self.bias = Parameter(np.empty(self.out_features, dtype=np.float32))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self, generator=None):
        """Weight then bias from ``generator`` (default: the global one), as PyTorch's order."""
        init.default_init_(self.weight, self.bias, generator=generator)

    def forward(self, x):
        x = self._check_input(x)
        if x.ndim == 0:
            raise ValueError(f"{self._display_name()}: input must have shape (*, {self.in_features}), got a scalar")
        x = self._check_input(x, channels=self.in_features, channel_axis=-1)
        dtype = self._compute_dtype(x)
        self.save_for_backward(x=x)  # dW needs the input itself (never modified)
        y = np.matmul(x, self.weight.data.T, dtype=dtype)
        if self.bias is not None:
            y += self.bias.data
        return y

    def backward(self, grad_output):
        dtype = np.result_type(self.saved.x, grad_output, self.weight.data)
        g2 = grad_output.reshape(-1, self.out_features)
        if self.weight.requires_grad:
            self.weight.grad += np.matmul(g2.T, self.saved.x.reshape(-1, self.in_features), dtype=dtype)
        if self.bias is not None and self.bias.requires_grad:
            # the sum over rows as a product with ones (the BLAS's GEMV: half the time of NumPy's sum)
            self.bias.grad += np.matmul(np.ones(g2.shape[0], dtype), g2, dtype=dtype)
        return np.matmul(grad_output, self.weight.data, dtype=dtype)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"
