"""minigrad.data.synthetic: the Gaussian data of the gradient-scale (GSC) study."""
import numpy as np
import pytest

from minigrad.data import gsc_dataset


def test_shapes_norms_and_distribution():
    x, y = gsc_dataset(10000, dim=100, input_length=10.0, seed=0)
    assert x.shape == (10000, 100) and y.shape == (10000, 100)
    assert x.dtype == np.float64 and y.dtype == np.float64
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 10.0, rtol=1e-12)
    # labels: entries N(0, 1/dim); 1e6 samples -> the variance estimate is within ~0.5%
    assert abs(y.mean()) < 3e-4
    assert abs(y.var() * 100 - 1.0) < 0.01
    # inputs: direction uniform, so each entry has mean 0 and E[x_j^2] = length^2 / dim = 1
    assert abs(x.mean()) < 3e-3
    assert abs((x ** 2).mean() - 1.0) < 0.01
    assert abs(np.corrcoef(x[:, 0], y[:, 0])[0, 1]) < 0.05


def test_seeded_and_dtype():
    a = gsc_dataset(50, dim=7, input_length=2.5, seed=3)
    b = gsc_dataset(50, dim=7, input_length=2.5, seed=3)
    c = gsc_dataset(50, dim=7, input_length=2.5, seed=4)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    x32, y32 = gsc_dataset(50, dim=7, input_length=2.5, seed=3, dtype=np.float32)
    assert x32.dtype == np.float32 and y32.dtype == np.float32
    np.testing.assert_array_equal(x32, a[0].astype(np.float32))
    np.testing.assert_allclose(np.linalg.norm(x32, axis=1), 2.5, rtol=1e-6)


def test_argument_errors():
    with pytest.raises(ValueError, match="n_points"):
        gsc_dataset(0)
    with pytest.raises(ValueError, match="dim"):
        gsc_dataset(10, dim=2.5)
    with pytest.raises(ValueError, match="input_length"):
        gsc_dataset(10, input_length=-1.0)
    with pytest.raises(TypeError, match="floating"):
        gsc_dataset(10, dtype=np.int32)
