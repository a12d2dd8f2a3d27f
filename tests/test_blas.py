"""kernels/blas.py: the products the Winograd kernels call from compiled code, BLAS and plain loop alike."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import seeds

from minigrad.kernels import blas
from minigrad.kernels import winograd as W

ROUTINES = {"blas": blas.routines(), "loop": blas.NO_BLAS}


def test_numpys_blas_is_found_where_it_is_openblas():
    from threadpoolctl import threadpool_info
    if any(info.get("internal_api") == "openblas" for info in threadpool_info()):
        assert blas.routines() != blas.NO_BLAS and blas.routines()[0] != 0


@pytest.mark.parametrize("routines", ROUTINES, ids=str)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@given(m=st.integers(1, 9), n=st.integers(1, 9), k=st.integers(0, 9), trans_a=st.booleans(),
       row_gap=st.integers(0, 3), seed=seeds)
def test_gemm_is_the_textbook_product(routines, dtype, m, n, k, trans_a, row_gap, seed):
    """c[i, j] = sum_p a[i, p] b[p, j] (a transposed when asked), on views whose rows are spaced apart."""
    rng = np.random.default_rng(seed)

    def view(rows, cols):  # rows contiguous, row_gap spare entries between rows
        return rng.standard_normal((rows, cols + row_gap)).astype(dtype)[:, :cols]

    a = view(k, m) if trans_a else view(m, k)
    b, c = view(k, n), np.full((m, n + row_gap), np.nan, dtype)[:, :n]
    blas.gemm(ROUTINES[routines], trans_a, a, b, c)
    expected = (a.T if trans_a else a).astype(np.float64) @ b.astype(np.float64)
    np.testing.assert_allclose(c, expected, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-5)


def test_gemm_refuses_rows_that_are_not_contiguous():
    a = np.ones((3, 6))[:, ::2]
    with pytest.raises(ValueError, match="contiguous"):
        blas.gemm(blas.routines(), False, a, np.ones((3, 2)), np.empty((3, 2)))


def test_winograd_chunk_is_the_same_with_the_plain_loop():
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((3, 5, 9, 7)), rng.standard_normal((4, 5, 3, 3))
    u = W.weight_transform(w, np.float64)
    outputs = []
    for routines in ROUTINES.values():
        y = np.empty((3, 4, 9, 7))
        W.forward(x, [0, 3], 1, 1, u, np.zeros(4), y, lambda name, shape: np.empty(shape), routines)
        outputs.append(y)
    np.testing.assert_allclose(outputs[0], outputs[1], rtol=0, atol=1e-12)
