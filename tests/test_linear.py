"""nn.Linear: gradients by finite differences, the exact formula, PyTorch's init, dtype and errors."""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minigrad import gradcheck, manual_seed, nn


@given(in_features=st.integers(1, 7), out_features=st.integers(1, 6),
       leading=st.lists(st.integers(1, 4), min_size=1, max_size=3), bias=st.booleans(),
       seed=st.integers(0, 2**16))
def test_gradcheck(in_features, out_features, leading, bias, seed):
    manual_seed(seed)
    layer = nn.Linear(in_features, out_features, bias=bias)
    res = gradcheck(layer, (*leading, in_features), seed=seed)
    assert res.ok, str(res)
    assert set(res.errors) == ({"input", "weight", "bias"} if bias else {"input", "weight"})


def test_gradcheck_elementwise_small():
    res = gradcheck(nn.Linear(3, 2), (4, 3), mode="elementwise")
    assert res.ok, str(res)


def test_forward_and_backward_formulas(rng):
    layer = nn.Linear(5, 3).double()
    x = rng.standard_normal((4, 5))
    g = rng.standard_normal((4, 3))
    y = layer(x)
    np.testing.assert_allclose(y, x @ layer.weight.data.T + layer.bias.data, rtol=1e-13)
    dx = layer.backward(g)
    np.testing.assert_allclose(dx, g @ layer.weight.data, rtol=1e-13)
    np.testing.assert_allclose(layer.weight.grad, g.T @ x, rtol=1e-13)
    np.testing.assert_allclose(layer.bias.grad, g.sum(0), rtol=1e-13)


def test_leading_dims_match_flattened(rng):
    layer = nn.Linear(4, 3).double()
    x = rng.standard_normal((2, 5, 4))
    g = rng.standard_normal((2, 5, 3))
    y = layer(x)
    dx = layer.backward(g)
    flat = nn.Linear(4, 3).double()
    flat.load_state_dict(layer.state_dict())
    np.testing.assert_allclose(y.reshape(10, 3), flat(x.reshape(10, 4)), rtol=1e-14)
    np.testing.assert_allclose(dx.reshape(10, 4), flat.backward(g.reshape(10, 3)), rtol=1e-14)
    np.testing.assert_allclose(layer.weight.grad, flat.weight.grad, rtol=1e-13)


def test_gradients_accumulate(rng):
    layer = nn.Linear(3, 2).double()
    x, g = rng.standard_normal((4, 3)), rng.standard_normal((4, 2))
    layer(x)
    layer.backward(g)
    first = layer.weight.grad.copy()
    layer(x)
    layer.backward(g)
    np.testing.assert_allclose(layer.weight.grad, 2 * first, rtol=1e-14)


def test_default_init_is_pytorch():
    manual_seed(0)
    layer = nn.Linear(300, 200)
    bound = 1 / math.sqrt(300)
    assert layer.weight.shape == (200, 300) and layer.bias.shape == (200,)
    assert layer.weight.dtype == np.float32 and layer.bias.dtype == np.float32
    assert np.abs(layer.weight.data).max() <= bound and np.abs(layer.bias.data).max() <= bound
    assert np.var(layer.weight.data) == pytest.approx(bound ** 2 / 3, rel=0.03)
    manual_seed(0)
    again = nn.Linear(300, 200)
    assert np.array_equal(again.weight.data, layer.weight.data)
    assert np.array_equal(again.bias.data, layer.bias.data)
    # reset_parameters draws weight then bias from the generator, as PyTorch's order.
    g = np.random.default_rng(5)
    layer.reset_parameters(generator=g)
    g2 = np.random.default_rng(5)
    expected_w = g2.uniform(-bound, bound, size=(200, 300)).astype(np.float32)
    expected_b = g2.uniform(-bound, bound, size=200).astype(np.float32)
    assert np.array_equal(layer.weight.data, expected_w) and np.array_equal(layer.bias.data, expected_b)


def test_state_dict_keys_and_repr():
    assert list(nn.Linear(3, 2).state_dict()) == ["weight", "bias"]
    no_bias = nn.Linear(3, 2, bias=False)
    assert list(no_bias.state_dict()) == ["weight"] and no_bias.bias is None
    assert repr(no_bias) == "Linear(in_features=3, out_features=2, bias=False)"


def test_dtypes(rng):
    layer = nn.Linear(3, 2)
    assert layer(rng.standard_normal((2, 3)).astype(np.float32)).dtype == np.float32
    assert layer(rng.standard_normal((2, 3))).dtype == np.float64  # float64 input computes in float64
    layer.to(np.float64)
    assert layer.weight.dtype == np.float64 and layer.weight.grad.dtype == np.float64
    y = layer(rng.standard_normal((2, 3)).astype(np.float32))
    assert y.dtype == np.float64
    assert layer.backward(np.ones_like(y)).dtype == np.float64


def test_input_not_mutated(rng):
    layer = nn.Linear(3, 2)
    x = rng.standard_normal((4, 3)).astype(np.float32)
    x0 = x.copy()
    y = layer(x)
    layer.backward(rng.standard_normal(y.shape).astype(np.float32))
    assert np.array_equal(x, x0)


def test_bad_input():
    layer = nn.Linear(3, 2)
    with pytest.raises(ValueError, match=r"Linear.*3.*\(4, 5\)"):
        layer(np.zeros((4, 5), dtype=np.float32))
    with pytest.raises(TypeError, match="Linear.*int64"):
        layer(np.zeros((4, 3), dtype=np.int64))
    with pytest.raises(ValueError, match="Linear"):
        layer(np.float32(1.0))
    layer(np.zeros((4, 3), dtype=np.float32))
    with pytest.raises(ValueError, match=r"Linear.*\(4, 2\)"):
        layer.backward(np.zeros((4, 3), dtype=np.float32))


def test_requires_grad_false_skips_the_parameter_gradients(rng):
    """As PyTorch's requires_grad=False: backward still returns dL/dx but leaves .grad alone."""
    layer = nn.Linear(4, 3).double()
    twin = nn.Linear(4, 3).double()
    twin.load_state_dict(layer.state_dict())
    assert layer.requires_grad_(False) is layer
    assert all(not p.requires_grad for p in layer.parameters()) and all(p.requires_grad for p in twin.parameters())
    x, g = rng.standard_normal((5, 4)), rng.standard_normal((5, 3))
    layer(x)
    twin(x)
    np.testing.assert_array_equal(layer.backward(g), twin.backward(g))
    assert not layer.weight.grad.any() and not layer.bias.grad.any() and twin.weight.grad.any()
    layer.weight.requires_grad = True
    layer(x)
    layer.backward(g)
    np.testing.assert_array_equal(layer.weight.grad, twin.weight.grad)
    assert not layer.bias.grad.any()
