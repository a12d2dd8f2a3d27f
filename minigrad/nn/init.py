"""Weight initialisers with ``torch.nn.init``'s names, arguments and formulas.

Every initialiser fills its target in place and returns it. The target is a ``Parameter`` (its ``.data``
is filled) or a floating ndarray; its dtype is kept (values are drawn in float64, then cast). Random
initialisers draw from ``generator`` (an ``np.random.Generator``), by default the library's global one,
``minigrad.random.default_generator()``, so ``minigrad.random.manual_seed(s)`` makes a model repeatable.

Fans, for a weight of shape ``(out, in, *kernel)``:  ``fan_in = in * prod(kernel)``,
``fan_out = out * prod(kernel)``.

==================  ======================================  =============================================
initialiser         distribution                            scale
==================  ======================================  =============================================
xavier_uniform_     U(-a, a)                                a = gain * sqrt(6 / (fan_in + fan_out))
xavier_normal_      N(0, std^2)                             std = gain * sqrt(2 / (fan_in + fan_out))
kaiming_uniform_    U(-b, b)                                b = gain * sqrt(3 / fan)
kaiming_normal_     N(0, std^2)                             std = gain / sqrt(fan)
lecun_normal_       N(0, std^2)                             std = 1 / sqrt(fan_in)
default_init_       weight and bias U(-b, b)                b = 1 / sqrt(fan_in)  (PyTorch's Linear/Conv)
==================  ======================================  =============================================
"""
import math

import numpy as np

from .. import random as _random
from .module import Parameter

__all__ = [
    "calculate_gain", "uniform_", "normal_", "constant_", "zeros_", "ones_",
    "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_", "lecun_normal_",
    "default_init_",
]

_LINEAR_FNS = ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
               "conv_transpose3d")


def _array(tensor, caller):
    """The ndarray to fill: ``tensor.data`` for a Parameter, the array itself otherwise."""
    array = tensor.data if isinstance(tensor, Parameter) else tensor
    if not isinstance(array, np.ndarray):
        raise TypeError(f"init.{caller}: expected a Parameter or ndarray, got {type(tensor).__name__}")
    if not np.issubdtype(array.dtype, np.floating):
        raise TypeError(f"init.{caller}: expected a floating-point array, got dtype {array.dtype}")
    return array


def _generator(generator):
    return _random.default_generator() if generator is None else generator


def calculate_gain(nonlinearity, param=None):
    """The gain that keeps activations' variance through ``nonlinearity`` (PyTorch's table).

    linear / conv / sigmoid: 1;  tanh: 5/3;  relu: sqrt(2);  leaky_relu: sqrt(2 / (1 + a^2)) with
    ``a = param`` (default 0.01);  selu: 3/4.
    """
    if nonlinearity in _LINEAR_FNS or nonlinearity == "sigmoid":
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3.0
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        if param is None:
            slope = 0.01
        elif isinstance(param, (int, float)) and not isinstance(param, bool):
            slope = float(param)
        else:
            raise ValueError(f"init.calculate_gain: negative_slope {param!r} is not a valid number")
        return math.sqrt(2.0 / (1.0 + slope ** 2))
    if nonlinearity == "selu":
        return 3.0 / 4.0
    raise ValueError(f"init.calculate_gain: unsupported nonlinearity {nonlinearity!r}")


def _calculate_fan_in_and_fan_out(tensor):
    """``(fan_in, fan_out)`` = ``(size(1), size(0))`` times the receptive field ``prod(shape[2:])``."""
    shape = _array(tensor, "_calculate_fan_in_and_fan_out").shape
    if len(shape) < 2:
        raise ValueError(
            f"init: fan in and fan out can not be computed for an array with fewer than 2 dimensions, "
            f"got shape {shape}"
        )
    receptive_field = math.prod(shape[2:])
    return shape[1] * receptive_field, shape[0] * receptive_field


def _calculate_correct_fan(tensor, mode):
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"init: mode must be 'fan_in' or 'fan_out', got {mode!r}")
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    return fan_in if mode == "fan_in" else fan_out


def uniform_(tensor, a=0.0, b=1.0, generator=None):
    """Fill with U(a, b)."""
    array = _array(tensor, "uniform_")
    array[...] = _generator(generator).uniform(a, b, size=array.shape)
    return tensor


def normal_(tensor, mean=0.0, std=1.0, generator=None):
    """Fill with N(mean, std^2)."""
    array = _array(tensor, "normal_")
    array[...] = _generator(generator).normal(mean, std, size=array.shape)
    return tensor


def constant_(tensor, val):
    """Fill with ``val``."""
    _array(tensor, "constant_")[...] = val
    return tensor


def zeros_(tensor):
    return constant_(tensor, 0.0)


def ones_(tensor):
    return constant_(tensor, 1.0)


def xavier_uniform_(tensor, gain=1.0, generator=None):
    """Glorot & Bengio (2010): U(-a, a), a = gain * sqrt(6 / (fan_in + fan_out))."""
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(tensor, -bound, bound, generator)


def xavier_normal_(tensor, gain=1.0, generator=None):
    """Glorot & Bengio (2010): N(0, std^2), std = gain * sqrt(2 / (fan_in + fan_out))."""
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    std = gain * math.sqrt(2.0 / (fan_in + fan_out))
    return normal_(tensor, 0.0, std, generator)


def kaiming_uniform_(tensor, a=0, mode="fan_in", nonlinearity="leaky_relu", generator=None):
    """He et al. (2015): U(-b, b), b = gain * sqrt(3 / fan), gain = calculate_gain(nonlinearity, a)."""
    fan = _calculate_correct_fan(tensor, mode)
    if fan == 0:  # empty weight: nothing to fill (PyTorch warns and returns)
        return tensor
    bound = calculate_gain(nonlinearity, a) * math.sqrt(3.0 / fan)
    return uniform_(tensor, -bound, bound, generator)


def kaiming_normal_(tensor, a=0, mode="fan_in", nonlinearity="leaky_relu", generator=None):
    """He et al. (2015): N(0, std^2), std = gain / sqrt(fan), gain = calculate_gain(nonlinearity, a)."""
    fan = _calculate_correct_fan(tensor, mode)
    if fan == 0:
        return tensor
    std = calculate_gain(nonlinearity, a) / math.sqrt(fan)
    return normal_(tensor, 0.0, std, generator)


def lecun_normal_(tensor, generator=None):
    """LeCun et al. (1998), used with SELU: N(0, 1 / fan_in)."""
    return kaiming_normal_(tensor, mode="fan_in", nonlinearity="linear", generator=generator)


def default_init_(weight, bias=None, generator=None):
    """PyTorch's default for Linear and Conv (``reset_parameters``), weight first, then bias.

    ``kaiming_uniform_(weight, a=sqrt(5))``: gain sqrt(1/3), so the bound is exactly 1/sqrt(fan_in);
    bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)). Returns ``weight``.
    """
    kaiming_uniform_(weight, a=math.sqrt(5), generator=generator)
    if bias is not None:
        fan_in, _ = _calculate_fan_in_and_fan_out(weight)
        bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
        uniform_(bias, -bound, bound, generator)
    return weight
