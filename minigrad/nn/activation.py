"""Element-wise activations, as ``torch.nn``: ReLU, LeakyReLU, Tanh, Sigmoid, SELU, Identity.

Any input shape; the output has the input's shape and dtype. Each layer keeps one array for backward
(``self.saved``), its output ``y`` (ReLU, Tanh, Sigmoid, SELU: the derivative is a function of the
output), which the next layer usually keeps anyway. ReLU and LeakyReLU run Numba kernels (one pass over memory each way) for
float32/float64 and fall back to the NumPy formula (``*_reference``) for other float dtypes.
``inplace`` is accepted for PyTorch compatibility and ignored: minigrad never modifies its input.
"""
import numpy as np

from ..kernels import activation as _kernels
from .module import Module

__all__ = ["ReLU", "LeakyReLU", "Tanh", "Sigmoid", "SELU", "Identity"]

# Klambauer et al. (2017), as torch.nn.SELU (SOURCE-NOTES D.7).
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


def _flat(a):
    return np.ascontiguousarray(a).reshape(-1)


def _elementwise(kernel, reference, arrays, *scalars):
    """``kernel(*flat arrays, *scalars, flat out)`` when compiled for the dtype, else ``reference``."""
    dtype = np.result_type(*arrays)
    if _kernels.supported(*arrays):
        out = np.empty(arrays[-1].shape, dtype)
        kernel(*[_flat(a) for a in arrays], *[dtype.type(s) for s in scalars], out.reshape(-1))
        return out
    return np.asarray(reference(*arrays, *scalars), dtype=dtype)


# NumPy formulas: the fallback for other dtypes and the tests' oracle for the kernels.
def relu_reference(x):
    return np.where(x < 0, 0, x)


def relu_backward_reference(y, grad_output):
    return np.where(y <= 0, 0, grad_output)


def leaky_relu_reference(x, slope):
    return np.where(x >= 0, x, slope * x)


def leaky_relu_backward_reference(sign_source, grad_output, slope):
    return np.where(sign_source > 0, grad_output, slope * grad_output)


class ReLU(Module):
    r"""``y = max(x, 0)``.

    Backward  dx = g * [y > 0]      (the derivative at 0 is taken as 0, as PyTorch)
    """

    def __init__(self, inplace=False):
        super().__init__()

    def forward(self, x):
        x = self._check_input(x)
        y = _elementwise(_kernels.relu_forward, relu_reference, (x,))
        self.save_for_backward(y=y)
        return y

    def backward(self, grad_output):
        return _elementwise(_kernels.relu_backward, relu_backward_reference, (self.saved.y, grad_output))


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
        y = _elementwise(_kernels.leaky_relu_forward, leaky_relu_reference, (x,), self.negative_slope)
        self.save_for_backward(sign_source=y if self.negative_slope >= 0 else x)
        return y

    def backward(self, grad_output):
        return _elementwise(_kernels.leaky_relu_backward, leaky_relu_backward_reference,
                            (self.saved.sign_source, grad_output), self.negative_slope)

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}"


class Tanh(Module):
    r"""``y = tanh(x)``.  Backward  dx = g * (1 - y^2)."""

    def forward(self, x):
        y = np.tanh(self._check_input(x))
        self.save_for_backward(y=y)
        return y

    def backward(self, grad_output):
        y = self.saved.y
        return grad_output * (1 - y * y)


class Sigmoid(Module):
    r"""``y = 1 / (1 + exp(-x))``, computed without overflow.  Backward  dx = g * y * (1 - y).

    With ``z = exp(-|x|)`` (never overflows): y = 1 / (1 + z) for x >= 0 and z / (1 + z) for x < 0,
    so tiny outputs keep their relative precision instead of rounding ``1 - 1`` to 0.
    """

    def forward(self, x):
        x = self._check_input(x)
        z = np.exp(-np.abs(x))
        y = np.where(x >= 0, 1, z) / (1 + z)
        self.save_for_backward(y=y)
        return y

    def backward(self, grad_output):
        y = self.saved.y
        return grad_output * y * (1 - y)


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
        # expm1 of min(x, 0): accurate near 0 and no overflow warning for large positive x.
        negative = (SELU_SCALE * SELU_ALPHA) * np.expm1(np.minimum(x, 0))
        y = np.where(x > 0, SELU_SCALE * x, negative).astype(x.dtype, copy=False)
        self.save_for_backward(y=y)
        return y

    def backward(self, grad_output):
        y = self.saved.y
        slope = np.where(y > 0, SELU_SCALE, y + SELU_SCALE * SELU_ALPHA)
        return (grad_output * slope).astype(np.result_type(y, grad_output), copy=False)


class Identity(Module):
    """``y = x``; backward ``dx = g``. A placeholder layer (e.g. "no normalisation")."""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, x):
        return self._check_input(x)  # the same array; integer or bool input is a TypeError, as elsewhere

    def backward(self, grad_output):
        return grad_output
