"""MaxPool2d, AvgPool2d, AdaptiveAvgPool2d: naive-loop oracles, finite differences, ties, errors."""
import numpy as np
import pytest
import reference as ref
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import pool_geometry, seeds

from minigrad import gradcheck, nn


def distinct_values(shape, seed):
    """A random permutation of well-separated values: no ties, so max-pool's argmax is stable under the
    gradient check's perturbations (1e-6 against a gap of 0.1)."""
    rng = np.random.default_rng(seed)
    return (rng.permutation(int(np.prod(shape))) * 0.1 - 3.0).reshape(shape)


def _max(g):
    return nn.MaxPool2d(g.kernel, g.stride, g.padding, ceil_mode=g.ceil_mode)


def _avg(g, count_include_pad=True, divisor_override=None):
    return nn.AvgPool2d(g.kernel, g.stride, g.padding, ceil_mode=g.ceil_mode,
                        count_include_pad=count_include_pad, divisor_override=divisor_override)


# ---------------------------------------------------------------------------------------- MaxPool2d
@given(g=pool_geometry(), seed=seeds)
def test_max_pool_matches_naive_loop(g, seed):
    x = distinct_values(g.input_shape, seed)
    x_before = x.copy()
    m = _max(g)
    y = m(x)
    y_ref, where = ref.max_pool2d(x, g.kernel, g.stride, g.padding, g.ceil_mode)
    assert y.shape == g.output_shape
    np.testing.assert_array_equal(y, y_ref)
    grad_output = np.random.default_rng(seed).standard_normal(y.shape)
    np.testing.assert_allclose(m.backward(grad_output), ref.max_pool2d_backward(grad_output, where, x.shape),
                               rtol=1e-13, atol=1e-13)
    np.testing.assert_array_equal(x, x_before)


@given(g=pool_geometry(), seed=seeds)
def test_max_pool_gradcheck(g, seed):
    res = gradcheck(_max(g), distinct_values(g.input_shape, seed), seed=seed % 1000)
    assert res.ok, str(res)


def test_max_pool_ties_go_to_the_first_maximum():
    x = np.array([[[[1.0, 2.0, 2.0], [2.0, 0.0, 2.0], [2.0, 2.0, 2.0]]]])
    m = nn.MaxPool2d(2, stride=1)
    np.testing.assert_array_equal(m(x), [[[[2.0, 2.0], [2.0, 2.0]]]])
    dx = m.backward(np.array([[[[1.0, 10.0], [100.0, 1000.0]]]]))
    # windows: (0,0) first max at (0,1); (0,1) at (0,1); (1,0) at (1,0); (1,1) at (1,2)
    np.testing.assert_array_equal(dx, [[[[0.0, 11.0, 0.0], [100.0, 0.0, 1000.0], [0.0, 0.0, 0.0]]]])


@given(g=pool_geometry(), seed=seeds)
def test_max_pool_ties_on_every_geometry_go_to_the_first_maximum_in_row_major_order(g, seed):
    """Inputs of three values only (ties in nearly every window), overlapping windows, padding, ceil_mode: each
    window's gradient goes to the first of its maxima in row-major order, np.argmax's order over the window
    (PyTorch's CPU kernel scans rows then columns and moves only on a strictly larger value)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 3, g.input_shape).astype(np.float64)
    m = _max(g)
    y = m(x)
    grad_output = rng.permutation(y.size).reshape(y.shape) + 1.0  # distinct: each window's share is visible
    grad_input = m.backward(grad_output)
    (kh, kw), (sh, sw), (ph, pw) = g.kernel, g.stride, g.padding
    padded = np.pad(x, ((0, 0), (0, 0), (ph, ph + kh), (pw, pw + kw)), constant_values=-np.inf)
    expected = np.zeros(padded.shape)
    for n, c, h, w in np.ndindex(y.shape):
        window = padded[n, c, h * sh:h * sh + kh, w * sw:w * sw + kw]
        i, j = np.unravel_index(np.argmax(window), window.shape)  # the first maximum, rows then columns
        assert window[i, j] == y[n, c, h, w]
        expected[n, c, h * sh + i, w * sw + j] += grad_output[n, c, h, w]
    np.testing.assert_array_equal(grad_input, expected[:, :, ph:ph + x.shape[2], pw:pw + x.shape[3]])


@pytest.mark.torch
def test_max_pool_ties_match_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    for kernel, stride, padding, ceil_mode in [(2, 1, 0, False), ((3, 2), (1, 2), (1, 1), True), (3, 2, 1, False),
                                               (2, 2, 0, False), ((2, 3), 1, (0, 1), False)]:
        x = rng.integers(0, 2, (2, 3, 7, 6)).astype(np.float64)
        m = nn.MaxPool2d(kernel, stride, padding, ceil_mode=ceil_mode)
        y = m(x)
        grad_output = rng.standard_normal(y.shape)
        xt = torch.tensor(x, requires_grad=True)
        yt = torch.nn.functional.max_pool2d(xt, kernel, stride, padding, ceil_mode=ceil_mode)
        yt.backward(torch.tensor(grad_output))
        np.testing.assert_array_equal(y, yt.detach().numpy())
        np.testing.assert_allclose(m.backward(grad_output), xt.grad.numpy(), rtol=1e-15, atol=0)


def test_max_pool_pads_with_minus_infinity():
    x = -np.arange(1.0, 10.0).reshape(1, 1, 3, 3)  # all negative: zero padding would win
    y = nn.MaxPool2d(3, stride=1, padding=1)(x)
    np.testing.assert_array_equal(y, ref.max_pool2d(x, (3, 3), (1, 1), (1, 1))[0])
    assert np.all(y < 0)


def test_max_pool_two_by_two_on_a_vgg_sized_batch():
    x = distinct_values((100, 32, 32, 32), 0).astype(np.float32)
    y = nn.MaxPool2d(2)(x)
    np.testing.assert_array_equal(y, x.reshape(100, 32, 16, 2, 16, 2).max(axis=(3, 5)))


@pytest.mark.parametrize("shape", [(2, 3, 4, 6), (2, 3, 5, 7), (1, 2, 2, 2), (3, 1, 9, 4)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_two_by_two_fast_path_with_ties_and_odd_sizes(shape, dtype):
    """The unrolled 2x2/stride-2 kernels against the naive loops, on inputs full of ties (few distinct
    values): the first maximum in row-major order must win, odd last rows/columns get no gradient."""
    rng = np.random.default_rng(sum(shape))
    x = rng.integers(0, 3, shape).astype(dtype)
    grad_output = rng.standard_normal((shape[0], shape[1], shape[2] // 2, shape[3] // 2)).astype(dtype)
    m = nn.MaxPool2d(2)
    y_ref, where = ref.max_pool2d(x, (2, 2), (2, 2), (0, 0))
    np.testing.assert_array_equal(m(x), y_ref)
    np.testing.assert_array_equal(m.backward(grad_output), ref.max_pool2d_backward(grad_output, where, shape))
    a = nn.AvgPool2d(2)
    np.testing.assert_allclose(a(x), ref.avg_pool2d(x, (2, 2), (2, 2), (0, 0)), rtol=1e-6)
    expected = np.zeros(shape)
    h, w = shape[2] // 2 * 2, shape[3] // 2 * 2
    expected[:, :, :h, :w] = np.repeat(np.repeat(grad_output / 4, 2, axis=2), 2, axis=3)
    np.testing.assert_allclose(a.backward(grad_output), expected, rtol=1e-6)
    for layer, inp in ((nn.MaxPool2d(2), distinct_values(shape, 1)), (nn.AvgPool2d(2), x.astype(np.float64))):
        res = gradcheck(layer, inp)
        assert res.ok, str(res)


@pytest.mark.parametrize("where", [(0, 0), (0, 1), (1, 0), (1, 1)])
@pytest.mark.parametrize("kernel, stride", [(2, 2), (2, 1)])  # the fast path and the general loops
def test_max_pool_nan_propagates(where, kernel, stride):
    x = np.zeros((1, 1, 2, 2))
    x[(0, 0) + where] = np.nan
    m = nn.MaxPool2d(kernel, stride)
    assert np.isnan(m(x)).all()
    dx = m.backward(np.ones((1, 1, 1, 1)))
    assert dx[(0, 0) + where] == 1.0 and dx.sum() == 1.0  # the gradient goes to the NaN


# ---------------------------------------------------------------------------------------- AvgPool2d
@given(g=pool_geometry(), count_include_pad=st.booleans(), divisor=st.sampled_from([None, 1, 3]), seed=seeds)
def test_avg_pool_matches_naive_loop(g, count_include_pad, divisor, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(g.input_shape)
    m = _avg(g, count_include_pad, divisor)
    y = m(x)
    assert y.shape == g.output_shape
    np.testing.assert_allclose(y, ref.avg_pool2d(x, g.kernel, g.stride, g.padding, g.ceil_mode,
                                                 count_include_pad, divisor), rtol=1e-12, atol=1e-14)


@given(g=pool_geometry(), count_include_pad=st.booleans(), divisor=st.sampled_from([None, 2]), seed=seeds)
def test_avg_pool_gradcheck(g, count_include_pad, divisor, seed):
    res = gradcheck(_avg(g, count_include_pad, divisor), g.input_shape, seed=seed % 1000)
    assert res.ok, str(res)


def test_avg_pool_exact_backward_is_the_transpose():
    """<avg(x), u> = <x, avg'(u)> for the linear map avg (no finite differences needed)."""
    rng = np.random.default_rng(3)
    m = nn.AvgPool2d((3, 2), stride=(2, 1), padding=(1, 1), count_include_pad=False, ceil_mode=True)
    x = rng.standard_normal((2, 3, 7, 6))
    y = m(x)
    u = rng.standard_normal(y.shape)
    assert np.isclose(np.vdot(y, u), np.vdot(x, m.backward(u)), rtol=1e-12)


def test_avg_pool_two_by_two():
    x = np.random.default_rng(4).standard_normal((100, 32, 32, 32)).astype(np.float32)
    y = nn.AvgPool2d(2)(x)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, x.reshape(100, 32, 16, 2, 16, 2).mean(axis=(3, 5)), rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------------------------- AdaptiveAvgPool2d
@given(shape=st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 9), st.integers(1, 9)),
       out=st.tuples(st.integers(1, 5), st.integers(1, 5)), seed=seeds)
def test_adaptive_avg_pool_matches_naive_loop_and_gradcheck(shape, out, seed):
    x = np.random.default_rng(seed).standard_normal(shape)
    m = nn.AdaptiveAvgPool2d(out)
    np.testing.assert_allclose(m(x), ref.adaptive_avg_pool2d(x, out), rtol=1e-12, atol=1e-14)
    res = gradcheck(m, x, seed=seed % 1000)
    assert res.ok, str(res)


def test_global_average_pooling():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 3, 5, 7))
    for m in (nn.AdaptiveAvgPool2d(1), nn.AdaptiveAvgPool2d((1, 1))):
        y = m(x)
        np.testing.assert_allclose(y, x.mean(axis=(2, 3), keepdims=True), rtol=1e-13)
        u = rng.standard_normal(y.shape)
        np.testing.assert_allclose(m.backward(u), np.broadcast_to(u / 35, x.shape), rtol=1e-13)
    res = gradcheck(nn.AdaptiveAvgPool2d(1), x)
    assert res.ok, str(res)


def test_adaptive_none_keeps_that_size():
    x = np.random.default_rng(6).standard_normal((1, 2, 6, 5))
    assert nn.AdaptiveAvgPool2d((None, 2))(x).shape == (1, 2, 6, 2)


# ---------------------------------------------------------------------------------------- shared
@pytest.mark.parametrize("make", [lambda: nn.MaxPool2d((2, 3), stride=(1, 2), padding=(1, 0)),
                                  lambda: nn.AvgPool2d((2, 3), stride=(1, 2), padding=(1, 0)),
                                  lambda: nn.AdaptiveAvgPool2d((2, 3))])
@given(seed=seeds)
@settings(max_examples=5)
def test_float32_close_to_float64_and_dtypes(make, seed):
    x = distinct_values((2, 3, 6, 7), seed)
    m = make()
    y64, y32 = m(x), make()(x.astype(np.float32))
    assert y64.dtype == np.float64 and y32.dtype == np.float32
    np.testing.assert_allclose(y32, y64, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("layer, name", [(nn.MaxPool2d(2), "MaxPool2d"), (nn.AvgPool2d(2), "AvgPool2d"),
                                         (nn.AdaptiveAvgPool2d(1), "AdaptiveAvgPool2d")])
def test_bad_input(layer, name):
    with pytest.raises(ValueError, match=rf"{name}.*4 dimensions.*\(3, 4, 4\)"):
        layer(np.zeros((3, 4, 4)))
    with pytest.raises(TypeError, match=rf"{name}.*floating"):
        layer(np.zeros((1, 1, 4, 4), np.int64))
    with pytest.raises(TypeError, match=rf"{name}.*floating"):
        layer(np.zeros((1, 1, 4, 4), bool))


@pytest.mark.parametrize("cls", [nn.MaxPool2d, nn.AvgPool2d])
def test_too_small_input_and_bad_arguments(cls):
    with pytest.raises(ValueError, match=rf"{cls.__name__}.*\(1, 2\).*too small"):
        cls(3)(np.zeros((1, 1, 1, 2)))
    with pytest.raises(ValueError, match=rf"{cls.__name__}.*at most half"):
        cls(3, padding=2)
    with pytest.raises(ValueError, match=cls.__name__):
        cls(0)
    with pytest.raises(ValueError, match=cls.__name__):
        cls(2, stride=0)
    with pytest.raises(TypeError, match=cls.__name__):
        cls(2.0)


def test_bad_adaptive_output_size():
    for bad in (0, (1, 0), (1, 2, 3), 1.5, True):
        with pytest.raises(ValueError, match="AdaptiveAvgPool2d"):
            nn.AdaptiveAvgPool2d(bad)


def test_defaults_and_repr_as_pytorch():
    m = nn.MaxPool2d(2)
    assert m.stride == 2 and repr(m) == "MaxPool2d(kernel_size=2, stride=2, padding=0, dilation=1, ceil_mode=False)"
    a = nn.AvgPool2d(2)
    assert a.stride == 2 and a.count_include_pad is True
    assert repr(a) == "AvgPool2d(kernel_size=2, stride=2, padding=0)"
    assert repr(nn.AdaptiveAvgPool2d(1)) == "AdaptiveAvgPool2d(output_size=1)"
    assert nn.MaxPool2d(3)(np.zeros((1, 1, 7, 8), np.float32)).shape == (1, 1, 2, 2)  # floor, no divisibility
    with pytest.raises(ValueError, match="MaxPool2d"):
        nn.MaxPool2d(2, dilation=2)


def test_default_stride_is_the_kernel():
    x = np.random.default_rng(8).standard_normal((1, 1, 6, 9))
    np.testing.assert_array_equal(nn.AvgPool2d((2, 3))(x), nn.AvgPool2d((2, 3), stride=(2, 3))(x))


@pytest.mark.torch
@given(g=pool_geometry(), count_include_pad=st.booleans(), seed=seeds)
@settings(max_examples=15)
def test_pooling_matches_torch(g, count_include_pad, seed):
    torch = pytest.importorskip("torch")
    x = distinct_values(g.input_shape, seed)
    tx = torch.tensor(x)
    y = _max(g)(x)
    np.testing.assert_array_equal(y, torch.nn.functional.max_pool2d(tx, g.kernel, g.stride, g.padding,
                                                                    ceil_mode=g.ceil_mode).numpy())
    y = _avg(g, count_include_pad)(x)
    t = torch.nn.functional.avg_pool2d(tx, g.kernel, g.stride, g.padding, ceil_mode=g.ceil_mode,
                                       count_include_pad=count_include_pad)
    np.testing.assert_allclose(y, t.numpy(), rtol=1e-12, atol=1e-14)
