"""The paper's pre-activation ResNet-15: wiring, the BN / shortcut flags, counts, gradients, init."""
import copy

import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

import minigrad
from minigrad import nn
from minigrad.models.resnet import MODEL_VARIANTS, ResNet, build_resnet, resnet_block
from relu_kinks import MARGIN, input_away_from_kinks, relu_input_floor
from strategies import seeds


def _randomise(model, rng):
    """Non-trivial BN gamma, beta and running statistics (eval mode and the affine maps are exercised)
    and conv biases (zero biases make exact-zero ReLU inputs, i.e. kinks, where a receptive field is 0)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and m.bias is not None:
            m.bias.data[...] = rng.uniform(-0.3, 0.3, m.out_channels)
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data[...] = rng.uniform(0.5, 1.5, m.num_features)
            m.bias.data[...] = rng.uniform(-0.5, 0.5, m.num_features)
            m.running_mean[...] = rng.uniform(-0.5, 0.5, m.num_features)
            m.running_var[...] = rng.uniform(0.5, 2.0, m.num_features)


# ----------------------------------------------------------------------------------------- wiring
# Parameter counts derived by hand for widths (16, 32, 64), 5 blocks per scale, 10 classes.
# Model-1: stem conv 3*16*9 = 432 (no bias: a BN follows).
#   scale0, 5 blocks of bn0 2*16 + conv0 16*16*9 + bn1 2*16 + conv1 16*16*9 = 4,672       -> 23,360
#   scale1.block0: bn0 2*16 + conv0 16*32*9 + bn1 2*32 + conv1 32*32*9 + shortcut bn 2*16 + conv 16*32
#                = 32 + 4,608 + 64 + 9,216 + 32 + 512 = 14,464; 4 blocks of 64 + 9,216 + 64 + 9,216
#                = 18,560                                                               -> 88,704
#   scale2.block0: 64 + 18,432 + 128 + 36,864 + 64 + 2,048 = 57,600; 4 blocks of 73,984  -> 353,536
#   head: bn 2*64 + linear 64*10 + 10 = 778.          Total 432 + 23,360 + 88,704 + 353,536 + 778 = 466,810
# Model-2: no shortcut bn/conv: 466,810 - (32 + 512) - (64 + 2,048) = 464,154
# Model-3: BN parameters gone (scale0 5*64 = 320, scale1 32+64+32 + 4*128 = 640, scale2 64+128+64 + 4*256
#   = 1,280, head 128: 2,368) and conv biases added (stem 16, scale0 10*16, scale1 10*32 + 32, scale2
#   10*64 + 64: 1,232): 466,810 - 2,368 + 1,232 = 465,674
@pytest.mark.parametrize("name, params", [("Model-1", 466_810), ("Model-2", 464_154), ("Model-3", 465_674)])
def test_parameter_counts_derived_by_hand(name, params):
    assert build_resnet(name).num_parameters() == params


def test_parameter_count_of_a_tiny_resnet_by_hand():
    # widths (2, 3, 4), one block per scale, 5 classes, Model-1:
    # stem 3*2*9 = 54; scale0.block0: bn 4 + conv 36 + bn 4 + conv 36 = 80
    # scale1.block0: bn 4 + conv 2*3*9 = 54 + bn 6 + conv 81 + shortcut bn 4 + conv 2*3 = 6 -> 155
    # scale2.block0: bn 6 + conv 3*4*9 = 108 + bn 8 + conv 144 + shortcut bn 6 + conv 12 -> 284
    # head: bn 8 + linear 4*5 + 5 = 33.   Total 54 + 80 + 155 + 284 + 33 = 606
    model = ResNet(num_blocks_per_scale=1, num_filters=(2, 3, 4), num_classes=5)
    assert model.num_parameters() == 606


def test_names_follow_decisions_12_in_forward_order():
    names = [n for n, _ in build_resnet("Model-1").named_parameters()]
    assert names[:4] == ["stem.conv.weight", "scale0.block0.bn0.weight", "scale0.block0.bn0.bias",
                         "scale0.block0.conv0.weight"]
    assert "scale1.block0.shortcut.conv.weight" in names and "scale1.block0.shortcut.bn.weight" in names
    assert "scale2.block4.conv1.weight" in names
    assert names[-4:] == ["head.bn.weight", "head.bn.bias", "head.linear.weight", "head.linear.bias"]
    blocks = [n for n, _ in build_resnet("Model-1").blocks()]
    assert blocks == [f"scale{i}.block{j}" for i in range(3) for j in range(5)]


@pytest.mark.parametrize("name, convs, bns", [("Model-1", 33, 33), ("Model-2", 31, 31), ("Model-3", 33, 0)])
def test_flags_remove_bn_or_the_shortcuts(name, convs, bns):
    """Plain stack: 31 convs (stem + 15 * 2) and 31 BNs (15 * 2 + head); the projection shortcuts add 2 of each."""
    model = build_resnet(name)
    modules = list(model.modules())
    assert sum(isinstance(m, nn.Conv2d) for m in modules) == convs
    assert sum(isinstance(m, nn.BatchNorm2d) for m in modules) == bns == len(model.batch_norms())
    def kind(block):
        if not isinstance(block, nn.Residual):
            return None
        return "identity" if block.shortcut is None else "projection"

    kinds = [kind(block) for _, block in model.blocks()]
    if MODEL_VARIANTS[name]["residual"]:
        assert kinds == ["identity"] * 5 + (["projection"] + ["identity"] * 4) * 2
        assert all(block.act is None for _, block in model.blocks())  # pre-activation: nothing after the sum
    else:
        assert kinds == [None] * 15
        assert all(type(block) is nn.Sequential for _, block in model.blocks())
        assert not any(hasattr(block, "shortcut") for _, block in model.blocks())


def test_shortcut_types_and_layers():
    model = build_resnet("Model-1")
    down = model.scale1.block0
    assert [type(m) for m in down.shortcut] == [nn.BatchNorm2d, nn.ReLU, nn.Conv2d]
    assert down.shortcut.conv.kernel_size == (1, 1) and down.shortcut.conv.stride == (2, 2)
    assert down.conv0.stride == (2, 2) and down.conv1.stride == (1, 1) and down.conv0.kernel_size == (3, 3)
    assert down.branch_names == ("bn0", "relu0", "conv0", "bn1", "relu1", "conv1")
    no_bn = build_resnet("Model-3").scale2.block0
    assert [type(m) for m in no_bn.shortcut] == [nn.ReLU, nn.Conv2d]
    assert no_bn.branch_names == ("relu0", "conv0", "relu1", "conv1")
    plain = build_resnet("Model-2").scale1.block0
    assert [name for name, _ in plain.named_children()] == ["bn0", "relu0", "conv0", "bn1", "relu1", "conv1"]
    assert [type(m) for m in build_resnet("Model-3").head] == [nn.ReLU, nn.AdaptiveAvgPool2d, nn.Flatten, nn.Linear]


def test_shapes_per_scale_on_a_non_square_image(rng):
    """Stride 2 halves H and W with ceil (odd sizes), widths follow num_filters."""
    model = ResNet(num_blocks_per_scale=2, num_filters=(4, 6, 8), num_classes=7)
    x = rng.standard_normal((2, 3, 11, 6)).astype(np.float32)
    shapes = []
    h = x
    for part in ("stem", "scale0", "scale1", "scale2", "head"):
        h = getattr(model, part)(h)
        shapes.append(h.shape)
    assert shapes == [(2, 4, 11, 6), (2, 4, 11, 6), (2, 6, 6, 3), (2, 8, 3, 2), (2, 7)]
    np.testing.assert_array_equal(model(x), h)


@pytest.mark.parametrize("batch_norm", [True, False])
@pytest.mark.parametrize("stride, c_in, c_out", [(1, 3, 3), (2, 3, 5), (1, 3, 5)])
def test_block_forward_is_branch_plus_shortcut(batch_norm, stride, c_in, c_out, rng):
    block = resnet_block(c_in, c_out, stride, batch_norm=batch_norm).double()
    x = rng.standard_normal((3, c_in, 7, 6))

    def chain(layers, z):
        for layer in layers:
            z = layer(z)
        return z

    branch = chain(block.branch, x)
    if block.shortcut is None:
        assert stride == 1 and c_in == c_out
        expected = branch + x
    else:
        s = block.shortcut
        expected = branch + s.conv(s.relu(s.bn(x) if batch_norm else x))
    np.testing.assert_allclose(block(x), expected, rtol=1e-12, atol=1e-12)
    # residual=False: the same weights give the branch alone (projection parameters are simply absent)
    plain = resnet_block(c_in, c_out, stride, batch_norm=batch_norm, residual=False).double()
    plain.load_state_dict(block.state_dict(), strict=False)
    np.testing.assert_allclose(plain(x), branch, rtol=1e-12, atol=1e-12)


def test_identity_skip_passes_the_output_gradient_to_the_input(rng):
    """With the branch's last conv at zero, y = x and dx = g exactly: the ``+ g`` of the backward."""
    block = resnet_block(3, 3, batch_norm=True).double()
    block.conv1.weight.data[...] = 0
    x = rng.standard_normal((2, 3, 5, 4))
    np.testing.assert_array_equal(block(x), x)
    g = rng.standard_normal(x.shape)
    np.testing.assert_allclose(block.backward(g), g, rtol=0, atol=1e-15)


# ----------------------------------------------------------------------------------------- gradients
@settings(max_examples=15)
@given(c_in=st.integers(1, 3), c_out=st.integers(1, 3), stride=st.sampled_from([1, 2]),
       hw=st.tuples(st.integers(3, 7), st.integers(3, 7)), batch=st.integers(2, 3),
       batch_norm=st.booleans(), residual=st.booleans(), training=st.booleans(), seed=seeds)
def test_block_gradcheck(c_in, c_out, stride, hw, batch, batch_norm, residual, training, seed):
    rng = np.random.default_rng(seed)
    block = resnet_block(c_in, c_out, stride, batch_norm=batch_norm, residual=residual)
    _randomise(block, rng)
    block.train(training)
    x = rng.standard_normal((batch, c_in) + hw)
    assume(relu_input_floor(block, x) > MARGIN)
    result = minigrad.gradcheck(block, x, seed=seed % 1000)
    assert result.ok, str(result)


@pytest.mark.parametrize("name, training", [("Model-1", True), ("Model-1", False), ("Model-2", True),
                                            ("Model-3", True)])
def test_tiny_resnet_gradcheck_end_to_end(name, training):
    rng = np.random.default_rng(7)
    minigrad.manual_seed(3)
    model = build_resnet(name, num_filters=(2, 3, 4), num_blocks_per_scale=2, num_classes=3)
    _randomise(model, rng)
    model.train(training)
    x = input_away_from_kinks(model, rng, (3, 3, 9, 8))
    result = minigrad.gradcheck(model, x, seed=5)
    assert result.ok, str(result)


def test_backward_shapes_dtypes_and_no_mutation(rng):
    model = ResNet(num_blocks_per_scale=1, num_filters=(2, 4, 4), num_classes=4)
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    x_copy = x.copy()
    y = model(x)
    assert y.shape == (2, 4) and y.dtype == np.float32
    gx = model.backward(rng.standard_normal(y.shape).astype(np.float32))
    assert gx.shape == x.shape and gx.dtype == np.float32
    np.testing.assert_array_equal(x, x_copy)
    assert model(x.astype(np.float64)).dtype == np.float64


def test_recorded_block_gradient_is_the_one_the_block_receives(rng):
    """``scale2.block0:grad_output`` = statistics of what flows out of scale2.block1's backward."""
    minigrad.manual_seed(0)
    model = ResNet(num_blocks_per_scale=2, num_filters=(2, 3, 4), num_classes=3, record_grad_output=True).double()
    x = rng.standard_normal((4, 3, 8, 8))
    g = rng.standard_normal((4, 3))
    twin = copy.deepcopy(model)
    model(x)
    model.backward(g)
    stats = model.grad_stats
    # the twin runs the same forward, then backward by hand down to scale2.block0's output
    twin(x)
    d = twin.head.backward(g)
    np.testing.assert_allclose(stats["scale2.block1:grad_output"]["l2"], np.linalg.norm(d), rtol=1e-12)
    d = twin.scale2.block1.backward(d)
    expected_var = d.reshape(4, -1).var(axis=0).mean()
    np.testing.assert_allclose(stats["scale2.block0:grad_output"]["batch_var"], expected_var, rtol=1e-12)
    assert [k for k in stats if k.endswith(":grad_output")] == [f"scale{i}.block{j}:grad_output"
                                                               for i in range(3) for j in range(2)]
    model.set_record_grad_output(False)
    assert not any(k.endswith(":grad_output") for k in model.grad_stats)


# ----------------------------------------------------------------------------------------- init
def test_xavier_uniform_statistics():
    """Every conv/linear weight ~ U(-a, a), a = sqrt(6 / (fan_in + fan_out)): variance a^2 / 3, mean 0."""
    minigrad.manual_seed(11)
    model = build_resnet("Model-3")
    for name, module in model.named_modules():
        if not isinstance(module, (nn.Conv2d, nn.Linear)):
            continue
        w = module.weight.data.astype(np.float64)
        receptive = int(np.prod(w.shape[2:]))
        bound = np.sqrt(6.0 / (w.shape[1] * receptive + w.shape[0] * receptive))
        n = w.size
        assert np.abs(w).max() <= bound * (1 + 1e-6), name
        # 5 standard errors: Var(w^2) = a^4 (1/5 - 1/9) for U(-a, a)
        var_se = bound ** 2 * np.sqrt(1 / 5 - 1 / 9) / np.sqrt(n)
        assert abs(np.mean(w ** 2) - bound ** 2 / 3) < 5 * var_se, name
        assert abs(w.mean()) < 5 * bound / np.sqrt(3 * n), name
        if n > 1000:
            assert np.abs(w).max() > 0.95 * bound, name


@pytest.mark.parametrize("name", list(MODEL_VARIANTS))
def test_zero_biases_and_identity_batch_norms(name):
    model = build_resnet(name)
    biases = [(n, p) for n, p in model.named_parameters() if n.endswith(".bias") and ".bn" not in n]
    expected = 1 + (33 if name == "Model-3" else 0)  # the linear; convs have biases only without BN
    assert len(biases) == expected
    assert all(np.all(p.data == 0) for _, p in biases)
    for _, bn in model.batch_norms():
        assert np.all(bn.weight.data == 1) and np.all(bn.bias.data == 0)


def test_same_seed_same_model_other_seed_other_model():
    minigrad.manual_seed(5)
    a = build_resnet("Model-1").state_dict()
    minigrad.manual_seed(5)
    b = build_resnet("Model-1").state_dict()
    minigrad.manual_seed(6)
    c = build_resnet("Model-1").state_dict()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["stem.conv.weight"], c["stem.conv.weight"])


# ----------------------------------------------------------------------------------------- errors
def test_bad_input_names_the_layer(rng):
    model = ResNet(num_blocks_per_scale=1, num_filters=(2, 2, 2))
    with pytest.raises(ValueError, match=r"stem\.conv.*3 channels.*\(2, 4, 8, 8\)"):
        model(rng.standard_normal((2, 4, 8, 8)).astype(np.float32))
    with pytest.raises(TypeError, match="floating"):
        model(np.ones((2, 3, 8, 8), dtype=np.int64))
    with pytest.raises(ValueError, match="4 dimensions"):
        model(rng.standard_normal((3, 8, 8)).astype(np.float32))
    with pytest.raises(ValueError, match=r"BatchNorm2d\(scale0\.block0\.bn0\).*2 channels.*got shape \(1, 5, 4, 4\)"):
        model.scale0.block0(rng.standard_normal((1, 5, 4, 4)))


def test_bad_construction():
    with pytest.raises(ValueError, match="Model-4"):
        build_resnet("Model-4")
    with pytest.raises(ValueError, match="num_filters"):
        ResNet(num_filters=())
    with pytest.raises(ValueError, match="num_blocks_per_scale"):
        ResNet(num_blocks_per_scale=0)


@pytest.mark.parametrize("std", [0.01, 0.1])
def test_init_std_draws_every_weight_from_a_normal(std):
    minigrad.manual_seed(0)
    model = build_resnet("Model-1", init_std=std, num_blocks_per_scale=2)
    weights = [m.weight.data for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    values = np.concatenate([w.ravel() for w in weights]).astype(np.float64)
    assert abs(values.mean()) < 0.02 * std and values.std() == pytest.approx(std, rel=0.02)
    for w in weights[:3]:  # each layer too, not only the pool of all
        assert w.std() == pytest.approx(std, rel=0.2)
    assert all(np.all(bn.weight.data == 1) for _, bn in model.batch_norms())  # BN gamma untouched
    with pytest.raises(ValueError, match="init_std"):
        build_resnet("Model-1", init_std=0.0)
