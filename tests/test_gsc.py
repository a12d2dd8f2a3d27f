"""minigrad.measure.gsc: GSC(l, 0) and pre-activation statistics against cases with derivable answers."""
from collections import OrderedDict

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from minigrad import nn
from minigrad.measure import gsc as G
from minigrad.models.mlp import ARCHITECTURES, gsc_mlp


# ----------------------------------------------------------------------------------------- helpers
def gsc_formula(grads, outputs, errors):
    """DECISIONS 20 from per-layer arrays: grads[l-1], outputs[l-1] (N, d); errors (N,). Index 0 = l 1."""
    values = [1.0]
    for g, f in zip(grads, outputs):
        d = g.shape[1]
        values.append(np.sqrt(np.mean(np.sum(g * g, 1)) / d) * np.sqrt(np.mean(np.sum(f * f, 1)))
                      / np.sqrt(np.mean(errors ** 2)))
    return np.array(values)


def run_from(layers, k, h):
    """Output of ``layers[k:]`` applied to ``h``."""
    for layer in layers[k:]:
        h = layer(h)
    return h


def finite_difference_gsc(layers, x, y, eps=1e-6):
    """GSC(l, 0) with d(sum_i E_i)/df_l computed by central differences of the rest of the network."""
    L = len(layers)
    outputs, h = [], x
    for layer in layers:
        h = layer(h)
        outputs.append(h.copy())
    errors = np.sum(y * h, axis=1)
    grads = []
    for k in range(L):  # f of layers[k] is f_l with l = L - k
        f = outputs[k]
        g = np.zeros_like(f)
        for index in np.ndindex(*f.shape):
            plus, minus = f.copy(), f.copy()
            plus[index] += eps
            minus[index] -= eps
            g[index] = (np.sum(y * run_from(layers, k + 1, plus)) - np.sum(y * run_from(layers, k + 1, minus))) / (2 * eps)
        grads.append(g)
    # formula wants index 0 = l 1 = the last layer
    return gsc_formula(grads[::-1], outputs[::-1], errors)


def pre_activations(layers, x):
    """Inputs of each layer's last module (its nonlinearity)."""
    values, h = [], x
    for layer in layers:
        modules = list(layer.children())
        for m in modules[:-1]:
            h = m(h)
        values.append(h.copy())
        h = modules[-1](h)
    return values


def identity_layer(d, with_act=True):
    linear = nn.Linear(d, d).double()
    linear.weight.data[...] = np.eye(d)
    linear.bias.data[...] = 0
    if not with_act:
        return linear
    return nn.Sequential(OrderedDict(linear=linear, act=nn.Identity()))


# ----------------------------------------------------------------------------------------- derivable cases
@given(depth=st.integers(1, 5), d=st.integers(1, 6), n=st.integers(1, 9), seed=st.integers(0, 2**16))
def test_identity_network_gsc_is_a_data_constant(depth, d, n, seed):
    rng = np.random.default_rng(seed)
    x, y = rng.standard_normal((n, d)), rng.standard_normal((n, d))
    stats = G.measure_batch([identity_layer(d) for _ in range(depth)], x, y)
    # f_l = x and dE/df_l = y at every layer, E_i = <y_i, x_i>
    expected = np.sqrt(np.sum(y * y) / (n * d)) * np.sqrt(np.sum(x * x) / n) / np.sqrt(np.mean(np.sum(x * y, 1) ** 2))
    np.testing.assert_allclose(stats.gsc, np.r_[1.0, np.full(depth, expected)], rtol=1e-12)
    assert stats.layers.tolist() == list(range(depth + 1))
    # the pre-activation is x itself at every layer
    np.testing.assert_allclose(stats.pre_activation_std[1:], np.sqrt(x.var(axis=0).mean()), rtol=1e-12)
    assert np.isnan(stats.pre_activation_std[0]) and np.isnan(stats.sign_diversity[0])


def test_gsc_of_a_single_error_layer_point():
    """One point, one identity layer: GSC(1, 0) = ||y|| ||x|| / (sqrt(d) |<x, y>|)."""
    x, y = np.array([[3.0, 4.0]]), np.array([[1.0, 1.0]])
    stats = G.measure_batch([identity_layer(2, with_act=False)], x, y)
    np.testing.assert_allclose(stats.gsc, [1.0, np.sqrt(2) * 5 / (np.sqrt(2) * 7)], rtol=1e-14)
    assert np.isnan(stats.pre_activation_std[1])  # a bare module has no separate nonlinearity


def test_sign_diversity_and_std_of_hand_made_pre_activations():
    # columns: 3 positive + 1 negative -> 1/4; all zero -> 0; 2 and 2 -> 1/2; 1 positive, 3 zeros -> 0
    x = np.array([[1.0, 0.0, 1.0, 2.0],
                  [2.0, 0.0, -1.0, 0.0],
                  [3.0, 0.0, 3.0, 0.0],
                  [-1.0, 0.0, -2.0, 0.0]])
    stats = G.measure_batch([identity_layer(4)], x, np.ones_like(x))
    assert stats.sign_diversity[1] == pytest.approx((0.25 + 0 + 0.5 + 0) / 4, abs=1e-15)
    variances = [np.var([1, 2, 3, -1]), 0.0, np.var([1, -1, 3, -2]), np.var([2, 0, 0, 0])]
    assert stats.pre_activation_std[1] == pytest.approx(np.sqrt(np.mean(variances)), rel=1e-14)


def test_sign_diversity_is_averaged_over_datasets():
    layer = identity_layer(1)
    stats = G.measure_batch([layer], np.array([[1.0], [-1.0]]), np.ones((2, 1)))   # 1/2
    G.measure_batch([layer], np.array([[1.0], [2.0]]), np.ones((2, 1)), stats=stats)  # 0
    assert stats.sign_diversity[1] == pytest.approx(0.25)
    assert stats.n_batches == 2 and stats.n_points == 4
    assert stats.pre_activation_std[1] == pytest.approx(np.sqrt((1.0 + 0.25) / 2))


@given(depth=st.integers(1, 4), widths=st.lists(st.integers(1, 5), min_size=5, max_size=5),
       n=st.integers(1, 7), seed=st.integers(0, 2**16))
def test_linear_network_matches_product_of_layer_jacobians(depth, widths, n, seed):
    """Linear layers: dE/df_l = y W_1 W_2 ... W_{l-1} (W_1 the last layer), the product of Jacobians."""
    rng = np.random.default_rng(seed)
    dims = widths[:depth + 1]
    layers = []
    for k in range(depth):
        linear = nn.Linear(dims[k], dims[k + 1]).double()
        linear.weight.data[...] = rng.standard_normal(linear.weight.shape)
        linear.bias.data[...] = rng.standard_normal(linear.bias.shape)
        layers.append(linear)
    x, y = rng.standard_normal((n, dims[0])), rng.standard_normal((n, dims[-1]))
    outputs, h = [], x
    for layer in layers:
        h = h @ layer.weight.data.T + layer.bias.data
        outputs.append(h)
    errors = np.sum(y * h, 1)
    assume(np.mean(errors ** 2) > 1e-6)
    grads, g = [], y
    for k in range(depth - 1, -1, -1):  # l = 1 is layers[-1]
        grads.append(g)
        g = g @ layers[k].weight.data
    expected = gsc_formula(grads, outputs[::-1], errors)
    np.testing.assert_allclose(G.measure_batch(layers, x, y).gsc, expected, rtol=1e-10)


@given(arch=st.sampled_from(list(ARCHITECTURES)), depth=st.integers(1, 3), width=st.integers(3, 5),
       n=st.integers(3, 6), seed=st.integers(0, 2**16))
def test_matches_finite_difference_jacobians(arch, depth, width, n, seed):
    """Every architecture (batch norm: the whole batch's error, cross-point terms included)."""
    rng = np.random.default_rng(seed)
    model = gsc_mlp(arch, depth=depth, width=width, in_features=width, generator=rng, dtype=np.float64)
    x, y = rng.standard_normal((n, width)), rng.standard_normal((n, width))
    layers = model.hidden_layers
    # keep away from the kinks of ReLU and SELU, where a finite difference straddles two slopes
    assume(min(np.abs(z).min() for z in pre_activations(layers, x)) > 1e-3)
    expected = finite_difference_gsc(layers, x, y)
    assume(np.all(np.isfinite(expected)))
    stats = G.measure_batch(layers, x, y)
    # atol: a central difference has ~1e-16 / eps = 1e-10 absolute error, which matters where layer norm
    # makes the gradient tiny (GSC ~ 1e-5 here)
    np.testing.assert_allclose(stats.gsc, expected, rtol=1e-6, atol=1e-9)


@given(depth=st.integers(2, 6), k=st.integers(0, 4), scale=st.floats(0.01, 100), seed=st.integers(0, 2**16))
def test_invariant_to_scaling_a_layer_output(depth, k, scale, seed):
    """ReLU nets without biases are positively homogeneous: scaling layer k's weights by c and layer
    k+1's by 1/c scales f at layer k by c and its gradient by 1/c, and no GSC changes."""
    k = min(k, depth - 2)
    make = lambda: gsc_mlp("ReLU", depth=depth, width=5, in_features=5, generator=np.random.default_rng(seed),
                             dtype=np.float64)
    base, scaled = make(), make()
    scaled.hidden_layers[k].linear.weight.data *= scale
    scaled.hidden_layers[k + 1].linear.weight.data /= scale
    rng = np.random.default_rng(seed + 1)
    x, y = rng.standard_normal((8, 5)), rng.standard_normal((8, 5))
    a, b = G.measure_batch(base.hidden_layers, x, y), G.measure_batch(scaled.hidden_layers, x, y)
    assume(a.error_sq > 1e-12)
    np.testing.assert_allclose(b.gsc, a.gsc, rtol=1e-9)
    l = depth - k
    np.testing.assert_allclose(b.out_sq[l - 1], scale ** 2 * a.out_sq[l - 1], rtol=1e-9)
    np.testing.assert_allclose(b.grad_sq[l - 1], a.grad_sq[l - 1] / scale ** 2, rtol=1e-9)
    np.testing.assert_allclose(b.pre_activation_std[l], scale * a.pre_activation_std[l], rtol=1e-9)
    np.testing.assert_array_equal(b.sign_diversity, a.sign_diversity)


def test_invariant_to_scaling_the_labels():
    rng = np.random.default_rng(0)
    model = gsc_mlp("SeLU", depth=4, width=6, in_features=6, generator=rng, dtype=np.float64)
    x, y = rng.standard_normal((10, 6)), rng.standard_normal((10, 6))
    np.testing.assert_allclose(G.measure_batch(model.hidden_layers, x, 3.5 * y).gsc,
                               G.measure_batch(model.hidden_layers, x, y).gsc, rtol=1e-12)


# ----------------------------------------------------------------------------------------- accumulation
def test_merge_and_running_sums_agree_and_roundtrip():
    rng = np.random.default_rng(5)
    model = gsc_mlp("batch-tanh", depth=3, width=4, in_features=4, generator=rng, dtype=np.float64)
    batches = [(rng.standard_normal((6, 4)), rng.standard_normal((6, 4))) for _ in range(3)]
    running = G.GradientScaleStats(3)
    for x, y in batches:
        G.measure_batch(model.hidden_layers, x, y, stats=running)
    merged = G.GradientScaleStats(3)
    for x, y in batches:
        merged.merge(G.measure_batch(model.hidden_layers, x, y))
    np.testing.assert_allclose(merged.gsc, running.gsc, rtol=1e-14)
    np.testing.assert_allclose(merged.sign_diversity[1:], running.sign_diversity[1:], rtol=1e-14)
    back = G.GradientScaleStats.from_dict(running.to_dict())
    np.testing.assert_array_equal(back.gsc, running.gsc)
    np.testing.assert_array_equal(back.pre_activation_std, running.pre_activation_std)
    assert back.n_points == 18 and back.n_batches == 3 and "L=3" in repr(back)


def test_batch_is_not_modified_and_layer_count_is_checked():
    rng = np.random.default_rng(2)
    model = gsc_mlp("layer-tanh", depth=2, width=3, in_features=3, generator=rng, dtype=np.float64)
    x, y = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    x0, y0 = x.copy(), y.copy()
    G.measure_batch(model.hidden_layers, x, y)
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(y, y0)
    with pytest.raises(ValueError, match="layers"):
        G.measure_batch(model.hidden_layers, x, y, stats=G.GradientScaleStats(5))
    with pytest.raises(ValueError, match="shape"):
        G.measure_batch(model.hidden_layers, x, y[:, :2])
    with pytest.raises(ValueError, match="layers"):
        G.GradientScaleStats(3).merge(G.GradientScaleStats(2))


@pytest.mark.parametrize("arch", ["batch-tanh", "SeLU"])
def test_float32_agrees_with_float64_on_smooth_exploding_nets(arch):
    """Smooth nets: float32 gives the GSC to about 5 digits. (Not batch-ReLU: there float32 rounding grows
    by the explosion factor through the forward pass and flips ReLU signs, about 1% off at layer 50, which
    is why the study computes in float64.)"""
    kwargs = dict(n_points=256, seed=[0, 1], dataset_seed=[0, 2], depth=20, width=100)
    single = G.measure_architecture(arch, dtype=np.float32, **kwargs)
    double = G.measure_architecture(arch, **kwargs)
    assert double.gsc[-1] > 2  # it explodes, so the check is on an accumulated value
    np.testing.assert_allclose(single.gsc, double.gsc, rtol=1e-4)
    np.testing.assert_allclose(single.pre_activation_std[1:], double.pre_activation_std[1:], rtol=1e-4)


def test_measure_architecture_is_reproducible_and_seeded():
    a = G.measure_architecture("tanh", n_points=50, seed=3, depth=4, width=8)
    b = G.measure_architecture("tanh", n_points=50, seed=3, depth=4, width=8)
    c = G.measure_architecture("tanh", n_points=50, seed=3, dataset_seed=4, depth=4, width=8)
    np.testing.assert_array_equal(a.gsc, b.gsc)
    assert not np.array_equal(a.gsc, c.gsc)
    assert a.n_points == 50 and a.widths.tolist() == [8] * 4


# ----------------------------------------------------------------------------------------- errors and summaries
def test_log_probability_error_values_and_gradient():
    rng = np.random.default_rng(0)
    logits, targets = rng.standard_normal((5, 4)) * 3, np.array([0, 3, 1, 1, 2])
    error_sq, grad = G.log_probability_error(logits, targets)
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    errors = -np.log(p[np.arange(5), targets])
    assert error_sq == pytest.approx(np.sum(errors ** 2), rel=1e-12)
    onehot = np.eye(4)[targets]
    np.testing.assert_allclose(grad, p - onehot, rtol=1e-12, atol=1e-15)
    # dE_i/dlogits by central differences of the summed error
    eps, fd = 1e-6, np.zeros_like(logits)
    total = lambda z: np.sum(-np.log((np.exp(z) / np.exp(z).sum(1, keepdims=True))[np.arange(5), targets]))
    for index in np.ndindex(*logits.shape):
        plus, minus = logits.copy(), logits.copy()
        plus[index] += eps
        minus[index] -= eps
        fd[index] = (total(plus) - total(minus)) / (2 * eps)
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-9)
    # no overflow for huge logits
    error_sq, grad = G.log_probability_error(np.array([[1000.0, -1000.0]]), np.array([1]))
    assert error_sq == pytest.approx(2000.0 ** 2) and np.all(np.isfinite(grad))
    with pytest.raises(ValueError, match="integer targets"):
        G.log_probability_error(logits, targets.astype(float))


def test_log_fit_growth_and_explosion():
    layers = np.arange(0, 51)
    exploding = 1.21 ** layers
    slope, r_squared = G.log_fit(exploding)
    assert slope == pytest.approx(np.log10(1.21), rel=1e-12) and r_squared == pytest.approx(1.0)
    assert G.log_slope(exploding) == slope
    assert G.growth_per_layer(exploding) == pytest.approx(1.21, rel=1e-12)
    assert G.explodes(exploding)
    assert G.explodes(1.03 ** layers)
    assert not G.explodes(1.01 ** layers)  # growth below 2% per layer
    assert not G.explodes(np.ones(51))
    bump = np.exp(np.where(layers > 45, (layers - 45) * 1.0, 0.0))  # flat, then a rise at the input side
    assert G.growth_per_layer(bump) > 1.02 and G.log_fit(bump)[1] < 0.9 and not G.explodes(bump)
    assert np.isnan(G.log_slope([1.0, 0.0, 2.0])) and not G.explodes([1.0, np.nan, 3.0])


# ----------------------------------------------------------------------------------------- what the measurement leaves
def test_parameter_gradients_are_neither_computed_nor_touched():
    """The GSC needs gradients w.r.t. layer outputs only: .grad stays as it was, requires_grad is restored."""
    rng = np.random.default_rng(3)
    model = gsc_mlp("batch-tanh", depth=3, width=4, in_features=4, num_classes=2, generator=rng, dtype=np.float64)
    for p in model.parameters():
        p.grad[...] = 7.0
    model.out.linear.weight.requires_grad = False
    x, y = rng.standard_normal((6, 4)), rng.standard_normal((6, 2))
    G.measure_batch(model.hidden_layers + [model.out], x, y)
    assert all(np.all(p.grad == 7.0) for p in model.parameters())
    assert [p.requires_grad for p in model.parameters()] == [True] * 6 + [False, True]


def test_measure_architecture_without_biases_gives_the_zero_bias_numbers():
    """measure_architecture builds the study's nets without their (zero, untrained) biases: same numbers."""
    from minigrad.data.synthetic import gsc_dataset

    for arch in ("batch-ReLU", "SeLU"):
        stats = G.measure_architecture(arch, n_points=64, seed=5, dataset_seed=6, depth=5, width=16)
        model = gsc_mlp(arch, depth=5, width=16, in_features=16, generator=np.random.default_rng(5),
                        dtype=np.float64)
        assert all(not layer.linear.bias.data.any() for layer in model.hidden_layers)
        x, y = gsc_dataset(64, dim=16, seed=6, dtype=np.float64)
        with_biases = G.measure_batch(model.hidden_layers, x, y)
        for name in ("gsc", "pre_activation_std", "sign_diversity"):
            np.testing.assert_array_equal(getattr(stats, name), getattr(with_biases, name), err_msg=name)


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_float32_study_path_is_close_to_float64(arch):
    """What the study runs (float32, the layers' kernels) against float64 on a small, non-exploding scale."""
    kwargs = dict(n_points=200, seed=[0, 1], dataset_seed=[0, 2], depth=6, width=20)
    single = G.measure_architecture(arch, dtype=np.float32, **kwargs)
    double = G.measure_architecture(arch, **kwargs)
    np.testing.assert_allclose(single.gsc, double.gsc, rtol=2e-4)
    np.testing.assert_allclose(single.pre_activation_std[1:], double.pre_activation_std[1:], rtol=2e-4)
