"""BatchNorm1d/2d: finite-difference gradients (train and eval), PyTorch's running statistics, errors."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import reference as ref
from thread_counts import assert_same_on_one_and_all_threads
from minigrad import gradcheck, nn

EPS_FD = 1e-5  # finite-difference step; see test_activation.EPS for why not 1e-6


def reference_forward(x, mean, var, weight, bias, eps):
    """Batch norm with the given statistics (tests/reference.py's formula)."""
    return ref.batch_norm(x, np.asarray(weight, np.float64), np.asarray(bias, np.float64), eps,
                          np.asarray(mean, np.float64), np.asarray(var, np.float64))


def randomise(bn, seed):
    """Non-trivial gamma, beta and running statistics, so every term of the gradient is exercised."""
    rng = np.random.default_rng(seed)
    if bn.affine:
        bn.weight.data[...] = rng.uniform(0.5, 2.0, bn.num_features) * rng.choice([-1, 1], bn.num_features)
        bn.bias.data[...] = rng.standard_normal(bn.num_features)
    if bn.track_running_stats:
        bn.running_mean[...] = rng.standard_normal(bn.num_features)
        bn.running_var[...] = rng.uniform(0.5, 2.0, bn.num_features)
    return bn


# Batch statistics need at least this many values per channel here. One is an error (tested below);
# with two, xhat = +-1 whatever x is, so the true input gradient is O(eps) and finite differences
# measure only rounding.
MIN_COUNT = 3


def sample(shape, seed):
    """Input for a gradcheck with ``seed``, from a stream independent of gradcheck's upstream gradient.

    (Drawn from the same seed, x would be an affine function of the upstream u, which lies in
    span{1, xhat}: BN's input gradient is then exactly 0 and the check measures only rounding.)
    """
    return np.random.default_rng([seed, 1]).standard_normal(shape)

bn_options = dict(affine=st.booleans(), track=st.booleans(), training=st.booleans(),
                  momentum=st.sampled_from([0.1, 0.5, None]), eps=st.sampled_from([1e-5, 1e-3]),
                  seed=st.integers(0, 2**16))


@given(n=st.integers(1, 4), c=st.integers(1, 4), h=st.integers(1, 5), w=st.integers(1, 5), **bn_options)
def test_gradcheck_2d(n, c, h, w, affine, track, training, momentum, eps, seed):
    if (training or not track) and n * h * w < MIN_COUNT:
        n = MIN_COUNT
    bn = randomise(nn.BatchNorm2d(c, eps=eps, momentum=momentum, affine=affine, track_running_stats=track), seed)
    bn.train(training)
    x = sample((n, c, h, w), seed) * 2 + 1
    res = gradcheck(bn, x, seed=seed, eps=EPS_FD)
    assert res.ok, str(res)


@given(n=st.integers(MIN_COUNT, 6), c=st.integers(1, 5), length=st.one_of(st.none(), st.integers(1, 4)), **bn_options)
def test_gradcheck_1d(n, c, length, affine, track, training, momentum, eps, seed):
    bn = randomise(nn.BatchNorm1d(c, eps=eps, momentum=momentum, affine=affine, track_running_stats=track), seed)
    bn.train(training)
    shape = (n, c) if length is None else (n, c, length)
    res = gradcheck(bn, sample(shape, seed), seed=seed, eps=EPS_FD)
    assert res.ok, str(res)


def test_gradcheck_elementwise_train():
    bn = randomise(nn.BatchNorm2d(2), 0)
    res = gradcheck(bn, (3, 2, 2, 3), mode="elementwise", eps=EPS_FD)
    assert res.ok, str(res)


def test_backward_formula(rng):
    bn = randomise(nn.BatchNorm2d(3), 1).double()
    x = rng.standard_normal((4, 3, 2, 5))
    g = rng.standard_normal(x.shape)
    bn(x)
    dx = bn.backward(g)
    mean, var = x.mean((0, 2, 3), keepdims=True), x.var((0, 2, 3), keepdims=True)
    xhat = (x - mean) / np.sqrt(var + bn.eps)
    gamma = bn.weight.data.reshape(1, 3, 1, 1)
    expected = gamma / np.sqrt(var + bn.eps) * (g - g.mean((0, 2, 3), keepdims=True)
                                                 - xhat * (g * xhat).mean((0, 2, 3), keepdims=True))
    np.testing.assert_allclose(dx, expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(bn.weight.grad, (g * xhat).sum((0, 2, 3)), rtol=1e-10)
    np.testing.assert_allclose(bn.bias.grad, g.sum((0, 2, 3)), rtol=1e-10)


def test_ones_upstream_gives_zero_input_gradient(rng):
    """Why gradcheck uses a random upstream gradient: with ones, BN's input gradient vanishes."""
    bn = nn.BatchNorm2d(2).double()
    y = bn(rng.standard_normal((3, 2, 4, 4)))
    np.testing.assert_allclose(bn.backward(np.ones_like(y)), 0, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_training_output_is_normalised(dtype, rng):
    x = (rng.standard_normal((8, 5, 6, 7)) * rng.uniform(0.1, 10, (1, 5, 1, 1)) + 3).astype(dtype)
    bn = nn.BatchNorm2d(5)
    y = bn(x)
    assert y.dtype == dtype
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(y.mean((0, 2, 3), dtype=np.float64), 0, atol=tol)
    var = x.astype(np.float64).var((0, 2, 3))
    np.testing.assert_allclose(y.var((0, 2, 3), dtype=np.float64), var / (var + bn.eps), rtol=tol)
    np.testing.assert_allclose(y, reference_forward(x.astype(np.float64), x.mean((0, 2, 3), dtype=np.float64),
                                                    var, np.ones(5), np.zeros(5), bn.eps), rtol=tol, atol=tol)


def test_float32_large_mean_keeps_precision(rng):
    """float64 sums and the two-pass variance: a mean 1e4 times the std does not destroy the variance."""
    x = (1e4 + rng.standard_normal((64, 2, 8, 8))).astype(np.float32)
    y = nn.BatchNorm2d(2)(x)
    np.testing.assert_allclose(y.var((0, 2, 3), dtype=np.float64), 1, atol=1e-3)
    np.testing.assert_allclose(y.mean((0, 2, 3), dtype=np.float64), 0, atol=1e-4)


def test_affine_forward_matches_reference(rng):
    bn = randomise(nn.BatchNorm1d(4), 2).double()
    x = rng.standard_normal((6, 4, 3))
    expected = reference_forward(x, x.mean((0, 2)), x.var((0, 2)), bn.weight.data, bn.bias.data, bn.eps)
    np.testing.assert_allclose(bn(x), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("momentum", [0.1, 0.3, None])
def test_running_stats_hand_formula(momentum, rng):
    bn = nn.BatchNorm2d(3, momentum=momentum).double()
    mean, var = np.zeros(3), np.ones(3)
    for k in range(1, 5):
        x = rng.standard_normal((4, 3, 2, 3)) * k + k
        bn(x)
        n = 4 * 2 * 3
        factor = 1.0 / k if momentum is None else momentum
        mean = (1 - factor) * mean + factor * x.mean((0, 2, 3))
        var = (1 - factor) * var + factor * x.var((0, 2, 3)) * n / (n - 1)  # UNBIASED, as PyTorch
        np.testing.assert_allclose(bn.running_mean, mean, rtol=1e-12)
        np.testing.assert_allclose(bn.running_var, var, rtol=1e-12)
        assert int(bn.num_batches_tracked) == k
        assert bn.num_batches_tracked.dtype == np.int64


def test_momentum_none_is_cumulative_average(rng):
    bn = nn.BatchNorm1d(2, momentum=None).double()
    batches = [rng.standard_normal((5, 2)) + i for i in range(6)]
    for x in batches:
        bn(x)
    np.testing.assert_allclose(bn.running_mean, np.mean([x.mean(0) for x in batches], axis=0), rtol=1e-12)
    np.testing.assert_allclose(bn.running_var, np.mean([x.var(0, ddof=1) for x in batches], axis=0), rtol=1e-12)


def test_eval_uses_running_stats_and_leaves_them(rng):
    bn = randomise(nn.BatchNorm2d(3), 3).double()
    bn(rng.standard_normal((4, 3, 3, 3)))  # one training step
    state = bn.state_dict()
    bn.eval()
    x = rng.standard_normal((2, 3, 3, 3)) * 5
    y = bn(x)
    expected = reference_forward(x, bn.running_mean, bn.running_var, bn.weight.data, bn.bias.data, bn.eps)
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)
    g = rng.standard_normal(y.shape)
    dx = bn.backward(g)  # eval: a fixed affine map per channel
    np.testing.assert_allclose(dx, g * (bn.weight.data / np.sqrt(bn.running_var + bn.eps)).reshape(1, 3, 1, 1),
                               rtol=1e-12)
    for key, value in bn.state_dict().items():
        assert np.array_equal(value, state[key]), key
    bn(x[:1, :, :1, :1])  # one value per channel is fine in eval


def test_without_running_stats_always_uses_batch(rng):
    bn = nn.BatchNorm2d(3, track_running_stats=False).double()
    assert list(bn.state_dict()) == ["weight", "bias"]
    assert bn.running_mean is None and bn.running_var is None and bn.num_batches_tracked is None
    x = rng.standard_normal((4, 3, 2, 2)) + 2
    bn.eval()
    y = bn(x)
    np.testing.assert_allclose(y.mean((0, 2, 3)), 0, atol=1e-12)


def test_state_dict_keys_as_pytorch():
    assert list(nn.BatchNorm2d(4).state_dict()) == ["weight", "bias", "running_mean", "running_var",
                                                    "num_batches_tracked"]
    assert list(nn.BatchNorm1d(4, affine=False).state_dict()) == ["running_mean", "running_var",
                                                                  "num_batches_tracked"]
    bn = nn.BatchNorm2d(4)
    assert np.all(bn.weight.data == 1) and np.all(bn.bias.data == 0)
    assert np.all(bn.running_mean == 0) and np.all(bn.running_var == 1) and int(bn.num_batches_tracked) == 0
    assert repr(bn) == "BatchNorm2d(4, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)"


def test_load_state_dict_and_reset(rng):
    a = nn.BatchNorm2d(2)
    a(rng.standard_normal((3, 2, 2, 2)).astype(np.float32))
    b = nn.BatchNorm2d(2).load_state_dict(a.state_dict())
    assert np.array_equal(b.running_var, a.running_var) and int(b.num_batches_tracked) == 1
    b(rng.standard_normal((3, 2, 2, 2)).astype(np.float32))  # buffers stay registered after updates
    assert int(b.state_dict()["num_batches_tracked"]) == 2
    b.reset_running_stats()
    assert np.all(b.running_mean == 0) and np.all(b.running_var == 1) and int(b.num_batches_tracked) == 0


def test_to_float64(rng):
    bn = nn.BatchNorm2d(2).to(np.float64)
    assert bn.weight.dtype == np.float64 and bn.running_var.dtype == np.float64
    assert bn.num_batches_tracked.dtype == np.int64
    y = bn(rng.standard_normal((3, 2, 2, 2)).astype(np.float32))
    assert y.dtype == np.float64
    assert nn.BatchNorm2d(2)(rng.standard_normal((3, 2, 2, 2))).dtype == np.float64


def test_input_not_mutated(rng):
    bn = nn.BatchNorm2d(3)
    x = rng.standard_normal((4, 3, 2, 2)).astype(np.float32)
    x0 = x.copy()
    y = bn(x)
    bn.backward(rng.standard_normal(y.shape).astype(np.float32))
    assert np.array_equal(x, x0)


def test_one_value_per_channel_in_training():
    with pytest.raises(ValueError, match="more than 1 value per channel when training"):
        nn.BatchNorm2d(3)(np.zeros((1, 3, 1, 1), dtype=np.float32))
    with pytest.raises(ValueError, match=r"BatchNorm1d.*\(1, 3\)"):
        nn.BatchNorm1d(3)(np.zeros((1, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        nn.BatchNorm1d(3, track_running_stats=False).eval()(np.zeros((1, 3), dtype=np.float32))


def test_bad_input():
    with pytest.raises(ValueError, match=r"BatchNorm2d.*4 dimensions.*\(2, 3, 4\)"):
        nn.BatchNorm2d(3)(np.zeros((2, 3, 4), dtype=np.float32))
    with pytest.raises(ValueError, match=r"BatchNorm2d.*3 channels.*\(2, 4, 2, 2\)"):
        nn.BatchNorm2d(3)(np.zeros((2, 4, 2, 2), dtype=np.float32))
    with pytest.raises(ValueError, match=r"BatchNorm1d.*2 or 3 dimensions"):
        nn.BatchNorm1d(3)(np.zeros((2, 3, 4, 4), dtype=np.float32))
    with pytest.raises(TypeError, match="BatchNorm1d.*int"):
        nn.BatchNorm1d(3)(np.zeros((2, 3), dtype=np.int32))
    with pytest.raises(TypeError, match="BatchNorm1d.*float128|BatchNorm1d.*longdouble"):
        nn.BatchNorm1d(3, affine=False)(np.zeros((2, 3), dtype=np.longdouble))


def test_float16_computes_in_float32(rng):
    x = rng.standard_normal((4, 3)).astype(np.float16)
    y = nn.BatchNorm1d(3, affine=False)(x)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y.mean(0), 0, atol=1e-6)


@pytest.mark.torch
def test_matches_torch(rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((4, 3, 5, 6)).astype(np.float32) * 2 + 1
    g = rng.standard_normal(x.shape).astype(np.float32)
    ours = randomise(nn.BatchNorm2d(3, momentum=0.2), 4)
    ref = torch.nn.BatchNorm2d(3, momentum=0.2)
    with torch.no_grad():
        ref.weight.copy_(torch.from_numpy(ours.weight.data))
        ref.bias.copy_(torch.from_numpy(ours.bias.data))
        ref.running_mean.copy_(torch.from_numpy(ours.running_mean))
        ref.running_var.copy_(torch.from_numpy(ours.running_var))
    xt = torch.from_numpy(x).requires_grad_()
    yt = ref(xt)
    yt.backward(torch.from_numpy(g))
    y = ours(x)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ours.backward(g), xt.grad.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ours.weight.grad, ref.weight.grad.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ours.running_var, ref.running_var.numpy(), rtol=1e-5)
    np.testing.assert_allclose(ours.running_mean, ref.running_mean.numpy(), rtol=1e-5, atol=1e-7)
    ours.eval()
    ref.eval()
    np.testing.assert_allclose(ours(x), ref(torch.from_numpy(x)).detach().numpy(), rtol=1e-4, atol=1e-5)


# Both memory orders of the kernels (per channel slice when L > 1, row by row for (N, C) input), on
# the calling thread and on Numba's threads, against the NumPy formulas of tests/reference.py.
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape, threaded", [((6, 5, 40, 36), True), ((7, 3, 2, 3), False), ((3000, 70), True),
                                             ((9, 70), False)],
                         ids=["channels-threaded", "channels-serial", "rows-threaded", "rows-serial"])
def test_kernels_match_reference(dtype, training, shape, threaded, rng):
    from minigrad.kernels.batchnorm import PARALLEL_MIN_SIZE

    c = shape[1]
    x = (rng.standard_normal(shape) * 3 + 2).astype(dtype)
    assert (x.size >= PARALLEL_MIN_SIZE) == threaded
    g = rng.standard_normal(x.shape).astype(dtype)
    bn = randomise((nn.BatchNorm2d if len(shape) == 4 else nn.BatchNorm1d)(c), 5).to(dtype).train(training)
    y = bn(x)
    w, b = bn.weight.data.astype(np.float64), bn.bias.data.astype(np.float64)
    stats = {} if training else dict(mean=bn.running_mean.astype(np.float64), var=bn.running_var.astype(np.float64))
    tol = dict(rtol=2e-5, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-11, atol=1e-11)
    np.testing.assert_allclose(y, ref.batch_norm(x, w, b, bn.eps, **stats), **tol)
    dx, dw, db = ref.batch_norm_backward(x, g, w, bn.eps, **stats)
    np.testing.assert_allclose(bn.backward(g), dx, **tol)
    np.testing.assert_allclose(bn.weight.grad, dw, rtol=1e-4 if dtype == np.float32 else 1e-10)
    np.testing.assert_allclose(bn.bias.grad, db, rtol=1e-4 if dtype == np.float32 else 1e-10, atol=1e-8)


def test_requires_grad_false_leaves_the_parameter_gradients(rng):
    bn = randomise(nn.BatchNorm1d(3), 1).double().requires_grad_(False)
    x = rng.standard_normal((5, 3))
    bn(x)
    bn.backward(rng.standard_normal((5, 3)))
    assert not bn.weight.grad.any() and not bn.bias.grad.any()


def test_rows_kernels_give_the_same_numbers_on_any_number_of_threads(rng):
    """BatchNorm1d's row-walking kernels add per-block sums in block order: 1 thread or all, bit-identical."""
    x = (rng.standard_normal((3000, 70)) * 3 + 40).astype(np.float32)
    g = rng.standard_normal(x.shape).astype(np.float32)

    def run():
        bn = randomise(nn.BatchNorm1d(70), 5)
        return bn(x), bn.backward(g), bn.weight.grad.copy(), bn.bias.grad.copy(), bn.running_var.copy()

    assert_same_on_one_and_all_threads(run)
