"""The VGG networks of the Edinburgh MLP coursework (VGG08, VGG38) with optional BN and residual connections.

Architecture (``pytorch_mlp_framework/model_architectures.py`` of the course; 32 filters, 3x3 convs with
padding 1, LeakyReLU(0.01)):

- ``entry``: conv 3->32 (no bias) -> BatchNorm2d -> LeakyReLU (this BN is in every model, even "no-BN").
- ``stage{i}``, i = 0..2: ``num_blocks_per_stage`` processing blocks, then one reduction block.
  Processing block ``block{j}``: conv0 -> [bn0] -> act0 -> conv1 -> [bn1] -> (+ x if residual) -> act,
  convs without bias. Reduction block ``reduce``: conv0 -> [bn0] -> act0 -> AvgPool2d(2) -> conv1 ->
  [bn1] -> (+ shortcut(x) if ``reduction_shortcut``) -> act, convs with bias.
- ``head``: global average pool -> flatten -> Linear(32 -> num_classes).

A block with a connection is an ``nn.Residual`` (the sum and its gradient are written there, once);
a block without one is an ``nn.Sequential``. Either way its layers are its own children, so the names
are the same (``stage0.block0.conv0``, ``stage0.reduce.shortcut.conv``).

VGG08 has 0 processing blocks per stage (8 weighted layers, 59,716 parameters for 100 classes); VGG38
has 5 (38 weighted layers, 336,196 parameters). Parameters keep PyTorch's default initialisation, as the
course's code does: VGG38's failure to learn depends on it.
"""
import re
from collections import OrderedDict

from .. import nn

__all__ = ["VGG", "processing_block", "reduction_block", "build_vgg", "parse_vgg_name", "VGG_NAMES",
           "REDUCTION_SHORTCUTS"]

VGG_NAMES = ("VGG08", "VGG38", "VGG38_BN", "VGG38_RC", "VGG38_BN_RC")
REDUCTION_SHORTCUTS = ("none", "avgpool", "conv1x1")


def processing_block(channels, batch_norm=False, residual=False):
    """conv0 -> [bn0] -> act0 -> conv1 -> [bn1] -> (+ x if ``residual``) -> act; shape-preserving.

    Convs 3x3 with padding 1 and no bias, BN right after each conv (before the activation), LeakyReLU(0.01).
    Returns ``nn.Residual(layers, activation=act)`` (identity shortcut) when ``residual``, else
    ``nn.Sequential`` of the layers and ``act``. Layers are created in the order of their names.
    """
    layers = OrderedDict(conv0=nn.Conv2d(channels, channels, 3, padding=1, bias=False))
    if batch_norm:
        layers["bn0"] = nn.BatchNorm2d(channels)
    layers["act0"] = nn.LeakyReLU(0.01)
    layers["conv1"] = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
    if batch_norm:
        layers["bn1"] = nn.BatchNorm2d(channels)
    act = nn.LeakyReLU(0.01)
    if residual:
        return nn.Residual(layers, activation=act)
    layers["act"] = act
    return nn.Sequential(layers)


def reduction_block(channels, batch_norm=False, shortcut="none"):
    """conv0 -> [bn0] -> act0 -> pool (AvgPool2d(2)) -> conv1 -> [bn1] -> (+ shortcut(x)) -> act; halves H, W.

    As ``processing_block`` but the convs have a bias. ``shortcut``: "none" (the course; an
    ``nn.Sequential``), "avgpool" (``nn.AvgPool2d(2)`` of x) or "conv1x1" (``nn.ConvShortcut``: a 1x1 conv
    with stride 2, with a bias only without BN, then BN when the block has BN), the report's section 5.1;
    with a shortcut the block is ``nn.Residual(layers, shortcut=..., activation=act)``. The shortcut is
    created after the layers, ``act`` last.
    """
    if shortcut not in REDUCTION_SHORTCUTS:
        raise ValueError(f"reduction_block: shortcut must be one of {REDUCTION_SHORTCUTS}, got {shortcut!r}")
    layers = OrderedDict(conv0=nn.Conv2d(channels, channels, 3, padding=1, bias=True))
    if batch_norm:
        layers["bn0"] = nn.BatchNorm2d(channels)
    layers["act0"] = nn.LeakyReLU(0.01)
    layers["pool"] = nn.AvgPool2d(2)
    layers["conv1"] = nn.Conv2d(channels, channels, 3, padding=1, bias=True)
    if batch_norm:
        layers["bn1"] = nn.BatchNorm2d(channels)
    skip = None
    if shortcut == "avgpool":
        skip = nn.AvgPool2d(2)
    elif shortcut == "conv1x1":
        skip = nn.ConvShortcut(channels, channels, stride=2, bias=not batch_norm, batch_norm=batch_norm)
    act = nn.LeakyReLU(0.01)
    if skip is not None:
        return nn.Residual(layers, shortcut=skip, activation=act)
    layers["act"] = act
    return nn.Sequential(layers)


class VGG(nn.Sequential):
    """entry -> stage0 -> stage1 -> stage2 -> head, as the course's ``ConvolutionalNetwork``.

    Input (N, 3, 32, 32) float; output logits (N, num_classes).
    """

    def __init__(self, num_blocks_per_stage, num_classes=100, num_filters=32, num_stages=3,
                 batch_norm=False, residual=False, reduction_shortcut="none", in_channels=3):
        c = num_filters
        parts = OrderedDict()
        parts["entry"] = nn.Sequential(OrderedDict(
            conv=nn.Conv2d(in_channels, c, 3, padding=1, bias=False),
            bn=nn.BatchNorm2d(c),
            act=nn.LeakyReLU(0.01),
        ))
        for i in range(num_stages):
            blocks = OrderedDict(
                (f"block{j}", processing_block(c, batch_norm=batch_norm, residual=residual))
                for j in range(num_blocks_per_stage)
            )
            blocks["reduce"] = reduction_block(c, batch_norm=batch_norm, shortcut=reduction_shortcut)
            parts[f"stage{i}"] = nn.Sequential(blocks)
        parts["head"] = nn.Sequential(OrderedDict(
            pool=nn.AdaptiveAvgPool2d(1),
            flatten=nn.Flatten(),
            linear=nn.Linear(c, num_classes),
        ))
        super().__init__(parts)
        self.config = dict(num_blocks_per_stage=num_blocks_per_stage, num_classes=num_classes,
                           num_filters=num_filters, num_stages=num_stages, batch_norm=batch_norm,
                           residual=residual, reduction_shortcut=reduction_shortcut)
        self.name_modules()

    def extra_repr(self):
        return ", ".join(f"{k}={v}" for k, v in self.config.items())


def parse_vgg_name(name):
    """``"VGG38_BN_RC"`` -> dict(num_blocks_per_stage=5, batch_norm=True, residual=True).

    Depth = 8 + 6 * blocks per stage (each processing block adds 2 convs in each of 3 stages).
    """
    match = re.fullmatch(r"VGG(\d+)((?:_BN|_RC)*)", name.upper())
    if not match:
        raise ValueError(f"unknown VGG model {name!r}; expected e.g. {', '.join(VGG_NAMES)}")
    depth = int(match.group(1))
    if depth < 8 or (depth - 8) % 6:
        raise ValueError(f"{name}: depth must be 8 + 6k (8, 14, 20, 26, 32, 38, ...), got {depth}")
    flags = match.group(2).split("_")[1:]
    return dict(num_blocks_per_stage=(depth - 8) // 6, batch_norm="BN" in flags, residual="RC" in flags)


def build_vgg(name, num_classes=100, reduction_shortcut="none", num_filters=32):
    """Build a VGG by name (``VGG08``, ``VGG38``, ``VGG38_BN``, ``VGG38_RC``, ``VGG38_BN_RC``, ...)."""
    return VGG(num_classes=num_classes, num_filters=num_filters, reduction_shortcut=reduction_shortcut,
               **parse_vgg_name(name))
