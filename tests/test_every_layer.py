"""Properties every layer shares, checked generically over one example of every layer type in ``minigrad.nn``.

- An empty batch (N = 0) goes through forward and backward as in PyTorch: the output has the shape a
  batch would give with 0 rows, backward returns zeros of the input's shape and adds nothing to any
  parameter gradient, running statistics stay as they were (``num_batches_tracked`` still counts the call
  where a batch would: BatchNorm in training, as PyTorch's); a loss over no examples is NaN for
  ``reduction="mean"`` (0 / 0) and 0 for ``"sum"``. (PyTorch's InstanceNorm2d with running statistics
  fails on an empty batch; ours does what the others do.)
- Parameter gradients accumulate: two forward/backward pairs leave in ``.grad`` what was there plus the
  gradients of both pairs (``+=``, never ``=``; gradcheck zeroes the gradients first, so it cannot tell).

``test_every_layer_type_has_an_example`` fails when a layer is added to ``minigrad.nn`` without an example
here, so a new layer gets these checks too.
"""
import copy
import inspect
import re

import numpy as np
import pytest

from minigrad import nn
from minigrad.nn.module import Module

# name -> (factory, shape of one example without the batch axis). Several examples of a layer where its
# backward takes different paths (Conv2d: stride 1 with the flipped kernel, or strided / widening through
# col2im; batch norm with and without running statistics or affine parameters).
LAYERS = {
    "Linear": (lambda: nn.Linear(4, 3), (4,)),
    "Linear on (N, L, C)": (lambda: nn.Linear(4, 3, bias=False), (2, 4)),
    "Conv2d": (lambda: nn.Conv2d(3, 4, (3, 2), padding=(1, 0)), (3, 5, 4)),
    "Conv2d strided": (lambda: nn.Conv2d(2, 3, (3, 2), stride=(2, 1), padding=1), (2, 5, 6)),
    "Conv2d widening": (lambda: nn.Conv2d(1, 3, 3, bias=False), (1, 4, 5)),
    "BatchNorm1d": (lambda: nn.BatchNorm1d(3), (3,)),
    "BatchNorm1d on (N, C, L)": (lambda: nn.BatchNorm1d(3, momentum=None), (3, 4)),
    "BatchNorm2d": (lambda: nn.BatchNorm2d(3), (3, 4, 5)),
    "BatchNorm2d without running statistics": (lambda: nn.BatchNorm2d(2, track_running_stats=False), (2, 3, 3)),
    "BatchNorm2d without affine": (lambda: nn.BatchNorm2d(2, affine=False), (2, 3, 3)),
    "LayerNorm": (lambda: nn.LayerNorm((3, 4)), (3, 4)),
    "GroupNorm": (lambda: nn.GroupNorm(2, 4), (4, 3, 2)),
    "GroupNorm on (N, C)": (lambda: nn.GroupNorm(3, 6, affine=False), (6,)),
    "InstanceNorm2d": (lambda: nn.InstanceNorm2d(3), (3, 4, 3)),
    "InstanceNorm2d with affine and running statistics": (
        lambda: nn.InstanceNorm2d(2, affine=True, track_running_stats=True), (2, 3, 4)),
    "ReLU": (nn.ReLU, (5,)),
    "LeakyReLU": (lambda: nn.LeakyReLU(0.1), (2, 3)),
    "Tanh": (nn.Tanh, (5,)),
    "Sigmoid": (nn.Sigmoid, (5,)),
    "SELU": (nn.SELU, (5,)),
    "Identity": (nn.Identity, (5,)),
    "MaxPool2d": (lambda: nn.MaxPool2d(2), (2, 4, 5)),
    "AvgPool2d": (lambda: nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False), (2, 5, 6)),
    "AdaptiveAvgPool2d global": (lambda: nn.AdaptiveAvgPool2d(1), (2, 4, 5)),
    "AdaptiveAvgPool2d": (lambda: nn.AdaptiveAvgPool2d((2, 3)), (2, 5, 5)),
    "Flatten": (nn.Flatten, (2, 3, 3)),
    "Dropout": (lambda: nn.Dropout(0.3), (6,)),
    "Sequential": (lambda: nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 2)), (4,)),
    "Residual": (lambda: nn.Residual(nn.Sequential(nn.Conv2d(2, 2, 3, padding=1, bias=False), nn.BatchNorm2d(2), nn.ReLU())),
                 (2, 4, 4)),
    "Residual with a shortcut": (lambda: nn.Residual(nn.Conv2d(2, 4, 3, stride=2, padding=1),
                                                     shortcut=nn.ConvShortcut(2, 4, 2, batch_norm=True)), (2, 5, 5)),
    "ConvShortcut": (lambda: nn.ConvShortcut(2, 3, 2), (2, 5, 4)),
    "AvgPoolShortcut": (lambda: nn.AvgPoolShortcut(2, 3, 2), (2, 5, 4)),
    "ChannelPad": (lambda: nn.ChannelPad(2, 3), (2, 4)),
}

# name -> (factory, input shape without the batch axis, target maker(rng, n))
LOSSES = {
    "CrossEntropyLoss": (nn.CrossEntropyLoss, (4,), lambda rng, n: rng.integers(0, 4, n)),
    "CrossEntropyLoss sum": (lambda: nn.CrossEntropyLoss(reduction="sum"), (4,), lambda rng, n: rng.integers(0, 4, n)),
    "MSELoss": (nn.MSELoss, (2, 3), lambda rng, n: rng.standard_normal((n, 2, 3))),
    "MSELoss sum": (lambda: nn.MSELoss(reduction="sum"), (3,), lambda rng, n: rng.standard_normal((n, 3))),
    "DotProductLoss": (nn.DotProductLoss, (3,), lambda rng, n: rng.standard_normal((n, 3))),
    "DotProductLoss sum": (lambda: nn.DotProductLoss(reduction="sum"), (3,), lambda rng, n: rng.standard_normal((n, 3))),
}

WITH_PARAMETERS = [name for name, (make, _) in LAYERS.items() if any(True for _ in make().parameters())]


def test_every_layer_type_has_an_example():
    exported = {obj for _, obj in inspect.getmembers(nn, inspect.isclass)
                if issubclass(obj, Module) and obj is not Module and not obj.__name__.startswith("_")}
    covered = set()
    for make, *_ in list(LAYERS.values()) + list(LOSSES.values()):
        covered.update(type(m) for m in make().modules())
    missing = sorted(cls.__name__ for cls in exported - covered)
    assert not missing, f"add an example of {missing} to LAYERS or LOSSES in {__file__}"


def _state(module):
    return {name: np.array(value, copy=True) for name, value in module.state_dict().items()}


# ----------------------------------------------------------------------------------------- empty batch
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("name", list(LAYERS))
def test_empty_batch_goes_through_as_in_pytorch(name, train):
    make, shape = LAYERS[name]
    rng = np.random.default_rng(0)
    module = make().train(train)
    probe = copy.deepcopy(module)  # what a batch of two gives, for the expected shapes, dtypes and counts
    y2 = probe(rng.standard_normal((2,) + shape).astype(np.float32))
    dx2 = probe.backward(np.ones_like(y2))
    counted = {k: v for k, v in _state(probe).items() if k.endswith("num_batches_tracked")}
    for p in module.parameters():
        p.grad[...] = rng.standard_normal(p.shape)
    grads = [p.grad.copy() for p in module.parameters()]
    before = _state(module)

    x = np.zeros((0,) + shape, np.float32)
    y = module(x)
    assert isinstance(y, np.ndarray) and y.shape == (0,) + y2.shape[1:] and y.dtype == y2.dtype
    grad_input = module.backward(np.zeros(y.shape, y.dtype))
    assert isinstance(grad_input, np.ndarray) and grad_input.shape == x.shape and grad_input.dtype == dx2.dtype
    for p, grad in zip(module.parameters(), grads):
        np.testing.assert_array_equal(p.grad, grad)  # nothing added
    after = _state(module)
    for key, value in before.items():
        if key in counted:
            assert after[key] == counted[key], key  # counted as a batch would be (running statistics stay)
        else:
            np.testing.assert_array_equal(after[key], value, err_msg=key)
    with pytest.raises(RuntimeError, match="twice"):
        module.backward(np.zeros(y.shape, y.dtype))


@pytest.mark.parametrize("name", list(LOSSES))
def test_loss_of_an_empty_batch_is_nan_for_mean_and_zero_for_sum(name):
    make, shape, target = LOSSES[name]
    crit = make()
    x = np.zeros((0,) + shape)
    loss = crit(x, target(np.random.default_rng(0), 0))
    assert isinstance(loss, float)
    if crit.reduction == "mean":
        assert np.isnan(loss)
    else:
        assert loss == 0.0
    grad = crit.backward()
    assert isinstance(grad, np.ndarray) and grad.shape == x.shape


@pytest.mark.torch
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_empty_batch_matches_torch(train):
    torch = pytest.importorskip("torch")
    pairs = [(nn.Linear(4, 3), torch.nn.Linear(4, 3), (4,)),
             (nn.Conv2d(2, 3, 3, stride=2), torch.nn.Conv2d(2, 3, 3, stride=2), (2, 5, 5)),
             (nn.BatchNorm1d(3), torch.nn.BatchNorm1d(3), (3,)),
             (nn.BatchNorm2d(3, momentum=None), torch.nn.BatchNorm2d(3, momentum=None), (3, 4, 4)),
             (nn.LayerNorm(4), torch.nn.LayerNorm(4), (4,)),
             (nn.GroupNorm(2, 4), torch.nn.GroupNorm(2, 4), (4, 3, 3)),
             (nn.InstanceNorm2d(3), torch.nn.InstanceNorm2d(3), (3, 4, 4)),
             (nn.MaxPool2d(2), torch.nn.MaxPool2d(2), (2, 4, 4)),
             (nn.AvgPool2d(2), torch.nn.AvgPool2d(2), (2, 4, 4)),
             (nn.AdaptiveAvgPool2d((2, 3)), torch.nn.AdaptiveAvgPool2d((2, 3)), (2, 5, 5)),
             (nn.Flatten(), torch.nn.Flatten(), (2, 3, 3)),
             (nn.Dropout(0.5), torch.nn.Dropout(0.5), (4,)),
             (nn.ReLU(), torch.nn.ReLU(), (4,))]
    for ours, theirs, shape in pairs:
        ours.train(train)
        theirs.train(train)
        x = torch.zeros((0,) + shape, requires_grad=True)
        y_t = theirs(x)
        y_t.sum().backward()
        y = ours(np.zeros((0,) + shape, np.float32))
        assert y.shape == tuple(y_t.shape), type(ours).__name__
        assert ours.backward(np.zeros(y.shape, np.float32)).shape == tuple(x.grad.shape)
        for key, value in theirs.named_buffers():  # running statistics and num_batches_tracked
            np.testing.assert_array_equal(ours.state_dict()[key], value.numpy(), err_msg=f"{ours} {key}")
    for reduction in ("mean", "sum"):
        ours = nn.CrossEntropyLoss(reduction=reduction)(np.zeros((0, 4)), np.zeros(0, np.int64))
        theirs = torch.nn.CrossEntropyLoss(reduction=reduction)(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))
        np.testing.assert_equal(ours, theirs.item())
        ours = nn.MSELoss(reduction=reduction)(np.zeros((0, 4)), np.zeros((0, 4)))
        np.testing.assert_equal(ours, torch.nn.MSELoss(reduction=reduction)(torch.zeros(0, 4), torch.zeros(0, 4)).item())


# ----------------------------------------------------------------------------------------- accumulation
def _pair(module, x, g):
    module(x)
    module.backward(g)


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("name", WITH_PARAMETERS)
def test_two_backward_passes_add_both_gradients_to_what_was_there(name, train):
    make, shape = LAYERS[name]
    rng = np.random.default_rng(1)
    start = make().double().train(train)
    for p in start.parameters():  # never the identity: a layer that ignores them would not show
        p.data[...] = rng.uniform(0.5, 1.5, p.shape) * np.sign(rng.standard_normal(p.shape))
    x1, x2 = (rng.standard_normal((3,) + shape) for _ in range(2))
    y = copy.deepcopy(start)(x1)
    g1, g2 = (rng.standard_normal(y.shape) + 0.5 for _ in range(2))

    alone1 = copy.deepcopy(start)
    alone1.zero_grad()
    _pair(alone1, x1, g1)
    alone2 = copy.deepcopy(start)
    _pair(alone2, x1, g1)  # the second pair sees the state (running statistics) the first one left
    alone2.zero_grad()
    _pair(alone2, x2, g2)

    both = copy.deepcopy(start)
    for p in both.parameters():
        p.grad[...] = rng.standard_normal(p.shape)
    initial = {n: p.grad.copy() for n, p in both.named_parameters()}
    _pair(both, x1, g1)
    _pair(both, x2, g2)
    one, two = dict(alone1.named_parameters()), dict(alone2.named_parameters())
    for n, p in both.named_parameters():
        assert np.abs(one[n].grad).max() > 0 and np.abs(two[n].grad).max() > 0, n  # a gradient to add
        np.testing.assert_allclose(p.grad, initial[n] + one[n].grad + two[n].grad, rtol=1e-12, atol=1e-12,
                                   err_msg=f"{name}: {n}.grad is not the sum of what it held and both passes")


# ----------------------------------------------------------------------------------------- integer arguments
# Every integer argument of a layer's constructor refuses what Conv2d refuses: a bool (True is an int to
# Python, so Linear(4, True) would silently be Linear(4, 1)), a float, a string, and sizes below 1.
BAD_INTEGER_ARGUMENTS = [
    ("Linear", "out_features", True, lambda: nn.Linear(4, True)),
    ("Linear", "in_features", False, lambda: nn.Linear(False, 3)),
    ("Linear", "out_features", 2.5, lambda: nn.Linear(4, 2.5)),
    ("Linear", "in_features", "4", lambda: nn.Linear("4", 3)),
    ("Linear", "out_features", 0, lambda: nn.Linear(4, 0)),
    ("Conv2d", "in_channels", True, lambda: nn.Conv2d(True, 3, 3)),
    ("Conv2d", "kernel_size", True, lambda: nn.Conv2d(2, 3, True)),
    ("BatchNorm1d", "num_features", True, lambda: nn.BatchNorm1d(True)),
    ("BatchNorm2d", "num_features", 3.0, lambda: nn.BatchNorm2d(3.0)),
    ("BatchNorm2d", "num_features", 0, lambda: nn.BatchNorm2d(0)),
    ("LayerNorm", "normalized_shape", True, lambda: nn.LayerNorm(True)),
    ("LayerNorm", "normalized_shape", (3, True), lambda: nn.LayerNorm((3, True))),
    ("LayerNorm", "normalized_shape", 4.0, lambda: nn.LayerNorm(4.0)),
    ("GroupNorm", "num_groups", True, lambda: nn.GroupNorm(True, 4)),
    ("GroupNorm", "num_channels", 4.0, lambda: nn.GroupNorm(2, 4.0)),
    ("InstanceNorm2d", "num_features", True, lambda: nn.InstanceNorm2d(True)),
    ("MaxPool2d", "kernel_size", True, lambda: nn.MaxPool2d(True)),
    ("AvgPool2d", "stride", (2, True), lambda: nn.AvgPool2d(2, stride=(2, True))),
    ("AvgPool2d", "divisor_override", True, lambda: nn.AvgPool2d(2, divisor_override=True)),
    ("AdaptiveAvgPool2d", "output_size", True, lambda: nn.AdaptiveAvgPool2d(True)),
    ("Flatten", "start_dim", True, lambda: nn.Flatten(True)),
    ("ChannelPad", "out_channels", True, lambda: nn.ChannelPad(1, True)),
    ("ChannelPad", "in_channels", 2.0, lambda: nn.ChannelPad(2.0, 3)),
    ("AvgPoolShortcut", "stride", True, lambda: nn.AvgPoolShortcut(2, 3, True)),
    ("AvgPoolShortcut", "in_channels", 0, lambda: nn.AvgPoolShortcut(0, 3, 2)),
    ("Conv2d", "stride", True, lambda: nn.ConvShortcut(2, 3, True)),
]


@pytest.mark.parametrize("layer, argument, value, make", BAD_INTEGER_ARGUMENTS,
                         ids=[f"{layer}-{argument}={value!r}" for layer, argument, value, _ in BAD_INTEGER_ARGUMENTS])
def test_integer_arguments_refuse_bools_floats_strings_and_sizes_below_one(layer, argument, value, make):
    with pytest.raises((TypeError, ValueError), match=rf"{layer}.*{argument}.*{re.escape(repr(value))}"):
        make()


def test_integer_arguments_accept_numpy_integers():
    assert nn.Linear(np.int64(4), np.int32(3)).weight.shape == (3, 4)
    assert nn.LayerNorm((np.int64(2), 3)).normalized_shape == (2, 3)
    assert nn.BatchNorm2d(np.int16(2)).num_features == 2
    assert nn.ChannelPad(np.int64(1), 2).out_channels == 2
