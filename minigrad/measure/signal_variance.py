r"""Why Xavier and He initialisation work: the variance of the signal, layer by layer, at initialisation.

The lecture's rule (``../shared/papers/lecture-training-issues-init-bn-resnet.txt``): for a layer
``y_l = W_l h_{l-1} + b_l`` with ``h_l = g(y_l)``, zero-mean i.i.d. weights and inputs,

    forward    Var(y_l)     = n_l Var(w_l) * c * Var(y_{l-1})        n_l = fan_in  (W_l is m_l x n_l)
    backward   Var(dL/dy_{l-1}) = m_l Var(w_l) * c * Var(dL/dy_l)    m_l = fan_out

where ``c`` is what the activation keeps of the signal near 0: 1 for linear and tanh (tanh(y) ~ y),
1/2 for ReLU (E[relu(y)^2] = E[relu'(y)^2] = 1/2 for symmetric y), (1 + a^2)/2 for LeakyReLU(a),
g'(0)^2 = 1/16 for the sigmoid (sigmoid(y) ~ 1/2 + y/4). The signal neither shrinks nor explodes when
``n Var(w) c = 1``: Var(w) = 1/n forward, 1/m backward, 2/(n + m) as a compromise (Glorot & Bengio),
2/n for ReLU (He et al.). The bias is left out of the theory; it is zero except under PyTorch's default,
where it adds Var(b) = 1/(3n) to every layer (a floor that stops the forward signal from vanishing below
~1/n while the backward one still vanishes).

The sigmoid breaks the rule's assumption that h has zero mean (the lecture says it of ReLU): E[h] = 1/2,
so E[h^2] = 1/4 + Var(y)/16 + ..., and forward Var(y_l) = n Var(w) (1/4 + Var(y_{l-1})/16) is an affine
map with the fixed point 4 n Var(w) / (16 - n Var(w)) (4/15 at n Var(w) = 1): the forward signal neither
vanishes nor explodes, whatever the linear theory's 1/16 says. Backward only the derivative counts,
E[g'(y)^2] <= 1/16: the gradient shrinks ~16x per layer under any rule of gain 1.

Unequal widths (``RULES``, ``pattern_widths``). Layer l maps n_l = widths[l-1] inputs to m_l = widths[l]
outputs. The three rules, each with the activation's gain k (``rule_gain``: 2/(1 + a^2) for the ReLU
family, as He; 1 otherwise: torch.nn.init.calculate_gain's 1 for linear and sigmoid, the lecture's 1 for
tanh):

    fan_in    Var(w) = k / n      forward factor n Var(w) c = 1        backward m Var(w) c = m / n
    fan_out   Var(w) = k / m      forward n / m                        backward 1
    fan_avg   Var(w) = 2k/(n+m)   forward 2n / (n + m)                 backward 2m / (n + m)

(for ReLU, k c = 1; for tanh and sigmoid k c = c). The one-sided rules' other direction telescopes:
prod_l m_l / n_l = widths[L] / widths[1], so it is off by the ratio of the end widths, whatever the depth
(alternating widths: wide/narrow at most, 4 at 512/128). The compromise's two factors multiply to
4 n m / (n + m)^2 <= 1 per layer, which compounds with depth: alternating widths 512 / 128 lose
16/25 per pair of layers both ways, 1.4e-5 over 50 layers, although no single layer is far from 1.
``KEEP_BAND`` (10) is the end-to-end band ``kept_directions`` calls "kept": the study's verdicts
(threshold 1e3) cannot see an end-width ratio of 32 (the pyramid 2048 -> 64).

The input scale (``input_scale``: x = s N(0, 1)): ReLU is positively homogeneous (every forward variance
scales by s^2, the gradients do not change); tanh and the sigmoid saturate for |y| >> 1, so at s = 10
the first layer's derivative is ~0 for most units (E[tanh'(y)^2] ~ 0.05 for y ~ N(0, 100)) and its
gradient drops, while the layers after it see bounded inputs again; at s = 0.1 they stay linear.

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
``fan_in``          N(0, k/n)        (``RULES``; k above)  k / n
``fan_out``         N(0, k/m)                              k / m
``fan_avg``         N(0, 2k/(n+m))                         2k / (n + m)
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
from ..runs import finite_or_none

__all__ = [
    "ACTIVATIONS", "INITS", "RULES", "STUDY_ACTIVATIONS", "INIT_LABELS", "VERDICT_THRESHOLD", "KEEP_BAND",
    "WIDTH_PATTERNS", "CURVE_FIELDS", "PROFILE_FIELDS", "activation_label", "activation_gain", "rule_gain",
    "weight_variance", "init_linear_",
    "initializer", "build_study_mlp", "mlp_blocks", "pattern_widths", "pattern_label",
    "SignalProfile", "signal_profile", "geometric_factor", "classify", "kept_directions",
    "DirectionSummary", "InitResult", "run_combination", "summarize", "direction_json", "direction_from_json",
    "summary_json", "direction_columns", "describe", "config_labels", "profile_on_batch",
]

ACTIVATIONS = ("linear", "tanh", "sigmoid", "relu", "leaky_relu")
STUDY_ACTIVATIONS = ("tanh", "sigmoid", "relu", "leaky_relu")  # the study's panels; "linear": the theory's test bed
INITS = ("normal_1", "normal_0.01", "xavier_normal", "xavier_uniform", "he_normal", "he_uniform",
         "pytorch_default")
RULES = ("fan_in", "fan_out", "fan_avg")  # the lecture's three rules, with the activation's gain
INIT_LABELS = OrderedDict([
    ("normal_1", "N(0, 1)"), ("normal_0.01", "N(0, 0.01²)"), ("xavier_normal", "Xavier normal"),
    ("xavier_uniform", "Xavier uniform"), ("he_normal", "He normal"), ("he_uniform", "He uniform"),
    ("pytorch_default", "PyTorch default"),
    ("fan_in", "k/n (fan-in)"), ("fan_out", "k/m (fan-out)"), ("fan_avg", "2k/(n+m) (compromise)"),
])
VERDICT_THRESHOLD = 1e3
KEEP_BAND = 10.0
WIDTH_PATTERNS = ("equal", "alternating", "pyramid")
CURVE_FIELDS = ("layer", "fan_in", "fan_out", "weight_var", "forward_var", "output_var", "grad_var",
                "weight_grad_var", "theory_forward_factor", "theory_backward_factor")  # InitResult.curves()
PROFILE_FIELDS = ("phase", "layer", "forward_var", "grad_var", "weight_grad_var")  # profile_on_batch's rows


def _check_name(value, allowed, what):
    if value not in allowed:
        raise ValueError(f"signal_variance: {what} must be one of {', '.join(allowed)}, got {value!r}")


def activation_label(activation, negative_slope=0.01):
    """``"ReLU"``, ``"LeakyReLU(0.01)"``, ... for tables and figures."""
    _check_name(activation, ACTIVATIONS, "activation")
    if activation == "leaky_relu":
        return f"LeakyReLU({negative_slope:g})"
    return {"linear": "linear", "tanh": "tanh", "sigmoid": "sigmoid", "relu": "ReLU"}[activation]


def activation_gain(activation, negative_slope=0.01):
    """``c``: the fraction of the signal's variance the activation keeps near 0 (forward and backward)."""
    _check_name(activation, ACTIVATIONS, "activation")
    if activation == "relu":
        return 0.5
    if activation == "leaky_relu":
        return (1.0 + negative_slope ** 2) / 2.0
    if activation == "sigmoid":
        return 1.0 / 16.0  # sigmoid'(0)^2; forward its mean 1/2 dominates (module docstring)
    return 1.0  # linear exactly; tanh to first order (tanh(y) = y - y^3/3 + ...)


def rule_gain(activation, negative_slope=0.01):
    """``k``, the gain^2 of the rules ``RULES``: 2/(1 + a^2) for ReLU/LeakyReLU (He), else 1 (sigmoid and
    linear as torch.nn.init.calculate_gain; tanh as the lecture, not PyTorch's (5/3)^2)."""
    _check_name(activation, ACTIVATIONS, "activation")
    return 1.0 / activation_gain(activation, negative_slope) if activation in ("relu", "leaky_relu") else 1.0


def _he_slope(activation, negative_slope):
    return negative_slope if activation == "leaky_relu" else 0.0


def weight_variance(init, fan_in, fan_out, activation="relu", negative_slope=0.01):
    """Var(w) of the scheme ``init`` for a weight with ``fan_in`` n and ``fan_out`` m (see the table)."""
    _check_name(init, INITS + RULES, "init")
    if init in RULES:
        k = rule_gain(activation, negative_slope)
        return {"fan_in": k / fan_in, "fan_out": k / fan_out, "fan_avg": 2.0 * k / (fan_in + fan_out)}[init]
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
    _check_name(init, INITS + RULES, "init")
    weight, bias = linear.weight, linear.bias
    if init == "pytorch_default":
        _init.default_init_(weight, bias, generator=generator)
        return linear
    if init in RULES:
        var = weight_variance(init, linear.in_features, linear.out_features, activation, negative_slope)
        _init.normal_(weight, 0.0, math.sqrt(var), generator=generator)
    elif init == "normal_1":
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
    _check_name(init, INITS + RULES, "init")
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


def pattern_widths(pattern, depth, width=256):
    """``[in, h_1, ..., h_depth]`` of a width pattern (``WIDTH_PATTERNS``), scaled by ``width`` w.

    ``equal``: w everywhere; ``alternating``: 2w, w/2, 2w, ... (the input is wide; 512/128 at w = 256);
    ``pyramid``: geometric from a = 8w (the input) down to b = w/4 (the last hidden layer),
    ``round(a (b/a)^(k/depth))`` (2048 -> 64): the end widths set the one-sided rules' drift
    (module docstring), and wide layers keep the finite-width noise of the measured ratios small.
    """
    _check_name(pattern, WIDTH_PATTERNS, "pattern")
    if pattern == "equal":
        return [int(width)] * (depth + 1)
    if pattern == "alternating":
        return [(2 * width, max(1, width // 2))[k % 2] for k in range(depth + 1)]
    a, b = 8 * width, max(1, width // 4)
    return [int(round(a * (b / a) ** (k / depth))) for k in range(depth + 1)]


def pattern_label(widths):
    """``"equal 256"``, ``"alternating 512/128"``, ``"pyramid 2048->64"`` from a widths list."""
    hidden = widths[1:]
    if len(set(widths)) == 1:
        return f"equal {widths[0]}"
    if len(set(widths[0::2])) == 1 and len(set(widths[1::2])) == 1:
        return f"alternating {widths[0]}/{widths[1]}"
    return f"pyramid {widths[0]}->{hidden[-1]}"


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


def kept_directions(forward_ratio, backward_ratio, band=KEEP_BAND):
    """Which directions stay within ``band`` end to end: ``"both"``, ``"forward"``, ``"backward"`` or
    ``"neither"`` (a ratio r is kept when 1/band <= r <= band; inf and NaN are not)."""
    kept = [r is not None and 1.0 / band <= r <= band for r in (forward_ratio, backward_ratio)]
    return {(True, True): "both", (True, False): "forward", (False, True): "backward"}.get(tuple(kept), "neither")


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


def direction_json(d):
    """A ``DirectionSummary`` for summary.json (JSON has no inf: an infinite ratio is flagged instead)."""
    return {"theory_factor": finite_or_none(d.theory_factor), "measured_factor": finite_or_none(d.measured_factor),
            "ratio": finite_or_none(d.ratio), "ratio_is_inf": d.ratio == math.inf,
            "nonfinite_layer": d.nonfinite_layer}


def direction_from_json(d, threshold=VERDICT_THRESHOLD):
    """``direction_json``'s dict back: theory, measured, ratio (inf again after an overflow), the verdict at
    ``threshold`` and its ``text`` (the verdict, with the overflow's layer)."""
    overflowed = d.get("nonfinite_layer") is not None
    ratio = math.inf if overflowed or d.get("ratio_is_inf") else (math.nan if d.get("ratio") is None else d["ratio"])
    verdict = classify(ratio, overflowed, threshold)
    layer = d.get("nonfinite_layer")
    return {"theory": d.get("theory_factor"), "measured": d.get("measured_factor"), "ratio": ratio, "verdict": verdict,
            "text": verdict + (f" (overflow, layer {layer})" if layer else "")}


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
                    widths=None, dtype=np.float64, threshold=VERDICT_THRESHOLD, input_scale=1.0):
    """Build the MLP, measure its signal once at initialisation and summarise it: an ``InitResult``.

    ``widths`` (``[in, h_1, ..., h_L]``) overrides ``depth`` and ``width`` (``[width] * (depth + 1)``).
    The input is ``input_scale`` N(0, 1), the upstream gradient N(0, 1). Deterministic in ``seed``: the
    input, the weights and the upstream gradient come from three independent streams of it, so every
    scheme sees the same input.
    """
    _check_name(activation, ACTIVATIONS, "activation")
    _check_name(init, INITS + RULES, "init")
    if not (math.isfinite(input_scale) and input_scale > 0):
        raise ValueError(f"signal_variance.run_combination: input_scale must be > 0, got {input_scale}")
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
    if input_scale != 1:
        x = x * input_scale  # a Python float keeps x's dtype
    grad_output = np.random.default_rng(grad_seq).standard_normal((int(batch), widths[-1])).astype(dtype)
    profile = signal_profile(model, x, grad_output)
    var, theory_forward, theory_backward = _theory(activation, init, widths, negative_slope)
    forward = summarize(profile.forward_var, theory_forward, profile.forward_nonfinite, threshold)
    backward = summarize(profile.grad_var[::-1], theory_backward, profile.backward_nonfinite, threshold)
    return InitResult(activation, init, list(widths), float(negative_slope), var, theory_forward,
                      theory_backward, profile, forward, backward, time.perf_counter() - start)


def summary_json(result):
    """What summary.json keeps of an ``InitResult``: both directions (``direction_json``), the profile's
    ends (first and last layer's Var(y) and Var(dL/dy), None if not finite) and the fp-error counts."""
    p = result.profile
    ends = {"forward_first": p.forward_var[0], "forward_last": p.forward_var[-1], "grad_first": p.grad_var[0],
            "grad_last": p.grad_var[-1]}
    return {"forward": direction_json(result.forward), "backward": direction_json(result.backward),
            "ends": {k: finite_or_none(float(v)) for k, v in ends.items()}, "fp_errors": p.fp_errors}


def direction_columns(summary, threshold=VERDICT_THRESHOLD, band=KEEP_BAND):
    """A summary's two directions as table values: ``fwd_theory``, ``fwd_measured``, ``fwd_ratio``,
    ``fwd_verdict`` (text), ``fwd_verdict_key``, the same with ``bwd_``, and ``kept`` (``kept_directions``)."""
    columns = {}
    for prefix, key in (("fwd", "forward"), ("bwd", "backward")):
        d = direction_from_json(summary[key], threshold)
        columns.update({f"{prefix}_theory": d["theory"], f"{prefix}_measured": d["measured"],
                        f"{prefix}_ratio": d["ratio"], f"{prefix}_verdict": d["text"],
                        f"{prefix}_verdict_key": d["verdict"]})
    columns["kept"] = kept_directions(columns["fwd_ratio"], columns["bwd_ratio"], band)
    return columns


def describe(result):
    """One line on an ``InitResult``: both directions' measured and theory factors, ratio and verdict."""
    f, b = result.forward, result.backward
    return (f"forward factor {f.measured_factor:.4g} (theory {f.theory_factor:.4g}), last/first {f.ratio:.3g}: "
            f"{f.verdict}; backward factor {b.measured_factor:.4g} (theory {b.theory_factor:.4g}), first/last "
            f"{b.ratio:.3g}: {b.verdict}" + (f"; overflow at layer {f.nonfinite_layer}" if f.nonfinite_layer else ""))


def config_labels(config):
    """The table's labels of a measured network's settings (``activation``, ``init``, ``negative_slope``,
    ``depth``, ``width``, optional ``widths`` and ``input_scale``): pattern, activation, init, input."""
    widths = config.get("widths") or [config["width"]] * (config["depth"] + 1)
    return {"pattern": pattern_label(widths), "init": INIT_LABELS[config["init"]],
            "activation": activation_label(config["activation"], config.get("negative_slope") or 0.01),
            "input": f"x{config.get('input_scale', 1.0):g}"}


def profile_on_batch(model, x, y, phase):
    """Per-layer profile of a (float32) classifier on a labelled batch with the cross-entropy gradient, in
    float64: ``(rows, ratios)``, rows ``{"phase", "layer", "forward_var", "grad_var", "weight_grad_var"}``
    and ratios ``{"forward_ratio", "backward_ratio"}`` (None where 0/0 or inf/inf); ``([], None)`` if the
    loss is not finite."""
    import copy

    from ..nn import CrossEntropyLoss
    model64 = copy.deepcopy(model).double()
    x64 = x.astype(np.float64)
    criterion = CrossEntropyLoss()
    with np.errstate(all="ignore"):
        loss = criterion(model64(x64), y)
        grad = criterion.backward()
    if not math.isfinite(loss):
        return [], None
    profile = signal_profile(model64, x64, grad)
    rows = [{"phase": phase, "layer": l + 1, "forward_var": float(profile.forward_var[l]),
             "grad_var": float(profile.grad_var[l]), "weight_grad_var": float(profile.weight_grad_var[l])}
            for l in range(profile.depth)]
    with np.errstate(all="ignore"):
        ratio = {"forward_ratio": finite_or_none(profile.forward_var[-1] / profile.forward_var[0]),
                 "backward_ratio": finite_or_none(profile.grad_var[0] / profile.grad_var[-1])}
    return rows, ratio
