"""The pre-activation ResNet-15 of the BN-in-residual-networks paper, with BN and shortcuts switchable.

Architecture (widths ``num_filters = (16, 32, 64)`` by default, 3x3 convs with padding 1):

- ``stem``: ``conv`` 3 -> 16.
- ``scale{i}``, i = 0..2: ``num_blocks_per_scale`` (5) residual blocks ``block{j}``. A block is two
  BN-ReLU-Conv3x3 layers plus the shortcut (the paper's Figure 3)::

      branch    x -> bn0 -> relu0 -> conv0 (stride s) -> bn1 -> relu1 -> conv1 -> h
      shortcut  x (identity)  or, when the block changes width or size,  shortcut.bn -> .relu -> .conv
      output    y = h + shortcut(x)

  ``block0`` of scales 1 and 2 doubles the width and halves H, W (stride 2); its shortcut is a
  BN-ReLU-Conv1x1 with stride 2 (the paper draws BN-ReLU-Conv and gives no kernel size; 1x1 is He et
  al.'s projection shortcut). Every other shortcut is the identity. A block is an ``nn.Residual``
  (``resnet_block``), where the sum and its gradient are written once; Model-2's are ``nn.Sequential``.
- ``head``: ``bn`` -> ``relu`` -> ``pool`` (global average) -> ``flatten`` -> ``linear`` (64 -> classes).

The paper's three models (DECISIONS 21) are two flags: Model-1 ``batch_norm=True, residual=True``;
Model-2 ``residual=False`` (every shortcut gone, the projection conv too: a plain 31-conv BN-ReLU-Conv
stack); Model-3 ``batch_norm=False`` (every BN gone, the shortcut's and the head's too).

Initialisation, as the paper ("xavier initialization, biases initialized to 0"): every conv and linear
weight ``xavier_uniform_`` (gain 1; uniform because Glorot and Bengio's rule and TensorFlow's
``xavier_initializer``, which the paper's step counts suggest it used, are uniform), every bias 0, BN
gamma 1 and beta 0. ``init_std=s`` draws every conv and linear weight from N(0, s^2) instead (the paper's
Appendix G, Figure 15: "initialized by 0.01 / 0.1"). A conv whose output reaches a BN before any nonlinearity (all of them when
``batch_norm``) has no bias: BN would subtract it again, and its gradient would be rounding noise.
"""
from collections import OrderedDict

from .. import nn

__all__ = ["ResNet", "resnet_block", "build_resnet", "MODEL_VARIANTS"]

# The paper's section 5 models (DECISIONS 21).
MODEL_VARIANTS = OrderedDict([
    ("Model-1", dict(batch_norm=True, residual=True)),
    ("Model-2", dict(batch_norm=True, residual=False)),
    ("Model-3", dict(batch_norm=False, residual=True)),
])


def resnet_block(in_channels, out_channels, stride=1, batch_norm=True, residual=True):
    r"""A pre-activation block: ``y = branch(x) + shortcut(x)``, an ``nn.Residual`` (no activation after the sum).

    Branch    bn0 -> relu0 -> conv0 (3x3, stride) -> bn1 -> relu1 -> conv1 (3x3)   (no bn* without batch_norm)
    Shortcut  the identity when width and size stay, else ``shortcut`` = bn -> relu -> conv (1x1, stride)
    Shapes    x (N, in_channels, H, W) -> y (N, out_channels, ceil(H / stride), ceil(W / stride))
    ``residual=False`` (Model-2): the branch alone, as an ``nn.Sequential`` with the same names.
    """
    bias = not batch_norm  # see the module docstring: a conv feeding a BN needs no bias
    layers = OrderedDict()
    for k, (c_in, c_out, s) in enumerate(((in_channels, out_channels, stride), (out_channels, out_channels, 1))):
        if batch_norm:
            layers[f"bn{k}"] = nn.BatchNorm2d(c_in)
        layers[f"relu{k}"] = nn.ReLU()
        layers[f"conv{k}"] = nn.Conv2d(c_in, c_out, 3, stride=s, padding=1, bias=bias)
    if not residual:
        return nn.Sequential(layers)
    shortcut = None  # the identity
    if stride != 1 or in_channels != out_channels:
        projection = OrderedDict()
        if batch_norm:
            projection["bn"] = nn.BatchNorm2d(in_channels)
        projection["relu"] = nn.ReLU()
        projection["conv"] = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=bias)
        shortcut = nn.Sequential(projection)
    return nn.Residual(layers, shortcut=shortcut)


class ResNet(nn.Sequential):
    """stem -> scale0 -> scale1 -> scale2 -> head: the paper's pre-activation ResNet-15 (module docstring).

    Input (N, in_channels, H, W) float; output logits (N, num_classes). ``record_grad_output=True`` makes
    every residual block keep the statistics of d loss / d (block output) of its last backward, read as
    ``model.grad_stats["scale0.block0:grad_output"]`` (``batch_var``, ``l2``, ...); see ``blocks()``.
    """

    def __init__(self, num_blocks_per_scale=5, num_filters=(16, 32, 64), num_classes=10, batch_norm=True,
                 residual=True, in_channels=3, record_grad_output=False, init_std=None):
        widths = tuple(int(w) for w in num_filters)
        if not widths or min(widths) < 1:
            raise ValueError(f"ResNet: num_filters must be positive widths, one per scale, got {num_filters!r}")
        if init_std is not None and not init_std > 0:
            raise ValueError(f"ResNet: init_std must be a positive standard deviation or None, got {init_std!r}")
        if int(num_blocks_per_scale) < 1:
            raise ValueError(f"ResNet: num_blocks_per_scale must be >= 1, got {num_blocks_per_scale!r}")
        parts = OrderedDict()
        parts["stem"] = nn.Sequential(OrderedDict(
            conv=nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=not batch_norm)))
        c_in = widths[0]
        for i, width in enumerate(widths):
            blocks = OrderedDict()
            for j in range(int(num_blocks_per_scale)):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks[f"block{j}"] = resnet_block(c_in, width, stride, batch_norm=batch_norm, residual=residual)
                c_in = width
            parts[f"scale{i}"] = nn.Sequential(blocks)
        head = OrderedDict()
        if batch_norm:
            head["bn"] = nn.BatchNorm2d(c_in)
        head.update(relu=nn.ReLU(), pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(),
                    linear=nn.Linear(c_in, num_classes))
        parts["head"] = nn.Sequential(head)
        super().__init__(parts)
        self.config = dict(num_blocks_per_scale=int(num_blocks_per_scale), num_filters=list(widths),
                           num_classes=int(num_classes), batch_norm=bool(batch_norm), residual=bool(residual))
        self.init_std = None if init_std is None else float(init_std)
        self.name_modules()
        self.reset_parameters()
        self.set_record_grad_output(record_grad_output)

    def reset_parameters(self, generator=None):
        """Xavier-uniform (or N(0, init_std^2)) conv and linear weights, zero biases, BN gamma 1 and beta 0."""
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                if self.init_std is None:
                    nn.init.xavier_uniform_(module.weight, generator=generator)
                else:
                    nn.init.normal_(module.weight, std=self.init_std, generator=generator)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                module.reset_parameters()
        return self

    def blocks(self):
        """``[(dotted name, block)]`` in forward order: ``scale0.block0`` ... ``scale2.block4``.

        A block is an ``nn.Residual``, or an ``nn.Sequential`` in Model-2 (no shortcuts)."""
        return [(f"{scale_name}.{name}", block)
                for scale_name, scale in self.named_children() if scale_name.startswith("scale")
                for name, block in scale.named_children()]

    def batch_norms(self):
        """``[(dotted name, BatchNorm2d)]`` in forward order (empty without batch_norm)."""
        return [(name, m) for name, m in self.named_modules() if isinstance(m, nn.BatchNorm2d)]

    def set_record_grad_output(self, flag=True):
        """Record (or stop recording) d loss / d output statistics on every residual block; returns self."""
        for _, block in self.blocks():
            block.record_grad_output = bool(flag)
        return self

    def extra_repr(self):
        return ", ".join(f"{k}={v}" for k, v in self.config.items())


def build_resnet(name="Model-1", num_filters=(16, 32, 64), num_blocks_per_scale=5, num_classes=10, **kwargs):
    """Build one of the paper's models by name: ``"Model-1"`` (BN + residual), ``"Model-2"`` (BN, no
    shortcuts), ``"Model-3"`` (shortcuts, no BN)."""
    if name not in MODEL_VARIANTS:
        raise ValueError(f"unknown ResNet model {name!r}; expected one of {', '.join(MODEL_VARIANTS)}")
    return ResNet(num_blocks_per_scale=num_blocks_per_scale, num_filters=num_filters, num_classes=num_classes,
                  **MODEL_VARIANTS[name], **kwargs)
