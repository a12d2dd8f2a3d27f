r"""A small CNN for CIFAR with a choice of normalisation layer: the normalisation study's network.

Three 3x3 convolutions (padding 1) of widths 32, 64, 128, each followed by a normalisation layer and a
ReLU; max-pooling 2x2 after the first two; global average pooling and one linear layer::

    stage0:  conv 3->32   -> norm -> ReLU -> MaxPool2d(2)      32x32 -> 16x16
    stage1:  conv 32->64  -> norm -> ReLU -> MaxPool2d(2)      16x16 -> 8x8
    stage2:  conv 64->128 -> norm -> ReLU                       8x8
    head:    AdaptiveAvgPool2d(1) -> Flatten -> Linear(128 -> num_classes)

``norm`` is one of (every kind has a learnable per-channel scale gamma and shift beta, as in Wu & He 2018,
so that the kinds differ only in the set of values the mean and variance are taken over):

==============  =========================================  ===========================================
``norm``        layer                                      statistics per sample n, over
==============  =========================================  ===========================================
``none``        (no layer; the convolution keeps its bias)  -
``batch``       ``BatchNorm2d(C)``                          channel c over the batch: (N, H, W)
``group``       ``GroupNorm(G, C)``, G = min(groups, C)     group of C/G channels: (C/G, H, W)
``layer``       ``GroupNorm(1, C)``                         all channels: (C, H, W)
``instance``    ``InstanceNorm2d(C, affine=True)``          channel c alone: (H, W)
==============  =========================================  ===========================================

Layer norm is Wu & He's (statistics over (C, H, W), per-channel gamma and beta), i.e. ``GroupNorm(1, C)``;
``nn.LayerNorm((C, H, W))`` would learn a gamma and beta per position instead. With a normalisation layer
the convolutions have no bias (the layer's beta replaces it). Only batch norm behaves differently in
training and eval (running statistics); the others compute the same function in both modes.

Initialisation is PyTorch's default (DECISIONS 13). Names read well in plots: ``stage0.conv``,
``stage0.norm``, ..., ``head.linear``. 94,538 parameters with ``norm="none"`` and 10 classes, 94,762 with
any normalisation.
"""
from collections import OrderedDict

from .. import nn

__all__ = ["NORMS", "SmallCNN", "make_norm"]

NORMS = ("none", "batch", "group", "layer", "instance")


def make_norm(norm, channels, groups=8):
    """The normalisation layer of kind ``norm`` for ``channels`` channels (None for ``"none"``)."""
    if norm == "none":
        return None
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "group":
        return nn.GroupNorm(min(groups, channels), channels)
    if norm == "layer":
        return nn.GroupNorm(1, channels)
    if norm == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    raise ValueError(f"SmallCNN: norm must be one of {', '.join(NORMS)}, got {norm!r}")


class SmallCNN(nn.Sequential):
    """``stage0..2`` (conv -> [norm] -> ReLU -> [pool]) and ``head``; see the module docstring.

    Forward and backward are ``Sequential``'s. ``widths`` are the three convolutions' output channels;
    ``groups`` the number of groups of ``norm="group"`` (capped at each layer's channel count).
    """

    def __init__(self, norm="none", num_classes=10, widths=(32, 64, 128), groups=8, in_channels=3):
        if norm not in NORMS:
            raise ValueError(f"SmallCNN: norm must be one of {', '.join(NORMS)}, got {norm!r}")
        if len(widths) != 3:
            raise ValueError(f"SmallCNN: widths must be three channel counts, got {widths!r}")
        stages = OrderedDict()
        channels = in_channels
        for i, width in enumerate(widths):
            layers = OrderedDict(conv=nn.Conv2d(channels, width, 3, padding=1, bias=norm == "none"))
            if norm != "none":
                layers["norm"] = make_norm(norm, width, groups)
            layers["act"] = nn.ReLU()
            if i < len(widths) - 1:
                layers["pool"] = nn.MaxPool2d(2)
            stages[f"stage{i}"] = nn.Sequential(layers)
            channels = width
        stages["head"] = nn.Sequential(OrderedDict(pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(),
                                                   linear=nn.Linear(channels, num_classes)))
        super().__init__(stages)
        self.norm, self.widths, self.groups = norm, tuple(widths), groups
        self.name_modules()

    def norm_layers(self):
        """``[(name, layer)]`` of the normalisation layers, input side first."""
        return [(f"{name}.norm", stage.norm) for name, stage in self.named_children() if "norm" in stage._modules]
