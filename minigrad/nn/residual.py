"""Residual connections (He et al., 2016): ``y = shortcut(x) + branch(x)``, and downsampling shortcuts.

When a block changes the resolution (stride) or the number of channels, the identity cannot be added
to the branch's output; the shortcut must map x to the branch's output shape:

- ``ConvShortcut``: a strided 1x1 convolution (option B of the ResNet paper), optionally with batch norm.
- ``AvgPoolShortcut``: average pooling over stride x stride windows, then zero channels appended
  (option A with pooling instead of subsampling): no parameters.
"""
from collections import OrderedDict

import numpy as np

from .batchnorm import BatchNorm2d
from .container import Sequential
from .conv import Conv2d
from .module import Module, positive_int
from .pooling import AvgPool2d

__all__ = ["Residual", "ConvShortcut", "AvgPoolShortcut", "ChannelPad"]


class Residual(Module):
    r"""``y = shortcut(x) + branch(x)``; ``shortcut=None`` is the identity.

    Backward  dx = branch.backward(g) + shortcut.backward(g)   (identity: + g). The sum splits the
              upstream gradient into both paths unchanged: the shortcut carries g straight down,
              however small the branch's gradient is.
    Shapes    the branch's and the shortcut's outputs must be equal (else ValueError).
    Children  ``branch`` then ``shortcut`` (names ``block0.branch.conv0``, ``block0.shortcut.conv``).
    """

    def __init__(self, branch, shortcut=None):
        super().__init__()
        for name, module in (("branch", branch), ("shortcut", shortcut)):
            if module is not None and not isinstance(module, Module):
                raise TypeError(f"Residual: {name} must be a Module, got {type(module).__name__}")
        if branch is None:
            raise TypeError("Residual: branch must be a Module, got None")
        self.branch = branch
        self.shortcut = shortcut  # None stays a plain attribute: no child, no parameters

    def forward(self, x):
        out = self.branch(x)
        skip = x if self.shortcut is None else self.shortcut(x)
        if np.shape(out) != np.shape(skip):
            raise ValueError(
                f"{self._display_name()}: the branch's output has shape {np.shape(out)} but the shortcut's "
                f"has {np.shape(skip)}; when the branch changes channels or resolution, pass a shortcut "
                "that does too (ConvShortcut or AvgPoolShortcut)"
            )
        return skip + out

    def backward(self, grad_output):
        grad_input = self.branch.backward(grad_output)
        grad_skip = grad_output if self.shortcut is None else self.shortcut.backward(grad_output)
        return grad_input + grad_skip


class ConvShortcut(Sequential):
    r"""Strided 1x1 convolution ``conv`` (``bias`` default False), optionally followed by ``bn``.

    Forward   y = conv1x1(x) with stride ``stride``   (then BatchNorm2d if ``batch_norm``)
    Shapes    (N, in_channels, H, W) -> (N, out_channels, ceil(H / stride), ceil(W / stride)),
              the output size of a 3x3 convolution with padding 1 and the same stride.
    """

    def __init__(self, in_channels, out_channels, stride, bias=False, batch_norm=False):
        layers = OrderedDict(conv=Conv2d(in_channels, out_channels, 1, stride=stride, padding=0, bias=bias))
        if batch_norm:
            layers["bn"] = BatchNorm2d(out_channels)
        super().__init__(layers)


class AvgPoolShortcut(Sequential):
    r"""Parameter-free downsampling: ``pool`` (mean over stride x stride windows), then ``pad`` (zero channels).

    Forward   y[:, :C_in] = avgpool(x),  y[:, C_in:] = 0
    Backward  the pooling's backward of g[:, :C_in]  (the zero channels get no gradient to pass on)
    Shapes    (N, in_channels, H, W) -> (N, out_channels, ceil(H / stride), ceil(W / stride)); the pooling
              uses ceil_mode so an odd size matches a strided 3x3 convolution with padding 1, and a window
              cut off by the edge averages only the pixels it covers (count_include_pad=False).
    Children  ``pool`` only if stride > 1, ``pad`` only if out_channels > in_channels.
    """

    def __init__(self, in_channels, out_channels, stride):
        in_channels = positive_int("AvgPoolShortcut", "in_channels", in_channels)
        out_channels = positive_int("AvgPoolShortcut", "out_channels", out_channels)
        stride = positive_int("AvgPoolShortcut", "stride", stride)
        if out_channels < in_channels:
            raise ValueError(f"AvgPoolShortcut: out_channels ({out_channels}) must be >= in_channels "
                             f"({in_channels}); channels can only be added as zeros")
        layers = OrderedDict()
        if stride > 1:
            layers["pool"] = AvgPool2d(stride, stride, ceil_mode=True, count_include_pad=False)
        if out_channels > in_channels:
            layers["pad"] = ChannelPad(in_channels, out_channels)
        super().__init__(layers)
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride

    def extra_repr(self):
        return f"{self.in_channels}, {self.out_channels}, stride={self.stride}"


class ChannelPad(Module):
    r"""Append zero channels: (N, in_channels, *) -> (N, out_channels, *).

    Forward   y[:, :in_channels] = x,  y[:, in_channels:] = 0
    Backward  dx = g[:, :in_channels]
    """

    def __init__(self, in_channels, out_channels):
        super().__init__()
        in_channels = positive_int("ChannelPad", "in_channels", in_channels)
        out_channels = positive_int("ChannelPad", "out_channels", out_channels)
        if out_channels < in_channels:
            raise ValueError(f"ChannelPad: out_channels ({out_channels}) must be >= in_channels ({in_channels})")
        self.in_channels, self.out_channels = in_channels, out_channels

    def forward(self, x):
        x = self._check_input(x)
        if x.ndim < 2:
            raise ValueError(f"{self._display_name()}: input must have shape (N, {self.in_channels}, ...), "
                             f"got {x.shape}")
        x = self._check_input(x, channels=self.in_channels)
        y = np.zeros((x.shape[0], self.out_channels) + x.shape[2:], dtype=x.dtype)
        y[:, :self.in_channels] = x
        return y

    def backward(self, grad_output):
        return np.ascontiguousarray(grad_output[:, :self.in_channels])

    def extra_repr(self):
        return f"{self.in_channels}, {self.out_channels}"
