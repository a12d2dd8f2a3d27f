"""The im2col / col2im Numba kernels: index mapping against a naive loop, adjointness, chunks, layouts."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from reference import col2im as ref_col2im
from reference import im2col as ref_im2col
from reference import out_size
from strategies import conv_geometry, seeds

from minigrad.kernels import im2col as K


def _cols(x, g, n0=0, n1=None):
    n1 = x.shape[0] if n1 is None else n1
    h_out, w_out = g.output_hw
    cols = np.full((g.in_channels * g.kernel[0] * g.kernel[1], (n1 - n0) * h_out * w_out), np.nan, x.dtype)
    K.im2col(x, n0, n1, *g.kernel, *g.stride, *g.padding, h_out, w_out, cols)
    return cols


@pytest.mark.parametrize("size, kernel, stride, padding", [
    (32, 3, 1, 1), (7, 3, 2, 0), (8, 3, 2, 1), (5, 5, 1, 0), (4, 5, 1, 0), (4, 5, 1, 1), (9, 2, 3, 0),
    (10, 4, 3, 2), (1, 1, 1, 0), (3, 1, 2, 0),
])
def test_output_size_is_pytorchs_floor(size, kernel, stride, padding):
    assert K.output_size(size, kernel, stride, padding) == out_size(size, kernel, stride, padding)
    assert K.output_size(size, kernel, stride, padding) == int(np.floor((size + 2 * padding - kernel) / stride)) + 1


@given(g=conv_geometry(), seed=seeds, dtype=st.sampled_from([np.float32, np.float64]))
def test_im2col_matches_naive_loop(g, seed, dtype):
    x = np.random.default_rng(seed).standard_normal(g.input_shape).astype(dtype)
    x_before = x.copy()
    np.testing.assert_array_equal(_cols(x, g), ref_im2col(x, g.kernel, g.stride, g.padding))
    np.testing.assert_array_equal(x, x_before)


@given(g=conv_geometry(max_batch=4), seed=seeds, data=st.data())
def test_im2col_chunk_is_a_column_slice(g, seed, data):
    x = np.random.default_rng(seed).standard_normal(g.input_shape)
    n0 = data.draw(st.integers(0, g.batch - 1))
    n1 = data.draw(st.integers(n0 + 1, g.batch))
    plane = g.output_hw[0] * g.output_hw[1]
    np.testing.assert_array_equal(_cols(x, g, n0, n1), _cols(x, g)[:, n0 * plane:n1 * plane])


@given(g=conv_geometry(), seed=seeds)
def test_col2im_is_the_adjoint_of_im2col(g, seed):
    """<im2col(x), C> = <x, col2im(C)> for random x and C."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(g.input_shape)
    cols = _cols(x, g)
    c = rng.standard_normal(cols.shape)
    back = np.full(g.input_shape, np.nan)
    K.col2im(c, 0, g.batch, *g.kernel, *g.stride, *g.padding, *g.output_hw, back)
    lhs, rhs = np.vdot(cols, c), np.vdot(x, back)
    assert abs(lhs - rhs) <= 1e-12 * max(1.0, np.abs(cols).sum() * np.abs(c).max())


@given(g=conv_geometry(max_batch=4), seed=seeds, data=st.data(), dtype=st.sampled_from([np.float32, np.float64]))
def test_col2im_matches_naive_scatter_and_writes_only_its_chunk(g, seed, data, dtype):
    rng = np.random.default_rng(seed)
    n0 = data.draw(st.integers(0, g.batch - 1))
    n1 = data.draw(st.integers(n0 + 1, g.batch))
    plane = g.output_hw[0] * g.output_hw[1]
    c = rng.standard_normal((g.in_channels * g.kernel[0] * g.kernel[1], g.batch * plane)).astype(dtype)
    out = np.full(g.input_shape, 7.0, dtype)  # stale values must be overwritten inside the chunk only
    K.col2im(np.ascontiguousarray(c[:, n0 * plane:n1 * plane]), n0, n1, *g.kernel, *g.stride, *g.padding,
             *g.output_hw, out)
    expected = ref_col2im(c.astype(np.float64), g.input_shape, g.kernel, g.stride, g.padding)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(out[n0:n1], expected[n0:n1], rtol=tol, atol=tol)
    assert np.all(out[:n0] == 7.0) and np.all(out[n1:] == 7.0)


def test_non_square_mapping_by_hand():
    """A 1x2 kernel on a 2x3 image with stride (1, 2), padding (0, 1): every index written out."""
    x = np.arange(6, dtype=np.float64).reshape(1, 1, 2, 3)  # [[0, 1, 2], [3, 4, 5]]
    h_out, w_out = K.output_size(2, 1, 1, 0), K.output_size(3, 2, 2, 1)  # 2, 2
    cols = np.empty((2, 4))
    K.im2col(x, 0, 1, 1, 2, 1, 2, 0, 1, h_out, w_out, cols)
    # row j=0 reads x_pad[h, 2w], row j=1 reads x_pad[h, 2w + 1]; x_pad has a zero column on each side
    np.testing.assert_array_equal(cols, [[0, 1, 0, 4], [0, 2, 3, 5]])


@given(channels=st.integers(1, 4), n=st.integers(1, 4), hw=st.tuples(st.integers(1, 5), st.integers(1, 5)),
       seed=seeds, data=st.data())
def test_rows_nchw_round_trip_with_bias(channels, n, hw, seed, data):
    rng = np.random.default_rng(seed)
    n0 = data.draw(st.integers(0, n - 1))
    n1 = data.draw(st.integers(n0 + 1, n))
    rows = rng.standard_normal((channels, (n1 - n0) * hw[0] * hw[1]))
    bias = rng.standard_normal(channels)
    images = np.full((n, channels) + hw, np.nan)
    K.rows_to_nchw(rows, bias, n0, n1, images)
    expected = rows.reshape(channels, n1 - n0, *hw).transpose(1, 0, 2, 3) + bias[:, None, None]
    np.testing.assert_array_equal(images[n0:n1], expected)
    assert np.all(np.isnan(images[:n0])) and np.all(np.isnan(images[n1:]))
    back = np.empty_like(rows)
    K.nchw_to_rows(images - bias[:, None, None], n0, n1, back)
    np.testing.assert_allclose(back, rows, atol=1e-12)
