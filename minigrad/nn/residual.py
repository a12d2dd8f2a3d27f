"""Residual connections (He et al., 2016): ``y = act(branch(x) + shortcut(x))``, and downsampling shortcuts.

When a block changes the resolution (stride) or the number of channels, the identity cannot be added
to the branch's output; the shortcut must map x to the branch's output shape:

- ``ConvShortcut``: a strided 1x1 convolution (option B of the ResNet paper), optionally with batch norm.
- ``AvgPoolShortcut``: average pooling over stride x stride windows, then zero channels appended
  (option A with pooling instead of subsampling): no parameters.
"""
from collections import OrderedDict

import numpy as np

from ..kernels.residual import add
from .batchnorm import BatchNorm2d
from .container import Sequential
from .conv import Conv2d
from .module import Module, positive_int
from .pooling import AvgPool2d

__all__ = ["Residual", "ConvShortcut", "AvgPoolShortcut", "ChannelPad"]


class Residual(Module):
    r"""A residual block (He et al., 2016): ``y = act(branch(x) + shortcut(x))``.

    ``Residual(*layers, shortcut=None, activation=None)``; ``layers`` as ``Sequential``'s (modules, or one
    ``OrderedDict`` of named modules). The one place the residual sum and its gradient are written.

    Forward   h = branch(x) = f_k(...f_1(x))      the layers, in order
              s = h + shortcut(x)                  shortcut=None: the identity, s = h + x
              y = act(s)                           activation=None: y = s
    Backward  g_s = act'(g)                        (g_s = g without an activation)
              dx = branch'(g_s) + shortcut'(g_s)   identity: dx = branch'(g_s) + g_s
              The sum hands g_s unchanged to both paths: the shortcut carries it down to x however
              small the branch's gradient is, which is why deep residual networks keep their
              early-layer gradients.
    Shapes    the branch's and the shortcut's outputs must be equal (else ValueError): a branch that
              changes channels or resolution needs a shortcut that does too (ConvShortcut, AvgPoolShortcut).
    Children  the branch's layers under their own names (``conv0``, ``bn0``, ...; positional: ``0``, ``1``,
              ...), then ``shortcut``, then ``act``, so a model's names read ``stage0.block0.conv0``,
              ``scale1.block0.shortcut.conv``. ``branch_names`` lists the branch's children in order.
    """

    def __init__(self, *layers, shortcut=None, activation=None):
        super().__init__()
        if len(layers) == 1 and isinstance(layers[0], (dict, OrderedDict)):
            items = list(layers[0].items())
        else:
            items = [(str(i), m) for i, m in enumerate(layers)]
        if not items:
            raise TypeError("Residual: give the branch's layers, got none")
        for name, module in items:
            if not isinstance(module, Module):
                raise TypeError(f"Residual: branch layer {name!r} must be a Module, got {type(module).__name__}")
            if isinstance(module, (ConvShortcut, AvgPoolShortcut, ChannelPad)):  # Residual(branch, shortcut)
                raise TypeError(f"Residual: branch layer {name!r} is a {type(module).__name__}; pass a shortcut "
                                "by keyword: Residual(*layers, shortcut=...)")
            if name in ("shortcut", "act"):
                raise ValueError(f"Residual: the name {name!r} is taken by the shortcut or the activation; "
                                 "name the branch's layer otherwise")
        for name, module in (("shortcut", shortcut), ("activation", activation)):
            if module is not None and not isinstance(module, Module):
                raise TypeError(f"Residual: {name} must be a Module or None, got {type(module).__name__}")
        for name, module in items:
            setattr(self, name, module)
        self.branch_names = tuple(name for name, _ in items)
        self.shortcut = shortcut  # None stays a plain attribute: no child, no parameters
        self.act = activation

    @property
    def branch(self):
        """The branch's layers, in forward order."""
        return [getattr(self, name) for name in self.branch_names]

    def forward(self, x):
        h = x
        for layer in self.branch:
            h = layer(h)
        skip = x if self.shortcut is None else self.shortcut(x)
        if np.shape(h) != np.shape(skip):
            raise ValueError(
                f"{self._display_name()}: the branch's output has shape {np.shape(h)} but the shortcut's "
                f"has {np.shape(skip)}; when the branch changes channels or resolution, pass a shortcut "
                "that does too (ConvShortcut or AvgPoolShortcut)"
            )
        s = add(h, skip)  # h + skip, on the threads (kernels/residual.py)
        return s if self.act is None else self.act(s)

    def backward(self, grad_output):
        g = grad_output if self.act is None else self.act.backward(grad_output)
        grad_skip = g if self.shortcut is None else self.shortcut.backward(g)
        grad_branch = g
        for layer in reversed(self.branch):
            grad_branch = layer.backward(grad_branch)
        return add(grad_branch, grad_skip)  # grad_branch + grad_skip

    def extra_repr(self):
        return "shortcut=identity" if self.shortcut is None else ""


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
