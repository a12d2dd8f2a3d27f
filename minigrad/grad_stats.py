"""Statistics of gradients and activations, always computed in float64.

These are what gradient-flow plots and gradient-scale studies read (``module.grad_stats``):

- ``tensor_stats(g)``: ``mean_abs`` = mean |g|, ``l2`` = ||g||_2, ``var`` = mean (g - mean g)^2,
  ``max_abs`` = max |g|, ``numel``.
- ``grad_output_stats(g)``: the same, plus ``batch_var``: the variance over the batch (axis 0) of each
  feature of d loss / d output, averaged over the features (the statistic plotted per residual block in
  the BN-in-ResNets paper).
- ``activation_stats(a)``: per feature (every axis but 0 and, for NCHW maps, pooled over space as one
  feature per channel position) ``std`` = quadratic mean over features of each feature's standard
  deviation over the batch, and ``sign_diversity`` = mean over features of min(P, N) / (P + N), where P and
  N count the positive and negative values of that feature.
"""
import numpy as np

__all__ = ["tensor_stats", "grad_output_stats", "activation_stats"]


def tensor_stats(array):
    """mean |a|, ||a||_2, variance, max |a| and element count of ``array``, in float64."""
    a = np.asarray(array, dtype=np.float64)
    if a.size == 0:
        return {"mean_abs": 0.0, "l2": 0.0, "var": 0.0, "max_abs": 0.0, "numel": 0}
    absolute = np.abs(a)
    return {
        "mean_abs": float(absolute.mean()),
        "l2": float(np.sqrt(np.sum(a * a))),
        "var": float(a.var()),
        "max_abs": float(absolute.max()),
        "numel": int(a.size),
    }


def _per_feature(array):
    """View ``array`` as (batch, features) in float64."""
    a = np.asarray(array, dtype=np.float64)
    return a.reshape(a.shape[0], -1) if a.ndim > 1 else a.reshape(-1, 1)


def grad_output_stats(grad_output):
    """``tensor_stats`` plus ``batch_var`` = mean over features of Var_batch(g[:, feature])."""
    stats = tensor_stats(grad_output)
    stats["batch_var"] = float(_per_feature(grad_output).var(axis=0).mean())
    return stats


def activation_stats(activations):
    """Pre-activation ``std`` (quadratic mean of per-feature std over the batch) and ``sign_diversity``."""
    a = _per_feature(activations)
    positive = (a > 0).sum(axis=0)
    negative = (a < 0).sum(axis=0)
    nonzero = positive + negative
    diversity = np.where(nonzero > 0, np.minimum(positive, negative) / np.maximum(nonzero, 1), 0.0)
    return {
        "std": float(np.sqrt(a.var(axis=0).mean())),
        "sign_diversity": float(diversity.mean()),
        "mean": float(a.mean()),
        "numel": int(a.size),
    }
