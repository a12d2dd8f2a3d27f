"""Numba kernels used by minigrad.nn; they import nothing of minigrad."""
