r"""Deep MLPs: ``build_mlp``, the one builder, and the gradient-scale study's seven architectures.

``build_mlp(widths, activation, norm, ...)`` stacks ``len(widths) - 1`` hidden layers, each a
``Sequential`` named ``layer{k}``::

    layer_k:  h -> linear (widths[k] -> widths[k+1]) -> [norm] -> act

then, with ``num_classes``, ``out.linear`` (widths[-1] -> num_classes; softmax and error follow in the
loss). Names read well in plots: ``layer0.linear``, ``layer0.norm``, ``layer0.act``, ..., ``out.linear``;
layer 0 is the one nearest the input. The norms have no learnable parameters:
``LayerNorm(width, elementwise_affine=False)`` normalises each point over its features;
``BatchNorm1d(width, affine=False, track_running_stats=False)`` normalises each feature over the batch
it is given, in training and eval alike (the gradient-scale study feeds a whole dataset as one batch).

The gradient-scale study (Philipp et al. 2018, "Gradients explode") uses seven of them (``gsc_mlp``),
each ``depth`` identical layers of width ``width``:

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

Their weights are Gaussian N(0, variance) and biases zero (the paper's init, not PyTorch's default,
DECISIONS 13); ``out.linear`` has variance 1 / fan_in (no nonlinearity follows), as the paper's CIFAR-10
networks. The initialisation study passes its own schemes (``minigrad.measure.signal_variance``).
"""
from collections import OrderedDict

import numpy as np

from .. import nn
from .. import random as _random

__all__ = ["ARCHITECTURES", "EXPLODING_IN_PAPER", "ACTIVATIONS", "NORMS", "MLP", "build_mlp", "gsc_mlp",
           "gaussian_init", "canonical_architecture"]

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

ACTIVATIONS = ("linear", "relu", "leaky_relu", "tanh", "sigmoid", "selu")
NORMS = (None, "layer", "batch")


def canonical_architecture(name):
    """The table's spelling of ``name``, matched case-insensitively (``batch_relu`` -> ``batch-ReLU``)."""
    key = str(name).strip().lower().replace("_", "-")
    for arch in ARCHITECTURES:
        if arch.lower() == key:
            return arch
    raise ValueError(f"unknown MLP architecture {name!r}; expected one of {', '.join(ARCHITECTURES)}")


class MLP(nn.Sequential):
    """Hidden layers ``layer0`` ... (each a ``Sequential`` linear -> [norm] -> act), then optionally ``out``.

    Forward and backward are ``Sequential``'s. ``hidden_layers`` lists the hidden layers from the input
    side (``layer0`` first); their outputs are the f_l of the gradient-scale study.
    """

    def __init__(self, layers, out=None, architecture=None):
        children = OrderedDict((f"layer{k}", layer) for k, layer in enumerate(layers))
        if out is not None:
            children["out"] = out
        super().__init__(children)
        self.architecture = architecture

    @property
    def hidden_layers(self):
        return [module for name, module in self.named_children() if name != "out"]

    def extra_repr(self):
        arch = f"architecture={self.architecture!r}, " if self.architecture else ""
        return f"{arch}depth={len(self.hidden_layers)}"


def gaussian_init(variance_times_fan_in):
    """An ``init`` for ``build_mlp``: weight ~ N(0, variance_times_fan_in / fan_in), bias 0."""

    def init(linear, generator=None):
        std = float(np.sqrt(variance_times_fan_in / linear.in_features))
        nn.init.normal_(linear.weight, 0.0, std, generator=generator)
        if linear.bias is not None:
            nn.init.zeros_(linear.bias)

    return init


def _activation(name, negative_slope):
    if name == "linear":
        return nn.Identity()
    if name == "relu":
        return nn.ReLU()
    if name == "leaky_relu":
        return nn.LeakyReLU(negative_slope)
    if name == "tanh":
        return nn.Tanh()
    if name == "sigmoid":
        return nn.Sigmoid()
    return nn.SELU()


def _positive_int(value, what, caller):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{caller}: {what} must be a positive int, got {value!r}")
    return int(value)


def build_mlp(widths, activation="relu", norm=None, num_classes=None, init=None, out_init=None,
              negative_slope=0.01, bias=True, generator=None, dtype=np.float32, architecture=None):
    """An ``MLP`` of ``len(widths) - 1`` hidden layers (see the module docstring); ``widths = [in, h_1, ..., h_L]``.

    ``activation``: one of ``ACTIVATIONS`` ("linear" is the identity, "leaky_relu" has ``negative_slope``);
    ``norm``: None, "layer" or "batch" (without parameters); ``num_classes``: adds ``out.linear``;
    ``bias=False``: linears without a bias.
    ``init``: None keeps PyTorch's default (drawn from the library's global generator, as ``nn.Linear``
    does); else ``init(linear, generator=generator)`` fills every hidden linear, input side first, then
    ``out_init`` (default: ``init``) fills ``out.linear``, and the global generator is left as it was.
    Parameters are cast to ``dtype`` before ``init`` runs, so float64 weights are drawn in float64.
    """
    if isinstance(widths, str):
        raise TypeError(f"build_mlp: widths must be a list of sizes, got {widths!r}; for the gradient-scale "
                        "study's architectures by name use gsc_mlp")
    widths = [_positive_int(w, "every width", "build_mlp") for w in widths]
    if len(widths) < 2:
        raise ValueError(f"build_mlp: widths must hold at least 2 sizes (input, one hidden layer), got {widths}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"build_mlp: activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")
    if norm not in NORMS:
        raise ValueError(f"build_mlp: norm must be None, 'layer' or 'batch', got {norm!r}")
    if num_classes is not None:
        num_classes = _positive_int(num_classes, "num_classes", "build_mlp")
    saved = _random.get_rng_state() if init is not None else None
    try:
        layers = []
        for k in range(len(widths) - 1):
            parts = OrderedDict(linear=nn.Linear(widths[k], widths[k + 1], bias=bias))
            if norm == "layer":
                parts["norm"] = nn.LayerNorm(widths[k + 1], elementwise_affine=False)
            elif norm == "batch":
                parts["norm"] = nn.BatchNorm1d(widths[k + 1], affine=False, track_running_stats=False)
            parts["act"] = _activation(activation, negative_slope)
            layers.append(nn.Sequential(parts))
        out = None
        if num_classes is not None:
            out = nn.Sequential(OrderedDict(linear=nn.Linear(widths[-1], num_classes, bias=bias)))
    finally:
        if saved is not None:  # the constructors drew PyTorch's default; init replaces it
            _random.set_rng_state(saved)
    model = MLP(layers, out, architecture=architecture).to(dtype)
    if init is not None:
        for layer in layers:
            init(layer.linear, generator=generator)
        if out is not None:
            (out_init or init)(out.linear, generator=generator)
    return model.name_modules()


def gsc_mlp(architecture, depth=50, width=100, in_features=100, num_classes=None, bias=True, generator=None,
            dtype=np.float32):
    """One of ``ARCHITECTURES`` by name: ``depth`` layers of ``width`` units (layer0 takes ``in_features``),
    plus ``out.linear`` to ``num_classes`` logits when given; Gaussian weights from ``generator`` (default:
    the library's global one), input side first."""
    architecture = canonical_architecture(architecture)
    for arg, value in (("depth", depth), ("width", width), ("in_features", in_features)):
        _positive_int(value, arg, "gsc_mlp")
    if num_classes is not None:
        _positive_int(num_classes, "num_classes", "gsc_mlp")
    norm, activation, variance = ARCHITECTURES[architecture]
    return build_mlp([in_features] + [width] * depth, activation, norm, num_classes=num_classes,
                     init=gaussian_init(variance), out_init=gaussian_init(1.0), bias=bias, generator=generator,
                     dtype=dtype, architecture=architecture)
