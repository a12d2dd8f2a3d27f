r"""Why Xavier and He initialisation work: the variance of the signal, layer by layer, at initialisation.

The lecture's rule (``../shared/papers/lecture-training-issues-init-bn-resnet.txt``): for a layer
``y_l = W_l h_{l-1} + b_l`` with ``h_l = g(y_l)``, zero-mean i.i.d. weights and inputs,

    forward    Var(y_l)     = n_l Var(w_l) * c * Var(y_{l-1})        n_l = fan_in  (W_l is m_l x n_l)
    backward   Var(dL/dy_{l-1}) = m_l Var(w_l) * c * Var(dL/dy_l)    m_l = fan_out

where ``c`` is what the activation keeps of the signal near 0: 1 for linear and tanh (tanh(y) ~ y),
1/2 for ReLU (E[relu(y)^2] = E[relu'(y)^2] = 1/2 for symmetric y), (1 + a^2)/2 for LeakyReLU(a). The
signal neither shrinks nor explodes when ``n Var(w) c = 1``: Var(w) = 1/n forward, 1/m backward,
2/(n + m) as a compromise (Glorot & Bengio), 2/n for ReLU (He et al.). The bias is left out of the
theory; it is zero except under PyTorch's default, where it adds Var(b) = 1/(3n) to every layer (a floor
that stops the forward signal from vanishing below ~1/n while the backward one still vanishes).

This module builds a deep MLP (``depth`` layers of Linear + activation, width ``width``, with
``minigrad.models.mlp.build_mlp``), runs a Gaussian batch through minigrad's own forward and a Gaussian
upstream gradient through its own backward, and measures per layer ``l = 1..L``:

- ``forward_var``      Var(y_l), the pre-activation (the Linear's output): the signal the rule is about;
- ``output_var``       Var(h_l), after the activation;
- ``grad_var``         Var(dL/dy_l), the gradient w.r.t. the pre-activation;
- ``weight_grad_var``  Var(dL/dW_l), the gradient w.r.t. the weights.

"Var" is the mean square over batch and units: the ensemble mean is 0 (symmetric weights), and a
per-unit variance over the batch would miss the signal once deep layers map every input to nearly the
same direction (as deep ReLU networks do). The measured per-layer factor is the geometric mean of the
layer-to-layer ratios, ``(Var_last / Var_first)^(1/(L-1))`` along the direction of travel (forward:
layer 1 -> L; backward: layer L -> 1), and is compared with the geometric mean of the theoretical
factors ``n_l Var(w_l) c`` (forward) and ``m_l Var(w_l) c`` (backward). The verdict reads the ratio
of the variance at the last layer the signal reaches to the first (forward Var(y_L)/Var(y_1), backward
Var(dL/dy_1)/Var(dL/dy_L)):

    vanishing  ratio < 1 / threshold         (default threshold 1e3: three orders of magnitude)
    exploding  ratio > threshold, or the signal overflowed (inf/NaN)
    stable     otherwise

A verdict depends on depth, as the problem does: a factor 0.9 per layer costs 0.39 over 10 layers and
3e-5 over 100. At the study's 50 layers the threshold allows a factor in [0.87, 1.15] per layer; slow
drifts pass (tanh under Xavier init loses ~100x over 50 layers as it compresses, Var ~ 1/(2l)).

Everything is computed in float64 (``dtype``): N(0, 1) weights with 50 ReLU layers of width 256 grow the
variance by ~128 per layer, so its squares leave float32's range (3e38) by layer 19 and the values
themselves by layer ~37 (float64 holds to ~1e308: layer ~146). If the signal still overflows, the
layer where it did is recorded and the verdict is "exploding"; NumPy's floating-point warnings are
suppressed inside the measurement and counted in ``fp_errors`` instead.

Initialisation schemes (``INITS``), with Var(w) for a weight of fan_in n, fan_out m:

==================  =====================================  ===============================================
name                distribution                           Var(w)
==================  =====================================  ===============================================
``normal_1``        N(0, 1)                                1
``normal_0.01``     N(0, 0.01^2)                           1e-4
``xavier_normal``   N(0, 2/(n+m))                          2/(n+m)
``xavier_uniform``  U(-sqrt(6/(n+m)), +sqrt(6/(n+m)))      2/(n+m)
``he_normal``       N(0, 2/((1+a^2) n))                    2/((1+a^2) n)   (a = LeakyReLU slope, else 0)
``he_uniform``      U(-sqrt(6/((1+a^2) n)), +...)          2/((1+a^2) n)
``pytorch_default`` U(-1/sqrt(n), 1/sqrt(n)), bias too     1/(3n)
==================  =====================================  ===============================================

Biases are zero except under ``pytorch_default``. Xavier uses gain 1 (the lecture's formula, not
PyTorch's tanh gain 5/3); He uses 2/n whatever the activation (the lecture's formula; with tanh it
over-amplifies).

    from minigrad.measure import signal_variance
    result = signal_variance.run_combination("relu", "he_normal", depth=50, width=256)
    result.forward.measured_factor, result.forward.theory_factor, result.forward.verdict
"""
import math
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass, field

import numpy as np

from ..models.mlp import build_mlp
from ..nn import init as _init

__all__ = [
    "ACTIVATIONS", "INITS", "STUDY_ACTIVATIONS", "INIT_LABELS", "VERDICT_THRESHOLD",
    "activation_label", "activation_gain", "weight_variance", "init_linear_", "initializer", "build_study_mlp",
    "mlp_blocks",
    "SignalProfile", "signal_profile", "geometric_factor", "classify",
    "DirectionSummary", "InitResult", "run_combination", "summarize",
]

ACTIVATIONS = ("linear", "tanh", "relu", "leaky_relu")
STUDY_ACTIVATIONS = ("tanh", "relu", "leaky_relu")  # the study's panels; "linear" is the theory's test bed
INITS = ("normal_1", "normal_0.01", "xavier_normal", "xavier_uniform", "he_normal", "he_uniform",
         "pytorch_default")
INIT_LABELS = OrderedDict([
    ("normal_1", "N(0, 1)"), ("normal_0.01", "N(0, 0.01²)"), ("xavier_normal", "Xavier normal"),
    ("xavier_uniform", "Xavier uniform"), ("he_normal", "He normal"), ("he_uniform", "He uniform"),
    ("pytorch_default", "PyTorch default"),
])
VERDICT_THRESHOLD = 1e3


def _check_name(value, allowed, what):
    if value not in allowed:
        raise ValueError(f"signal_variance: {what} must be one of {', '.join(allowed)}, got {value!r}")


def activation_label(activation, negative_slope=0.01):
    """``"ReLU"``, ``"LeakyReLU(0.01)"``, ... for tables and figures."""
    _check_name(activation, ACTIVATIONS, "activation")
    if activation == "leaky_relu":
        return f"LeakyReLU({negative_slope:g})"
    return {"linear": "linear", "tanh": "tanh", "relu": "ReLU"}[activation]


def activation_gain(activation, negative_slope=0.01):
    """``c``: the fraction of the signal's variance the activation keeps near 0 (forward and backward)."""
    _check_name(activation, ACTIVATIONS, "activation")
    if activation == "relu":
        return 0.5
    if activation == "leaky_relu":
        return (1.0 + negative_slope ** 2) / 2.0
    return 1.0  # linear exactly; tanh to first order (tanh(y) = y - y^3/3 + ...)


def _he_slope(activation, negative_slope):
    return negative_slope if activation == "leaky_relu" else 0.0


def weight_variance(init, fan_in, fan_out, activation="relu", negative_slope=0.01):
    """Var(w) of the scheme ``init`` for a weight with ``fan_in`` n and ``fan_out`` m (see the table)."""
    _check_name(init, INITS, "init")
    if init == "normal_1":
        return 1.0
    if init == "normal_0.01":
        return 1e-4
    if init.startswith("xavier"):
        return 2.0 / (fan_in + fan_out)
    if init.startswith("he"):
        return 2.0 / ((1.0 + _he_slope(activation, negative_slope) ** 2) * fan_in)
    return 1.0 / (3.0 * fan_in)  # pytorch_default: U(-b, b) with b = 1/sqrt(n) has variance b^2/3


def init_linear_(linear, init, activation="relu", negative_slope=0.01, generator=None):
    """Fill ``linear.weight`` (and bias) by the scheme ``init``, drawing from ``generator``; returns it."""
    _check_name(init, INITS, "init")
    weight, bias = linear.weight, linear.bias
    if init == "pytorch_default":
        _init.default_init_(weight, bias, generator=generator)
        return linear
    if init == "normal_1":
        _init.normal_(weight, 0.0, 1.0, generator=generator)
    elif init == "normal_0.01":
        _init.normal_(weight, 0.0, 0.01, generator=generator)
    elif init == "xavier_normal":
        _init.xavier_normal_(weight, generator=generator)
    elif init == "xavier_uniform":
        _init.xavier_uniform_(weight, generator=generator)
    else:
        # He et al.: gain sqrt(2 / (1 + a^2)) with a = 0 for ReLU (and for tanh / linear, the lecture's 2/n)
        fill = _init.kaiming_normal_ if init == "he_normal" else _init.kaiming_uniform_
        fill(weight, a=_he_slope(activation, negative_slope), nonlinearity="leaky_relu", generator=generator)
    if bias is not None:
        _init.zeros_(bias)
    return linear


def initializer(init, activation="relu", negative_slope=0.01):
    """The scheme ``init`` as an ``init`` for ``minigrad.models.mlp.build_mlp``: ``f(linear, generator=...)``."""
    _check_name(init, INITS, "init")
    _check_name(activation, ACTIVATIONS, "activation")

    def fill(linear, generator=None):
        init_linear_(linear, init, activation, negative_slope, generator)

    return fill


def build_study_mlp(activation, init, widths, num_classes=None, negative_slope=0.01, generator=None,
                    dtype=np.float64):
    """The study's network: ``models.mlp.build_mlp`` (``layer{k}`` = linear + act, ``out.linear``) with
    every linear, ``out`` too, filled by the scheme ``init`` from ``generator``."""
    _check_name(activation, ACTIVATIONS, "activation")
    return build_mlp(widths, activation, num_classes=num_classes, init=initializer(init, activation, negative_slope),
                     negative_slope=negative_slope, generator=generator, dtype=dtype)


def mlp_blocks(model):
    """The ``(linear, act)`` pairs of a ``build_mlp`` model, input first, and its ``out`` (or None)."""
    blocks = [(layer.linear, layer.act) for layer in model.hidden_layers]
    return blocks, getattr(model, "out", None)


# --------------------------------------------------------------------------------------- measuring
@dataclass
class SignalProfile:
    """Per-layer mean squares (float64, index 0 = layer 1 = next to the input); see the module docstring.

    ``forward_nonfinite`` / ``backward_nonfinite``: the first layer (1-based, in the direction of
    travel) whose signal held inf or NaN, else None. ``fp_errors``: NumPy floating-point errors
    (overflow, invalid, divide) counted while measuring, by kind.
    """

    forward_var: np.ndarray
    output_var: np.ndarray
    grad_var: np.ndarray
    weight_grad_var: np.ndarray
    forward_nonfinite: int = None
    backward_nonfinite: int = None
    fp_errors: dict = field(default_factory=dict)

    @property
    def depth(self):
        return len(self.forward_var)


def _mean_square(array):
    return float(np.mean(np.square(array, dtype=np.float64)))


def _first_nonfinite(values):
    bad = np.flatnonzero(~np.isfinite(values))
    return int(bad[0]) + 1 if bad.size else None


def signal_profile(model, x, grad_output):
    """Run ``x`` forward through a ``build_study_mlp`` model and ``grad_output`` back; a ``SignalProfile``.

    Every layer's own ``forward`` and ``backward`` run (parameter gradients are zeroed first and hold
    this batch's gradients afterwards). ``grad_output`` is d loss / d (model output), of the output's
    shape. Floating-point warnings are counted, not shown (an exploding signal is a result here).
    """
    blocks, head = mlp_blocks(model)
    if not blocks:
        raise ValueError("signal_variance.signal_profile: the model has no hidden layers (use build_mlp)")
    model.zero_grad()
    errors = Counter()

    def count(kind, flag):
        errors[kind] += 1

    forward, output, grad, weight_grad = [], [], [], []
    with np.errstate(over="call", invalid="call", divide="call", under="ignore", call=count):
        h = x
        for linear, act in blocks:
            y = linear(h)
            h = act(y)
            forward.append(_mean_square(y))
            output.append(_mean_square(h))
        if head is not None:
            head(h)
            g = head.backward(grad_output)
        else:
            g = grad_output
        for linear, act in reversed(blocks):
            g = act.backward(g)
            grad.append(_mean_square(g))
            g = linear.backward(g)
            weight_grad.append(_mean_square(linear.weight.grad))
    forward, grad = np.array(forward), np.array(grad[::-1])
    backward_bad = _first_nonfinite(grad[::-1])  # counted from the top layer, where the gradient enters
    return SignalProfile(
        forward_var=forward, output_var=np.array(output), grad_var=grad,
        weight_grad_var=np.array(weight_grad[::-1]), forward_nonfinite=_first_nonfinite(forward),
        backward_nonfinite=None if backward_bad is None else len(grad) - backward_bad + 1,
        fp_errors=dict(errors))


def geometric_factor(values):
    """``(v_last / v_first)^(1/(k-1))`` over the finite prefix ``v_1..v_k`` of ``values`` (travel order).

    The geometric mean of the layer-to-layer ratios (they telescope). 0 if the signal underflowed to 0,
    NaN if fewer than two finite values or ``v_first <= 0``.
    """
    values = np.asarray(values, dtype=np.float64)
    bad = _first_nonfinite(values)
    used = values if bad is None else values[:bad - 1]
    if used.size < 2 or not used[0] > 0:
        return math.nan
    if used[-1] <= 0:
        return 0.0
    return float(np.exp((np.log(used[-1]) - np.log(used[0])) / (used.size - 1)))


def classify(ratio, overflowed=False, threshold=VERDICT_THRESHOLD):
    """``"vanishing"`` / ``"stable"`` / ``"exploding"`` from a last/first variance ratio (module docstring)."""
    if not threshold > 1:
        raise ValueError(f"signal_variance.classify: threshold must be > 1, got {threshold}")
    if overflowed or ratio == math.inf:
        return "exploding"
    if math.isnan(ratio):
        return "undetermined"
    if ratio < 1.0 / threshold:
        return "vanishing"
    if ratio > threshold:
        return "exploding"
    return "stable"


@dataclass
class DirectionSummary:
    """One direction (forward or backward) of one combination.

    ``theory_factor`` geometric mean of ``n Var(w) c`` (forward) or ``m Var(w) c`` (backward) over the
    layer transitions; ``measured_factor`` the measured geometric mean; ``ratio`` = Var at the last layer
    reached / Var at the first (forward: layer L / layer 1; backward: layer 1 / layer L), inf after an
    overflow; ``nonfinite_layer`` where the signal first overflowed (1-based), else None.
    """

    theory_factor: float
    measured_factor: float
    ratio: float
    verdict: str
    nonfinite_layer: int = None


def summarize(values, theory_factors, nonfinite_layer=None, threshold=VERDICT_THRESHOLD):
    """A ``DirectionSummary`` from per-layer values in travel order and per-transition theory factors."""
    values = np.asarray(values, dtype=np.float64)
    theory = np.asarray(theory_factors, dtype=np.float64)
    theory_factor = float(np.exp(np.mean(np.log(theory)))) if theory.size else math.nan
    measured = geometric_factor(values)
    overflowed = nonfinite_layer is not None
    if overflowed:
        ratio = math.inf
    elif values[0] > 0:
        with np.errstate(over="ignore"):
            ratio = float(values[-1] / values[0])
    else:
        ratio = math.nan
    return DirectionSummary(theory_factor, measured, ratio, classify(ratio, overflowed, threshold),
                            nonfinite_layer)


@dataclass
class InitResult:
    """Everything measured for one (activation, init) pair: settings, per-layer curves and summaries."""

    activation: str
    init: str
    widths: list
    negative_slope: float
    weight_var: np.ndarray           # Var(w_l) of the scheme, per layer
    theory_forward: np.ndarray       # n_l Var(w_l) c, per transition into layer l = 2..L
    theory_backward: np.ndarray      # m_l Var(w_l) c, per transition from layer l = L..2 down to l - 1
    profile: SignalProfile
    forward: DirectionSummary
    backward: DirectionSummary
    seconds: float = 0.0

    @property
    def name(self):
        """Folder-friendly name: ``relu-he_normal``."""
        return f"{self.activation}-{self.init}"

    @property
    def label(self):
        return f"{activation_label(self.activation, self.negative_slope)}, {INIT_LABELS[self.init]}"

    def curves(self):
        """One dict per layer: the four measured variances and the theory factors into/out of it."""
        p = self.profile
        rows = []
        for l in range(p.depth):
            rows.append({
                "layer": l + 1, "fan_in": self.widths[l], "fan_out": self.widths[l + 1],
                "weight_var": float(self.weight_var[l]),
                "forward_var": float(p.forward_var[l]), "output_var": float(p.output_var[l]),
                "grad_var": float(p.grad_var[l]), "weight_grad_var": float(p.weight_grad_var[l]),
                # theory factor from layer l-1 to l (forward) and from layer l+1 down to l (backward)
                "theory_forward_factor": float(self.theory_forward[l - 1]) if l > 0 else None,
                "theory_backward_factor": float(self.theory_backward[l]) if l + 1 < p.depth else None,
            })
        return rows


def _theory(activation, init, widths, negative_slope):
    c = activation_gain(activation, negative_slope)
    fans = list(zip(widths[:-1], widths[1:]))
    var = np.array([weight_variance(init, n, m, activation, negative_slope) for n, m in fans])
    fan_in = np.array([n for n, _ in fans], dtype=np.float64)
    fan_out = np.array([m for _, m in fans], dtype=np.float64)
    forward = fan_in[1:] * var[1:] * c        # into layer l = 2..L: the sum over layer l's n_l inputs
    backward = fan_out[1:] * var[1:] * c      # from layer l = 2..L down: the sum over layer l's m_l outputs
    return var, forward, backward


def run_combination(activation, init, depth=50, width=256, batch=256, seed=0, negative_slope=0.01,
                    widths=None, dtype=np.float64, threshold=VERDICT_THRESHOLD):
    """Build the MLP, measure its signal once at initialisation and summarise it: an ``InitResult``.

    ``widths`` (``[in, h_1, ..., h_L]``) overrides ``depth`` and ``width`` (``[width] * (depth + 1)``).
    Input and upstream gradient are N(0, 1). Deterministic in ``seed``: the input, the weights and the
    upstream gradient come from three independent streams of it, so every scheme sees the same input.
    """
    _check_name(activation, ACTIVATIONS, "activation")
    _check_name(init, INITS, "init")
    if widths is None:
        if depth < 2:
            raise ValueError(f"signal_variance.run_combination: depth must be >= 2 for a per-layer factor, got {depth}")
        widths = [int(width)] * (int(depth) + 1)
    elif len(widths) < 3:
        raise ValueError(f"signal_variance.run_combination: widths must give >= 2 layers, got {list(widths)}")
    if int(batch) < 1:
        raise ValueError(f"signal_variance.run_combination: batch must be >= 1, got {batch}")
    start = time.perf_counter()
    input_seq, weight_seq, grad_seq = np.random.SeedSequence(seed).spawn(3)
    model = build_study_mlp(activation, init, widths, negative_slope=negative_slope,
                            generator=np.random.default_rng(weight_seq), dtype=dtype)
    x = np.random.default_rng(input_seq).standard_normal((int(batch), widths[0])).astype(dtype)
    grad_output = np.random.default_rng(grad_seq).standard_normal((int(batch), widths[-1])).astype(dtype)
    profile = signal_profile(model, x, grad_output)
    var, theory_forward, theory_backward = _theory(activation, init, widths, negative_slope)
    forward = summarize(profile.forward_var, theory_forward, profile.forward_nonfinite, threshold)
    backward = summarize(profile.grad_var[::-1], theory_backward, profile.backward_nonfinite, threshold)
    return InitResult(activation, init, list(widths), float(negative_slope), var, theory_forward,
                      theory_backward, profile, forward, backward, time.perf_counter() - start)
