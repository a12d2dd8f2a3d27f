"""Element-wise activations, as ``torch.nn``: ReLU, LeakyReLU, Tanh, Sigmoid, SELU, Identity.

Any input shape; the output has the input's shape and dtype. Each layer keeps one array for backward
(``self.saved``), its output ``y`` (ReLU, Tanh, Sigmoid, SELU: the derivative is a function of the
output), which the next layer usually keeps anyway. ReLU, LeakyReLU, SELU, Sigmoid and Tanh's backward
run the Numba kernels of ``minigrad.kernels.activation`` (one pass over memory each way; float16
computes in float32), where their formulas are written; NumPy references for the tests are in
``tests/reference.py``.
``inplace`` is accepted for PyTorch compatibility and ignored: minigrad never modifies its input.
"""
import numpy as np

from ..kernels import activation as _kernels
from .module import Module

__all__ = ["ReLU", "LeakyReLU", "Tanh", "Sigmoid", "SELU", "Identity"]

# Klambauer et al. (2017), as torch.nn.SELU (SOURCE-NOTES D.7).
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


def _elementwise(kernel, arrays, *scalars):
    """``kernel(*flat arrays, *scalars, flat out)`` in float32 or float64 (the kernels' two signatures);
    the result has the arrays' common dtype and the last array's shape."""
    dtype = np.result_type(*arrays)
    kernel_dtype = np.promote_types(dtype, np.float32)
    flat = [np.ascontiguousarray(a, dtype=kernel_dtype).reshape(-1) for a in arrays]
    out = np.empty(arrays[-1].shape, kernel_dtype)
    kernel(*flat, *[kernel_dtype.type(s) for s in scalars], out.reshape(-1))
    return out.astype(dtype, copy=False)


class ReLU(Module):
    r"""``y = max(x, 0)``.

    Backward  dx = g * [y > 0]      (the derivative at 0 is taken as 0, as PyTorch)
    """

    def __init__(self, inplace=False):
        super().__init__()

    def forward(self, x):
        x = self._check_input(x)
        y = _elementwise(_kernels.relu_forward, (x,))
        self.save_for_backward(y=y)
        return y

    def backward(self, grad_output):
        return _elementwise(_kernels.relu_backward, (self.saved.y, grad_output))


class LeakyReLU(Module):
    r"""``y = x if x >= 0 else negative_slope * x``, as ``torch.nn.LeakyReLU`` (default slope 0.01).

    Backward  dx = g if x > 0 else negative_slope * g
    Kept      ``sign_source``: the output when negative_slope >= 0 (then y > 0 exactly when x > 0), else
              the input.
    """

    def __init__(self, negative_slope=0.01, inplace=False):
        super().__init__()
        self.negative_slope = float(negative_slope)

    def forward(self, x):
        x = self._check_input(x)
        y = _elementwise(_kernels.leaky_relu_forward, (x,), self.negative_slope)
        self.save_for_backward(sign_source=y if self.negative_slope >= 0 else x)
        return y

    def backward(self, grad_output):
        return _elementwise(_kernels.leaky_relu_backward, (self.saved.sign_source, grad_output), self.negative_slope)

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}"


class Tanh(Module):
    r"""``y = tanh(x)``.  Backward  dx = g * (1 - y^2)."""

    def forward(self, x):
        y = np.tanh(self._check_input(x))
        self.save_for_backward(y=y)
        return y

    def backward(self, grad_output):
        return _elementwise(_kernels.tanh_backward, (self.saved.y, grad_output))


class Sigmoid(Module):
    r"""``y = 1 / (1 + exp(-x))``, computed without overflow.  Backward  dx = g * y * (1 - y).

    With ``z = exp(-|x|)`` (never overflows): y = 1 / (1 + z) for x >= 0 and z / (1 + z) for x < 0,
    so tiny outputs keep their relative precision instead of rounding ``1 - 1`` to 0.
    """

    def forward(self, x):
        y = _elementwise(_kernels.sigmoid_forward, (self._check_input(x),))
        self.save_for_backward(y=y)
        return y

    def backward(self, grad_output):
        return _elementwise(_kernels.sigmoid_backward, (self.saved.y, grad_output))


class SELU(Module):
    r"""``y = scale * x`` for x > 0, ``scale * alpha * (exp(x) - 1)`` otherwise (Klambauer et al. 2017).

    alpha = 1.6732632423543772848..., scale = 1.0507009873554804934... (as torch.nn.SELU).
    Backward  dx = g * scale for y > 0, else g * (y + scale * alpha)   (= scale * alpha * exp(x))
    Pair with ``init.lecun_normal_`` (variance 1/fan_in) for a self-normalising network.
    """

    def __init__(self, inplace=False):
        super().__init__()

    def forward(self, x):
        x = self._check_input(x)
        # expm1 of min(x, 0) (in the kernel): accurate near 0 and no overflow for large positive x.
        y = _elementwise(_kernels.selu_forward, (x,), SELU_SCALE, SELU_ALPHA)
        self.save_for_backward(y=y)
        return y

    def backward(self, grad_output):
        return _elementwise(_kernels.selu_backward, (self.saved.y, grad_output), SELU_SCALE, SELU_ALPHA)


class Identity(Module):
    """``y = x``; backward ``dx = g``. A placeholder layer (e.g. "no normalisation")."""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, x):
        return self._check_input(x)  # the same array; integer or bool input is a TypeError, as elsewhere

    def backward(self, grad_output):
        return grad_output
