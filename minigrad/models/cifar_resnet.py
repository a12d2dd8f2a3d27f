r"""He et al.'s CIFAR-10 networks (CVPR 2016, section 4.2): plain and residual, 6n + 2 layers.

Architecture (3x3 convolutions, padding 1, no bias: a BN follows each one)::

    stem     conv 3 -> 16, bn, relu                                  32x32
    stage0   n blocks, 16 filters                                    32x32
    stage1   n blocks, 32 filters; block0's conv0 has stride 2       16x16
    stage2   n blocks, 64 filters; block0's conv0 has stride 2        8x8
    head     global average pool -> flatten -> linear 64 -> 10

A block is two conv-BN layers (BN after every conv, before the ReLU):

    residual  y = relu(bn1(conv1(relu(bn0(conv0(x))))) + shortcut(x))     an ``nn.Residual``
    plain     y = relu(bn1(conv1(relu(bn0(conv0(x))))))                    an ``nn.Sequential``

The two differ only by the shortcut: the same children under the same names (``conv0, bn0, relu0, conv1,
bn1, act``) and so the same parameters, drawn in the same order from the same seed. Depth = 1 (stem) +
6n (blocks) + 1 (linear): n = 3, 5, 7, 9, 18 give the paper's 20, 32, 44, 56 and 110 layers.

Shortcuts are the paper's option A ("identity mapping ... with extra zero entries padded for increasing
dimensions", and "when the shortcuts go across feature maps of two sizes, they are performed with a
stride of 2"): the identity inside a stage, and at the first block of stages 1 and 2 ``shortcut`` =
``subsample`` (``AvgPool2d(1, stride=2)``: every other pixel, ``x[:, :, ::2, ::2]``) then ``pad``
(``ChannelPad``: the new channels are zeros). No shortcut has a parameter, so the plain and residual nets
of one depth have the same parameter count (ResNet-20: 269,722; ResNet-56: 853,018; Table 6: 0.27M, 0.85M).

Initialisation: every conv weight ``kaiming_normal_(mode="fan_in", nonlinearity="relu")``, i.e.
N(0, 2 / (9 c_in)), the forward rule of He et al. 2015 (eq. 10), which the paper cites as [13] and which
Caffe's "msra" filler draws by default (torchvision's ResNets use ``mode="fan_out"`` instead: the backward
rule, equally valid by that paper's section 2.2). BN gamma 1, beta 0. The linear layer keeps PyTorch's
default (the paper says nothing of it).
"""
from collections import OrderedDict

from .. import nn

__all__ = ["CifarResNet", "cifar_block", "option_a_shortcut", "blocks_for_depth", "DEPTHS"]

DEPTHS = (20, 32, 44, 56, 110)  # the paper's Table 6


def blocks_for_depth(depth):
    """n, the blocks per stage, of a 6n + 2 layer network: 20 -> 3, 56 -> 9, 110 -> 18."""
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
        raise ValueError(f"CifarResNet: depth must be 6n + 2 with n >= 1 (8, 14, 20, ...), got {depth!r}")
    return (depth - 2) // 6


def option_a_shortcut(in_channels, out_channels, stride):
    """The parameter-free option-A shortcut: None (the identity) when the shape stays, else ``subsample``
    (every ``stride``-th pixel) then ``pad`` (zero channels up to ``out_channels``)."""
    if stride == 1 and in_channels == out_channels:
        return None
    layers = OrderedDict()
    if stride != 1:
        layers["subsample"] = nn.AvgPool2d(1, stride=stride)
    if out_channels != in_channels:
        layers["pad"] = nn.ChannelPad(in_channels, out_channels)
    return nn.Sequential(layers)


def cifar_block(in_channels, out_channels, stride=1, residual=True):
    """One block (module docstring): conv0 (3x3, stride) -> bn0 -> relu0 -> conv1 -> bn1, (+ shortcut), act."""
    layers = OrderedDict(
        conv0=nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        bn0=nn.BatchNorm2d(out_channels), relu0=nn.ReLU(),
        conv1=nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
        bn1=nn.BatchNorm2d(out_channels))
    if not residual:
        return nn.Sequential(OrderedDict(**layers, act=nn.ReLU()))
    return nn.Residual(layers, shortcut=option_a_shortcut(in_channels, out_channels, stride), activation=nn.ReLU())


class CifarResNet(nn.Sequential):
    """stem -> stage0 -> stage1 -> stage2 -> head: a plain or residual 6n + 2 layer CIFAR net (module docstring).

    Input (N, in_channels, 32, 32) float (any H, W work); output logits (N, num_classes).
    """

    def __init__(self, depth=20, residual=True, num_classes=10, num_filters=(16, 32, 64), in_channels=3):
        n = blocks_for_depth(depth)
        widths = tuple(int(w) for w in num_filters)
        parts = OrderedDict(stem=nn.Sequential(OrderedDict(
            conv=nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False),
            bn=nn.BatchNorm2d(widths[0]), relu=nn.ReLU())))
        c_in = widths[0]
        for i, width in enumerate(widths):
            parts[f"stage{i}"] = nn.Sequential(OrderedDict(
                (f"block{j}", cifar_block(c_in if j == 0 else width, width, 2 if (i > 0 and j == 0) else 1, residual))
                for j in range(n)))
            c_in = width
        parts["head"] = nn.Sequential(OrderedDict(pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(),
                                                  linear=nn.Linear(c_in, num_classes)))
        super().__init__(parts)
        self.depth, self.residual = depth, bool(residual)
        self.name_modules()
        self.reset_parameters()

    @property
    def label(self):
        """``resnet-56`` / ``plain-20``: the study's name for this net."""
        return f"{'resnet' if self.residual else 'plain'}-{self.depth}"

    def reset_parameters(self, generator=None):
        """He-normal (fan_in) conv weights, BN gamma 1 / beta 0; the linear layer keeps PyTorch's default."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu", generator=generator)
            elif isinstance(module, nn.BatchNorm2d):
                module.reset_parameters()
        return self

    def extra_repr(self):
        return f"depth={self.depth}, residual={self.residual}"
