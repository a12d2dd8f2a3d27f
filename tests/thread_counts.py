"""A test helper: run the same computation on one Numba thread and on all of them."""
import numba
import numpy as np


def assert_same_on_one_and_all_threads(run):
    """``run()`` returns a tuple of arrays; they must be bit-identical with 1 thread and with all."""
    results = []
    previous = numba.get_num_threads()
    try:
        for count in (1, numba.config.NUMBA_NUM_THREADS):
            numba.set_num_threads(count)
            results.append(run())
    finally:
        numba.set_num_threads(previous)
    for one, many in zip(*results):
        np.testing.assert_array_equal(one, many)
