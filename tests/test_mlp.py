"""models.mlp: build_mlp and the seven deep MLPs of the gradient-scale study (structure, names, init, norms, errors)."""
import numpy as np
import pytest

from minigrad import gradcheck, nn
from minigrad.models.mlp import (ARCHITECTURES, EXPLODING_IN_PAPER, MLP, build_mlp, canonical_architecture,
                                 gaussian_init, gsc_mlp)

NORMS = {None: None, "layer": nn.LayerNorm, "batch": nn.BatchNorm1d}
ACTS = {"relu": nn.ReLU, "tanh": nn.Tanh, "selu": nn.SELU}


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_structure_names_and_types(arch):
    model = gsc_mlp(arch, depth=4, width=6, in_features=5)
    norm, act, _ = ARCHITECTURES[arch]
    assert isinstance(model, MLP) and model.architecture == arch
    assert [name for name, _ in model.named_children()] == ["layer0", "layer1", "layer2", "layer3"]
    assert len(model.hidden_layers) == 4
    expected_children = ["linear", "norm", "act"] if norm else ["linear", "act"]
    for k, layer in enumerate(model.hidden_layers):
        assert [name for name, _ in layer.named_children()] == expected_children
        assert layer.linear.in_features == (5 if k == 0 else 6) and layer.linear.out_features == 6
        assert type(layer.act) is ACTS[act]
        if norm:
            assert type(layer.norm) is NORMS[norm]
    names = [name for name, _ in model.named_parameters()]
    # only the linear layers learn: the norms have no parameters
    assert names == [f"layer{k}.linear.{p}" for k in range(4) for p in ("weight", "bias")]
    assert model.layer2.linear._name == "layer2.linear"  # names read well in errors and plots


def test_norms_have_no_learnable_parameters_nor_running_statistics():
    bn = gsc_mlp("batch-tanh", depth=2, width=4).layer0.norm
    assert bn.affine is False and bn.track_running_stats is False and bn.num_parameters() == 0
    assert bn.state_dict() == {}
    ln = gsc_mlp("layer-ReLU", depth=2, width=4).layer1.norm
    assert ln.num_parameters() == 0 and ln.state_dict() == {}


def test_out_layer_for_classification():
    model = gsc_mlp("SeLU", depth=3, width=7, in_features=12, num_classes=10)
    assert [name for name, _ in model.named_children()][-1] == "out"
    assert len(model.hidden_layers) == 3
    assert model.out.linear.in_features == 7 and model.out.linear.out_features == 10
    x = np.random.default_rng(0).standard_normal((5, 12)).astype(np.float32)
    assert model(x).shape == (5, 10)
    assert sum(1 for name, _ in model.named_parameters() if name.endswith("weight")) == 4  # 3 hidden + out


def _assert_gaussian(values, variance, what):
    """Mean and variance of ``values`` match N(0, variance) within 5 standard errors."""
    values = np.asarray(values, dtype=np.float64).ravel()
    n = values.size
    assert abs(values.mean()) < 5 * np.sqrt(variance / n), what
    assert abs(values.var() / variance - 1) < 5 * np.sqrt(2.0 / n), (what, values.var(), variance)


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_init_variance_statistically(arch):
    model = gsc_mlp(arch, generator=np.random.default_rng(7))  # the study's 50 x 100
    gain2 = 2.0 if "ReLU" in arch else 1.0
    hidden = [layer.linear.weight.data for layer in model.hidden_layers]
    assert len(hidden) == 50 and all(w.shape == (100, 100) for w in hidden)
    _assert_gaussian(np.stack(hidden), gain2 / 100, arch)
    for layer in model.hidden_layers:
        assert np.all(layer.linear.bias.data == 0)


def test_init_variance_follows_fan_in_of_first_and_out_layers():
    model = gsc_mlp("batch-ReLU", depth=2, width=100, in_features=3072, num_classes=10,
                      generator=np.random.default_rng(3))
    _assert_gaussian(model.layer0.linear.weight.data, 2.0 / 3072, "layer0")
    _assert_gaussian(model.out.linear.weight.data, 1.0 / 100, "out")  # no nonlinearity follows
    assert np.all(model.out.linear.bias.data == 0)


def test_generator_makes_it_reproducible():
    a = gsc_mlp("tanh", depth=3, width=5, generator=np.random.default_rng(11))
    b = gsc_mlp("tanh", depth=3, width=5, generator=np.random.default_rng(11))
    c = gsc_mlp("tanh", depth=3, width=5, generator=np.random.default_rng(12))
    for (name, p), (_, q), (_, r) in zip(a.named_parameters(), b.named_parameters(), c.named_parameters()):
        np.testing.assert_array_equal(p.data, q.data, err_msg=name)
        if name.endswith("weight"):
            assert not np.array_equal(p.data, r.data)


def test_dtype():
    assert all(p.dtype == np.float32 for p in gsc_mlp("ReLU", depth=2, width=3).parameters())
    model = gsc_mlp("ReLU", depth=2, width=3, dtype=np.float64)
    assert all(p.dtype == np.float64 for p in model.parameters())
    assert model(np.ones((2, 100))).dtype == np.float64


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_gradcheck_whole_model(arch):
    model = gsc_mlp(arch, depth=3, width=4, in_features=5, num_classes=3, generator=np.random.default_rng(1))
    res = gradcheck(model, (6, 5), seed=2)
    assert res.ok, str(res)


def test_batch_norm_uses_batch_statistics_in_eval_too():
    model = gsc_mlp("batch-ReLU", depth=3, width=4, generator=np.random.default_rng(0), dtype=np.float64)
    x = np.random.default_rng(1).standard_normal((8, 100))
    train_out = model(x)
    model.eval()
    np.testing.assert_array_equal(model(x), train_out)


@pytest.mark.parametrize("spelling, expected", [("relu", "ReLU"), ("Batch_ReLU", "batch-ReLU"),
                                                ("LAYER-TANH", "layer-tanh"), ("selu", "SeLU")])
def test_canonical_names(spelling, expected):
    assert canonical_architecture(spelling) == expected
    assert gsc_mlp(spelling, depth=1, width=2).architecture == expected


def test_exploding_in_paper_are_architectures():
    assert set(EXPLODING_IN_PAPER) <= set(ARCHITECTURES) and len(ARCHITECTURES) == 7


@pytest.mark.parametrize("kwargs, message", [
    (dict(architecture="sigmoid"), "unknown MLP architecture"),
    (dict(architecture="ReLU", depth=0), "depth"),
    (dict(architecture="ReLU", width=2.5), "width"),
    (dict(architecture="ReLU", in_features=True), "in_features"),
    (dict(architecture="ReLU", num_classes=0), "num_classes"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        gsc_mlp(**kwargs)


def test_wrong_input_width_names_the_layer():
    model = gsc_mlp("ReLU", depth=2, width=3, in_features=4)
    with pytest.raises(ValueError, match="layer0.linear"):
        model(np.ones((2, 5), dtype=np.float32))
    with pytest.raises(TypeError):
        model(np.ones((2, 4), dtype=np.int64))


# ----------------------------------------------------------------------------------------- build_mlp itself
def test_build_mlp_structure_activations_and_norms():
    model = build_mlp([5, 4, 3], activation="leaky_relu", norm="layer", num_classes=2, negative_slope=0.2)
    assert isinstance(model, MLP) and model.architecture is None
    assert [n for n, _ in model.named_children()] == ["layer0", "layer1", "out"]
    assert model.layer0.linear.in_features == 5 and model.layer1.linear.out_features == 3
    assert type(model.layer1.act) is nn.LeakyReLU and model.layer1.act.negative_slope == 0.2
    assert type(model.layer0.norm) is nn.LayerNorm and model.out.linear.out_features == 2
    assert type(build_mlp([3, 3], activation="linear").layer0.act) is nn.Identity
    assert build_mlp([3, 3], bias=False).layer0.linear.bias is None
    assert model(np.ones((4, 5), np.float32)).shape == (4, 2)


def test_build_mlp_init_runs_after_the_cast_and_leaves_the_global_generator():
    from minigrad import random as mg_random

    mg_random.manual_seed(0)
    before = mg_random.get_rng_state()
    model = build_mlp([6, 5, 5], num_classes=3, init=gaussian_init(2.0), out_init=gaussian_init(1.0),
                      generator=np.random.default_rng(1), dtype=np.float64)
    assert mg_random.get_rng_state() == before
    expected = np.random.default_rng(1)
    for linear, variance in ((model.layer0.linear, 2.0), (model.layer1.linear, 2.0), (model.out.linear, 1.0)):
        draw = expected.normal(0.0, np.sqrt(variance / linear.in_features), linear.weight.shape)
        np.testing.assert_array_equal(linear.weight.data, draw)  # float64 draws, not float32-rounded ones
        assert not linear.bias.data.any()
    # without init: PyTorch's default from the global generator, as nn.Linear
    mg_random.manual_seed(4)
    a = build_mlp([3, 2])
    mg_random.manual_seed(4)
    np.testing.assert_array_equal(a.layer0.linear.weight.data, nn.Linear(3, 2).weight.data)


@pytest.mark.parametrize("args, error, message", [
    (dict(widths="ReLU"), TypeError, "gsc_mlp"),
    (dict(widths=[3]), ValueError, "at least 2"),
    (dict(widths=[3, 0]), ValueError, "width"),
    (dict(widths=[3, 3], activation="gelu"), ValueError, "activation"),
    (dict(widths=[3, 3], norm="group"), ValueError, "norm"),
    (dict(widths=[3, 3], num_classes=0), ValueError, "num_classes"),
])
def test_build_mlp_bad_arguments(args, error, message):
    with pytest.raises(error, match=message):
        build_mlp(**args)
