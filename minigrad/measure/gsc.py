r"""Gradient scale coefficients and pre-activation statistics (Philipp et al. 2018, "Gradients explode").

Layers are numbered from the error layer, as the paper does: l = 0 is the error E itself, l = 1 the
output f_1 of the last layer before the error, ..., l = L the output of the layer nearest the input.

**Definition implemented** (DECISIONS 20: the reproducibility report's formula, made exact). For one point
the Jacobian of E with respect to f_l (width d_l) is the 1 x d_l row g_l = dE/df_l; its only singular value
is ||g_l||_2, so its quadratic-mean norm is ||J||_qm = ||g_l||_2 / sqrt(d_l). Over all points of all
datasets (Q = quadratic expectation, the root mean square)::

    GSC(l, 0) = Q[||g_l||_2 / sqrt(d_l)] * Q[||f_l||_2] / Q[E]
              = sqrt(mean ||g_l||^2 / d_l) * sqrt(mean ||f_l||^2) / sqrt(mean E^2)

so GSC(0, 0) = 1. Why each factor is a separate quadratic mean: the report writes Q over the Jacobian
norm and over the layer norm; taking them separately makes each factor a scale of the whole data (how
large gradients, outputs and errors are), keeps the GSC exactly invariant when a layer's output is
multiplied by a constant and the next layer divides it back (the property that defines the GSC: its
value does not depend on how a layer's output is scaled), and adds up as three running sums, so
datasets never need to be kept in memory. The error layer of the synthetic study is the dot product
E = <y, f_1> with the label y, so dE/df_1 = y.

**How it is computed.** One forward pass of the whole batch through the layers' own ``forward`` and one
``backward`` with d(sum_i E_i)/df_1 as the upstream gradient give g_l for every point and layer; only
the sums sum ||g_l||^2, sum ||f_l||^2, sum E^2 (float64) are kept. Without batch norm the points do not
interact and row i of that backward is exactly point i's Jacobian row. With batch norm the network maps
the whole batch (a whole dataset: 10,000 points at full scale, DECISIONS 20) to its outputs, and row i is
d(sum_j E_j)/df_l(x_i), the cross-point terms through the batch statistics included, as autograd of the
summed error would give; they are O(1/N) per pair and project out the batch mean and the normalised
direction of each feature.

``measure_batch`` works on any stack of minigrad modules, and what it runs is the layers' own code
(their kernels), so each backward formula the study depends on is written once, in ``minigrad.nn``. It
asks for no parameter gradient (``requires_grad=False`` for the duration: a Linear's weight gradient
would be a third of the work) and leaves the model's ``.grad`` untouched.

**dtype.** Sums are float64 whatever the data. In an exploding network float32 rounding errors grow by
the explosion factor through the forward pass too (batch-ReLU: 2e-3 relative at the last layer, flipping
some ReLU signs), so one dataset's float32 GSC(50, 0) differs from float64 by up to about 1%. The
differences have random signs: over 12 datasets of 10,000 points they averaged out to 6e-4, while the
GSC itself varies by 15% from dataset to dataset. ``measure_architecture`` defaults to float64.

**Pre-activation statistics**, of the input to each layer's nonlinearity (after its normalisation, if
any), per dataset and per neuron over the dataset's points, then averaged over neurons and datasets:

- standard deviation: sqrt(mean over neurons and datasets of the neuron's variance over the points)
  (the quadratic mean of the per-neuron standard deviations);
- sign diversity: mean over neurons and datasets of min(P, N) / (P + N), where P and N count the points
  at which the neuron's pre-activation is positive and negative (0 if all are zero).

A shrinking standard deviation or sign diversity with depth is the paper's "collapsing domain".
"""
import ctypes
import ctypes.util
import math
import sys

import numba
import numpy as np

from ..nn.container import Sequential

__all__ = ["GradientScaleStats", "measure_batch", "measure_architecture", "keep_freed_memory", "dot_product_error",
           "log_probability_error", "log_fit", "log_slope", "growth_per_layer", "explodes"]


# ----------------------------------------------------------------------------------------- statistics kernels
# The measurement's own sums (no layer's formula is here). Single-threaded on purpose: the study runs one
# dataset per process. float64 accumulators, so float32 activations lose nothing in the sums; "reassoc"
# lets the float64 sums vectorise.
@numba.njit(cache=True, fastmath={"reassoc"})
def _sum_of_squares(a):
    """sum over all entries of a[i, j]^2, in float64."""
    total = 0.0
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            v = np.float64(a[i, j])
            total += v * v
    return total


@numba.njit(cache=True, fastmath={"reassoc"})
def _sum_of_squared_row_dots(a, b):
    """sum_i (sum_j a[i, j] b[i, j])^2 in float64: the sum of squared per-point errors <y_i, f_i>."""
    total = 0.0
    for i in range(a.shape[0]):
        dot = 0.0
        for j in range(a.shape[1]):
            dot += np.float64(a[i, j]) * np.float64(b[i, j])
        total += dot * dot
    return total


@numba.njit(cache=True, fastmath={"reassoc"})
def _feature_stats(z, mean, var, positive, negative):
    """Per column j of z (n, d): mean, biased variance and counts of z > 0 and z < 0, in one pass.

    The sums are of z - z[0, j] (float64): shifted by a value of the column, mean(z) - shift is small and
    var = mean((z - shift)^2) - (mean(z) - shift)^2 keeps its precision (no cancellation of two large sums).
    """
    n, d = z.shape
    shift = np.empty(d)
    s1 = np.zeros(d)
    s2 = np.zeros(d)
    positive[:] = 0
    negative[:] = 0
    for j in range(d):
        shift[j] = z[0, j]
    for i in range(n):
        for j in range(d):
            v = z[i, j]
            centred = np.float64(v) - shift[j]
            s1[j] += centred
            s2[j] += centred * centred
            # branch-free counts: the loop then vectorises (10x faster than if/elif)
            positive[j] += np.int64(v > 0)
            negative[j] += np.int64(v < 0)
    for j in range(d):
        offset = s1[j] / n
        mean[j] = shift[j] + offset
        spread = s2[j] / n - offset * offset
        var[j] = 0.0 if spread < 0 else spread  # rounding can make a constant column's negative; NaN stays


def _as_rows(a):
    """``a`` as a C-contiguous (points, features) array (no copy when it already is one)."""
    a = np.ascontiguousarray(a)
    return a.reshape(a.shape[0], -1)


# ----------------------------------------------------------------------------------------- errors
def dot_product_error(outputs, labels):
    """The synthetic study's error layer: E_i = <labels_i, outputs_i>; returns (sum E_i^2, dE/doutputs)."""
    outputs, labels = _as_rows(outputs), _as_rows(labels)
    if labels.shape != outputs.shape:
        raise ValueError(f"dot_product_error: labels must have the outputs' shape {outputs.shape}, got {labels.shape}")
    return _sum_of_squared_row_dots(labels, outputs), labels.astype(outputs.dtype, copy=False)


def log_probability_error(logits, targets):
    """Softmax + log-probability error: E_i = -log softmax(logits_i)[t_i] (cross-entropy per point).

    Returns (sum E_i^2, dE/dlogits = softmax(logits) - onehot(targets)); the sign of E does not matter
    to the GSC. Computed in float64 from max-shifted logits.
    """
    z = np.asarray(logits, dtype=np.float64)
    targets = np.asarray(targets)
    if z.ndim != 2 or targets.shape != (z.shape[0],) or not np.issubdtype(targets.dtype, np.integer):
        raise ValueError(f"log_probability_error: expected logits (N, C) and integer targets (N,), got "
                         f"{np.shape(logits)} and {targets.shape} {targets.dtype}")
    shifted = z - z.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(shifted).sum(axis=1))
    rows = np.arange(z.shape[0])
    errors = log_norm - shifted[rows, targets]
    grad = np.exp(shifted - log_norm[:, None])
    grad[rows, targets] -= 1.0
    return float(np.sum(errors * errors)), grad.astype(np.asarray(logits).dtype, copy=False)


# ----------------------------------------------------------------------------------------- statistics
class GradientScaleStats:
    """Running sums over points and datasets for layers l = 1..L, and the curves they give.

    Sums kept (float64): ``grad_sq[l-1]`` = sum ||g_l||^2, ``out_sq[l-1]`` = sum ||f_l||^2,
    ``error_sq`` = sum E^2, ``n_points``; per dataset (batch) ``pre_var`` = mean over neurons of the
    pre-activation variance and ``sign_diversity`` summed over batches, ``n_batches``. Curves are indexed
    by l = 0..L (``layers``), with GSC(0, 0) = 1 and NaN pre-activation statistics at the error layer.
    """

    def __init__(self, n_layers):
        self.n_layers = int(n_layers)
        self.widths = np.zeros(self.n_layers, dtype=np.int64)
        self.grad_sq = np.zeros(self.n_layers)
        self.out_sq = np.zeros(self.n_layers)
        self.pre_var = np.zeros(self.n_layers)
        self.sign_div = np.zeros(self.n_layers)
        self.has_pre = np.zeros(self.n_layers, dtype=bool)
        self.error_sq = 0.0
        self.n_points = 0
        self.n_batches = 0

    @property
    def layers(self):
        return np.arange(self.n_layers + 1)

    @property
    def gsc(self):
        """GSC(l, 0) for l = 0..L (the definition in the module docstring)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            per_layer = np.sqrt(self.grad_sq * self.out_sq / (self.widths * self.n_points * self.error_sq))
        return np.concatenate([[1.0], per_layer])

    @property
    def pre_activation_std(self):
        """sqrt(mean over neurons and datasets of the pre-activation variance) for l = 0..L."""
        values = np.where(self.has_pre, np.sqrt(self.pre_var / max(self.n_batches, 1)), np.nan)
        return np.concatenate([[np.nan], values])

    @property
    def sign_diversity(self):
        """mean over neurons and datasets of min(P, N) / (P + N) for l = 0..L."""
        values = np.where(self.has_pre, self.sign_div / max(self.n_batches, 1), np.nan)
        return np.concatenate([[np.nan], values])

    def merge(self, other):
        """Add another run's sums (more datasets of the same network shape) into this one; returns self."""
        if other.n_layers != self.n_layers:
            raise ValueError(f"GradientScaleStats.merge: {other.n_layers} layers, expected {self.n_layers}")
        if self.n_points and other.n_points and not np.array_equal(self.widths, other.widths):
            raise ValueError("GradientScaleStats.merge: the layer widths differ")
        if other.n_points:
            self.widths = other.widths.copy()
        for name in ("grad_sq", "out_sq", "pre_var", "sign_div"):
            getattr(self, name)[...] += getattr(other, name)
        self.has_pre |= other.has_pre
        self.error_sq += other.error_sq
        self.n_points += other.n_points
        self.n_batches += other.n_batches
        return self

    def to_dict(self):
        """Plain lists and numbers (JSON-ready); ``from_dict`` reverses it."""
        return {"n_layers": self.n_layers, "widths": self.widths.tolist(), "grad_sq": self.grad_sq.tolist(),
                "out_sq": self.out_sq.tolist(), "pre_var": self.pre_var.tolist(),
                "sign_div": self.sign_div.tolist(), "has_pre": self.has_pre.tolist(),
                "error_sq": self.error_sq, "n_points": self.n_points, "n_batches": self.n_batches}

    @classmethod
    def from_dict(cls, data):
        stats = cls(data["n_layers"])
        stats.widths = np.asarray(data["widths"], dtype=np.int64)
        for name in ("grad_sq", "out_sq", "pre_var", "sign_div"):
            setattr(stats, name, np.asarray(data[name], dtype=np.float64))
        stats.has_pre = np.asarray(data["has_pre"], dtype=bool)
        stats.error_sq = float(data["error_sq"])
        stats.n_points, stats.n_batches = int(data["n_points"]), int(data["n_batches"])
        return stats

    def __repr__(self):
        return (f"GradientScaleStats(L={self.n_layers}, points={self.n_points}, datasets={self.n_batches}, "
                f"GSC(L,0)={self.gsc[-1]:.4g})")


def _parts(layer):
    """The modules a layer runs in order, and whether its last one (the nonlinearity) is measured apart.

    A ``Sequential`` of two or more modules is run module by module so that the input of the last one,
    the pre-activation, can be measured; any other layer is run whole.
    """
    if isinstance(layer, Sequential) and len(layer) >= 2:
        return list(layer.children()), True
    return [layer], False


def measure_batch(layers, inputs, targets, error=dot_product_error, stats=None):
    """Add one batch (one dataset) to ``stats`` (a new ``GradientScaleStats`` if None) and return it.

    ``layers``: the modules whose outputs are f_L, ..., f_1, in forward order (``model.hidden_layers``).
    A layer with two or more children (a ``Sequential`` linear -> [norm] -> act) is run child by child so
    the input of its last child, the pre-activation, can be measured; otherwise it is called whole.
    ``error(outputs, targets) -> (sum E^2, dE/doutputs)`` is the error layer (default: dot product).
    The batch is never modified. Each module's forward and backward are minigrad's own; no parameter
    gradient is computed (the layers' ``.grad`` are left as they were).
    """
    layers = list(layers)
    if stats is None:
        stats = GradientScaleStats(len(layers))
    elif stats.n_layers != len(layers):
        raise ValueError(f"measure_batch: stats has {stats.n_layers} layers, got {len(layers)} layers")
    params = [p for layer in layers for p in layer.parameters()]
    flags = [p.requires_grad for p in params]
    for p in params:  # the GSC needs gradients w.r.t. outputs only; the model's .grad stays as it is
        p.requires_grad = False
    try:
        return _measure(layers, inputs, targets, error, stats)
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad = flag


def _measure(layers, inputs, targets, error, stats):
    L = len(layers)
    pre_var, sign_div, has_pre = np.zeros(L), np.zeros(L), np.zeros(L, dtype=bool)
    out_sq, widths = np.zeros(L), np.zeros(L, dtype=np.int64)
    h = np.asarray(inputs)
    for k, layer in enumerate(layers):  # k = 0 is the input side, i.e. l = L - k
        modules, split = _parts(layer)
        for module in modules[:-1]:
            h = module(h)
        if split:
            z = _as_rows(h)
            mean, var = np.empty(z.shape[1]), np.empty(z.shape[1])
            positive, negative = np.empty(z.shape[1], np.int64), np.empty(z.shape[1], np.int64)
            _feature_stats(z, mean, var, positive, negative)
            total = positive + negative
            diversity = np.where(total > 0, np.minimum(positive, negative) / np.maximum(total, 1), 0.0)
            pre_var[k], sign_div[k], has_pre[k] = var.mean(), diversity.mean(), True
        h = modules[-1](h)
        rows = _as_rows(h)
        out_sq[k], widths[k] = _sum_of_squares(rows), rows.shape[1]
    error_sq, grad = error(h, targets)
    grad = np.asarray(grad).reshape(np.shape(h))
    grad_sq = np.zeros(L)
    for k in range(L - 1, -1, -1):
        grad_sq[k] = _sum_of_squares(_as_rows(grad))
        for module in reversed(_parts(layers[k])[0]):
            grad = module.backward(grad)
    # Arrays were filled from the input side (k); the stats are indexed by l - 1 = L - 1 - k.
    if stats.n_points and not np.array_equal(stats.widths, widths[::-1]):
        raise ValueError("measure_batch: the layer widths differ from the ones already measured")
    stats.widths = widths[::-1].copy()
    stats.grad_sq += grad_sq[::-1]
    stats.out_sq += out_sq[::-1]
    stats.pre_var += pre_var[::-1]
    stats.sign_div += sign_div[::-1]
    stats.has_pre |= has_pre[::-1]
    stats.error_sq += error_sq
    stats.n_points += int(np.shape(h)[0])
    stats.n_batches += 1
    return stats


_KEPT = []


def keep_freed_memory():
    """Ask the C allocator (glibc) to keep freed memory for reuse instead of returning it to the OS.

    One dataset keeps every layer's activations for its backward (a few hundred MB at full scale) and
    frees them at the end; by default glibc hands that memory back, and the next dataset touches it
    afresh: about 50,000 page faults and 0.15 s of system time per dataset on the development machine,
    a fifth of the measurement. After this call the process keeps its peak memory mapped instead. It
    changes no number; it only matters in a process that measures many datasets (the study's workers),
    and does nothing where glibc is absent or once it has been done. Returns True if the settings took.
    """
    if _KEPT:
        return _KEPT[0]
    ok = False
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
            ok = bool(libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1)) and bool(libc.mallopt(M_MMAP_THRESHOLD, 2**30))
        except (OSError, AttributeError):
            ok = False
    _KEPT.append(ok)
    return ok


def measure_architecture(architecture, n_points=10000, seed=0, dataset_seed=None, depth=50, width=100,
                         dtype=np.float64):
    """GSC statistics of one freshly initialised ``architecture`` on one fresh synthetic dataset.

    The network's weights come from ``np.random.default_rng(seed)``; the dataset (inputs of length 10,
    labels N(0, I/width), ``minigrad.data.gsc_dataset``) from ``dataset_seed`` (default ``seed``), so
    every architecture of a study can be shown the same datasets. The whole dataset is one batch.
    float64 by default (see "dtype" in the module docstring). The network's biases are zero and never
    trained here, so it is built without them: the same numbers, one pass over each layer's output less.
    The process keeps its freed memory for the next dataset (``keep_freed_memory``).
    """
    keep_freed_memory()
    from ..data.synthetic import gsc_dataset
    from ..models.mlp import gsc_mlp

    model = gsc_mlp(architecture, depth=depth, width=width, in_features=width, bias=False,
                    generator=np.random.default_rng(seed), dtype=dtype)
    inputs, labels = gsc_dataset(n_points, dim=width, seed=seed if dataset_seed is None else dataset_seed,
                                 dtype=dtype)
    return measure_batch(model.hidden_layers, inputs, labels)


# ----------------------------------------------------------------------------------------- summaries
def log_fit(gsc):
    """Least-squares line through log10 GSC(l, 0) against l over l = 1..L: ``(slope, r_squared)``.

    ``gsc`` is indexed by l = 0..L (as ``GradientScaleStats.gsc``); NaN when fewer than two layers or a
    value is not positive and finite. R^2 = 1 for exactly exponential growth (a straight line on the
    paper's log-scale plot); a flat noisy curve has a slope near 0 and a low R^2.
    """
    values = np.asarray(gsc, dtype=np.float64)[1:]
    if values.size < 2 or not np.all(np.isfinite(values)) or np.any(values <= 0):
        return math.nan, math.nan
    layers = np.arange(1, values.size + 1, dtype=np.float64)
    logs = np.log10(values)
    slope, intercept = np.polyfit(layers, logs, 1)
    residual = np.sum((logs - (slope * layers + intercept)) ** 2)
    total = np.sum((logs - logs.mean()) ** 2)
    return float(slope), (float(1 - residual / total) if total > 0 else 1.0)


def log_slope(gsc):
    """Slope of the ``log_fit`` line: log10 of the GSC's growth per layer."""
    return log_fit(gsc)[0]


def growth_per_layer(gsc):
    """The fitted factor by which the GSC grows per layer: 10 ** log_slope."""
    slope = log_slope(gsc)
    return math.nan if math.isnan(slope) else 10.0 ** slope


def explodes(gsc, min_growth=1.02, min_r_squared=0.9):
    """Exponential growth of GSC(l, 0) with l: the fitted growth is at least ``min_growth`` per layer
    (2%: 2.6-fold over 49 layers) and the log-linear fit explains at least ``min_r_squared`` of the
    variance of log10 GSC (a straight line on a log plot, not a bump)."""
    slope, r_squared = log_fit(gsc)
    return bool(not math.isnan(slope) and 10.0 ** slope >= min_growth and r_squared >= min_r_squared)
