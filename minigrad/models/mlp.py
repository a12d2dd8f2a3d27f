r"""The deep MLPs of the gradient-scale study (Philipp et al. 2018, "Gradients explode").

Seven architectures, each a stack of ``depth`` identical layers of width ``width``::

    layer_k:  h -> Linear(h) -> normalisation (none | LayerNorm | BatchNorm) -> nonlinearity

==============  =======================  ============  ===========================
name            normalisation            nonlinearity  weight variance
==============  =======================  ============  ===========================
``ReLU``        none                     ReLU          2 / fan_in
``layer-ReLU``  LayerNorm                ReLU          2 / fan_in
``batch-ReLU``  BatchNorm                ReLU          2 / fan_in
``tanh``        none                     tanh          1 / fan_in
``layer-tanh``  LayerNorm                tanh          1 / fan_in
``batch-tanh``  BatchNorm                tanh          1 / fan_in
``SeLU``        none                     SELU          1 / fan_in
==============  =======================  ============  ===========================

Weights are Gaussian N(0, variance) and biases zero (the paper's init, not PyTorch's default, DECISIONS
13). The norms have no learnable parameters: ``LayerNorm(width, elementwise_affine=False)`` normalises
each point over its features; ``BatchNorm1d(width, affine=False, track_running_stats=False)`` normalises
each feature over the batch it is given, in training and eval alike (the study feeds a whole dataset as
one batch). With ``num_classes`` the network gets a final ``out.linear`` (width -> num_classes, variance
1 / fan_in, no nonlinearity: softmax and error follow in the loss), as the paper's CIFAR-10 networks.

Names read well in plots: ``layer0.linear``, ``layer0.norm``, ``layer0.act``, ..., ``out.linear``;
layer 0 is the one nearest the input.
"""
from collections import OrderedDict

import numpy as np

from .. import nn

__all__ = ["ARCHITECTURES", "EXPLODING_IN_PAPER", "MLP", "build_mlp", "canonical_architecture"]

# name -> (normalisation, nonlinearity, weight variance times fan_in)
ARCHITECTURES = OrderedDict([
    ("ReLU", (None, "relu", 2.0)),
    ("layer-ReLU", ("layer", "relu", 2.0)),
    ("batch-ReLU", ("batch", "relu", 2.0)),
    ("tanh", (None, "tanh", 1.0)),
    ("layer-tanh", ("layer", "tanh", 1.0)),
    ("batch-tanh", ("batch", "tanh", 1.0)),
    ("SeLU", (None, "selu", 1.0)),
])

# The four the paper reports as exploding (its Figure 1A), trained on CIFAR-10 in its section on depth.
EXPLODING_IN_PAPER = ("batch-ReLU", "layer-tanh", "batch-tanh", "SeLU")

_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "selu": nn.SELU}


def canonical_architecture(name):
    """The table's spelling of ``name``, matched case-insensitively (``batch_relu`` -> ``batch-ReLU``)."""
    key = str(name).strip().lower().replace("_", "-")
    for arch in ARCHITECTURES:
        if arch.lower() == key:
            return arch
    raise ValueError(f"unknown MLP architecture {name!r}; expected one of {', '.join(ARCHITECTURES)}")


class MLP(nn.Sequential):
    """``depth`` hidden layers (each a ``Sequential`` linear -> [norm] -> act), then optionally ``out``.

    Forward and backward are ``Sequential``'s. ``hidden_layers`` lists the hidden layers from the input
    side (``layer0`` first); their outputs are the f_l of the gradient-scale study.
    """

    def __init__(self, architecture, layers, out=None):
        children = OrderedDict((f"layer{k}", layer) for k, layer in enumerate(layers))
        if out is not None:
            children["out"] = out
        super().__init__(children)
        self.architecture = architecture

    @property
    def hidden_layers(self):
        return [module for name, module in self.named_children() if name != "out"]

    def extra_repr(self):
        return f"architecture={self.architecture!r}, depth={len(self.hidden_layers)}"


def _gaussian_linear(in_features, out_features, variance_times_fan_in, generator):
    linear = nn.Linear(in_features, out_features)
    nn.init.normal_(linear.weight, 0.0, float(np.sqrt(variance_times_fan_in / in_features)), generator=generator)
    nn.init.zeros_(linear.bias)
    return linear


def build_mlp(architecture, depth=50, width=100, in_features=100, num_classes=None, generator=None,
              dtype=np.float32):
    """One of ``ARCHITECTURES`` as an ``MLP``: ``depth`` layers of ``width`` units (layer0 takes
    ``in_features``), plus ``out.linear`` to ``num_classes`` logits when given.

    Weights are drawn from ``generator`` (default: the library's global one, ``minigrad.manual_seed``)
    layer by layer from the input side; parameters are cast to ``dtype``.
    """
    architecture = canonical_architecture(architecture)
    for arg, value in (("depth", depth), ("width", width), ("in_features", in_features)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"build_mlp: {arg} must be a positive int, got {value!r}")
    if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer))
                                    or num_classes < 1):
        raise ValueError(f"build_mlp: num_classes must be a positive int or None, got {num_classes!r}")
    norm, activation, variance = ARCHITECTURES[architecture]
    layers = []
    for k in range(depth):
        parts = OrderedDict(linear=_gaussian_linear(in_features if k == 0 else width, width, variance, generator))
        if norm == "layer":
            parts["norm"] = nn.LayerNorm(width, elementwise_affine=False)
        elif norm == "batch":
            parts["norm"] = nn.BatchNorm1d(width, affine=False, track_running_stats=False)
        parts["act"] = _ACTIVATIONS[activation]()
        layers.append(nn.Sequential(parts))
    out = None
    if num_classes is not None:
        out = nn.Sequential(OrderedDict(linear=_gaussian_linear(width, num_classes, 1.0, generator)))
    model = MLP(architecture, layers, out)
    model.to(dtype)
    return model.name_modules()
