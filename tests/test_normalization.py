"""LayerNorm: finite-difference gradients over several normalized shapes, the exact formula, errors."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import reference as ref
from thread_counts import assert_same_on_one_and_all_threads
from minigrad import gradcheck, nn

EPS_FD = 1e-5  # finite-difference step; see test_activation.EPS for why not 1e-6


@given(leading=st.lists(st.integers(1, 3), min_size=0, max_size=2),
       normalized=st.lists(st.integers(1, 4), min_size=1, max_size=3), as_int=st.booleans(),
       affine=st.booleans(), bias=st.booleans(), eps=st.sampled_from([1e-5, 1e-2]), seed=st.integers(0, 2**16))
def test_gradcheck(leading, normalized, as_int, affine, bias, eps, seed):
    if int(np.prod(normalized)) < 3:
        normalized = normalized + [3]  # with 1 or 2 values xhat is constant (0 or +-1): gradient O(eps)
    shape_arg = normalized[0] if as_int and len(normalized) == 1 else tuple(normalized)
    layer = nn.LayerNorm(shape_arg, eps=eps, elementwise_affine=affine, bias=bias)
    rng = np.random.default_rng([seed, 1])  # independent of gradcheck's upstream gradient
    if affine:
        layer.weight.data[...] = rng.uniform(0.5, 2, layer.weight.shape) * rng.choice([-1, 1], layer.weight.shape)
        if bias:
            layer.bias.data[...] = rng.standard_normal(layer.bias.shape)
    x = rng.standard_normal((*leading, *normalized)) * 2 + 1
    res = gradcheck(layer, x, seed=seed, eps=EPS_FD)
    assert res.ok, str(res)


def test_formula_and_backward(rng):
    layer = nn.LayerNorm((3, 4)).double()
    layer.weight.data[...] = rng.standard_normal((3, 4))
    layer.bias.data[...] = rng.standard_normal((3, 4))
    x = rng.standard_normal((2, 5, 3, 4)) * 3 + 2
    y = layer(x)
    mean = x.mean(axis=(2, 3), keepdims=True)
    var = x.var(axis=(2, 3), keepdims=True)  # biased, as PyTorch
    xhat = (x - mean) / np.sqrt(var + layer.eps)
    np.testing.assert_allclose(y, xhat * layer.weight.data + layer.bias.data, rtol=1e-12, atol=1e-12)
    g = rng.standard_normal(y.shape)
    dx = layer.backward(g)
    h = g * layer.weight.data
    expected = (h - h.mean((2, 3), keepdims=True) - xhat * (h * xhat).mean((2, 3), keepdims=True)) / np.sqrt(var + layer.eps)
    np.testing.assert_allclose(dx, expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(layer.weight.grad, (g * xhat).sum((0, 1)), rtol=1e-12)
    np.testing.assert_allclose(layer.bias.grad, g.sum((0, 1)), rtol=1e-12)


def test_rows_are_normalised_and_train_equals_eval(rng):
    layer = nn.LayerNorm(6, elementwise_affine=False)
    x = (rng.standard_normal((4, 6)) * 10 + 5).astype(np.float32)
    y = layer(x)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y.mean(1), 0, atol=1e-6)
    np.testing.assert_allclose(y.var(1), 1, atol=1e-4)
    np.testing.assert_array_equal(layer.eval()(x), y)


def test_state_dict_and_defaults():
    layer = nn.LayerNorm((2, 3))
    assert list(layer.state_dict()) == ["weight", "bias"]
    assert layer.weight.shape == (2, 3) and np.all(layer.weight.data == 1) and np.all(layer.bias.data == 0)
    assert list(nn.LayerNorm(3, bias=False).state_dict()) == ["weight"]
    assert list(nn.LayerNorm(3, elementwise_affine=False).state_dict()) == []
    assert repr(nn.LayerNorm(5)) == "LayerNorm((5,), eps=1e-05, elementwise_affine=True)"


def test_dtypes_and_input_not_mutated(rng):
    layer = nn.LayerNorm(4)
    x = rng.standard_normal((3, 4)).astype(np.float32)
    x0 = x.copy()
    y = layer(x)
    assert y.dtype == np.float32
    assert layer.backward(np.ones_like(y)).dtype == np.float32
    assert np.array_equal(x, x0)
    assert layer(rng.standard_normal((3, 4))).dtype == np.float64
    layer.to(np.float64)
    assert layer(x).dtype == np.float64


def test_bad_input():
    with pytest.raises(ValueError, match=r"LayerNorm.*\(3, 4\).*\(2, 4, 3\)"):
        nn.LayerNorm((3, 4))(np.zeros((2, 4, 3), dtype=np.float32))
    with pytest.raises(ValueError, match=r"LayerNorm.*\(4,\).*\(\)"):
        nn.LayerNorm(4)(np.float32(1.0))
    with pytest.raises(TypeError, match="LayerNorm.*int"):
        nn.LayerNorm(4)(np.zeros((2, 4), dtype=np.int16))
    with pytest.raises(ValueError, match="normalized_shape"):
        nn.LayerNorm(())
    with pytest.raises(ValueError, match="normalized_shape"):
        nn.LayerNorm((3, 0))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, normalized", [((7, 5), (5,)), ((2, 3, 4, 5), (4, 5)), ((5000, 100), (100,))])
def test_kernels_match_reference(dtype, shape, normalized, rng):
    """LayerNorm runs batch norm's kernels on its rows (small, and large enough for Numba's threads)."""
    layer = nn.LayerNorm(normalized).to(dtype)
    layer.weight.data[...] = rng.uniform(0.5, 2, normalized)
    layer.bias.data[...] = rng.standard_normal(normalized)
    x = (rng.standard_normal(shape) * 3 + 2).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    w, b = layer.weight.data.astype(np.float64), layer.bias.data.astype(np.float64)
    tol = dict(rtol=2e-5, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-11, atol=1e-11)
    y = layer(x)
    assert y.dtype == dtype
    np.testing.assert_allclose(y, ref.layer_norm(x, len(normalized), layer.eps, w, b), **tol)
    dx, dw, db = ref.layer_norm_backward(x, g, len(normalized), layer.eps, w)
    np.testing.assert_allclose(layer.backward(g), dx, **tol)
    # float32 sums over 5000 rows: absolute rounding of order sqrt(rows) * 1e-7 * sum |g|
    sums = dict(rtol=1e-4, atol=1e-3) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(layer.weight.grad, dw, **sums)
    np.testing.assert_allclose(layer.bias.grad, db, **sums)


def test_requires_grad_false_leaves_the_parameter_gradients(rng):
    layer = nn.LayerNorm(4).double().requires_grad_(False)
    layer(rng.standard_normal((3, 4)))
    dx = layer.backward(rng.standard_normal((3, 4)))
    assert dx.shape == (3, 4) and not layer.weight.grad.any() and not layer.bias.grad.any()


def test_layer_norm_gives_the_same_numbers_on_any_number_of_threads():
    """The per-feature affine's sums over rows are added per block of rows in block order: bit-identical
    with one thread or all (3000 rows: the threaded kernels run)."""
    rng = np.random.default_rng(4)
    x = (rng.standard_normal((3000, 70)) * 2 + 5).astype(np.float32)
    g = rng.standard_normal(x.shape).astype(np.float32)

    def run():
        layer = nn.LayerNorm(70)
        layer.weight.data[...] = np.linspace(-2, 2, 70)
        layer.bias.data[...] = np.linspace(1, 0, 70)
        return layer(x), layer.backward(g), layer.weight.grad.copy(), layer.bias.grad.copy()

    assert_same_on_one_and_all_threads(run)
