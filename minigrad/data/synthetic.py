r"""Synthetic data for the gradient-scale study (Philipp et al. 2018, "Gradients explode").

Inputs and labels are ``dim``-vectors with i.i.d. entries N(0, 1/dim); each input row is then
rescaled to L2 norm ``input_length`` (the paper: dim = 100, length 10, 10,000 points per dataset).
"""
from __future__ import annotations

import numpy as np

__all__ = ["gsc_dataset"]


def gsc_dataset(n_points: int, dim: int = 100, input_length: float = 10.0, seed=0, dtype=np.float64):
    """``(inputs, labels)``, both (n_points, dim): x_i = input_length * z_i / ||z_i||_2, y_i ~ N(0, I/dim).

    Drawn from ``np.random.default_rng(seed)``: first the (n_points, dim) input matrix, then the labels,
    in float64; the result is cast to ``dtype`` at the end, so the values do not depend on ``dtype``.
    """
    for arg, value in (("n_points", n_points), ("dim", dim)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{arg} must be a positive int, got {value!r}")
    if not np.isfinite(input_length) or input_length <= 0:
        raise ValueError(f"input_length must be positive and finite, got {input_length!r}")
    if not np.issubdtype(np.dtype(dtype), np.floating):
        raise TypeError(f"dtype must be a floating dtype, got {np.dtype(dtype)}")
    rng = np.random.default_rng(seed)
    scale = 1.0 / np.sqrt(dim)
    inputs = rng.normal(0.0, scale, size=(n_points, dim))
    labels = rng.normal(0.0, scale, size=(n_points, dim))
    norms = np.linalg.norm(inputs, axis=1, keepdims=True)
    # a zero row has probability 0; guard anyway so it never divides by zero
    inputs *= input_length / np.where(norms > 0, norms, 1.0)
    return inputs.astype(dtype, copy=False), labels.astype(dtype, copy=False)
