"""The coursework's VGG architectures: shapes, parameter counts, BN placement, the residual skips."""
import numpy as np
import pytest

import minigrad
from minigrad import nn
from minigrad.models.vgg import VGG, build_vgg, parse_vgg_name, processing_block, reduction_block


@pytest.mark.parametrize("name, params", [
    ("VGG08", 59_716), ("VGG38", 336_196), ("VGG38_RC", 336_196),
    ("VGG38_BN", 338_500), ("VGG38_BN_RC", 338_500),
])
def test_parameter_counts_match_the_course(name, params):
    assert build_vgg(name, num_classes=100).num_parameters() == params


def test_parse_names():
    assert parse_vgg_name("VGG08") == dict(num_blocks_per_stage=0, batch_norm=False, residual=False)
    assert parse_vgg_name("VGG38_BN_RC") == dict(num_blocks_per_stage=5, batch_norm=True, residual=True)
    assert parse_vgg_name("vgg20_rc")["num_blocks_per_stage"] == 2
    for bad in ("VGG10", "ResNet38", "VGG38_XY"):
        with pytest.raises(ValueError):
            parse_vgg_name(bad)


def test_layer_names_read_well_in_forward_order():
    names = [n for n, _ in build_vgg("VGG38_BN", num_classes=10).named_parameters()]
    assert names[:3] == ["entry.conv.weight", "entry.bn.weight", "entry.bn.bias"]
    assert names[3:7] == ["stage0.block0.conv0.weight", "stage0.block0.bn0.weight",
                          "stage0.block0.bn0.bias", "stage0.block0.conv1.weight"]
    assert "stage2.block4.conv1.weight" in names
    assert "stage2.reduce.conv0.weight" in names and "stage2.reduce.conv0.bias" in names
    assert names[-2:] == ["head.linear.weight", "head.linear.bias"]
    conv_weights = [n for n in names if "conv" in n and n.endswith("weight")]
    assert len(conv_weights) == 37  # 1 entry + 3 * (5 * 2 + 2)


def test_biases_as_in_the_course():
    model = build_vgg("VGG38", num_classes=10)
    assert model.stage0.block0.conv0.bias is None and model.entry.conv.bias is None
    assert model.stage0.reduce.conv0.bias is not None and model.stage0.reduce.conv1.bias is not None


@pytest.mark.parametrize("name", ["VGG08", "VGG38_BN_RC"])
def test_output_shape_and_backward_shape(name, rng):
    model = build_vgg(name, num_classes=7)
    x = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)
    y = model(x)
    assert y.shape == (2, 7) and y.dtype == np.float32
    gx = model.backward(rng.standard_normal(y.shape).astype(np.float32))
    assert gx.shape == x.shape
    assert all(np.isfinite(p.grad).all() for p in model.parameters())


def test_bn_sits_between_conv_and_activation():
    block = processing_block(4, batch_norm=True, residual=False)
    assert type(block) is nn.Sequential
    assert [n for n, _ in block.named_children()] == ["conv0", "bn0", "act0", "conv1", "bn1", "act"]
    reduce = reduction_block(4, batch_norm=True)
    assert [n for n, _ in reduce.named_children()] == ["conv0", "bn0", "act0", "pool", "conv1", "bn1", "act"]
    assert isinstance(block.bn0, nn.BatchNorm2d) and isinstance(block.act0, nn.LeakyReLU)


def test_blocks_with_a_connection_are_residuals_with_the_same_names():
    block = processing_block(4, batch_norm=True, residual=True)
    assert type(block) is nn.Residual and block.shortcut is None and isinstance(block.act, nn.LeakyReLU)
    assert block.branch_names == ("conv0", "bn0", "act0", "conv1", "bn1")
    assert list(block.state_dict()) == list(processing_block(4, batch_norm=True).state_dict())
    reduce = reduction_block(4, batch_norm=True, shortcut="conv1x1")
    assert type(reduce) is nn.Residual and reduce.branch_names == ("conv0", "bn0", "act0", "pool", "conv1", "bn1")
    assert [n for n, _ in reduce.named_children()][-2:] == ["shortcut", "act"]
    assert list(reduce.state_dict())[-6:] == ["shortcut.conv.weight", "shortcut.bn.weight", "shortcut.bn.bias",
                                              "shortcut.bn.running_mean", "shortcut.bn.running_var",
                                              "shortcut.bn.num_batches_tracked"]
    assert reduction_block(4, shortcut="conv1x1").shortcut.conv.bias is not None  # no BN: the conv has a bias
    assert isinstance(reduction_block(4, shortcut="avgpool").shortcut, nn.AvgPool2d)
    with pytest.raises(ValueError, match="reduction_block: shortcut"):
        reduction_block(4, shortcut="conv3x3")


def test_residual_skip_adds_the_block_input_before_the_last_activation(rng):
    block = processing_block(3, residual=True).double()
    x = rng.standard_normal((2, 3, 5, 6))
    h = block.conv1(block.act0(block.conv0(x)))
    expected = np.where(h + x >= 0, h + x, 0.01 * (h + x))
    np.testing.assert_allclose(block(x), expected, rtol=1e-12, atol=1e-12)
    # Without the skip the same weights give act(h).
    plain = processing_block(3, residual=False).double()
    plain.load_state_dict(block.state_dict())
    np.testing.assert_allclose(plain(x), np.where(h >= 0, h, 0.01 * h), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shortcut", ["none", "avgpool", "conv1x1"])
@pytest.mark.parametrize("batch_norm", [False, True])
def test_reduction_block_shortcuts_gradcheck(shortcut, batch_norm):
    block = reduction_block(2, batch_norm=batch_norm, shortcut=shortcut)
    x = np.random.default_rng(0).standard_normal((3, 2, 6, 4))
    assert block.double()(x).shape == (3, 2, 3, 2)
    result = minigrad.gradcheck(block, x, seed=1)
    assert result.ok, str(result)


@pytest.mark.parametrize("batch_norm", [False, True])
@pytest.mark.parametrize("residual", [False, True])
def test_processing_block_gradcheck(batch_norm, residual):
    block = processing_block(2, batch_norm=batch_norm, residual=residual)
    result = minigrad.gradcheck(block, (2, 2, 5, 4), seed=3)
    assert result.ok, str(result)


def test_small_vgg_gradcheck_end_to_end():
    model = VGG(num_blocks_per_stage=1, num_classes=3, num_filters=2, batch_norm=True, residual=True,
                reduction_shortcut="conv1x1")
    x = np.random.default_rng(2).standard_normal((3, 3, 8, 8))
    result = minigrad.gradcheck(model, x, seed=4)
    assert result.ok, str(result)


def test_same_seed_same_model():
    minigrad.manual_seed(5)
    a = build_vgg("VGG08", num_classes=10).state_dict()
    minigrad.manual_seed(5)
    b = build_vgg("VGG08", num_classes=10).state_dict()
    assert all(np.array_equal(a[k], b[k]) for k in a)
