"""Residual and the downsampling shortcuts: gradients, the sum rule, names, shapes, errors."""
from collections import OrderedDict

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minigrad import gradcheck, manual_seed, nn

EPS_FD = 1e-5  # finite-difference step; see test_activation.EPS for why not 1e-6


def conv_branch(c_in, c_out, stride, batch_norm):
    """A ResNet basic-block branch: conv3x3(stride) [BN] ReLU-free (smooth for gradcheck) conv3x3."""
    layers = OrderedDict(conv0=nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=not batch_norm))
    if batch_norm:
        layers["bn0"] = nn.BatchNorm2d(c_out)
    layers["act0"] = nn.Tanh()
    layers["conv1"] = nn.Conv2d(c_out, c_out, (3, 1), padding=(1, 0))
    return layers


@given(n=st.integers(1, 4), width=st.integers(1, 5), depth=st.integers(1, 2), seed=st.integers(0, 2**16))
def test_gradcheck_identity_shortcut_mlp(n, width, depth, seed):
    manual_seed(seed)
    layers = []
    for _ in range(depth):
        layers += [nn.Linear(width, width), nn.Tanh()]
    block = nn.Residual(*layers)
    res = gradcheck(block, np.random.default_rng([seed, 1]).standard_normal((n, width)), seed=seed, eps=EPS_FD)
    assert res.ok, str(res)


@given(n=st.integers(2, 3), c_in=st.integers(1, 3), extra=st.integers(0, 3), h=st.integers(2, 7),
       w=st.integers(2, 7), stride=st.integers(1, 3), kind=st.sampled_from(["conv", "conv+bn", "avgpool"]),
       training=st.booleans(), seed=st.integers(0, 2**16))
def test_gradcheck_downsampling_shortcuts(n, c_in, extra, h, w, stride, kind, training, seed):
    manual_seed(seed)
    c_out = c_in + extra
    batch_norm = kind == "conv+bn"
    if kind == "avgpool":
        shortcut = nn.AvgPoolShortcut(c_in, c_out, stride)
    else:
        shortcut = nn.ConvShortcut(c_in, c_out, stride, batch_norm=batch_norm)
    block = nn.Residual(conv_branch(c_in, c_out, stride, batch_norm), shortcut=shortcut).train(training)
    x = np.random.default_rng([seed, 1]).standard_normal((n, c_in, h, w))
    y = block(x)
    assert y.shape == (n, c_out, -(-h // stride), -(-w // stride))  # ceil(H / stride), odd sizes too
    res = gradcheck(block, x, seed=seed, eps=EPS_FD)
    assert res.ok, str(res)


@given(n=st.integers(1, 3), c_in=st.integers(1, 4), extra=st.integers(0, 3),
       spatial=st.lists(st.integers(1, 4), min_size=0, max_size=2), seed=st.integers(0, 2**16))
def test_gradcheck_channel_pad(n, c_in, extra, spatial, seed):
    pad = nn.ChannelPad(c_in, c_in + extra)
    res = gradcheck(pad, np.random.default_rng([seed, 1]).standard_normal((n, c_in, *spatial)), seed=seed)
    assert res.ok, str(res)


def test_forward_and_backward_are_sums(rng):
    manual_seed(0)
    branch, shortcut = nn.Linear(4, 3).double(), nn.Linear(4, 3, bias=False).double()
    block = nn.Residual(branch, shortcut=shortcut)
    ref_branch, ref_shortcut = nn.Linear(4, 3).double(), nn.Linear(4, 3, bias=False).double()
    ref_branch.load_state_dict(branch.state_dict())
    ref_shortcut.load_state_dict(shortcut.state_dict())
    x, g = rng.standard_normal((5, 4)), rng.standard_normal((5, 3))
    np.testing.assert_allclose(block(x), ref_branch(x) + ref_shortcut(x), rtol=1e-14)
    dx = block.backward(g)
    np.testing.assert_allclose(dx, ref_branch.backward(g) + ref_shortcut.backward(g), rtol=1e-14)
    np.testing.assert_allclose(branch.weight.grad, ref_branch.weight.grad, rtol=1e-14)
    np.testing.assert_allclose(shortcut.weight.grad, ref_shortcut.weight.grad, rtol=1e-14)


def test_activation_after_the_sum(rng):
    """y = act(branch(x) + shortcut(x)); dx = branch'(g_s) + shortcut'(g_s) with g_s = act'(g)."""
    manual_seed(1)
    branch, shortcut = nn.Linear(4, 4).double(), nn.Linear(4, 4, bias=False).double()
    block = nn.Residual(branch, shortcut=shortcut, activation=nn.Tanh())
    ref_branch, ref_shortcut = nn.Linear(4, 4).double(), nn.Linear(4, 4, bias=False).double()
    ref_branch.load_state_dict(branch.state_dict())
    ref_shortcut.load_state_dict(shortcut.state_dict())
    x, g = rng.standard_normal((5, 4)), rng.standard_normal((5, 4))
    s = ref_branch(x) + ref_shortcut(x)
    np.testing.assert_allclose(block(x), np.tanh(s), rtol=1e-14)
    g_s = g * (1 - np.tanh(s) ** 2)
    np.testing.assert_allclose(block.backward(g), ref_branch.backward(g_s) + ref_shortcut.backward(g_s), rtol=1e-13)
    np.testing.assert_allclose(branch.weight.grad, ref_branch.weight.grad, rtol=1e-13)


@given(n=st.integers(1, 4), width=st.integers(1, 5), shortcut=st.booleans(), seed=st.integers(0, 2**16))
def test_gradcheck_with_activation(n, width, shortcut, seed):
    manual_seed(seed)
    block = nn.Residual(nn.Linear(width, width), nn.Tanh(), nn.Linear(width, width),
                        shortcut=nn.Linear(width, width) if shortcut else None, activation=nn.Sigmoid())
    x = np.random.default_rng([seed, 1]).standard_normal((n, width))
    res = gradcheck(block, x, seed=seed, eps=EPS_FD)
    assert res.ok, str(res)


def test_identity_shortcut_passes_gradient_unchanged(rng):
    """A branch whose output is constant (zero weights) leaves y = x + b and dx = g exactly."""
    branch = nn.Linear(3, 3)
    branch.weight.data[...] = 0
    block = nn.Residual(branch)
    x, g = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    np.testing.assert_allclose(block(x), x + branch.bias.data, rtol=1e-7)
    np.testing.assert_array_equal(block.backward(g), g)


def test_names_and_state_dict():
    block = nn.Residual(conv_branch(2, 4, 2, True), shortcut=nn.ConvShortcut(2, 4, 2, batch_norm=True),
                        activation=nn.ReLU())
    model = nn.Sequential(OrderedDict(block0=block))
    names = [name for name, _ in model.named_parameters()]
    assert names[0] == "block0.conv0.weight"  # the branch's layers are the block's own children
    assert "block0.shortcut.conv.weight" in names and "block0.shortcut.conv.bias" not in names
    assert "block0.shortcut.bn.running_var" in model.state_dict()
    assert [name for name, _ in block.named_children()] == ["conv0", "bn0", "act0", "conv1", "shortcut", "act"]
    assert block.branch_names == ("conv0", "bn0", "act0", "conv1") and block.branch[0] is block.conv0
    identity = nn.Residual(nn.Linear(3, 3))
    assert list(identity.state_dict()) == ["0.weight", "0.bias"] and identity.shortcut is None
    assert identity.act is None and [name for name, _ in identity.named_children()] == ["0"]
    assert list(nn.AvgPoolShortcut(2, 4, 2).state_dict()) == []  # parameter-free
    assert [k for k, _ in nn.AvgPoolShortcut(2, 2, 1).named_children()] == []  # the identity
    assert nn.ConvShortcut(2, 4, 2, bias=True).conv.bias is not None


def test_avgpool_shortcut_formula(rng):
    x = rng.standard_normal((2, 3, 5, 4))
    y = nn.AvgPoolShortcut(3, 5, 2)(x)
    assert y.shape == (2, 5, 3, 2)
    np.testing.assert_array_equal(y[:, 3:], 0)
    np.testing.assert_allclose(y[:, :3, :2], x[:, :, :4].reshape(2, 3, 2, 2, 2, 2).mean(axis=(3, 5)), rtol=1e-14)
    # The last row's windows are cut by the edge: they average only the pixels they cover.
    np.testing.assert_allclose(y[:, :3, 2], x[:, :, 4].reshape(2, 3, 2, 2).mean(axis=3), rtol=1e-14)


def test_channel_pad_formula(rng):
    pad = nn.ChannelPad(2, 5)
    x, g = rng.standard_normal((3, 2, 4)), rng.standard_normal((3, 5, 4))
    y = pad(x)
    np.testing.assert_array_equal(y[:, :2], x)
    np.testing.assert_array_equal(y[:, 2:], 0)
    np.testing.assert_array_equal(pad.backward(g), g[:, :2])


def test_shape_mismatch_is_a_clear_error():
    block = nn.Residual(nn.Conv2d(2, 4, 3, stride=2, padding=1))
    with pytest.raises(ValueError, match=r"Residual.*\(1, 4, 3, 3\).*\(1, 2, 5, 5\).*ConvShortcut or AvgPoolShortcut"):
        block(np.zeros((1, 2, 5, 5), dtype=np.float32))


def test_bad_arguments_and_input():
    with pytest.raises(TypeError, match="Residual: branch layer '0'"):
        nn.Residual(lambda x: x)
    with pytest.raises(TypeError, match="Residual: branch layer '0'"):
        nn.Residual(None)
    with pytest.raises(TypeError, match="Residual: give the branch's layers"):
        nn.Residual()
    with pytest.raises(TypeError, match="Residual: shortcut"):
        nn.Residual(nn.Identity(), shortcut="identity")
    with pytest.raises(TypeError, match="Residual: activation"):
        nn.Residual(nn.Identity(), activation="relu")
    with pytest.raises(ValueError, match="Residual: the name 'act'"):
        nn.Residual(OrderedDict(conv=nn.Linear(2, 2), act=nn.ReLU()))
    with pytest.raises(ValueError, match="AvgPoolShortcut.*out_channels"):
        nn.AvgPoolShortcut(4, 2, 2)
    with pytest.raises(ValueError, match="ChannelPad.*out_channels"):
        nn.ChannelPad(4, 2)
    with pytest.raises(ValueError, match=r"ChannelPad.*3 channels.*\(2, 4, 5\)"):
        nn.ChannelPad(3, 5)(np.zeros((2, 4, 5), dtype=np.float32))
    with pytest.raises(ValueError, match="ChannelPad"):
        nn.ChannelPad(3, 5)(np.zeros(3, dtype=np.float32))
    with pytest.raises(TypeError, match="ChannelPad.*int"):
        nn.ChannelPad(3, 5)(np.zeros((1, 3), dtype=np.int64))


def test_input_not_mutated_and_dtype(rng):
    block = nn.Residual(conv_branch(2, 3, 2, True), shortcut=nn.AvgPoolShortcut(2, 3, 2))
    x = rng.standard_normal((2, 2, 4, 4)).astype(np.float32)
    x0 = x.copy()
    y = block(x)
    assert y.dtype == np.float32
    dx = block.backward(rng.standard_normal(y.shape).astype(np.float32))
    assert dx.dtype == np.float32 and dx.shape == x.shape
    assert np.array_equal(x, x0)
    block.to(np.float64)
    assert block(x).dtype == np.float64


def test_models_write_no_backward_of_their_own():
    """One formula, one place: the models are built from nn layers; the residual sum lives here only."""
    from pathlib import Path

    import minigrad.models

    for path in Path(minigrad.models.__file__).parent.glob("*.py"):
        assert "def backward" not in path.read_text(), f"{path.name} defines a backward"


def test_a_shortcut_given_as_a_branch_layer_is_refused():
    """Residual(branch, ConvShortcut(...)) would silently make the shortcut a branch layer."""
    with pytest.raises(TypeError, match="shortcut=") as info:
        nn.Residual(nn.Conv2d(2, 4, 3, stride=2, padding=1), nn.ConvShortcut(2, 4, 2))
    assert "'1'" in str(info.value)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_residual_sum_kernel_is_numpys_sum(dtype, rng):
    """The block's sums run on the threads for large arrays (chunks, the last one partial): the same
    numbers as NumPy's a + b, non-contiguous inputs and NaN included; other cases are NumPy's own."""
    from minigrad.kernels.residual import CHUNK, add

    a = rng.standard_normal((3 * CHUNK + 77, 2)).astype(dtype)
    b = rng.standard_normal((2, 3 * CHUNK + 77)).astype(dtype).T  # a transposed view
    a[5, 1] = np.nan
    out = add(a, b)
    assert out.dtype == dtype and out.shape == a.shape and out.flags.c_contiguous
    np.testing.assert_array_equal(out, a + b)
    assert np.isnan(out[5, 1])
    mixed = add(a, b.astype(np.float16))
    assert mixed.dtype == np.result_type(dtype, np.float16)
    np.testing.assert_array_equal(mixed, a + b.astype(np.float16))
    np.testing.assert_array_equal(add(a[:3], b[:3]), a[:3] + b[:3])  # small: NumPy's
