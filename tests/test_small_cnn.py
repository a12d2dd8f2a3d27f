"""The normalisation study's SmallCNN: its layers per norm, shapes, parameter counts and backward."""
import numpy as np
import pytest

import minigrad
from minigrad import nn
from minigrad.models.small_cnn import NORMS, SmallCNN, make_norm


@pytest.mark.parametrize("norm, kind, groups", [("batch", nn.BatchNorm2d, None), ("group", nn.GroupNorm, 8),
                                                 ("layer", nn.GroupNorm, 1), ("instance", nn.InstanceNorm2d, None)])
def test_each_norm_is_the_layer_the_docstring_names(norm, kind, groups):
    model = SmallCNN(norm)
    layers = model.norm_layers()
    assert [name for name, _ in layers] == ["stage0.norm", "stage1.norm", "stage2.norm"]
    assert all(type(layer) is kind for _, layer in layers)
    if groups is not None:
        assert [layer.num_groups for _, layer in layers] == [groups] * 3
    if norm == "instance":  # a per-channel gamma and beta, as every other kind
        assert all(layer.affine and not layer.track_running_stats for _, layer in layers)
    assert not any(model._modules[f"stage{i}"].conv.bias is not None for i in range(3))


def test_no_norm_keeps_the_conv_biases_and_the_parameter_counts_add_up():
    plain, bn = SmallCNN("none"), SmallCNN("batch")
    assert plain.norm_layers() == [] and all(plain._modules[f"stage{i}"].conv.bias is not None for i in range(3))
    convs = 3 * 9 * 32 + 32 * 9 * 64 + 64 * 9 * 128
    assert plain.num_parameters() == convs + (32 + 64 + 128) + 128 * 10 + 10 == 94_538
    assert bn.num_parameters() == convs + 2 * (32 + 64 + 128) + 128 * 10 + 10 == 94_762
    assert all(SmallCNN(norm).num_parameters() == 94_762 for norm in NORMS[1:])


def test_forward_shape_names_and_group_cap():
    minigrad.manual_seed(0)
    model = SmallCNN("group", num_classes=7, widths=(4, 8, 16), groups=64)  # 64 groups: capped at the channels
    assert [layer.num_groups for _, layer in model.norm_layers()] == [4, 8, 16]
    y = model(np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32))
    assert y.shape == (3, 7) and y.dtype == np.float32
    names = list(dict(model.named_parameters()))
    assert names[:3] == ["stage0.conv.weight", "stage0.norm.weight", "stage0.norm.bias"]
    assert names[-2:] == ["head.linear.weight", "head.linear.bias"]


def test_bad_arguments_name_the_argument():
    with pytest.raises(ValueError, match="norm must be one of"):
        SmallCNN("weight")
    with pytest.raises(ValueError, match="norm must be one of"):
        make_norm("batchnorm", 8)
    with pytest.raises(ValueError, match="widths"):
        SmallCNN("none", widths=(8, 8))


@pytest.mark.parametrize("norm", NORMS)
def test_backward_matches_finite_differences(norm):
    minigrad.manual_seed(1)
    model = SmallCNN(norm, num_classes=3, widths=(2, 4, 4), groups=2)
    x = np.random.default_rng(2).standard_normal((4, 3, 8, 8))
    result = minigrad.gradcheck(model, x)
    assert result.ok, str(result)
