r"""Effective depth and weight change of a trained network (Philipp et al. 2018, Figure 3 D and E).

Layers are numbered from the error layer as in ``minigrad.measure.gsc``: f_1 is the output of the last
layer (the logits), f_L the output of the layer nearest the input. Layer l maps f_{l+1} to f_l.

**The residual trick.** Any network is a residual network: write layer l of the trained network as
f_l = i_l + r_l, where i_l is the same layer with its *initial* weights (the function it computed at
initialisation) and r_l = f_l - i_l is what training added. At the trained network's own input to the
layer, x = f_{l+1}, the Jacobian splits exactly::

    J_l = I_l + R_l,    I_l = d i_l / dx (initial weights),    R_l = J_l - I_l

so the gradient of the error with respect to f_L, the quantity GSC(L, 0) measures, is

    g_L = g_1 J_1 J_2 ... J_{L-1} = g_1 (I_1 + R_1)(I_2 + R_2) ... (I_{L-1} + R_{L-1})       g_1 = dE/df_1

and expanding the product gives 2^(L-1) terms, one per choice of I or R at each layer. The terms with
exactly lambda R-factors ("residual Jacobians") add up to v_lambda, and g_L = sum_lambda v_lambda
exactly. The v_lambda are computed without expanding anything, layer by layer from the error layer::

    v^{(1)}_0 = g_1;    v^{(l+1)}_lambda = v^{(l)}_lambda I_l + v^{(l)}_{lambda-1} R_l

each product a vector-Jacobian product through the layer's own ``backward`` (v R_l = v J_l - v I_l, one
backward through the trained layer and one through its initial copy, both at the trained input). For a
batch of points, v_lambda holds one row per point; a batch-norm layer couples the rows, and its backward
is then the vector-Jacobian product of the whole batch (as ``minigrad.measure.gsc.measure_batch``).

**What is reported** (``PathDecomposition``), with ||.|| the Frobenius norm over the batch (points x
features), in float64:

- ``share[lambda] = ||v_lambda|| / ||g_L||``: how large the order-lambda terms are against the gradient;
- ``tail[lambda] = ||sum_{mu > lambda} v_mu|| / ||g_L||``: what the terms with more than lambda residual
  Jacobians contribute together (tail[-1] would be 1; tail[L-1] = 0);
- **effective depth at epsilon**: the smallest lambda with tail[lambda] < epsilon, i.e. the longest chain
  of co-adapted layers still needed to account for all but a fraction epsilon of the gradient. At
  initialisation R_l = 0, so the effective depth is 0; it can be at most L - 1.

**What could not be checked.** The paper (arXiv 1712.05577) was not available offline in full. The
reproducibility report (``shared/papers``) paraphrases its definition as "the largest lambda such that the
sum of all terms containing lambda residual Jacobians is non-negligible" and does not give the threshold
or the norm. The decomposition above is exact; the criterion (the norm of the tail *sum*, against the
gradient's norm, below epsilon) and the values of epsilon are our choice, not verified against the
paper's own estimator. The per-order ``share`` is stored too, so the report's reading (the largest lambda
with share[lambda] >= epsilon) can be computed from the same data (``largest_nonnegligible_order``).

**Weight change** (Figure 3 E): for each layer the operator (spectral) norm ||W_l - W_l^0||_2 of the
change of its weight matrix, the largest singular value, absolute and relative to ||W_l^0||_2.
"""
import copy
from dataclasses import dataclass

import numpy as np

from ..nn import BatchNorm1d, BatchNorm2d, Sequential
from .gsc import log_probability_error

__all__ = ["PathDecomposition", "path_decomposition", "effective_depth", "largest_nonnegligible_order",
           "weight_matrices", "weight_change"]


@dataclass
class PathDecomposition:
    """The gradient g_L split by the number of residual Jacobians on each path (see the module docstring).

    ``share[lambda]`` = ||v_lambda|| / ||g_L||, ``tail[lambda]`` = ||sum_{mu > lambda} v_mu|| / ||g_L|` for
    lambda = 0..L-1, ``gradient_norm`` = ||g_L||; ``residual`` = ||sum v_lambda - g_L|| / ||g_L||, the
    decomposition's rounding error (the gradient g_L comes from a separate backward of the trained layers).
    """

    share: np.ndarray
    tail: np.ndarray
    gradient_norm: float
    residual: float

    def effective_depth(self, epsilon):
        return effective_depth(self.tail, epsilon)


def effective_depth(tail, epsilon):
    """The smallest lambda with ``tail[lambda] < epsilon`` (len(tail) - 1 if none; NaN tails give None)."""
    tail = np.asarray(tail, dtype=np.float64)
    if not np.all(np.isfinite(tail)):
        return None
    below = np.flatnonzero(tail < epsilon)
    return int(below[0]) if below.size else len(tail) - 1


def largest_nonnegligible_order(share, epsilon):
    """The report's reading: the largest lambda with ``share[lambda] >= epsilon`` (0 if none)."""
    above = np.flatnonzero(np.asarray(share, dtype=np.float64) >= epsilon)
    return int(above[-1]) if above.size else 0


def _couples_points(module):
    return isinstance(module, (BatchNorm1d, BatchNorm2d))


def _vjps(layer, x, vectors):
    """[v J] for each v of ``vectors`` (arrays shaped like the layer's output), J = the layer's Jacobian at
    the batch ``x``. A ``Sequential`` is taken child by child; a module whose points are independent takes all
    vectors at once (``x`` tiled), a batch norm one vector at a time (its backward mixes the batch's rows)."""
    if isinstance(layer, Sequential) and len(layer) > 1:
        inputs = []
        for child in layer.children():
            inputs.append(x)
            x = child(x)
        for child, child_input in zip(reversed(list(layer.children())), reversed(inputs)):
            vectors = _vjps(child, child_input, vectors)
        return vectors
    if not any(_couples_points(m) for m in layer.modules()):
        layer(np.concatenate([x] * len(vectors)))
        return np.split(layer.backward(np.concatenate(vectors)), len(vectors))
    out = []
    for v in vectors:
        layer(x)
        out.append(layer.backward(v))
    return out


def path_decomposition(layers, initial_layers, inputs, targets, error=log_probability_error):
    """``PathDecomposition`` of the trained ``layers`` against their initial copies, on one batch.

    ``layers``: the modules whose outputs are f_L, ..., f_1, in forward order (``model.hidden_layers +
    [model.out]``); ``initial_layers``: the same modules with their weights at initialisation. The error
    layer ``error(f_1, targets) -> (sum E^2, dE/df_1)`` gives g_1. Works on float64 copies of both (the
    originals, their ``.grad`` and the batch are left as they were).
    """
    if len(layers) != len(initial_layers):
        raise ValueError(f"path_decomposition: {len(layers)} layers but {len(initial_layers)} initial layers")
    trained = [copy.deepcopy(m).to(np.float64).requires_grad_(False) for m in layers]
    initial = [copy.deepcopy(m).to(np.float64).requires_grad_(False) for m in initial_layers]
    h = np.asarray(inputs, dtype=np.float64)
    xs = []  # the trained network's input to each layer
    for layer in trained:
        xs.append(h)
        h = layer(h)
    _, g = error(h, targets)
    g = np.asarray(g, dtype=np.float64)
    v = [g]  # v[lambda], lambda = 0..(layers passed)
    direct = g
    for k in range(len(trained) - 1, 0, -1):  # layer l = L - k; the first layer's Jacobian is not in g_L
        through_trained = _vjps(trained[k], xs[k], v + [direct])
        direct = through_trained.pop()
        through_initial = _vjps(initial[k], xs[k], v)
        v = [b.copy() for b in through_initial] + [np.zeros_like(direct)]
        for lam, (a, b) in enumerate(zip(through_trained, through_initial)):
            v[lam + 1] += a - b
    norm = float(np.linalg.norm(direct))
    norms = np.array([np.linalg.norm(x) for x in v])
    tails = np.zeros(len(v))
    running = np.zeros_like(direct)
    for lam in range(len(v) - 1, 0, -1):
        running += v[lam]
        tails[lam - 1] = np.linalg.norm(running)
    with np.errstate(divide="ignore", invalid="ignore"):
        return PathDecomposition(share=norms / norm, tail=tails / norm, gradient_norm=norm,
                                 residual=float(np.linalg.norm(running + v[0] - direct) / norm))


def weight_matrices(layer):
    """The layer's weight matrices (2-D parameters named ``weight``), in registration order."""
    return [p for name, p in layer.named_parameters() if name.split(".")[-1] == "weight" and p.data.ndim == 2]


def weight_change(layers, initial_layers):
    """Per layer (forward order): (||W - W^0||_2, ||W^0||_2) of its weight matrix (the first one if several),
    the largest singular values, in float64. A layer without a weight matrix gives (NaN, NaN)."""
    out = []
    for layer, start in zip(layers, initial_layers):
        now, then = weight_matrices(layer), weight_matrices(start)
        if not now:
            out.append((float("nan"), float("nan")))
            continue
        w, w0 = now[0].data.astype(np.float64), then[0].data.astype(np.float64)
        out.append((float(np.linalg.norm(w - w0, 2)), float(np.linalg.norm(w0, 2))))
    return out
