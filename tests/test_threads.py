"""minigrad.threads: Numba and the BLAS get the same thread count; small kernels stay on one thread."""
import os
import subprocess
import sys

import numba
import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

from minigrad.kernels import _threading
from minigrad.kernels import im2col as K
from minigrad.threads import available_cores, get_num_threads, parallel_chunks, set_num_threads


@pytest.fixture(autouse=True)
def restore_threads():
    numba_before = numba.get_num_threads()
    with threadpool_limits(limits=None, user_api="blas"):  # restores the BLAS counts on exit
        yield
    numba.set_num_threads(numba_before)


def _blas_counts():
    return {info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"}


def test_set_one_thread_sets_both():
    assert set_num_threads(1) == 1
    assert get_num_threads() == {"numba": 1, "blas": 1}
    assert numba.get_num_threads() == 1 and _blas_counts() == {1}


def test_none_means_all_cores():
    set_num_threads(1)
    expected = min(available_cores(), numba.config.NUMBA_NUM_THREADS)
    assert set_num_threads(None) == expected == set_num_threads()
    assert get_num_threads() == {"numba": expected, "blas": expected}


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_invalid_counts(bad):
    with pytest.raises(ValueError, match="set_num_threads"):
        set_num_threads(bad)


def test_more_than_numbas_pool_is_refused():
    with pytest.raises(ValueError, match="NUMBA_NUM_THREADS"):
        set_num_threads(numba.config.NUMBA_NUM_THREADS + 1)


@pytest.mark.parametrize("threads", [1, None])
def test_kernels_give_the_same_result_on_any_thread_count(threads):
    x = np.random.default_rng(0).standard_normal((8, 16, 12, 12)).astype(np.float32)
    expected = np.empty((16 * 9, 8 * 144), np.float32)
    K.im2col.kernel(x, 0, 8, 3, 3, 1, 1, 1, 1, 12, 12, expected)  # the raw jitted kernel
    set_num_threads(threads)
    cols = np.empty_like(expected)
    assert cols.size >= _threading.SERIAL_BELOW  # this call runs in parallel
    K.im2col(x, 0, 8, 3, 3, 1, 1, 1, 1, 12, 12, cols)
    np.testing.assert_array_equal(cols, expected)


def test_small_jobs_run_serially_and_restore_the_count():
    set_num_threads(None)
    before = numba.get_num_threads()
    seen = []

    def spy(*args):
        seen.append(numba.get_num_threads())

    small = _threading.serial_when_small(spy)
    small(np.zeros(10))
    small(np.zeros(_threading.SERIAL_BELOW))
    assert seen == [1, before] and numba.get_num_threads() == before


@pytest.mark.parametrize("preset, expected", [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_openmp_workers_sleep_unless_the_user_says_otherwise(preset, expected):
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if preset:
        env["OMP_WAIT_POLICY"] = preset
    out = subprocess.run([sys.executable, "-c", "import os, minigrad; print(os.environ['OMP_WAIT_POLICY'])"],
                         env=env, capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.stdout.strip() == expected


def test_parallel_chunks_runs_each_chunk_once_on_single_threaded_workers():
    set_num_threads(2)
    chunks = [(n, n + 1) for n in range(40)]
    seen, lock = [], __import__("threading").Lock()

    def work(n0, n1, state):
        with lock:
            seen.append((n0, n1, numba.get_num_threads(), frozenset(_blas_counts())))
        state.append(n0)

    states = parallel_chunks(work, chunks, make_state=list)
    assert sorted((n0, n1) for n0, n1, _, _ in seen) == chunks
    assert states == [[n] for n in range(40)]  # one state per chunk, in chunk order
    assert all(threads == 1 and blas == {1} for _, _, threads, blas in seen)  # workers: one thread each
    assert _blas_counts() == {2} and numba.get_num_threads() == 2  # restored for the caller


def test_parallel_chunks_with_one_thread_or_one_chunk_runs_in_the_caller():
    import threading
    caller = threading.get_ident()
    for threads, chunks in ((1, [(0, 1), (1, 2)]), (2, [(0, 5)])):
        set_num_threads(threads)
        where = []
        states = parallel_chunks(lambda n0, n1, s, where=where: where.append(threading.get_ident()), chunks)
        assert states == [None] * len(chunks) and set(where) == {caller}


def test_parallel_chunks_propagates_errors_after_all_workers_stop():
    set_num_threads(2)
    done = []

    def work(n0, n1, state):
        if n0 == 3:
            raise RuntimeError("chunk 3 failed")
        done.append(n0)

    with pytest.raises(RuntimeError, match="chunk 3"):
        parallel_chunks(work, [(n, n + 1) for n in range(10)])
    assert 3 not in done and _blas_counts() == {2}


def test_conv_gradients_are_the_same_from_run_to_run():
    """float32 partial sums in chunk order, whatever the timing: two identical steps agree bit for bit."""
    from minigrad import nn
    set_num_threads(2)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((64, 8, 16, 16), dtype=np.float32)
    g = rng.standard_normal((64, 8, 16, 16), dtype=np.float32)
    grads = []
    for _ in range(6):
        m = nn.Conv2d(8, 8, 3, padding=1)
        m.weight.data[...] = np.linspace(-1, 1, m.weight.size, dtype=np.float32).reshape(m.weight.shape)
        m(x)
        m.backward(g)
        grads.append((m.weight.grad.copy(), m.bias.grad.copy()))
    assert all(np.array_equal(a, b) for first in grads[1:] for a, b in zip(grads[0], first))


def test_conv_same_result_on_one_and_two_threads():
    from minigrad import nn
    rng = np.random.default_rng(3)
    x = rng.standard_normal((16, 4, 12, 10))
    g = rng.standard_normal((16, 6, 12, 10))
    results = []
    for threads in (1, 2):
        set_num_threads(threads)
        m = nn.Conv2d(4, 6, 3, padding=1).double()
        m.weight.data[...] = np.linspace(-1, 1, m.weight.size).reshape(m.weight.shape)
        m.bias.data[...] = np.linspace(-1, 1, m.bias.size)
        results.append((m(x), m.backward(g), m.weight.grad.copy()))
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_worker_pool_is_recreated_in_a_forked_child():
    """The parent's worker threads do not exist after fork(): the child must not wait for them forever."""
    code = """
import os, sys
from minigrad.threads import parallel_chunks, set_num_threads
set_num_threads(2)
chunks = [(n, n + 1) for n in range(8)]
assert len(parallel_chunks(lambda a, b, s: None, chunks)) == 8  # the parent's pool now exists
pid = os.fork()
if pid == 0:
    states = parallel_chunks(lambda a, b, s: s.append(a), chunks, make_state=list)
    os._exit(0 if sorted(sum(states, [])) == list(range(8)) else 3)
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
"""
    out = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.returncode == 0, out.stderr
