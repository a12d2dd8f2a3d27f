"""One convention for what a layer keeps for backward: ``save_for_backward`` / ``self.saved``, every layer.

Forward adds no attribute to a layer but ``saved`` (so nothing else outlives a step), and the base
class drops ``saved`` once backward has run.
"""
import numpy as np
import pytest

from minigrad import nn

X4 = (3, 2, 6, 5)
LAYERS = [
    ("Linear", lambda: nn.Linear(5, 4), (3, 5)),
    ("ReLU", nn.ReLU, (3, 4)),
    ("LeakyReLU", lambda: nn.LeakyReLU(0.1), (3, 4)),
    ("LeakyReLU negative slope", lambda: nn.LeakyReLU(-0.5), (3, 4)),
    ("Tanh", nn.Tanh, (3, 4)),
    ("Sigmoid", nn.Sigmoid, (3, 4)),
    ("SELU", nn.SELU, (3, 4)),
    ("Identity", nn.Identity, (3, 4)),
    ("BatchNorm1d", lambda: nn.BatchNorm1d(4), (3, 4)),
    ("BatchNorm2d", lambda: nn.BatchNorm2d(2), X4),
    ("BatchNorm2d eval", lambda: nn.BatchNorm2d(2).eval(), X4),
    ("LayerNorm", lambda: nn.LayerNorm((6, 5)), X4),
    ("MaxPool2d", lambda: nn.MaxPool2d(2), X4),
    ("AvgPool2d", lambda: nn.AvgPool2d((2, 3), stride=1, padding=1), X4),
    ("AdaptiveAvgPool2d", lambda: nn.AdaptiveAvgPool2d((2, 3)), X4),
    ("AdaptiveAvgPool2d global", lambda: nn.AdaptiveAvgPool2d(1), X4),
    ("Flatten", nn.Flatten, X4),
    ("Dropout", lambda: nn.Dropout(0.3), (3, 4)),
    ("Dropout eval", lambda: nn.Dropout(0.3).eval(), (3, 4)),
    ("ChannelPad", lambda: nn.ChannelPad(2, 3), X4),
    ("Residual", lambda: nn.Residual(nn.Linear(4, 4), nn.Tanh(), activation=nn.ReLU()), (3, 4)),
]


@pytest.mark.parametrize("name, make, shape", LAYERS, ids=[c[0] for c in LAYERS])
def test_forward_keeps_only_saved_and_backward_drops_it(name, make, shape, rng):
    layer = make()
    before = set(vars(layer))
    y = layer(rng.standard_normal(shape).astype(np.float32))
    added = set(vars(layer)) - before
    assert added <= {"_activation_stats"}, f"{name}: forward added {sorted(added)}; use save_for_backward"
    layer.backward(rng.standard_normal(np.shape(y)).astype(np.float32))
    for module in layer.modules():
        assert module.saved is None, f"{name}: {type(module).__name__}.saved outlived backward"


@pytest.mark.parametrize("make, target", [
    (nn.CrossEntropyLoss, np.array([0, 2, 1])),
    (nn.MSELoss, np.zeros((3, 4), np.float32)),
    (nn.DotProductLoss, np.ones((3, 4), np.float32)),
])
def test_losses_use_saved_too(make, target, rng):
    crit = make()
    before = set(vars(crit))
    crit(rng.standard_normal((3, 4)).astype(np.float32), target)
    assert set(vars(crit)) - before == set() and crit.saved is not None
    crit.backward()
    assert crit.saved is None
    with pytest.raises(RuntimeError, match="twice"):
        crit.backward()
