"""LayerNorm: finite-difference gradients over several normalized shapes, the exact formula, errors."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

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
