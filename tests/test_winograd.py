"""Winograd F(4x4, 3x3) kernels: the matrices against the 1-D correlation they encode, each transform
against its formula, the adjoints, the layout changes, and whole chunks against the naive loops."""
import numpy as np
import pytest
import reference as ref
from hypothesis import given
from hypothesis import strategies as st
from strategies import seeds
from thread_counts import assert_same_on_one_and_all_threads

from minigrad.kernels import winograd as W

tile_counts = st.tuples(st.integers(1, 3), st.integers(1, 3))
lengths = st.integers(1, 40)
dtypes = st.sampled_from([np.float32, np.float64])


def _tol(dtype):
    return dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)


@given(seed=seeds)
def test_matrices_compute_a_4_output_correlation_of_a_3_tap_filter(seed):
    """y = A^T [(G g) * (B^T d)] is y[i] = sum_j g[j] d[i + j] for a 6-sample d (Lavin & Gray's F(4, 3))."""
    rng = np.random.default_rng(seed)
    d, g = rng.standard_normal(6), rng.standard_normal(3)
    np.testing.assert_allclose(W.AT @ ((W.G @ g) * (W.BT @ d)), np.correlate(d, g, mode="valid"), atol=1e-12)


@given(seed=seeds, ch=st.tuples(st.integers(1, 3), st.integers(1, 3)))
def test_weight_transform_and_its_adjoint(seed, ch):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((ch[1], ch[0], 3, 3))
    u = W.weight_transform(w, np.float64)
    assert u.shape == (36, ch[0], ch[1])
    np.testing.assert_allclose(u[:, 0, 0].reshape(6, 6), W.G @ w[0, 0] @ W.G.T, atol=1e-14)
    du = rng.standard_normal(u.shape)  # <U(w), dU> = <w, U^T(dU)>: weight_grad is the adjoint
    assert np.isclose(np.vdot(u, du), np.vdot(w, W.weight_grad(du)), rtol=1e-12)
    stack = rng.standard_normal((3,) + u.shape).astype(np.float32)  # chunks' dU: summed in float64, in order
    np.testing.assert_array_equal(W.weight_grad(stack), W.weight_grad(stack.sum(axis=0, dtype=np.float64)))


def _spatial(rng, rows, cols, length, dtype, pad=3):
    """A (rows, cols, length + pad) array with NaN in the padding that no kernel may read."""
    a = np.full((rows, cols, length + pad), np.nan, dtype)
    a[:, :, :length] = rng.standard_normal((rows, cols, length))
    return a


@given(tiles=tile_counts, length=lengths, seed=seeds, dtype=dtypes)
def test_input_transform_is_bt_d_b_per_tile(tiles, length, seed, dtype):
    rng = np.random.default_rng(seed)
    (th, tw), n_tiles = tiles, tiles[0] * tiles[1]
    xt = _spatial(rng, 4 * th + 2, 4 * tw + 2, length, dtype)
    v = np.full((36, n_tiles * length + 5), np.nan, dtype)
    W.input_transform(xt, length, th, tw, v, np.empty((6, 6, length + 2), dtype))
    for t in range(n_tiles):
        r, s = 4 * (t // tw), 4 * (t % tw)
        d = xt[r:r + 6, s:s + 6, :length].astype(np.float64)
        expected = np.einsum("ai,ijl,bj->abl", W.BT, d, W.BT).reshape(36, length)
        np.testing.assert_allclose(v[:, t * length:(t + 1) * length], expected, **_tol(dtype))
    assert np.isnan(v[:, n_tiles * length:]).all()  # nothing written past the tiles


@given(tiles=tile_counts, length=lengths, seed=seeds, dtype=dtypes)
def test_output_transform_is_at_m_a_per_tile(tiles, length, seed, dtype):
    rng = np.random.default_rng(seed)
    (th, tw), n_tiles = tiles, tiles[0] * tiles[1]
    m = rng.standard_normal((36, n_tiles * length)).astype(dtype)
    yt = np.full((4 * th, 4 * tw, length + 3), np.nan, dtype)
    W.output_transform(m, length, th, tw, yt, np.empty((6, 4, length), dtype))
    for t in range(n_tiles):
        r, s = 4 * (t // tw), 4 * (t % tw)
        mt = m[:, t * length:(t + 1) * length].astype(np.float64).reshape(6, 6, length)
        np.testing.assert_allclose(yt[r:r + 4, s:s + 4, :length], np.einsum("ia,abl,jb->ijl", W.AT, mt, W.AT),
                                   **_tol(dtype))


@given(tiles=tile_counts, length=lengths, seed=seeds, offset=st.tuples(st.integers(0, 2), st.integers(0, 2)))
def test_output_adjoint_is_the_transpose_of_output_transform(tiles, length, seed, offset):
    """<T(m), g> = <m, T*(g)> for output_transform / output_adjoint (the adjoint reads at an offset)."""
    rng = np.random.default_rng(seed)
    (th, tw), n_tiles = tiles, tiles[0] * tiles[1]
    m = rng.standard_normal((36, n_tiles * length))
    yt = np.empty((4 * th, 4 * tw, length))
    W.output_transform(m, length, th, tw, yt, np.empty((6, 4, length)))
    g = rng.standard_normal(yt.shape)
    g_padded = np.full((4 * th + offset[0] + 1, 4 * tw + offset[1], length + 2), np.nan)
    g_padded[offset[0]:offset[0] + 4 * th, offset[1]:offset[1] + 4 * tw, :length] = g
    z = np.empty_like(m)
    W.output_adjoint(g_padded, *offset, length, th, tw, z, np.empty((6, 4, length)))
    assert np.isclose(np.vdot(yt, g), np.vdot(m, z), rtol=1e-11)


@given(n=st.integers(1, 4), c=st.integers(1, 5), hw=st.tuples(st.integers(1, 9), st.integers(1, 9)),
       pad=st.tuples(st.integers(0, 3), st.integers(0, 3)), seed=seeds, data=st.data())
def test_layout_round_trip(n, c, hw, pad, seed, data):
    rng = np.random.default_rng(seed)
    n0 = data.draw(st.integers(0, n - 1))
    n1 = data.draw(st.integers(n0 + 1, n))
    x = rng.standard_normal((n, c) + hw)
    length = (n1 - n0) * c
    xt = np.full((hw[0] + pad[0] + 2, hw[1] + pad[1] + 1, length + 4), np.nan)
    W.nchw_to_hwl(x, n0, n1, *pad, xt)
    inside = xt[pad[0]:pad[0] + hw[0], pad[1]:pad[1] + hw[1], :length]
    np.testing.assert_array_equal(inside, x[n0:n1].transpose(2, 3, 0, 1).reshape(hw + (length,)))
    border = xt[:, :, :length].copy()
    border[pad[0]:pad[0] + hw[0], pad[1]:pad[1] + hw[1]] = 0
    assert not border.any()  # zeros everywhere outside the image
    bias = rng.standard_normal(c)
    out = np.full_like(x, np.nan)
    W.hwl_to_nchw(xt, pad[0], pad[1], bias, n0, n1, out)
    np.testing.assert_array_equal(out[n0:n1], x[n0:n1] + bias[:, None, None])
    assert np.isnan(out[:n0]).all() and np.isnan(out[n1:]).all()


def _buffers(dtype):
    store = {}

    def buffer(name, shape):  # like Conv2d's: one array per name, reused, stale contents
        size = int(np.prod(shape))
        if name not in store or store[name].size < size:
            store[name] = np.full(size, np.nan, dtype)
        return store[name][:size].reshape(shape)

    return buffer


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@given(n=st.integers(1, 3), ch=st.tuples(st.integers(1, 4), st.integers(1, 4)),
       hw=st.tuples(st.integers(1, 11), st.integers(1, 11)), pad=st.tuples(st.integers(0, 2), st.integers(0, 2)),
       seed=seeds, data=st.data())
def test_chunks_match_naive_loops(dtype, n, ch, hw, pad, seed, data):
    """Any size (partial tiles at the edges), padding 0-2, the batch cut into two chunks anywhere."""
    hw = tuple(max(size, 3 - 2 * p) for size, p in zip(hw, pad))  # a non-empty output
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, ch[0]) + hw)
    w = rng.standard_normal((ch[1], ch[0], 3, 3))
    b = rng.standard_normal(ch[1])
    y_ref = ref.conv2d(x, w, b, (1, 1), pad)
    g = rng.standard_normal(y_ref.shape)
    dx_ref, dw_ref, _ = ref.conv2d_backward(x, w, g, (1, 1), pad)
    cut = data.draw(st.integers(0, n))
    bounds = [0] + ([cut] if 0 < cut < n else []) + [n]
    x, g, u = x.astype(dtype), g.astype(dtype), W.weight_transform(w, dtype)
    u_flip = W.weight_transform(w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3), dtype)
    buffer = _buffers(dtype)
    y, dx = np.full(y_ref.shape, np.nan, dtype), np.full(x.shape, np.nan, dtype)
    du_chunks = np.full((len(bounds) - 1,) + u.shape, np.nan, dtype)
    db_chunks = np.full((len(bounds) - 1,) + b.shape, np.nan, dtype)
    W.forward(x, bounds, *pad, u, b.astype(dtype), y, buffer)
    W.backward(x, g, bounds, *pad, u, u_flip, dx, du_chunks, db_chunks, buffer)
    du, db = du_chunks.sum(axis=0), db_chunks.sum(axis=0)
    scale = 1e-5 if dtype == np.float32 else 1e-13  # of the sum of |terms| that make each entry
    np.testing.assert_allclose(y, y_ref, rtol=0, atol=scale * ref.conv2d(abs(x), abs(w), abs(b), (1, 1), pad).max())
    np.testing.assert_allclose(dx, dx_ref, rtol=0, atol=scale * ref.conv2d_backward(abs(x), abs(w), abs(g), (1, 1), pad)[0].max())
    np.testing.assert_allclose(W.weight_grad(du), dw_ref, rtol=0,
                               atol=scale * ref.conv2d_backward(abs(x), abs(w), abs(g), (1, 1), pad)[1].max())
    np.testing.assert_allclose(db, g.sum(axis=(0, 2, 3)), rtol=0, atol=scale * abs(g).sum(axis=(0, 2, 3)).max())


def test_results_do_not_depend_on_the_thread_count():
    """The same chunks on one thread and on all of Numba's: bit-identical outputs and per-chunk dU, db."""
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal((7, 8, 9, 6)).astype(np.float32), rng.standard_normal((5, 8, 3, 3))
    g = rng.standard_normal((7, 5, 9, 6)).astype(np.float32)
    b = rng.standard_normal(5).astype(np.float32)
    u = W.weight_transform(w, np.float32)
    u_flip = W.weight_transform(w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3), np.float32)
    bounds = [0, 1, 3, 4, 6, 7]  # five chunks of unequal sizes: more chunks than threads

    def run():
        y, dx = np.empty_like(g), np.empty_like(x)
        du, db = np.empty((5,) + u.shape, np.float32), np.empty((5, 5), np.float32)
        W.forward(x, bounds, 1, 1, u, b, y, _buffers(np.float32))
        W.backward(x, g, bounds, 1, 1, u, u_flip, dx, du, db, _buffers(np.float32))
        return y, dx, du, db

    assert_same_on_one_and_all_threads(run)
