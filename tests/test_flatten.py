"""Flatten: shapes as torch.flatten, backward reshaping back, finite differences, errors."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import seeds

from minigrad import gradcheck, nn


@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=5), data=st.data(), seed=seeds)
def test_forward_backward_shapes(shape, data, seed):
    ndim = len(shape)
    start = data.draw(st.integers(-ndim, ndim - 1))
    end = data.draw(st.integers(start % ndim, ndim - 1)) - data.draw(st.sampled_from([0, ndim]))
    s, e = start % ndim, end % ndim
    m = nn.Flatten(start, end)
    x = np.random.default_rng(seed).standard_normal(shape)
    y = m(x)
    assert y.shape == tuple(shape[:s]) + (int(np.prod(shape[s:e + 1])),) + tuple(shape[e + 1:])
    np.testing.assert_array_equal(y.reshape(-1), x.reshape(-1))  # order preserved (C order, as torch)
    u = np.random.default_rng(seed + 1).standard_normal(y.shape)
    dx = m.backward(u)
    assert dx.shape == x.shape
    np.testing.assert_array_equal(dx.reshape(-1), u.reshape(-1))


def test_default_and_gradcheck():
    m = nn.Flatten()
    assert m(np.zeros((2, 3, 4, 5), np.float32)).shape == (2, 60)
    res = gradcheck(nn.Flatten(), (2, 3, 4, 5))
    assert res.ok, str(res)
    assert repr(nn.Flatten()) == "Flatten(start_dim=1, end_dim=-1)"


def test_input_not_mutated_and_zero_size():
    x = np.arange(24.0).reshape(2, 3, 4)
    before = x.copy()
    y = nn.Flatten()(x)
    np.testing.assert_array_equal(x, before)
    assert nn.Flatten()(np.zeros((0, 3, 4))).shape == (0, 12)
    assert y.shape == (2, 12)


def test_errors():
    with pytest.raises(ValueError, match=r"Flatten.*out of range.*\(2,\)"):
        nn.Flatten()(np.zeros(2))
    with pytest.raises(ValueError, match="Flatten.*comes after"):
        nn.Flatten(2, 1)(np.zeros((2, 3, 4)))
    with pytest.raises(TypeError, match="Flatten.*floating"):
        nn.Flatten()(np.zeros((2, 3), np.int32))
    with pytest.raises(TypeError, match="Flatten"):
        nn.Flatten(1.0)
