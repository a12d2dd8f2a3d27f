"""The VGG networks of the Edinburgh MLP coursework (VGG08, VGG38) with optional BN and residual connections.

Architecture (``pytorch_mlp_framework/model_architectures.py`` of the course; 32 filters, 3x3 convs with
padding 1, LeakyReLU(0.01)):

- ``entry``: conv 3->32 (no bias) -> BatchNorm2d -> LeakyReLU (this BN is in every model, even "no-BN").
- ``stage{i}``, i = 0..2: ``num_blocks_per_stage`` processing blocks, then one reduction block.
  Processing block ``block{j}``: conv0 -> [bn0] -> act0 -> conv1 -> [bn1] -> (+ x if residual) -> act1,
  convs without bias. Reduction block ``reduce``: conv0 -> [bn0] -> act0 -> AvgPool2d(2) -> conv1 ->
  [bn1] -> (+ shortcut(x) if ``reduction_shortcut``) -> act1, convs with bias.
- ``head``: global average pool -> flatten -> Linear(32 -> num_classes).

VGG08 has 0 processing blocks per stage (8 weighted layers, 59,716 parameters for 100 classes); VGG38
has 5 (38 weighted layers, 336,196 parameters). Parameters keep PyTorch's default initialisation, as the
course's code does: VGG38's failure to learn depends on it.
"""
import re
from collections import OrderedDict

from .. import nn

__all__ = ["VGG", "ProcessingBlock", "ReductionBlock", "build_vgg", "parse_vgg_name", "VGG_NAMES"]

VGG_NAMES = ("VGG08", "VGG38", "VGG38_BN", "VGG38_RC", "VGG38_BN_RC")
REDUCTION_SHORTCUTS = ("none", "avgpool", "conv1x1")


class _SkipBlock(nn.Module):
    r"""``y = act_out(body(x) + shortcut(x))``, the shortcut optional; the body is a chain of layers.

    Backward: ``g = act_out'(grad_output)``; the body and the shortcut both receive ``g`` and their input
    gradients add up: ``dx = body'(g) + shortcut'(g)`` (identity shortcut: ``+ g``). That ``+ g`` is why
    residual connections keep early-layer gradients from vanishing.
    """

    def _body(self):
        return [getattr(self, name) for name in self.body_names]

    def forward(self, x):
        h = x
        for layer in self._body():
            h = layer(h)
        if self.shortcut_kind == "identity":
            h = h + x
        elif self.shortcut_kind == "module":
            h = h + self.shortcut(x)
        return self.act1(h)

    def backward(self, grad_output):
        g = self.act1.backward(grad_output)
        grad_input = None
        if self.shortcut_kind == "identity":
            grad_input = g
        elif self.shortcut_kind == "module":
            grad_input = self.shortcut.backward(g)
        for layer in reversed(self._body()):
            g = layer.backward(g)
        return g if grad_input is None else g + grad_input


class ProcessingBlock(_SkipBlock):
    """conv0 -> [bn0] -> act0 -> conv1 -> [bn1] -> (+ x if residual) -> act1; shape-preserving."""

    def __init__(self, channels, batch_norm=False, residual=False):
        super().__init__()
        self.conv0 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        names = ["conv0"]
        if batch_norm:
            self.bn0 = nn.BatchNorm2d(channels)
            names.append("bn0")
        self.act0 = nn.LeakyReLU(0.01)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        names += ["act0", "conv1"]
        if batch_norm:
            self.bn1 = nn.BatchNorm2d(channels)
            names.append("bn1")
        self.act1 = nn.LeakyReLU(0.01)
        self.body_names = names
        self.shortcut_kind = "identity" if residual else None


class ReductionBlock(_SkipBlock):
    """conv0 -> [bn0] -> act0 -> AvgPool2d(2) -> conv1 -> [bn1] -> (+ shortcut(x)) -> act1; halves H, W.

    ``shortcut``: "none" (the course), "avgpool" (AvgPool2d(2) of x) or "conv1x1" (a 1x1 conv with stride
    2, followed by BN when the block has BN): the report's section 5.1.
    """

    def __init__(self, channels, batch_norm=False, shortcut="none"):
        super().__init__()
        if shortcut not in REDUCTION_SHORTCUTS:
            raise ValueError(f"ReductionBlock: shortcut must be one of {REDUCTION_SHORTCUTS}, got {shortcut!r}")
        self.conv0 = nn.Conv2d(channels, channels, 3, padding=1, bias=True)
        names = ["conv0"]
        if batch_norm:
            self.bn0 = nn.BatchNorm2d(channels)
            names.append("bn0")
        self.act0 = nn.LeakyReLU(0.01)
        self.pool = nn.AvgPool2d(2)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=True)
        names += ["act0", "pool", "conv1"]
        if batch_norm:
            self.bn1 = nn.BatchNorm2d(channels)
            names.append("bn1")
        if shortcut == "avgpool":
            self.shortcut = nn.AvgPool2d(2)
        elif shortcut == "conv1x1":
            layers = OrderedDict(conv=nn.Conv2d(channels, channels, 1, stride=2, bias=not batch_norm))
            if batch_norm:
                layers["bn"] = nn.BatchNorm2d(channels)
            self.shortcut = nn.Sequential(layers)
        self.act1 = nn.LeakyReLU(0.01)
        self.body_names = names
        self.shortcut_kind = None if shortcut == "none" else "module"


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
                (f"block{j}", ProcessingBlock(c, batch_norm=batch_norm, residual=residual))
                for j in range(num_blocks_per_stage)
            )
            blocks["reduce"] = ReductionBlock(c, batch_norm=batch_norm, shortcut=reduction_shortcut)
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
