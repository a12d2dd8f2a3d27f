"""Thread counts of Numba's parallel kernels and of the BLAS, set together so they never oversubscribe,
and the worker threads that layers use to process a batch in parallel chunks.

A training step alternates Numba kernels (im2col, pooling, activations) and BLAS GEMMs. If each pool
believes it owns every core, the two pools fight for them; so both get the same count, ``n``:

- Numba: ``numba.set_num_threads(n)``. Numba keeps this count per calling thread: call
  ``set_num_threads`` from the thread that runs the training (the main thread, normally).
- BLAS (OpenBLAS, MKL, ...): ``threadpoolctl.threadpool_limits(n, user_api="blas")``, kept in force
  for the rest of the process (until the next call).

``parallel_chunks`` runs a layer's per-chunk work (e.g. Conv2d: im2col, GEMM, reshuffle of a few images)
on ``n`` threads (the caller and ``n - 1`` helpers), each doing whole chunks on one core: single-threaded
kernels and a single-threaded BLAS for the duration. One hand-off per layer call instead of a fork and join of both
thread pools for every kernel and every GEMM; on a busy machine the fork-join way was several times
slower (a thread the others wait for at each join may not be running).
"""
import numbers
import os
import threading
from concurrent.futures import ThreadPoolExecutor, wait

import numba
import numpy as np  # noqa: F401  (loads the BLAS before threadpoolctl looks for it)
from threadpoolctl import ThreadpoolController, threadpool_info, threadpool_limits

__all__ = ["set_num_threads", "get_num_threads", "available_cores", "parallel_chunks"]

_blas_limits = None  # the threadpoolctl handle in force (held so the limit's owner stays reachable)
_blas = None  # ThreadpoolController of the BLAS libraries, made on first use (its scan costs ~2 ms)
_pool, _pool_size = None, 0
_pool_lock = threading.Lock()


def _forget_workers_after_fork():
    """A forked child has none of its parent's threads: start a new pool there when one is needed."""
    global _pool, _pool_size, _pool_lock
    _pool, _pool_size, _pool_lock = None, 0, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_workers_after_fork)


def available_cores():
    """Cores this process may run on (its CPU affinity where the OS reports it)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def set_num_threads(n=None):
    """Run Numba kernels and the BLAS on ``n`` threads each (``None``: all available cores); returns ``n``.

    ``n`` may not exceed Numba's pool size, ``numba.config.NUMBA_NUM_THREADS`` (all cores unless the
    environment variable of that name says less), because Numba cannot grow its pool after start-up.
    ``parallel_chunks`` uses ``n`` threads: the caller and ``n - 1`` helpers.
    """
    global _blas_limits
    ceiling = numba.config.NUMBA_NUM_THREADS
    if n is None:
        n = min(available_cores(), ceiling)
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"set_num_threads: n must be a positive int or None, got {n!r}")
    if n > ceiling:
        raise ValueError(f"set_num_threads: n={n} exceeds Numba's pool of {ceiling} threads "
                         f"(NUMBA_NUM_THREADS); start Python with NUMBA_NUM_THREADS={n} to allow it")
    n = int(n)
    numba.set_num_threads(n)
    _blas_limits = threadpool_limits(limits=n, user_api="blas")
    return n


def get_num_threads():
    """The counts in force: ``{"numba": ..., "blas": ...}`` (the BLAS entry is the largest over the BLAS
    libraries loaded, ``None`` if threadpoolctl finds none)."""
    blas = [info["num_threads"] for info in threadpool_info() if info.get("user_api") == "blas"]
    return {"numba": numba.get_num_threads(), "blas": max(blas) if blas else None}


def _worker_start():
    numba.set_num_threads(1)  # per thread: kernels called from a worker run on that worker alone


def _workers(n):
    global _pool, _pool_size
    with _pool_lock:
        if _pool_size != n:
            if _pool is not None:
                _pool.shutdown(wait=False)
            _pool = ThreadPoolExecutor(n, thread_name_prefix="minigrad-worker", initializer=_worker_start)
            _pool_size = n
        return _pool


def single_threaded_blas():
    """A context in which the BLAS runs on one thread (for code that runs its own threads, each calling it)."""
    global _blas
    if _blas is None:
        _blas = ThreadpoolController().select(user_api="blas")
    return _blas.limit(limits=1)


def parallel_chunks(work, chunks, make_state=None):
    """Call ``work(n0, n1, state)`` for every ``(n0, n1)`` in ``chunks``; returns the states in chunk order.

    Each chunk gets its own ``state = make_state()`` (e.g. its partial gradient sums; ``None`` without
    ``make_state``). The chunks go, in order of availability, to ``numba.get_num_threads()`` threads (of
    the calling thread: ``set_num_threads`` sets it): the calling thread itself and helper threads from a
    pool. A sum over the returned states adds them in chunk order, whichever thread took which chunk:
    results are the same from run to run (float addition is not associative, so per-thread sums would
    depend on the timing). Every thread runs its Numba kernels on itself alone and the BLAS is
    single-threaded meanwhile, so ``work`` must only write to its own chunk's part of shared arrays. With
    one thread, or one chunk, everything runs in the calling thread with the usual thread counts.

    One hand-off per call: the caller starts on the first chunk at once, while the helpers wake up.
    """
    states = [make_state() if make_state is not None else None for _ in chunks]
    threads = min(numba.get_num_threads(), len(chunks))
    if threads <= 1:
        for (n0, n1), state in zip(chunks, states):
            work(n0, n1, state)
        return states
    pending = iter(enumerate(chunks))
    lock = threading.Lock()
    failed = []

    def take_chunks():
        while not failed:
            with lock:
                index, chunk = next(pending, (None, None))
            if chunk is None:
                return
            try:
                work(chunk[0], chunk[1], states[index])
            except BaseException:
                failed.append(True)  # the other threads stop taking chunks
                raise

    caller_threads = numba.get_num_threads()
    pool = _workers(caller_threads - 1)
    with single_threaded_blas():
        helpers = [pool.submit(take_chunks) for _ in range(threads - 1)]
        numba.set_num_threads(1)
        try:
            take_chunks()
        finally:
            numba.set_num_threads(caller_threads)
            wait(helpers)  # all of them, even after an error: none may still write once we return
    for helper in helpers:
        helper.result()  # raises a helper's error
    return states
