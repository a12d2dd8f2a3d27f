"""Activations: finite-difference gradients away from kinks, exact formulas, kernels vs NumPy, dtypes."""
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import reference as ref
from minigrad import gradcheck, nn
from minigrad.nn import activation

shapes = st.lists(st.integers(1, 5), min_size=1, max_size=4).map(tuple)

# Finite-difference step. In direction mode the error is relative to <grad, v>, which a random unit
# direction v can make small; the rounding error of f (~1e-16 |f| / eps) then dominates with eps=1e-6
# (seen: 2e-6 for Identity, whose backward is exact). eps=1e-5 cuts that 10x; the truncation error
# (eps^2 |f'''| ~ 1e-10) stays far below 1e-6, and inputs sit >= 1e-2 from any kink.
EPS = 1e-5


def away_from_zero(shape, seed, margin=1e-2):
    """Standard-normal values pushed at least ``margin`` from 0 (the kink of ReLU-like functions)."""
    x = np.random.default_rng([seed, 1]).standard_normal(shape)  # independent of gradcheck's stream
    return np.where(x >= 0, x + margin, x - margin)


@given(shape=shapes, seed=st.integers(0, 2**16))
def test_gradcheck_relu(shape, seed):
    res = gradcheck(nn.ReLU(), away_from_zero(shape, seed), seed=seed, eps=EPS)
    assert res.ok, str(res)


@given(shape=shapes, slope=st.floats(-0.9, 2.0), seed=st.integers(0, 2**16))
def test_gradcheck_leaky_relu(shape, slope, seed):
    res = gradcheck(nn.LeakyReLU(slope), away_from_zero(shape, seed), seed=seed, eps=EPS)
    assert res.ok, str(res)


@pytest.mark.parametrize("layer", [nn.Tanh, nn.Sigmoid, nn.SELU, nn.Identity])
@given(shape=shapes, scale=st.sampled_from([0.1, 1.0, 4.0]), seed=st.integers(0, 2**16))
def test_gradcheck_smooth(layer, shape, scale, seed):
    # SELU's kink at 0 is C^0 only (slopes scale vs scale*alpha): keep away from it too.
    res = gradcheck(layer(), scale * away_from_zero(shape, seed), seed=seed, eps=EPS)
    assert res.ok, str(res)


def test_formulas(rng):
    x = rng.standard_normal((3, 4, 5)) * 3
    np.testing.assert_array_equal(nn.ReLU()(x), np.maximum(x, 0))
    np.testing.assert_array_equal(nn.LeakyReLU()(x), np.where(x >= 0, x, 0.01 * x))
    np.testing.assert_allclose(nn.Tanh()(x), np.tanh(x), rtol=1e-15)
    np.testing.assert_allclose(nn.Sigmoid()(x), 1 / (1 + np.exp(-x)), rtol=1e-14)
    alpha, scale = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946
    np.testing.assert_allclose(nn.SELU()(x), scale * (np.maximum(0, x) + np.minimum(0, alpha * (np.exp(x) - 1))),
                               rtol=1e-13)
    assert nn.Identity()(x) is x


def test_backward_formulas(rng):
    x = away_from_zero((4, 6), 0)
    g = rng.standard_normal((4, 6))
    cases = {
        nn.ReLU(): (x > 0) * g,
        nn.LeakyReLU(0.3): np.where(x > 0, 1, 0.3) * g,
        nn.LeakyReLU(-0.5): np.where(x > 0, 1, -0.5) * g,
        nn.Tanh(): (1 - np.tanh(x) ** 2) * g,
        nn.Sigmoid(): (np.exp(-x) / (1 + np.exp(-x)) ** 2) * g,
        nn.SELU(): np.where(x > 0, activation.SELU_SCALE, activation.SELU_SCALE * activation.SELU_ALPHA * np.exp(x)) * g,
        nn.Identity(): g,
    }
    for layer, expected in cases.items():
        layer(x)
        np.testing.assert_allclose(layer.backward(g), expected, rtol=1e-12, err_msg=repr(layer))


def test_derivative_at_zero_as_pytorch():
    x = np.zeros(3)
    g = np.array([1.0, -2.0, 3.0])
    relu, leaky = nn.ReLU(), nn.LeakyReLU(0.2)
    assert np.all(relu(x) == 0) and np.all(leaky(x) == 0)
    np.testing.assert_array_equal(relu.backward(g), 0 * g)
    np.testing.assert_array_equal(leaky.backward(g), 0.2 * g)


def test_selu_constants():
    assert activation.SELU_ALPHA == ref.SELU_ALPHA == 1.6732632423543772848170429916717
    assert activation.SELU_SCALE == ref.SELU_SCALE == 1.0507009873554804934193349852946


def test_sigmoid_stable_at_extremes():
    x = np.array([-1000.0, -40.0, 0.0, 40.0, 1000.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow warnings
        y = nn.Sigmoid()(x)
        y32 = nn.Sigmoid()(x.astype(np.float32))
    assert y[0] == 0 and y[-1] == 1 and y[2] == 0.5
    assert y[1] == pytest.approx(np.exp(-40.0), rel=1e-12)  # 1 - 1/(1+e^40) would round to 0
    assert np.all(np.isfinite(y32)) and y32.dtype == np.float32


@pytest.mark.parametrize("size", [37, 3 * (1 << 15) + 77])  # serial, and threaded chunks with a partial one
def test_sigmoid_float32_within_three_ulps_of_exact(size, rng):
    """float32 Sigmoid has its own exp (range reduction + polynomial): it must stay within a few ulp of
    the float64 answer everywhere, tiny (denormal) outputs and the special values included."""
    x = np.concatenate([rng.uniform(-110, 110, size - 12), rng.uniform(-1e-3, 1e-3, 5),
                        [0.0, -0.0, np.inf, -np.inf, -87.5, -100.0, np.nan]]).astype(np.float32)
    y = nn.Sigmoid()(x)
    exact = 1 / (1 + np.exp(-x.astype(np.float64)))
    finite = ~np.isnan(x)
    ulps = np.abs(y[finite] - exact[finite]) / np.spacing(exact[finite].astype(np.float32))
    assert y.dtype == np.float32 and ulps.max() <= 3, ulps.max()
    assert np.isnan(y[-1]) and y[-5] == 1 and y[-4] == 0 and y[-7] == y[-6] == 0.5
    assert 0 < y[-2] < 1e-43  # sigmoid(-100) = 3.7e-44, a denormal, not 0 or the smallest normal


@pytest.mark.parametrize("size", [37, 3 * (1 << 15) + 77])  # serial, and threaded chunks with a partial one
def test_selu_float32_within_three_ulps_of_exact(size, rng):
    """float32 SELU has its own expm1 (range reduction + polynomial, no 1 - 1 near 0): within a few ulp
    of the float64 answer, tiny inputs (relative precision of expm1(x) ~ x) and special values included."""
    special = [0.0, -0.0, np.inf, -np.inf, -86.9, -87.5, -200.0, -0.3466, -0.3467, -1e-30, -1e-40, np.nan]
    x = np.concatenate([rng.uniform(-100, 20, size - 22), -np.logspace(-38, 0, 10), special]).astype(np.float32)
    y = nn.SELU()(x)
    exact = ref.selu(x.astype(np.float64))
    finite = np.isfinite(exact) & (exact != 0)
    ulps = np.abs(y[finite] - exact[finite]) / np.spacing(np.abs(exact[finite]).astype(np.float32))
    assert y.dtype == np.float32 and ulps.max() <= 3, ulps.max()
    assert y[-12] == 0 and y[-10] == np.inf and np.isnan(y[-1])
    assert y[-9] == y[-7] == np.float32(-ref.SELU_SCALE * ref.SELU_ALPHA)  # the limit -scale * alpha
    assert y[-3] < 0 and y[-2] < 0  # expm1(-1e-30) is -1e-30, not 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("slope", [0.0, 0.01, 0.3, -0.2])
def test_kernels_match_numpy_reference(dtype, slope, rng):
    # Non-contiguous input (a transposed view) goes through the kernel too.
    x = rng.standard_normal((6, 7, 5)).astype(dtype).transpose(2, 0, 1)
    x[0, 0, :3] = [0.0, -0.0, np.nan]
    g = rng.standard_normal(x.shape).astype(dtype)
    for layer, forward, backward in [
        (nn.ReLU(), ref.relu, ref.relu_backward),
        (nn.LeakyReLU(slope), lambda v: ref.leaky_relu(v, dtype(slope)),
         lambda s, gg: ref.leaky_relu_backward(s, gg, dtype(slope))),
    ]:
        y = layer(x)
        assert y.dtype == dtype and y.shape == x.shape
        np.testing.assert_array_equal(y, forward(x))
        kept = y if not isinstance(layer, nn.LeakyReLU) or slope >= 0 else x
        np.testing.assert_array_equal(layer.backward(g), backward(kept, g))
    assert np.isnan(nn.ReLU()(x)[0, 0, 2]) and np.isnan(nn.LeakyReLU(slope)(x)[0, 0, 2])  # NaN shows


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("size", [37, 3 * (1 << 15) + 77])  # serial, and threaded chunks with a partial one
def test_tanh_and_selu_kernels_match_numpy_reference(dtype, size, rng):
    x = (rng.standard_normal(size) * 3).astype(dtype)
    x[:3] = [0.0, -0.0, np.nan]
    g = rng.standard_normal(size).astype(dtype)
    # The references in the data's dtype (1 - y^2 cancels near |y| = 1: float32 vs float64 would differ)
    tol = dict(rtol=1e-6, atol=1e-7) if dtype == np.float32 else dict(rtol=1e-14, atol=1e-15)
    tanh, selu = nn.Tanh(), nn.SELU()
    y = tanh(x)
    np.testing.assert_allclose(tanh.backward(g), ref.tanh_backward(y, g), **tol)
    y = selu(x)
    assert y.dtype == dtype
    np.testing.assert_allclose(y, ref.selu(x.astype(np.float64)), **tol)
    np.testing.assert_allclose(selu.backward(g), ref.selu_backward(y, g), **tol)
    assert np.isnan(y[2])


@pytest.mark.parametrize("layer", [nn.ReLU, nn.LeakyReLU, nn.Tanh, nn.Sigmoid, nn.SELU, nn.Identity])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_dtype_kept_and_input_not_mutated(layer, dtype, rng):
    x = rng.standard_normal((2, 3, 4)).astype(dtype)
    x0 = x.copy()
    m = layer()
    y = m(x)
    assert y.dtype == dtype and y.shape == x.shape
    dx = m.backward(rng.standard_normal(y.shape).astype(dtype))
    assert dx.dtype == dtype
    assert np.array_equal(x, x0)


@pytest.mark.parametrize("layer", [nn.ReLU, nn.LeakyReLU, nn.Tanh, nn.Sigmoid, nn.SELU, nn.Identity])
def test_integer_input_is_a_type_error(layer):
    with pytest.raises(TypeError, match=layer.__name__):
        layer()(np.arange(4))


def test_repr_and_no_state():
    assert repr(nn.LeakyReLU()) == "LeakyReLU(negative_slope=0.01)"
    assert repr(nn.ReLU()) == "ReLU()"
    assert nn.LeakyReLU(0.2, inplace=True).negative_slope == 0.2  # accepted as PyTorch, never in place
    for layer in (nn.ReLU(), nn.LeakyReLU(), nn.Tanh(), nn.Sigmoid(), nn.SELU(), nn.Identity()):
        assert layer.state_dict() == {}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_threaded_kernels_match_reference(dtype, rng):
    """Above PARALLEL_MIN_SIZE the kernels run in chunks on Numba's threads; the last chunk is partial."""
    from minigrad.kernels.activation import CHUNK, PARALLEL_MIN_SIZE

    x = rng.standard_normal(3 * CHUNK + 77).astype(dtype).reshape(-1, 1)
    assert x.size >= PARALLEL_MIN_SIZE
    g = rng.standard_normal(x.shape).astype(dtype)
    relu, leaky = nn.ReLU(), nn.LeakyReLU(0.1)
    y = relu(x)
    np.testing.assert_array_equal(y, ref.relu(x))
    np.testing.assert_array_equal(relu.backward(g), ref.relu_backward(y, g))
    y = leaky(x)
    np.testing.assert_array_equal(y, ref.leaky_relu(x, dtype(0.1)))
    np.testing.assert_array_equal(leaky.backward(g), ref.leaky_relu_backward(y, g, dtype(0.1)))
