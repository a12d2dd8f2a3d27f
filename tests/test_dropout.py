"""Dropout: gradients with the mask replayed, keep rate and scaling, eval identity, seeding, errors."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minigrad import gradcheck, manual_seed, nn

EPS_FD = 1e-5  # finite-difference step; see test_activation.EPS for why not 1e-6


@given(shape=st.lists(st.integers(1, 6), min_size=1, max_size=4).map(tuple),
       p=st.sampled_from([0.0, 0.1, 0.5, 0.9, 1.0]), training=st.booleans(), seed=st.integers(0, 2**16))
def test_gradcheck(shape, p, training, seed):
    layer = nn.Dropout(p, generator=np.random.default_rng(seed)).train(training)
    res = gradcheck(layer, np.random.default_rng([seed, 1]).standard_normal(shape), seed=seed, eps=EPS_FD)
    assert res.ok, str(res)


@pytest.mark.parametrize("p", [0.2, 0.5, 0.8])
def test_keep_rate_and_scaling(p):
    layer = nn.Dropout(p, generator=np.random.default_rng(0))
    x = np.random.default_rng(1).uniform(1, 2, (1000, 500)).astype(np.float32)
    y = layer(x)
    assert y.dtype == np.float32
    kept = y != 0
    n = x.size
    assert abs(kept.mean() - (1 - p)) < 5 * np.sqrt(p * (1 - p) / n)  # 5 sigma
    np.testing.assert_array_equal(y[kept], x[kept] * np.float32(1 / (1 - p)))  # inverted dropout
    assert y.mean() == pytest.approx(x.mean(), rel=0.01)  # E[y] = x
    g = np.random.default_rng(2).standard_normal(x.shape).astype(np.float32)
    dx = layer.backward(g)
    np.testing.assert_array_equal(dx[~kept], 0)  # the forward's mask, not a new one
    np.testing.assert_array_equal(dx[kept], g[kept] * np.float32(1 / (1 - p)))


def test_eval_is_identity(rng):
    layer = nn.Dropout(0.5).eval()
    x = rng.standard_normal((4, 5))
    np.testing.assert_array_equal(layer(x), x)
    g = rng.standard_normal((4, 5))
    np.testing.assert_array_equal(layer.backward(g), g)


def test_extreme_probabilities(rng):
    x, g = rng.standard_normal((6, 7)), rng.standard_normal((6, 7))
    none = nn.Dropout(0.0)
    np.testing.assert_array_equal(none(x), x)
    np.testing.assert_array_equal(none.backward(g), g)
    everything = nn.Dropout(1.0)
    y = everything(x)
    assert np.all(y == 0) and np.all(np.isfinite(y))
    assert np.all(everything.backward(g) == 0)


def test_masks_are_seeded_and_fresh_each_forward():
    x = np.ones((50, 40))
    manual_seed(7)
    a = nn.Dropout(0.5)
    manual_seed(7)
    b = nn.Dropout(0.5)
    first = a(x)
    np.testing.assert_array_equal(first, b(x))  # same global seed -> same masks
    assert not np.array_equal(first, a(x))  # a new mask at every forward
    c = nn.Dropout(0.5, generator=np.random.default_rng(3))
    d = nn.Dropout(0.5, generator=np.random.default_rng(3))
    np.testing.assert_array_equal(c(x), d(x))
    manual_seed(7)
    e, f = nn.Dropout(0.5), nn.Dropout(0.5)  # two layers of one model draw different masks
    assert not np.array_equal(e(x), f(x))


def test_input_not_mutated_and_no_state(rng):
    layer = nn.Dropout(0.3)
    x = rng.standard_normal((5, 5)).astype(np.float32)
    x0 = x.copy()
    y = layer(x)
    layer.backward(np.ones_like(y))
    assert np.array_equal(x, x0)
    assert layer.state_dict() == {}
    assert repr(layer) == "Dropout(p=0.3)"


def test_bad_arguments_and_input():
    for p in (-0.1, 1.5, True):
        with pytest.raises(ValueError, match="Dropout.*between 0 and 1"):
            nn.Dropout(p)
    with pytest.raises(TypeError, match="Dropout.*Generator"):
        nn.Dropout(0.5, generator=np.random.RandomState(0))
    with pytest.raises(TypeError, match="Dropout.*int"):
        nn.Dropout(0.5)(np.arange(6))
