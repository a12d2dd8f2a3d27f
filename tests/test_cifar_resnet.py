"""He et al.'s CIFAR nets: depth, shapes, parameter counts (Table 6), the option-A shortcut, plain vs residual."""
import math

import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

import minigrad
from minigrad import nn
from minigrad.models.cifar_resnet import CifarResNet, blocks_for_depth, cifar_block, option_a_shortcut
from relu_kinks import MARGIN, input_away_from_kinks, relu_input_floor
from strategies import seeds


def _randomise_bn(model, rng):
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data[...] = rng.uniform(0.5, 1.5, m.num_features)
            m.bias.data[...] = rng.uniform(-0.5, 0.5, m.num_features)
            m.running_mean[...] = rng.uniform(-0.5, 0.5, m.num_features)
            m.running_var[...] = rng.uniform(0.5, 2.0, m.num_features)


# ----------------------------------------------------------------------------------------- depth, shapes, counts
@pytest.mark.parametrize("depth, params, paper", [(20, 269_722, 0.27), (32, 464_154, 0.46),
                                                  (44, 658_586, 0.66), (56, 853_018, 0.85),
                                                  (110, 1_727_962, 1.7)])
def test_parameter_counts_match_table_6(depth, params, paper):
    """Table 6 (millions): 0.27, 0.46, 0.66, 0.85, 1.7; option-A shortcuts add none, so plain = residual."""
    for residual in (True, False):
        model = CifarResNet(depth, residual=residual)
        assert model.num_parameters() == params
    assert round(params / 1e6, 2 if depth < 110 else 1) == paper


@pytest.mark.parametrize("depth", [8, 20, 56])
def test_depth_counts_weighted_layers_and_blocks(depth):
    model = CifarResNet(depth)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert len(convs) + len(linears) == depth  # 6n + 2: stem conv, 6n block convs, one linear
    assert len([m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]) == len(convs)  # BN after every conv
    n = blocks_for_depth(depth)
    for i in range(3):
        assert len(getattr(model, f"stage{i}")) == n
    assert all(c.kernel_size == (3, 3) and c.bias is None for c in convs)
    assert model.label == f"resnet-{depth}" and CifarResNet(depth, residual=False).label == f"plain-{depth}"


def test_feature_map_sizes_and_output(rng):
    model = CifarResNet(20).eval()
    x = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)
    h = model.stem(x)
    assert h.shape == (2, 16, 32, 32)
    for stage, shape in (("stage0", (16, 32, 32)), ("stage1", (32, 16, 16)), ("stage2", (64, 8, 8))):
        h = getattr(model, stage)(h)
        assert h.shape == (2,) + shape
    assert model.head(h).shape == (2, 10) and model(x).shape == (2, 10)
    assert model.stage1.block0.conv0.stride == (2, 2) and model.stage1.block1.conv0.stride == (1, 1)


@pytest.mark.parametrize("depth", [7, 21, 2, "20", True])
def test_depth_must_be_6n_plus_2(depth):
    with pytest.raises(ValueError, match="6n \\+ 2"):
        CifarResNet(depth)


def test_he_normal_fan_in_init():
    minigrad.manual_seed(0)
    model = CifarResNet(20)
    w = model.stage2.block1.conv1.weight.data  # 64 x 64 x 3 x 3: 36,864 draws
    assert abs(w.mean()) < 0.003 and w.std() == pytest.approx(math.sqrt(2 / (64 * 9)), rel=0.02)
    w = model.stage1.block0.conv0.weight.data  # fan_in 16 * 9 (fan_out would be 32 * 9)
    assert w.std() == pytest.approx(math.sqrt(2 / (16 * 9)), rel=0.05)
    bn = model.stage0.block0.bn1
    assert np.all(bn.weight.data == 1) and np.all(bn.bias.data == 0)


# ----------------------------------------------------------------------------------------- the option-A shortcut
def test_option_a_shortcut_is_subsampling_and_zero_channels(rng):
    assert option_a_shortcut(16, 16, 1) is None  # the identity
    shortcut = option_a_shortcut(3, 5, 2).double()
    x = rng.standard_normal((2, 3, 7, 6))
    y = shortcut(x)
    expected = np.zeros((2, 5, 4, 3))
    expected[:, :3] = x[:, :, ::2, ::2]
    np.testing.assert_array_equal(y, expected)
    g = rng.standard_normal(y.shape)
    grad = np.zeros_like(x)
    grad[:, :, ::2, ::2] = g[:, :3]
    np.testing.assert_array_equal(shortcut.backward(g), grad)
    assert shortcut.num_parameters() == 0


def test_residual_block_is_the_plain_block_plus_the_shortcut(rng):
    """Same seed, same parameters under the same names; y_res = relu(pre + shortcut(x)), y_plain = relu(pre)."""
    for c_in, c_out, stride in ((4, 4, 1), (4, 8, 2)):
        minigrad.manual_seed(1)
        res = cifar_block(c_in, c_out, stride, residual=True).double()
        minigrad.manual_seed(1)
        plain = cifar_block(c_in, c_out, stride, residual=False).double()
        names = [n for n, _ in res.named_children()]
        assert [n for n in names if n != "shortcut"] == [n for n, _ in plain.named_children()]
        assert ("shortcut" in names) == (stride > 1)
        s_res, s_plain = res.state_dict(), plain.state_dict()
        assert list(s_res) == list(s_plain) and all(np.array_equal(s_res[k], s_plain[k]) for k in s_res)
        x = rng.standard_normal((3, c_in, 6, 6))
        pre = x
        for name in ("conv0", "bn0", "relu0", "conv1", "bn1"):
            pre = getattr(plain, name)(pre)
        skip = x if stride == 1 else option_a_shortcut(c_in, c_out, stride).double()(x)
        np.testing.assert_allclose(res(x), np.maximum(pre + skip, 0), rtol=0, atol=1e-12)
        np.testing.assert_allclose(plain(x), np.maximum(pre, 0), rtol=0, atol=1e-12)


def test_whole_nets_differ_only_by_shortcuts():
    minigrad.manual_seed(2)
    res = CifarResNet(14, residual=True)
    minigrad.manual_seed(2)
    plain = CifarResNet(14, residual=False)
    a, b = res.state_dict(), plain.state_dict()
    assert list(a) == list(b) and all(np.array_equal(a[k], b[k]) for k in a)
    extra = {n for n, _ in res.named_modules()} - {n for n, _ in plain.named_modules()}
    assert extra == {"stage1.block0.shortcut", "stage1.block0.shortcut.subsample", "stage1.block0.shortcut.pad",
                     "stage2.block0.shortcut", "stage2.block0.shortcut.subsample", "stage2.block0.shortcut.pad"}
    assert all(isinstance(m, nn.Residual) for _, m in res.stage0.named_children())
    assert not any(isinstance(m, nn.Residual) for m in plain.modules())


# ----------------------------------------------------------------------------------------- gradients
@settings(max_examples=12, deadline=None)
@given(c_in=st.integers(1, 3), extra=st.integers(0, 2), stride=st.sampled_from([1, 2]),
       hw=st.tuples(st.integers(3, 6), st.integers(3, 6)), residual=st.booleans(), training=st.booleans(), seed=seeds)
def test_block_gradcheck(c_in, extra, stride, hw, residual, training, seed):
    """Finite differences (float64, random upstream gradient) through a block, option-A shortcut included."""
    rng = np.random.default_rng(seed)
    block = cifar_block(c_in, c_in + extra, stride, residual=residual)
    _randomise_bn(block, rng)
    block.train(training)
    x = rng.standard_normal((3, c_in) + hw)
    assume(relu_input_floor(block, x) > MARGIN)
    result = minigrad.gradcheck(block, x, seed=seed % 1000)
    assert result.ok, str(result)


@pytest.mark.parametrize("residual", [True, False])
def test_tiny_net_gradcheck_end_to_end(residual):
    rng = np.random.default_rng(3)
    minigrad.manual_seed(3)
    model = CifarResNet(8, residual=residual, num_filters=(2, 3, 4), num_classes=3)
    _randomise_bn(model, rng)
    x = input_away_from_kinks(model, rng, (3, 3, 8, 7))
    result = minigrad.gradcheck(model, x, seed=5)
    assert result.ok, str(result)
