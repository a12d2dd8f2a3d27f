"""GroupNorm and InstanceNorm2d: finite differences, the naive reference, derivable identities (G = 1 is
LayerNorm, G = C is InstanceNorm, normalised output), running statistics, errors, dtypes, PyTorch parity."""
import math
import warnings

import numpy as np
import pytest
import reference as ref
from hypothesis import given
from hypothesis import strategies as st
from strategies import seeds

from minigrad import gradcheck, nn
from minigrad.kernels._threading import SERIAL_BELOW

EPS_FD = 1e-5  # finite-difference step; see test_activation.EPS for why not 1e-6


def sample(shape, seed, scale=2.0, shift=1.0):
    """Input from a stream independent of gradcheck's upstream gradient (drawn from the same seed, x would
    lie in span{1, xhat} of u and the input gradient would be exactly 0; see test_batchnorm.sample)."""
    return np.random.default_rng([seed, 1]).standard_normal(shape) * scale + shift


def randomise(layer, seed):
    """Non-trivial gamma (both signs), beta and running statistics, so every term of the gradient shows."""
    rng = np.random.default_rng([seed, 2])
    if layer.weight is not None:
        c = layer.weight.shape[0]
        layer.weight.data[...] = rng.uniform(0.5, 2.0, c) * rng.choice([-1, 1], c)
    if layer.bias is not None:
        layer.bias.data[...] = rng.standard_normal(layer.bias.shape)
    if getattr(layer, "track_running_stats", False):
        layer.running_mean[...] = rng.standard_normal(layer.num_features)
        layer.running_var[...] = rng.uniform(0.5, 2.0, layer.num_features)
    return layer


@st.composite
def group_shapes(draw, min_group_size=3):
    """(shape, num_groups): N in 1..3, G groups of C/G channels, 0-3 trailing dims (non-square), and at
    least ``min_group_size`` values per group (with 1 or 2, xhat is constant: the gradient is O(eps))."""
    n, groups, per_group = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    spatial = draw(st.lists(st.integers(1, 4), min_size=0, max_size=3))
    while per_group * math.prod(spatial) < min_group_size:
        spatial = spatial + [min_group_size]
    return (n, groups * per_group, *spatial), groups


# ----------------------------------------------------------------------------------- finite differences
@given(geometry=group_shapes(), affine=st.booleans(), bias=st.booleans(), eps=st.sampled_from([1e-5, 1e-2]),
       seed=seeds)
def test_groupnorm_gradcheck(geometry, affine, bias, eps, seed):
    shape, groups = geometry
    layer = randomise(nn.GroupNorm(groups, shape[1], eps=eps, affine=affine, bias=bias), seed)
    res = gradcheck(layer, sample(shape, seed), seed=seed, eps=EPS_FD)
    assert res.ok, str(res)


@given(n=st.one_of(st.none(), st.integers(1, 3)), c=st.integers(1, 4), h=st.integers(1, 5), w=st.integers(1, 5),
       affine=st.booleans(), bias=st.booleans(), track=st.booleans(), training=st.booleans(),
       momentum=st.sampled_from([0.1, 0.5, None]), eps=st.sampled_from([1e-5, 1e-3]), seed=seeds)
def test_instancenorm_gradcheck(n, c, h, w, affine, bias, track, training, momentum, eps, seed):
    """Own statistics (training, or no running stats) and running statistics (eval); n=None: unbatched."""
    if (training or not track) and h * w < 3:
        h = 3
    layer = nn.InstanceNorm2d(c, eps=eps, momentum=momentum, affine=affine, track_running_stats=track, bias=bias)
    randomise(layer, seed).train(training)
    shape = (c, h, w) if n is None else (n, c, h, w)
    res = gradcheck(layer, sample(shape, seed), seed=seed, eps=EPS_FD)
    assert res.ok, str(res)


def test_gradcheck_elementwise():
    for layer, shape in [(nn.GroupNorm(2, 4), (2, 4, 3, 2)), (nn.InstanceNorm2d(3, affine=True), (2, 3, 2, 3))]:
        res = gradcheck(randomise(layer, 0), sample(shape, 0), mode="elementwise", eps=EPS_FD)
        assert res.ok, str(res)


# ------------------------------------------------------------------------------- the naive reference
@given(geometry=group_shapes(min_group_size=1), affine=st.booleans(), seed=seeds)
def test_groupnorm_matches_reference(geometry, affine, seed):
    shape, groups = geometry
    if math.prod(shape[2:]) * shape[0] * shape[1] // groups == 1:
        shape = (2,) + shape[1:]  # a single value overall is an error (tested below)
    layer = randomise(nn.GroupNorm(groups, shape[1], affine=affine), seed).double()
    x = sample(shape, seed)
    g = np.random.default_rng([seed, 3]).standard_normal(shape)
    weight, bias = (layer.weight.data, layer.bias.data) if affine else (None, None)
    y_ref, _, _ = ref.group_norm(x, groups, weight, bias, layer.eps)
    np.testing.assert_allclose(layer(x), y_ref, rtol=1e-12, atol=1e-12)
    dx_ref, dgamma_ref, dbeta_ref = ref.group_norm_backward(x, groups, weight, g, layer.eps)
    np.testing.assert_allclose(layer.backward(g), dx_ref, rtol=1e-10, atol=1e-10)
    if affine:
        np.testing.assert_allclose(layer.weight.grad, dgamma_ref, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(layer.bias.grad, dbeta_ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("groups", [1, 4, 16])
def test_threaded_kernel_matches_reference(dtype, groups, rng):
    """Above SERIAL_BELOW elements the groups run on Numba's threads: the same answers."""
    x = (rng.standard_normal((6, 16, 20, 18)) * 3 + 2).astype(dtype)
    assert x.size >= SERIAL_BELOW
    g = rng.standard_normal(x.shape).astype(dtype)
    layer = randomise(nn.GroupNorm(groups, 16), 5).to(dtype)
    y = layer(x)
    dx = layer.backward(g)
    assert y.dtype == dx.dtype == dtype
    x64, g64 = x.astype(np.float64), g.astype(np.float64)
    w, b = layer.weight.data.astype(np.float64), layer.bias.data.astype(np.float64)
    tol = dict(rtol=2e-5, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-11, atol=1e-11)
    np.testing.assert_allclose(y, ref.group_norm(x64, groups, w, b, layer.eps)[0], **tol)
    dx_ref, dgamma_ref, dbeta_ref = ref.group_norm_backward(x64, groups, w, g64, layer.eps)
    np.testing.assert_allclose(dx, dx_ref, **tol)
    np.testing.assert_allclose(layer.weight.grad, dgamma_ref, rtol=1e-4 if dtype == np.float32 else 1e-10)
    np.testing.assert_allclose(layer.bias.grad, dbeta_ref, rtol=1e-4 if dtype == np.float32 else 1e-10)


def test_parameter_gradients_do_not_depend_on_thread_scheduling(rng):
    x = rng.standard_normal((8, 16, 32, 32)).astype(np.float32)
    g = rng.standard_normal(x.shape).astype(np.float32)
    grads = []
    for _ in range(3):
        layer = randomise(nn.GroupNorm(4, 16), 1)
        layer(x)
        layer.backward(g)
        grads.append((layer.weight.grad.copy(), layer.bias.grad.copy()))
    for w, b in grads[1:]:
        assert np.array_equal(w, grads[0][0]) and np.array_equal(b, grads[0][1])


# ------------------------------------------------------------------------------- derivable answers
def test_output_has_mean_zero_and_variance_var_over_var_plus_eps_per_group(rng):
    x = rng.standard_normal((3, 6, 5, 4)) * rng.uniform(0.1, 10, (3, 6, 1, 1)) + rng.normal(0, 5, (3, 6, 1, 1))
    layer = nn.GroupNorm(3, 6, affine=False)
    y = layer(x).reshape(3, 3, -1)
    var = x.reshape(3, 3, -1).var(axis=2)  # biased, as PyTorch
    np.testing.assert_allclose(y.mean(axis=2), 0, atol=1e-12)
    np.testing.assert_allclose(y.var(axis=2), var / (var + layer.eps), rtol=1e-12)


def test_one_group_is_layernorm_over_c_h_w_with_per_channel_affine(rng):
    c, h, w = 4, 3, 5
    gn = randomise(nn.GroupNorm(1, c), 7).double()
    ln = nn.LayerNorm((c, h, w)).double()
    ln.weight.data[...] = gn.weight.data.reshape(c, 1, 1)
    ln.bias.data[...] = gn.bias.data.reshape(c, 1, 1)
    x = rng.standard_normal((2, c, h, w)) * 3 + 1
    g = rng.standard_normal(x.shape)
    np.testing.assert_allclose(gn(x), ln(x), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gn.backward(g), ln.backward(g), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(gn.weight.grad, ln.weight.grad.sum(axis=(1, 2)), rtol=1e-10)
    np.testing.assert_allclose(gn.bias.grad, ln.bias.grad.sum(axis=(1, 2)), rtol=1e-10)


def test_one_channel_per_group_is_instancenorm_with_affine(rng):
    gn = randomise(nn.GroupNorm(5, 5), 8).double()
    inorm = nn.InstanceNorm2d(5, affine=True).double()
    inorm.weight.data[...] = gn.weight.data
    inorm.bias.data[...] = gn.bias.data
    x = rng.standard_normal((3, 5, 4, 6)) * 2 - 1
    g = rng.standard_normal(x.shape)
    np.testing.assert_allclose(gn(x), inorm(x), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gn.backward(g), inorm.backward(g), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(gn.weight.grad, inorm.weight.grad, rtol=1e-10)
    np.testing.assert_allclose(gn.bias.grad, inorm.bias.grad, rtol=1e-10)


def test_instancenorm_is_batchnorm_of_each_sample_alone(rng):
    inorm = randomise(nn.InstanceNorm2d(3, affine=True), 9).double()
    bn = nn.BatchNorm2d(3, track_running_stats=False).double()
    bn.weight.data[...], bn.bias.data[...] = inorm.weight.data, inorm.bias.data
    x = rng.standard_normal((4, 3, 5, 2)) + 3
    g = rng.standard_normal(x.shape)
    y, dx = inorm(x), inorm.backward(g)
    for n in range(4):
        np.testing.assert_allclose(y[n:n + 1], bn(x[n:n + 1]), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(dx[n:n + 1], bn.backward(g[n:n + 1]), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(inorm.weight.grad, bn.weight.grad, rtol=1e-10)


def test_backward_formula_by_hand(rng):
    """dx = invstd * (g' - mean(g') - xhat * mean(g' * xhat)), g' = g * gamma, means over each group."""
    layer = randomise(nn.GroupNorm(2, 6), 3).double()
    x = rng.standard_normal((3, 6, 4)) * 2 + 1
    g = rng.standard_normal(x.shape)
    layer(x)
    dx = layer.backward(g)
    xg = x.reshape(3, 2, 12)
    mean, var = xg.mean(axis=2, keepdims=True), xg.var(axis=2, keepdims=True)
    xhat = ((xg - mean) / np.sqrt(var + layer.eps)).reshape(x.shape)
    h = (g * layer.weight.data.reshape(1, 6, 1)).reshape(3, 2, 12)
    xh = xhat.reshape(3, 2, 12)
    expected = (h - h.mean(2, keepdims=True) - xh * (h * xh).mean(2, keepdims=True)) / np.sqrt(var + layer.eps)
    np.testing.assert_allclose(dx, expected.reshape(x.shape), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(layer.weight.grad, (g * xhat).sum(axis=(0, 2)), rtol=1e-10)
    np.testing.assert_allclose(layer.bias.grad, g.sum(axis=(0, 2)), rtol=1e-10)


def test_ones_upstream_gives_zero_input_gradient_without_affine(rng):
    layer = nn.GroupNorm(2, 4, affine=False)
    y = layer(rng.standard_normal((3, 4, 5)))
    np.testing.assert_allclose(layer.backward(np.ones_like(y)), 0, atol=1e-12)


def test_invariant_to_shift_and_positive_scale_of_a_group(rng):
    layer = randomise(nn.GroupNorm(2, 4, eps=0.0), 4).double()
    x = rng.standard_normal((2, 4, 6))
    moved = x.copy()
    moved[0, :2] = moved[0, :2] * 7.5 - 3  # group 0 of sample 0 only
    np.testing.assert_allclose(layer(moved), layer(x), rtol=1e-10, atol=1e-12)


def test_train_equals_eval_for_groupnorm(rng):
    layer = randomise(nn.GroupNorm(2, 4), 5)
    x = rng.standard_normal((3, 4, 2, 2)).astype(np.float32)
    assert np.array_equal(layer(x), layer.eval()(x))


def test_one_value_per_group_gives_beta_when_the_batch_has_several(rng):
    """PyTorch refuses only a single value overall; with N > 1, x_hat = 0, y = beta and dx = 0."""
    layer = randomise(nn.GroupNorm(4, 4), 6).double()
    x = rng.standard_normal((3, 4))
    np.testing.assert_allclose(layer(x), np.broadcast_to(layer.bias.data, (3, 4)), atol=1e-12)
    np.testing.assert_allclose(layer.backward(rng.standard_normal((3, 4))), 0, atol=1e-12)


def test_float32_large_mean_keeps_precision(rng):
    x = (1e4 + rng.standard_normal((4, 8, 16, 16))).astype(np.float32)
    y = nn.GroupNorm(2, 8, affine=False)(x).reshape(4, 2, -1)
    np.testing.assert_allclose(y.var(axis=2, dtype=np.float64), 1, atol=1e-3)
    np.testing.assert_allclose(y.mean(axis=2, dtype=np.float64), 0, atol=1e-4)


# ------------------------------------------------------------------------------- running statistics
@pytest.mark.parametrize("momentum", [0.1, 0.3])
def test_instancenorm_running_stats_hand_formula(momentum, rng):
    layer = nn.InstanceNorm2d(3, momentum=momentum, track_running_stats=True).double()
    mean, var = np.zeros(3), np.ones(3)
    for k in range(1, 4):
        x = rng.standard_normal((4, 3, 2, 3)) * k + k
        layer(x)
        hw = 2 * 3
        mean = (1 - momentum) * mean + momentum * x.mean(axis=(2, 3)).mean(axis=0)
        var = (1 - momentum) * var + momentum * (x.var(axis=(2, 3)) * hw / (hw - 1)).mean(axis=0)  # UNBIASED
        np.testing.assert_allclose(layer.running_mean, mean, rtol=1e-12)
        np.testing.assert_allclose(layer.running_var, var, rtol=1e-12)
        assert int(layer.num_batches_tracked) == 0  # as PyTorch: InstanceNorm never counts batches


def test_instancenorm_momentum_none_leaves_running_stats(rng):
    """PyTorch passes momentum=None as 0 to instance_norm: no cumulative average as in BatchNorm."""
    layer = nn.InstanceNorm2d(2, momentum=None, track_running_stats=True)
    layer(rng.standard_normal((3, 2, 4, 4)).astype(np.float32) + 5)
    assert np.all(layer.running_mean == 0) and np.all(layer.running_var == 1)


def test_instancenorm_eval_uses_running_stats_and_leaves_them(rng):
    layer = randomise(nn.InstanceNorm2d(3, affine=True, track_running_stats=True), 3).double()
    layer(rng.standard_normal((2, 3, 3, 3)))
    state = layer.state_dict()
    layer.eval()
    x = rng.standard_normal((2, 3, 4, 4)) * 5
    y = layer(x)
    shape = (1, 3, 1, 1)
    scale = (layer.weight.data / np.sqrt(layer.running_var + layer.eps)).reshape(shape)
    np.testing.assert_allclose(y, (x - layer.running_mean.reshape(shape)) * scale + layer.bias.data.reshape(shape),
                               rtol=1e-12, atol=1e-12)
    g = rng.standard_normal(y.shape)
    np.testing.assert_allclose(layer.backward(g), g * scale, rtol=1e-12)
    xhat = (x - layer.running_mean.reshape(shape)) / np.sqrt(layer.running_var + layer.eps).reshape(shape)
    np.testing.assert_allclose(layer.weight.grad, (g * xhat).sum(axis=(0, 2, 3)), rtol=1e-10)
    for key, value in layer.state_dict().items():
        if key not in ("weight", "bias"):
            assert np.array_equal(value, state[key]), key
    layer(x[:, :, :1, :1])  # one position per channel is fine with running statistics


def test_instancenorm_without_running_stats_uses_the_input_in_eval(rng):
    layer = nn.InstanceNorm2d(3).eval()
    assert layer.running_mean is None and list(layer.state_dict()) == []
    y = layer(rng.standard_normal((2, 3, 4, 4)) + 3)
    np.testing.assert_allclose(y.mean(axis=(2, 3)), 0, atol=1e-12)


def test_instancenorm_unbatched_is_a_batch_of_one(rng):
    layer = randomise(nn.InstanceNorm2d(3, affine=True, track_running_stats=True), 2).double()
    twin = randomise(nn.InstanceNorm2d(3, affine=True, track_running_stats=True), 2).double()
    x = rng.standard_normal((3, 4, 5))
    g = rng.standard_normal(x.shape)
    y = layer(x)
    assert y.shape == x.shape
    np.testing.assert_array_equal(y, twin(x[None])[0])
    np.testing.assert_array_equal(layer.backward(g), twin.backward(g[None])[0])
    np.testing.assert_array_equal(layer.running_var, twin.running_var)


def test_empty_batch(rng):
    for layer, shape in [(nn.GroupNorm(2, 4), (0, 4, 3)), (nn.GroupNorm(2, 4), (2, 4, 0)),
                         (nn.InstanceNorm2d(4, affine=True, track_running_stats=True), (0, 4, 3, 3))]:
        y = layer(np.zeros(shape, np.float32))
        assert y.shape == shape
        assert layer.backward(np.zeros(shape, np.float32)).shape == shape
        assert np.all(layer.weight.grad == 0)
    assert np.all(layer.running_mean == 0) and np.all(layer.running_var == 1)  # PyTorch would write NaN


# ------------------------------------------------------------------------------- API, state, dtypes
def test_parameters_state_dict_and_repr_as_pytorch():
    gn = nn.GroupNorm(2, 6)
    assert list(gn.state_dict()) == ["weight", "bias"]
    assert gn.weight.shape == (6,) and gn.weight.dtype == np.float32
    assert np.all(gn.weight.data == 1) and np.all(gn.bias.data == 0)
    assert list(nn.GroupNorm(2, 6, bias=False).state_dict()) == ["weight"]
    assert list(nn.GroupNorm(2, 6, affine=False).state_dict()) == []
    assert repr(gn) == "GroupNorm(2, 6, eps=1e-05, affine=True, bias=True)"
    assert repr(nn.GroupNorm(2, 6, affine=False)) == "GroupNorm(2, 6, eps=1e-05, affine=False, bias=False)"
    inorm = nn.InstanceNorm2d(3)
    assert inorm.weight is None and inorm.bias is None and list(inorm.state_dict()) == []
    assert repr(inorm) == ("InstanceNorm2d(3, eps=1e-05, momentum=0.1, affine=False, bias=False, "
                           "track_running_stats=False)")
    full = nn.InstanceNorm2d(3, affine=True, track_running_stats=True)
    assert list(full.state_dict()) == ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    assert full.running_var.dtype == np.float32 and full.num_batches_tracked.dtype == np.int64
    assert list(nn.InstanceNorm2d(3, affine=True, bias=False).state_dict()) == ["weight"]


def test_load_state_dict_and_reset(rng):
    a = randomise(nn.InstanceNorm2d(2, affine=True, track_running_stats=True), 1)
    b = nn.InstanceNorm2d(2, affine=True, track_running_stats=True).load_state_dict(a.state_dict())
    assert np.array_equal(b.running_mean, a.running_mean) and np.array_equal(b.weight.data, a.weight.data)
    b(rng.standard_normal((2, 2, 3, 3)).astype(np.float32))  # buffers stay registered after updates
    assert not np.array_equal(b.state_dict()["running_mean"], a.running_mean)
    b.reset_parameters()
    assert np.all(b.running_mean == 0) and np.all(b.running_var == 1) and np.all(b.weight.data == 1)
    gn = randomise(nn.GroupNorm(1, 3), 1)
    gn.reset_parameters()
    assert np.all(gn.weight.data == 1) and np.all(gn.bias.data == 0)


@pytest.mark.parametrize("make", [lambda: nn.GroupNorm(2, 4),
                                  lambda: nn.InstanceNorm2d(4, affine=True, track_running_stats=True)])
def test_dtypes_and_input_not_mutated(make, rng):
    layer = make()
    x = rng.standard_normal((3, 4, 3, 2)).astype(np.float32)
    x0 = x.copy()
    y = layer(x)
    g = rng.standard_normal(y.shape).astype(np.float32)
    g0 = g.copy()
    assert y.dtype == np.float32 and layer.backward(g).dtype == np.float32
    assert np.array_equal(x, x0) and np.array_equal(g, g0)
    y64 = layer(x.astype(np.float64))  # float64 input computes in float64 with float32 parameters
    assert y64.dtype == np.float64 and layer.backward(g.astype(np.float64)).dtype == np.float64
    assert layer(x.astype(np.float16)).dtype == np.float32  # float16 computes in float32, as BatchNorm
    layer.double()
    assert layer.weight.dtype == np.float64 and layer(x).dtype == np.float64
    if getattr(layer, "track_running_stats", False):
        assert layer.running_mean.dtype == np.float64 and layer.num_batches_tracked.dtype == np.int64


def test_float64_computes_more_exactly_than_float32(rng):
    x = rng.standard_normal((2, 4, 8, 8))
    exact = ref.group_norm(x, 2, None, None, 1e-5)[0]
    err32 = np.abs(nn.GroupNorm(2, 4, affine=False)(x.astype(np.float32)) - exact).max()
    err64 = np.abs(nn.GroupNorm(2, 4, affine=False)(x) - exact).max()
    assert err64 < 1e-13 < 1e-8 < err32 < 1e-5


def test_save_for_backward_and_the_contract(rng):
    layer = nn.GroupNorm(2, 4)
    with pytest.raises(RuntimeError, match="GroupNorm.*before forward"):
        layer.backward(np.zeros((2, 4, 3), np.float32))
    y = layer(rng.standard_normal((2, 4, 3)).astype(np.float32))
    assert layer.saved is not None and layer.saved.x4.shape == (2, 2, 2, 3)
    with pytest.raises(ValueError, match=r"GroupNorm.*\(2, 4, 3\).*\(2, 4\)"):
        layer.backward(np.zeros((2, 4), np.float32))
    layer.backward(np.ones_like(y))
    assert layer.saved is None
    with pytest.raises(RuntimeError, match="GroupNorm.*twice"):
        layer.backward(np.ones_like(y))


def test_grad_stats_and_grad_output_recording(rng):
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.GroupNorm(2, 4), nn.ReLU(),
                          nn.Conv2d(4, 4, 3, padding=1), nn.InstanceNorm2d(4, affine=True))
    model[1].record_grad_output = True
    y = model(rng.standard_normal((2, 3, 5, 6)).astype(np.float32))
    model.backward(rng.standard_normal(y.shape).astype(np.float32))
    stats = model.grad_stats
    assert list(stats) == ["0.weight", "0.bias", "1.weight", "1.bias", "1:grad_output", "3.weight", "3.bias",
                           "4.weight", "4.bias"]
    assert stats["1.weight"]["numel"] == 4 and stats["1.weight"]["l2"] > 0
    np.testing.assert_allclose(stats["4.bias"]["l2"], np.linalg.norm(model[4].bias.grad.astype(np.float64)))


def test_gradients_accumulate(rng):
    layer = randomise(nn.GroupNorm(2, 4), 0).double()
    x, g = rng.standard_normal((2, 4, 3)), rng.standard_normal((2, 4, 3))
    layer(x)
    layer.backward(g)
    once = layer.weight.grad.copy()
    layer(x)
    layer.backward(g)
    np.testing.assert_allclose(layer.weight.grad, 2 * once, rtol=1e-12)


# ------------------------------------------------------------------------------- errors
def test_constructor_errors():
    with pytest.raises(ValueError, match=r"GroupNorm: num_channels \(4\) must be divisible by num_groups \(3\)"):
        nn.GroupNorm(3, 4)
    with pytest.raises(ValueError, match=r"num_channels \(4\) must be divisible by num_groups \(8\)"):
        nn.GroupNorm(8, 4)
    with pytest.raises(ValueError, match="GroupNorm: num_groups must be at least 1, got 0"):
        nn.GroupNorm(0, 4)
    with pytest.raises(ValueError, match="GroupNorm: num_channels must be at least 1, got 0"):
        nn.GroupNorm(2, 0)
    with pytest.raises(TypeError, match="GroupNorm: num_groups must be an int, got 2.0"):
        nn.GroupNorm(2.0, 4)
    with pytest.raises(ValueError, match="InstanceNorm2d: num_features must be at least 1, got -1"):
        nn.InstanceNorm2d(-1)
    assert nn.GroupNorm(np.int64(2), np.int32(4)).num_groups == 2


def test_groupnorm_input_errors():
    gn = nn.GroupNorm(2, 4)
    with pytest.raises(ValueError, match=r"GroupNorm.*\(N, 4, \*\).*at least 2 dimensions.*\(4,\)"):
        gn(np.zeros(4, np.float32))
    with pytest.raises(ValueError, match=r"GroupNorm.*4 channels.*\(2, 6, 3\)"):
        gn(np.zeros((2, 6, 3), np.float32))
    with pytest.raises(ValueError, match=r"GroupNorm.*4 channels.*\(2, 6, 3\)"):  # PyTorch accepts this one
        nn.GroupNorm(2, 4, affine=False)(np.zeros((2, 6, 3), np.float32))
    with pytest.raises(ValueError, match=r"GroupNorm.*more than 1 value.*\(1, 4, 1\)"):
        nn.GroupNorm(4, 4)(np.zeros((1, 4, 1), np.float32))
    with pytest.raises(ValueError, match=r"GroupNorm.*more than 1 value.*\(1, 2\)"):
        nn.GroupNorm(2, 2)(np.zeros((1, 2), np.float32))
    nn.GroupNorm(1, 2)(np.zeros((1, 2), np.float32))  # two values in the one group: fine
    with pytest.raises(TypeError, match="GroupNorm.*int"):
        gn(np.zeros((2, 4, 3), np.int32))
    with pytest.raises(TypeError, match="GroupNorm.*float128|GroupNorm.*longdouble"):
        nn.GroupNorm(2, 4, affine=False)(np.zeros((2, 4, 3), np.longdouble))


def test_instancenorm_input_errors():
    inorm = nn.InstanceNorm2d(3)
    with pytest.raises(ValueError, match=r"InstanceNorm2d.*\(N, C, H, W\) or unbatched \(C, H, W\).*\(2, 3\)"):
        inorm(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match=r"InstanceNorm2d.*\(1, 3, 4, 4, 4\)"):
        inorm(np.zeros((1, 3, 4, 4, 4), np.float32))
    with pytest.raises(ValueError, match=r"InstanceNorm2d.*num_features=3 channels on axis 1.*\(2, 5, 4, 4\)"):
        nn.InstanceNorm2d(3, affine=True)(np.zeros((2, 5, 4, 4), np.float32))
    with pytest.raises(ValueError, match=r"InstanceNorm2d.*num_features=3 channels on axis 0.*\(5, 4, 4\)"):
        nn.InstanceNorm2d(3, track_running_stats=True)(np.zeros((5, 4, 4), np.float32))
    with pytest.warns(UserWarning, match="InstanceNorm2d.*num_features is not used"):
        y = inorm(np.ones((2, 5, 4, 4), np.float32))  # as PyTorch: without affine or stats, only a warning
    assert y.shape == (2, 5, 4, 4)
    with pytest.raises(ValueError, match=r"InstanceNorm2d.*more than 1 spatial element.*\(2, 3, 1, 1\)"):
        inorm(np.zeros((2, 3, 1, 1), np.float32))
    tracked = nn.InstanceNorm2d(3, track_running_stats=True)
    with pytest.raises(ValueError, match="more than 1 spatial element"):
        tracked(np.zeros((2, 3, 1, 1), np.float32))
    assert tracked.eval()(np.zeros((2, 3, 1, 1), np.float32)).shape == (2, 3, 1, 1)
    with pytest.raises(TypeError, match="InstanceNorm2d.*bool"):
        inorm(np.zeros((2, 3, 4, 4), bool))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        inorm(np.ones((2, 3, 4, 4), np.float32))  # no warning when the channels match


# ------------------------------------------------------------------------------- PyTorch parity
def _torch_pair(torch, ours, ref_layer):
    with torch.no_grad():
        for name in ("weight", "bias"):
            if getattr(ours, name) is not None:
                getattr(ref_layer, name).copy_(torch.from_numpy(getattr(ours, name).data))
        if getattr(ours, "track_running_stats", False):
            ref_layer.running_mean.copy_(torch.from_numpy(ours.running_mean))
            ref_layer.running_var.copy_(torch.from_numpy(ours.running_var))
    return ref_layer


def _compare(torch, ours, ref_layer, x, g, tol):
    """Output, input and parameter gradients of ``ours`` and PyTorch's ``ref_layer`` on (x, g).

    dx is a difference of terms of size invstd * |g| (with 2 or 3 values per group they nearly cancel), so
    its absolute tolerance scales with that size: in float32 PyTorch's own error reaches ~3e-6 of it.
    """
    xt = torch.from_numpy(x).requires_grad_()
    yt = ref_layer(xt)
    yt.backward(torch.from_numpy(g))
    np.testing.assert_allclose(ours(x), yt.detach().numpy(), **tol)
    term_size = float(np.max(ours.saved.invstd, initial=0) * np.max(np.abs(g), initial=0))
    np.testing.assert_allclose(ours.backward(g), xt.grad.numpy(), rtol=tol["rtol"],
                               atol=tol["atol"] * max(1.0, term_size))
    for name in ("weight", "bias"):
        if getattr(ours, name) is not None:
            np.testing.assert_allclose(getattr(ours, name).grad, getattr(ref_layer, name).grad.numpy(),
                                       rtol=tol["rtol"], atol=tol["atol"] * 10)


TOLERANCES = {np.float32: dict(rtol=1e-4, atol=1e-5), np.float64: dict(rtol=1e-10, atol=1e-12)}


@pytest.mark.torch
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@given(geometry=group_shapes(min_group_size=2), affine=st.booleans(), bias=st.booleans(), seed=seeds)
def test_groupnorm_matches_torch(dtype, geometry, affine, bias, seed):
    torch = pytest.importorskip("torch")
    shape, groups = geometry
    ours = randomise(nn.GroupNorm(groups, shape[1], eps=1e-3, affine=affine, bias=bias), seed).to(dtype)
    ref_layer = torch.nn.GroupNorm(groups, shape[1], eps=1e-3, affine=affine, bias=bias,
                                   dtype=torch.float64 if dtype == np.float64 else torch.float32)
    x = sample(shape, seed).astype(dtype)
    g = np.random.default_rng([seed, 3]).standard_normal(shape).astype(dtype)
    _compare(torch, ours, _torch_pair(torch, ours, ref_layer), x, g, TOLERANCES[dtype])
    assert repr(ours) == repr(ref_layer)


@pytest.mark.torch
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@given(n=st.one_of(st.none(), st.integers(1, 4)), c=st.integers(1, 4), h=st.integers(1, 6), w=st.integers(2, 6),
       affine=st.booleans(), track=st.booleans(), momentum=st.sampled_from([0.1, 0.7, None]), seed=seeds)
def test_instancenorm_matches_torch(dtype, n, c, h, w, affine, track, momentum, seed):
    """Three training steps (running statistics), then eval; unbatched when n is None."""
    torch = pytest.importorskip("torch")
    tdtype = torch.float64 if dtype == np.float64 else torch.float32
    ours = randomise(nn.InstanceNorm2d(c, momentum=momentum, affine=affine, track_running_stats=track), seed)
    ours.to(dtype)
    ref_layer = _torch_pair(torch, ours, torch.nn.InstanceNorm2d(c, momentum=momentum, affine=affine,
                                                                 track_running_stats=track, dtype=tdtype))
    shape = (c, h, w) if n is None else (n, c, h, w)
    tol = TOLERANCES[dtype]
    for step in range(3):
        x = sample(shape, seed + step, scale=step + 1, shift=step).astype(dtype)
        g = np.random.default_rng([seed, 3, step]).standard_normal(shape).astype(dtype)
        _compare(torch, ours, ref_layer, x, g, tol)
        if track:
            np.testing.assert_allclose(ours.running_mean, ref_layer.running_mean.numpy(), **tol)
            np.testing.assert_allclose(ours.running_var, ref_layer.running_var.numpy(), **tol)
            assert int(ours.num_batches_tracked) == int(ref_layer.num_batches_tracked)
    ours.eval()
    ref_layer.eval()
    _compare(torch, ours, ref_layer, x * 2 - 1, g, tol)
    assert repr(ours) == repr(ref_layer)
    assert list(ours.state_dict()) == list(ref_layer.state_dict())


# Inputs where PyTorch raises or not; (layer, shape). PyTorch's error types differ (RuntimeError for some);
# ours are ValueError. The one intended difference is listed apart.
ERROR_CASES = [
    ("gn", (2, 4), (4,)), ("gn", (2, 4), ()), ("gn", (2, 4), (1, 4)), ("gn", (4, 4), (1, 4)),
    ("gn", (4, 4), (1, 4, 1)), ("gn", (4, 4), (2, 4, 1)), ("gn", (2, 2), (1, 2)), ("gn", (1, 2), (1, 2)),
    ("gn", (2, 4), (2, 3, 3)), ("gn", (2, 4), (2, 6, 3)), ("gn", (2, 4), (2, 4, 1, 1, 1)),
    ("in", (3,), (2, 3)), ("in", (3,), (1, 3, 4, 4, 4)), ("in", (3,), (2, 3, 1, 1)), ("in", (3,), (3, 1, 1)),
    ("in", (3,), (3, 1, 2)), ("in_affine", (3,), (2, 5, 4, 4)), ("in_affine", (3,), (5, 4, 4)),
    ("in_track", (3,), (2, 5, 4, 4)), ("in_track", (3,), (2, 3, 1, 1)), ("in_track_eval", (3,), (2, 3, 1, 1)),
]


@pytest.mark.torch
@pytest.mark.parametrize("kind, args, shape", ERROR_CASES)
def test_errors_where_torch_errs(kind, args, shape):
    torch = pytest.importorskip("torch")

    def make(lib):
        if kind == "gn":
            return lib.GroupNorm(*args)
        layer = lib.InstanceNorm2d(args[0], affine=kind == "in_affine", track_running_stats="track" in kind)
        return layer.eval() if kind.endswith("eval") else layer

    def raises(call):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                call()
        except (ValueError, RuntimeError):
            return True
        return False

    x = np.ones(shape, np.float32)
    assert raises(lambda: make(nn)(x)) == raises(lambda: make(torch.nn)(torch.from_numpy(x)))


@pytest.mark.torch
def test_the_one_intended_difference_from_torch():
    """Without affine, PyTorch's GroupNorm accepts any channel count divisible by num_groups (its check is
    the weight's size); num_channels then means nothing. Ours checks it."""
    torch = pytest.importorskip("torch")
    x = np.ones((2, 6, 3), np.float32)
    assert torch.nn.GroupNorm(2, 4, affine=False)(torch.from_numpy(x)).shape == (2, 6, 3)
    with pytest.raises(ValueError, match="GroupNorm"):
        nn.GroupNorm(2, 4, affine=False)(x)


@pytest.mark.parametrize("norm, batch, steps", [("group", 2, 150), ("group", 32, 60), ("instance", 32, 150)])
def test_a_small_cnn_learns_with_it(norm, batch, steps):
    """End to end, at the smallest and largest batch of the normalisation study: the training loss of a
    small CNN on a toy task (horizontal or vertical stripes, which survive per-image normalisation) falls
    to under half its start (measured: GroupNorm 0.77 -> 0.17 at batch 2, 0.68 -> 0.03 at batch 32;
    InstanceNorm, slower on 8x8 images, 0.68 -> 0.10 at batch 32)."""
    import minigrad
    from minigrad import optim

    minigrad.manual_seed(0)
    make = (lambda c: nn.GroupNorm(4, c)) if norm == "group" else (lambda c: nn.InstanceNorm2d(c, affine=True))
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), make(8), nn.ReLU(), nn.AvgPool2d(2),
                          nn.Conv2d(8, 8, 3, padding=1), make(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(8, 2))
    crit, opt = nn.CrossEntropyLoss(), optim.Adam(model.parameters(), lr=1e-2)
    rng = np.random.default_rng(0)
    losses = []
    for _ in range(steps):
        y = rng.integers(0, 2, batch)
        stripes = np.where(y[:, None, None] == 1, np.arange(8)[:, None] % 2, np.arange(8)[None, :] % 2) * 2.0
        x = (rng.standard_normal((batch, 3, 8, 8)) + stripes[:, None]).astype(np.float32)
        opt.zero_grad()
        losses.append(crit(model(x), y))
        model.backward(crit.backward())
        opt.step()
    k = steps // 5
    assert np.mean(losses[-k:]) < 0.5 * np.mean(losses[:k]), losses
