"""How the parallel Numba kernels use threads: idle workers sleep, and tiny jobs stay on one thread.

1. Numba's default threading layer on Linux is OpenMP, whose idle workers busy-wait after every parallel
   loop. A training step alternates Numba kernels with BLAS GEMMs, so the spinning workers take the cores
   the BLAS threads need right then, and a busy machine makes it far worse (measured on 2 shared cores:
   a tiny Conv2d forward took 21 ms with spinning workers, 0.25 ms with sleeping ones).
   ``OMP_WAIT_POLICY=PASSIVE`` makes idle workers sleep at once. It is set here, on import, because
   the OpenMP runtime reads it when it loads (at the first parallel kernel); a value the user set wins.
2. ``serial_when_small`` runs a kernel on the calling thread when its largest array has fewer than
   ``SERIAL_BELOW`` elements: waking the pool costs more than such a job (gradient checks, tiny layers).
   ``use_threads(size)`` is the same choice for kernels that come in a serial and a parallel version;
   with one Numba thread (``--threads 1``, or one worker per core) the serial version runs, as the
   parallel one would only add its scheduling (and, for kernels split into blocks, its extra passes).
"""
import functools
import os

import numba
import numpy as np

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

SERIAL_BELOW = 1 << 15
CHUNK = 1 << 15  # elements per task of the element-wise kernels' threaded drivers (activation.py, residual.py)

__all__ = ["serial_when_small", "use_threads", "SERIAL_BELOW", "CHUNK"]


def serial_when_small(kernel):
    """Wrap a ``parallel=True`` kernel so that small jobs run with one Numba thread (``.kernel``: the
    jitted function itself)."""

    @functools.wraps(kernel)
    def run(*args):
        if max(a.size for a in args if isinstance(a, np.ndarray)) >= SERIAL_BELOW:
            return kernel(*args)
        previous = numba.get_num_threads()
        numba.set_num_threads(1)
        try:
            return kernel(*args)
        finally:
            numba.set_num_threads(previous)

    run.kernel = kernel
    return run


def use_threads(size):
    """Whether a job of ``size`` elements should run on Numba's threads (see the module docstring)."""
    return size >= SERIAL_BELOW and numba.get_num_threads() > 1
