"""Thread counts of Numba's parallel kernels and of the BLAS, set together so they never oversubscribe.

A training step alternates Numba kernels (im2col, pooling, activations) and BLAS GEMMs. If each pool
believes it owns every core, the two pools fight for them; so both get the same count, ``n``:

- Numba: ``numba.set_num_threads(n)``. Numba keeps this count per calling thread: call
  ``set_num_threads`` from the thread that runs the training (the main thread, normally).
- BLAS (OpenBLAS, MKL, ...): ``threadpoolctl.threadpool_limits(n, user_api="blas")``, kept in force
  for the rest of the process (until the next call).
"""
import numbers
import os

import numba
from threadpoolctl import threadpool_info, threadpool_limits

__all__ = ["set_num_threads", "get_num_threads", "available_cores"]

_blas_limits = None  # the threadpoolctl handle in force (held so the limit's owner stays reachable)


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
