"""The initialisation study's measurements against the lecture's rule Var(y_l) = n Var(w) c Var(y_{l-1}).

Tolerances of the factor checks (wide LINEAR networks, Gaussian weights of variance s^2): given the
layer's input H (B x n), mean(y^2) / mean(h^2) = (1/m) sum_k w_k^T A w_k / tr(A) with A = H^T H / B, whose
mean is n s^2 and whose relative variance is 2 tr(A^2) / (m tr(A)^2). For near-isotropic inputs after l
random layers tr(A^2)/tr(A)^2 ~ 1/B + l/n, so one layer's ratio has relative standard deviation
sigma = sqrt(2 (1/B + L/n) / m) (measured over 30 seeds at n = 1024, B = 256, L = 8: within 15% of this
sigma, largest deviation 2.6 sigma). Checks allow 5 sigma; uniform weights (kurtosis 1.8 < 3) fluctuate
less, so the same bound holds for them. The backward ratio is the same quadratic form with n and m swapped.
"""
import math
import warnings

import numba
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from threadpoolctl import threadpool_limits

import minigrad
from minigrad import nn
from minigrad.measure import signal_variance as study


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These tests measure numbers, not speed: one thread each for Numba and the BLAS (restored after)."""
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    with threadpool_limits(1):
        yield
    numba.set_num_threads(before)


def _sigma(widths, batch):
    """Relative standard deviation of one layer's measured variance ratio (see the module docstring)."""
    n_min, depth = min(widths), len(widths) - 1
    return math.sqrt(2 * (1 / batch + depth / n_min) / n_min)


def _forward_ratios(profile):
    return profile.forward_var[1:] / profile.forward_var[:-1]  # transition into layer l = 2..L


def _backward_ratios(profile):
    return profile.grad_var[:-1] / profile.grad_var[1:]  # transition from layer l = 2..L down to l - 1


# ------------------------------------------------------------------------------------- the rule, exactly
@pytest.mark.parametrize("c", [0.5, 1.0, 2.0])
def test_linear_network_forward_and_backward_factor_is_n_var_w(c):
    """Var(w) = c / n on a wide linear network: every layer multiplies the variance by c, both ways."""
    widths, batch = [1024] * 5, 128
    model = study.build_study_mlp("linear", "xavier_normal", widths, generator=np.random.default_rng(1))
    gen = np.random.default_rng(2)
    for linear, _ in study.mlp_blocks(model)[0]:
        nn.init.normal_(linear.weight, 0.0, math.sqrt(c / linear.in_features), generator=gen)
    x = gen.standard_normal((batch, widths[0]))
    g = gen.standard_normal((batch, widths[-1]))
    profile = study.signal_profile(model, x, g)
    tol = 5 * _sigma(widths, batch)
    np.testing.assert_allclose(_forward_ratios(profile), c, rtol=tol)
    np.testing.assert_allclose(_backward_ratios(profile), c, rtol=tol)
    # the first layer too: its input is x itself
    assert profile.forward_var[0] / np.mean(x ** 2) == pytest.approx(c, rel=tol)


@pytest.mark.parametrize("init, expected", [("xavier_normal", 1.0), ("xavier_uniform", 1.0), ("he_normal", 2.0),
                                            ("he_uniform", 2.0), ("normal_0.01", 1024e-4), ("normal_1", 1024.0)])
def test_schemes_on_a_wide_linear_network_match_theory(init, expected):
    """Each scheme's measured per-layer factor equals n Var(w) (c = 1 for a linear network)."""
    widths, batch = [1024] * 5, 128
    result = study.run_combination("linear", init, widths=widths, batch=batch, seed=3)
    tol = 5 * _sigma(widths, batch)
    np.testing.assert_allclose(result.theory_forward, expected, rtol=1e-12)
    np.testing.assert_allclose(result.theory_backward, expected, rtol=1e-12)
    np.testing.assert_allclose(_forward_ratios(result.profile), expected, rtol=tol)
    np.testing.assert_allclose(_backward_ratios(result.profile), expected, rtol=tol)
    assert result.forward.measured_factor == pytest.approx(expected, rel=tol)
    assert result.backward.measured_factor == pytest.approx(expected, rel=tol)


@pytest.mark.parametrize("init", ["xavier_normal", "he_uniform"])
def test_backward_factor_is_m_var_w_when_fan_in_and_fan_out_differ(init):
    """Alternating widths 512/1024: forward multiplies by n Var(w), backward by m Var(w), layer by layer."""
    widths, batch = [512, 1024, 512, 1024, 512], 128
    result = study.run_combination("linear", init, widths=widths, batch=batch, seed=4)
    fan_in, fan_out = np.array(widths[1:-1], float), np.array(widths[2:], float)
    var = result.weight_var[1:]
    if init == "xavier_normal":
        np.testing.assert_allclose(var, 2 / (fan_in + fan_out))
    else:
        np.testing.assert_allclose(var, 2 / fan_in)
    np.testing.assert_allclose(result.theory_forward, fan_in * var)
    np.testing.assert_allclose(result.theory_backward, fan_out * var)
    assert not np.allclose(result.theory_forward, result.theory_backward)  # the test can tell n from m
    tol = 5 * _sigma(widths, batch)
    np.testing.assert_allclose(_forward_ratios(result.profile), result.theory_forward, rtol=tol)
    np.testing.assert_allclose(_backward_ratios(result.profile), result.theory_backward, rtol=tol)


def test_leaky_relu_factor_is_one_plus_slope_squared_over_two():
    """Xavier with LeakyReLU(0.5) keeps (1 + a^2)/2 = 0.625 per layer; He with that slope keeps 1."""
    slope = 0.5
    assert study.activation_gain("leaky_relu", slope) == 0.625
    xavier = study.run_combination("leaky_relu", "xavier_normal", depth=12, width=512, batch=128, seed=5,
                                   negative_slope=slope)
    he = study.run_combination("leaky_relu", "he_normal", depth=12, width=512, batch=128, seed=5,
                               negative_slope=slope)
    assert xavier.forward.theory_factor == pytest.approx(0.625)
    assert he.forward.theory_factor == pytest.approx(1.0)
    # the nonlinearity adds fluctuation beyond the linear bound: allow 3% per layer on the geometric mean
    for result, expected in ((xavier, 0.625), (he, 1.0)):
        assert result.forward.measured_factor == pytest.approx(expected, rel=0.03)
        assert result.backward.measured_factor == pytest.approx(expected, rel=0.03)


# ------------------------------------------------------------------------------------- the study's verdicts
@pytest.fixture(scope="module")
def deep_results():
    """A 20-layer, width-256, batch-64 version of the study (the study: 50 layers, batch 256)."""
    combos = [("relu", "he_normal"), ("relu", "he_uniform"), ("relu", "normal_0.01"), ("relu", "normal_1"),
              ("relu", "xavier_normal"), ("relu", "pytorch_default"), ("tanh", "xavier_normal"),
              ("tanh", "xavier_uniform"), ("tanh", "normal_1"), ("tanh", "normal_0.01")]
    return {combo: study.run_combination(*combo, depth=20, width=256, batch=64, seed=0) for combo in combos}


@pytest.mark.parametrize("init", ["he_normal", "he_uniform"])
def test_he_with_relu_is_stable(deep_results, init):
    result = deep_results[("relu", init)]
    assert result.forward.theory_factor == pytest.approx(1.0)
    for direction in (result.forward, result.backward):
        assert direction.verdict == "stable"
        assert direction.measured_factor == pytest.approx(1.0, abs=0.05)
        assert 1e-2 < direction.ratio < 1e2


def test_small_normal_vanishes(deep_results):
    result = deep_results[("relu", "normal_0.01")]
    assert result.forward.theory_factor == pytest.approx(256e-4 / 2)
    for direction in (result.forward, result.backward):
        assert direction.verdict == "vanishing"
        assert direction.measured_factor == pytest.approx(0.0128, rel=0.1)
        assert direction.ratio < 1e-30
    assert deep_results[("tanh", "normal_0.01")].forward.verdict == "vanishing"
    assert deep_results[("tanh", "normal_0.01")].backward.verdict == "vanishing"


def test_standard_normal_explodes(deep_results):
    relu = deep_results[("relu", "normal_1")]
    for direction in (relu.forward, relu.backward):
        assert direction.verdict == "exploding"
        assert direction.measured_factor == pytest.approx(128, rel=0.1)
        assert direction.ratio > 1e30
    # tanh saturates: the forward signal is bounded (the linear theory's 256 fails) but gradients explode
    tanh = deep_results[("tanh", "normal_1")]
    assert tanh.forward.theory_factor == pytest.approx(256)
    assert tanh.forward.verdict == "stable" and tanh.forward.measured_factor < 1.15
    assert tanh.backward.verdict == "exploding"


@pytest.mark.parametrize("init", ["xavier_normal", "xavier_uniform"])
def test_xavier_with_tanh_is_stable(deep_results, init):
    result = deep_results[("tanh", init)]
    assert result.forward.theory_factor == pytest.approx(1.0)
    for direction in (result.forward, result.backward):
        assert direction.verdict == "stable"
        # tanh only compresses: a slow, polynomial decay (Var ~ 1/(2l)), not the exponential 0.5 of ReLU
        assert 0.75 < direction.measured_factor < 1.0
        assert 1e-3 < direction.ratio < 1.0


def test_xavier_with_relu_halves_and_pytorch_default_vanishes_backward(deep_results):
    xavier = deep_results[("relu", "xavier_normal")]
    assert xavier.forward.theory_factor == pytest.approx(0.5)
    assert xavier.forward.measured_factor == pytest.approx(0.5, rel=0.08)
    assert xavier.forward.verdict == xavier.backward.verdict == "vanishing"
    default = deep_results[("relu", "pytorch_default")]
    assert default.backward.theory_factor == pytest.approx(1 / 6)
    assert default.backward.measured_factor == pytest.approx(1 / 6, rel=0.08)
    assert default.backward.verdict == "vanishing"
    # forward, the biases' variance 1/(3n) sets a floor the signal cannot vanish below
    assert default.profile.forward_var[-1] > 0.5 / (3 * 256)


def test_float32_overflow_is_recorded_as_exploding_without_warnings():
    """N(0, 1) with ReLU grows ~128x per layer: float32 values overflow near layer 37; no crash, no warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = study.run_combination("relu", "normal_1", depth=45, width=256, batch=16, seed=0,
                                       dtype=np.float32)
    assert result.profile.forward_var.dtype == np.float64
    layer = result.forward.nonfinite_layer
    assert layer is not None and 30 <= layer <= 45, layer
    assert result.forward.verdict == "exploding" and result.forward.ratio == math.inf
    assert result.forward.measured_factor == pytest.approx(128, rel=0.15)  # from the finite prefix
    assert np.isfinite(result.profile.forward_var[:layer - 1]).all()
    # the gradient enters at layer 45 and overflows on its way down (layer numbers count from the input)
    down = result.backward.nonfinite_layer
    assert down is not None and down < 45 and result.backward.verdict == "exploding"
    assert np.isfinite(result.profile.grad_var[down:]).all() and not np.isfinite(result.profile.grad_var[down - 1])
    assert result.profile.fp_errors.get("overflow", 0) > 0  # counted, not shown


def test_deterministic_with_a_seed():
    a = study.run_combination("tanh", "he_uniform", depth=4, width=64, batch=32, seed=7)
    b = study.run_combination("tanh", "he_uniform", depth=4, width=64, batch=32, seed=7)
    c = study.run_combination("tanh", "he_uniform", depth=4, width=64, batch=32, seed=8)
    for name in ("forward_var", "output_var", "grad_var", "weight_grad_var"):
        np.testing.assert_array_equal(getattr(a.profile, name), getattr(b.profile, name))
        assert not np.array_equal(getattr(a.profile, name), getattr(c.profile, name))


# ------------------------------------------------------------------------------------- building blocks
@pytest.mark.parametrize("init", study.INITS + study.RULES)
@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "sigmoid"])
def test_weight_variance_matches_the_initialiser(init, activation):
    """The theory's Var(w) is the variance init_linear_ actually draws (sample of 2^19 weights)."""
    linear = nn.Linear(1024, 512).double()
    study.init_linear_(linear, init, activation, negative_slope=0.3, generator=np.random.default_rng(0))
    expected = study.weight_variance(init, 1024, 512, activation, negative_slope=0.3)
    w = linear.weight.data
    # sample variance of N draws: relative std sqrt((kurtosis - 1) / N) <= sqrt(2 / N) = 0.002; allow 5 sigma
    assert np.mean(w ** 2) == pytest.approx(expected, rel=0.01)
    assert abs(np.mean(w)) < 5 * math.sqrt(expected / w.size)
    if init == "pytorch_default":
        bound = 1 / math.sqrt(1024)
        assert np.abs(linear.bias.data).max() <= bound and np.abs(linear.bias.data).max() > 0.9 * bound
    else:
        assert not linear.bias.data.any()


def test_activation_gain_by_monte_carlo(rng):
    y = rng.standard_normal(1_000_000)
    for activation, module in (("relu", nn.ReLU()), ("leaky_relu", nn.LeakyReLU(0.3)), ("linear", nn.Identity())):
        c = study.activation_gain(activation, 0.3)
        out = module(y)
        assert np.mean(out ** 2) == pytest.approx(c, rel=0.01)  # forward: E[g(y)^2] / Var(y)
        assert np.mean(module.backward(np.ones_like(y)) ** 2) == pytest.approx(c, rel=0.01)  # E[g'(y)^2]
    small = 1e-3 * y  # tanh is linear near 0
    assert np.mean(np.tanh(small) ** 2) / np.mean(small ** 2) == pytest.approx(study.activation_gain("tanh"), rel=1e-5)


def test_build_study_mlp_names_dtype_head_and_leaves_global_rng_alone():
    minigrad.manual_seed(11)
    before = minigrad.random.get_rng_state()
    model = study.build_study_mlp("tanh", "xavier_uniform", [12, 8, 8], num_classes=3,
                                  generator=np.random.default_rng(0))
    assert minigrad.random.get_rng_state() == before
    names = [name for name, _ in model.named_parameters()]
    assert names == ["layer0.linear.weight", "layer0.linear.bias", "layer1.linear.weight", "layer1.linear.bias",
                     "out.linear.weight", "out.linear.bias"]
    assert all(p.dtype == np.float64 for p in model.parameters())
    assert model(np.zeros((2, 12))).shape == (2, 3)
    blocks, head = study.mlp_blocks(model)
    assert len(blocks) == 2 and head is model.out
    assert isinstance(blocks[0][1], nn.Tanh)
    model32 = study.build_study_mlp("relu", "he_normal", [4, 4, 4], dtype=np.float32,
                                    generator=np.random.default_rng(0))
    assert all(p.dtype == np.float32 for p in model32.parameters())
    # every linear, out too, is filled by the scheme from the generator, in forward order, after the cast
    gen = np.random.default_rng(0)
    for linear in (model.layer0.linear, model.layer1.linear, model.out.linear):
        bound = math.sqrt(6 / (linear.in_features + linear.out_features))
        np.testing.assert_array_equal(linear.weight.data, gen.uniform(-bound, bound, linear.weight.shape))
        assert not linear.bias.data.any()


def test_signal_profile_with_a_head_and_inputs_not_mutated(rng):
    model = study.build_study_mlp("relu", "he_normal", [10, 16, 16, 16], num_classes=4, generator=rng)
    x, g = rng.standard_normal((8, 10)), rng.standard_normal((8, 4))
    x0, g0 = x.copy(), g.copy()
    profile = study.signal_profile(model, x, g)
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(g, g0)
    assert profile.depth == 3 and profile.forward_nonfinite is None and profile.backward_nonfinite is None
    # the profile's values are those of the layers' own forward and backward
    h1 = np.maximum(x @ model.layer0.linear.weight.data.T, 0)
    assert profile.forward_var[0] == pytest.approx(np.mean((x @ model.layer0.linear.weight.data.T) ** 2))
    assert profile.output_var[0] == pytest.approx(np.mean(h1 ** 2))
    assert profile.weight_grad_var[-1] == pytest.approx(np.mean(model.layer2.linear.weight.grad ** 2))
    h = x
    for layer in model.hidden_layers:
        h = layer(h)
    top = g @ model.out.linear.weight.data * (h > 0)
    assert profile.grad_var[-1] == pytest.approx(np.mean(top ** 2))


def test_curves_rows_hold_every_layer():
    result = study.run_combination("relu", "he_normal", depth=3, width=8, batch=4, seed=0)
    rows = result.curves()
    assert [r["layer"] for r in rows] == [1, 2, 3]
    assert rows[0]["theory_forward_factor"] is None and rows[-1]["theory_backward_factor"] is None
    assert rows[1]["theory_forward_factor"] == pytest.approx(1.0)
    assert result.name == "relu-he_normal" and result.label == "ReLU, He normal"


@pytest.mark.parametrize("kwargs, match", [
    (dict(activation="swish", init="he_normal"), "activation must be one of"),
    (dict(activation="relu", init="he_normal", input_scale=0.0), "input_scale must be > 0"),
    (dict(activation="relu", init="kaiming"), "init must be one of"),
    (dict(activation="relu", init="he_normal", depth=1), "depth must be >= 2"),
    (dict(activation="relu", init="he_normal", widths=[4, 4]), "widths must give >= 2 layers"),
    (dict(activation="relu", init="he_normal", batch=0), "batch must be >= 1"),
])
def test_bad_arguments_raise_naming_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        study.run_combination(**kwargs)


# ------------------------------------------------------------------------------------- factor and verdict
@given(st.lists(st.floats(1e-30, 1e30), min_size=2, max_size=12))
def test_geometric_factor_telescopes(values):
    factor = study.geometric_factor(values)
    assert math.log(factor) * (len(values) - 1) == pytest.approx(math.log(values[-1] / values[0]), abs=1e-9)


def test_geometric_factor_and_classify_edge_cases():
    assert study.geometric_factor([1, 2, 4, 8]) == pytest.approx(2)
    assert study.geometric_factor([1, 0.5, math.inf, math.nan]) == pytest.approx(0.5)  # finite prefix
    assert study.geometric_factor([1, 1e-3, 0.0]) == 0.0
    assert math.isnan(study.geometric_factor([1, math.inf]))
    assert study.classify(1.0) == "stable"
    assert study.classify(999.0) == "stable" and study.classify(1001.0) == "exploding"
    assert study.classify(1 / 999) == "stable" and study.classify(1 / 1001) == "vanishing"
    assert study.classify(0.0) == "vanishing" and study.classify(1.0, overflowed=True) == "exploding"
    assert study.classify(math.inf) == "exploding" and study.classify(math.nan) == "undetermined"
    assert study.classify(20.0, threshold=10) == "exploding"
    with pytest.raises(ValueError, match="threshold must be > 1"):
        study.classify(1.0, threshold=1.0)
    summary = study.summarize([1, 10, math.inf], [10, 10], nonfinite_layer=3)
    assert summary.ratio == math.inf and summary.verdict == "exploding" and summary.measured_factor == pytest.approx(10)
    vanishing = study.summarize([1.0, 1e-2, 1e-4], [0.1, 0.1])
    assert vanishing.ratio == pytest.approx(1e-4) and vanishing.verdict == "vanishing"
    assert vanishing.theory_factor == pytest.approx(0.1) and vanishing.measured_factor == pytest.approx(0.01)



# ------------------------------------------------------------------------------------- unequal widths: the rules
def _gauss(f, var):
    """E[f(y)] for y ~ N(0, var), by the trapezoid rule on a fine grid over +-12 standard deviations."""
    y = np.linspace(-12, 12, 400_001) * math.sqrt(var)
    density = np.exp(-y ** 2 / (2 * var)) / math.sqrt(2 * math.pi * var)
    return float(np.trapezoid(f(y) * density, y) if hasattr(np, "trapezoid") else np.trapz(f(y) * density, y))


def test_rule_variances_and_gains():
    """k/n, k/m, 2k/(n+m) with k = 2/(1+a^2) for the ReLU family (He) and 1 otherwise (calculate_gain's 1 for
    sigmoid and linear, the lecture's 1 for tanh)."""
    assert study.rule_gain("relu") == 2 and study.rule_gain("leaky_relu", 0.5) == pytest.approx(2 / 1.25)
    assert study.rule_gain("sigmoid") == study.rule_gain("tanh") == study.rule_gain("linear") == 1
    assert nn.init.calculate_gain("sigmoid") ** 2 == study.rule_gain("sigmoid")
    assert study.weight_variance("fan_in", 300, 100, "relu") == pytest.approx(2 / 300)
    assert study.weight_variance("fan_out", 300, 100, "tanh") == pytest.approx(1 / 100)
    assert study.weight_variance("fan_avg", 300, 100, "sigmoid") == pytest.approx(2 / 400)
    assert study.activation_gain("sigmoid") == 1 / 16  # sigmoid'(0)^2


@pytest.mark.parametrize("rule", study.RULES)
@pytest.mark.parametrize("pattern", ["alternating", "pyramid"])
def test_linear_network_with_unequal_widths_multiplies_by_n_var_w_forward_and_m_var_w_backward(rule, pattern):
    """Each layer of a linear net multiplies Var by exactly n Var(w) forward and m Var(w) backward in
    expectation; measured per layer within 5 sigma of the finite-width fluctuation (module docstring)."""
    widths, batch = study.pattern_widths(pattern, 6, width=512), 256
    result = study.run_combination("linear", rule, widths=widths, batch=batch, seed=11)
    n, m = np.array(widths[1:-1], float), np.array(widths[2:], float)
    var = result.weight_var[1:]
    np.testing.assert_allclose(result.theory_forward, n * var)
    np.testing.assert_allclose(result.theory_backward, m * var)
    if rule == "fan_in":
        np.testing.assert_allclose(result.theory_forward, 1.0)
    elif rule == "fan_out":
        np.testing.assert_allclose(result.theory_backward, 1.0)
    else:  # the compromise: forward x backward = 4nm/(n+m)^2 < 1 wherever n != m
        np.testing.assert_allclose(result.theory_forward * result.theory_backward, 4 * n * m / (n + m) ** 2)
    assert not np.allclose(result.theory_forward, result.theory_backward)  # the test can tell n from m
    tol = 5 * _sigma(widths, batch)
    np.testing.assert_allclose(_forward_ratios(result.profile), result.theory_forward, rtol=tol)
    np.testing.assert_allclose(_backward_ratios(result.profile), result.theory_backward, rtol=tol)


def test_one_sided_rules_telescope_to_the_end_widths_and_the_compromise_compounds():
    """k/n's backward product over layers 2..L is widths[L]/widths[1], whatever the depth; on alternating widths
    the compromise loses (4 nm/(n+m)^2) per pair of layers in forward x backward, 0.64^2 at 512/128."""
    for depth in (10, 40):
        widths = study.pattern_widths("pyramid", depth, width=256)
        result = study.run_combination("linear", "fan_in", widths=widths, batch=4, seed=0)
        assert np.prod(result.theory_backward) == pytest.approx(widths[-1] / widths[1])
        out = study.run_combination("linear", "fan_out", widths=widths, batch=4, seed=0)
        assert np.prod(out.theory_forward) == pytest.approx(widths[1] / widths[-1])
    alt = study.run_combination("linear", "fan_avg", widths=study.pattern_widths("alternating", 9), batch=4, seed=0)
    pairs = (alt.theory_forward * alt.theory_backward).reshape(4, 2).prod(axis=1)
    np.testing.assert_allclose(pairs, 0.64 ** 2)


def test_pattern_widths_and_labels():
    assert study.pattern_widths("equal", 3, 8) == [8, 8, 8, 8]
    assert study.pattern_widths("alternating", 4, 256) == [512, 128, 512, 128, 512]
    pyramid = study.pattern_widths("pyramid", 50, 256)
    assert pyramid[0] == 2048 and pyramid[-1] == 64 and all(a >= b for a, b in zip(pyramid, pyramid[1:]))
    assert study.pattern_label(pyramid) == "pyramid 2048->64"
    assert study.pattern_label([512, 128, 512]) == "alternating 512/128" and study.pattern_label([8] * 3) == "equal 8"
    with pytest.raises(ValueError, match="pattern must be one of"):
        study.pattern_widths("hourglass", 3)


def test_kept_directions_and_direction_json_round_trip():
    assert study.kept_directions(1.0, 9.9) == "both" and study.kept_directions(0.05, 1) == "backward"
    assert study.kept_directions(1, math.inf) == "forward" and study.kept_directions(math.nan, 11) == "neither"
    summary = study.summarize([1, 10, math.inf], [10, 10], nonfinite_layer=3)
    back = study.direction_from_json(study.direction_json(summary))
    assert back["ratio"] == math.inf and back["verdict"] == "exploding" and "layer 3" in back["text"]
    json_ready = study.direction_json(study.summarize([1.0, 0.5], [0.5]))
    assert study.direction_from_json(json_ready)["ratio"] == pytest.approx(0.5)


# ------------------------------------------------------------------------------------- sigmoid and input scale
def test_sigmoid_forward_settles_at_its_fixed_point_and_the_gradient_shrinks_by_e_sigmoid_prime_squared():
    """Var(w) = 1/n with the sigmoid: forward, v -> E[sigmoid(y)^2], y ~ N(0, v) (the output mean 1/2 keeps it
    up: fixed point ~4/15, not the linear theory's 1/16 decay); backward each layer multiplies by
    E[sigmoid'(y)^2] at that v (~0.058, below the linear theory's 1/16 = 0.0625). Per-layer noise of the backward
    ratio at width 1024: ~0.5%, so 2% on the geometric mean of 11 ratios cannot pass for 1/16."""
    sig = lambda y: 1 / (1 + np.exp(-y))  # noqa: E731
    v = 1.0
    for _ in range(100):
        v = _gauss(lambda y: sig(y) ** 2, v)
    assert v == pytest.approx(4 / 15, rel=0.01)
    factor = _gauss(lambda y: (sig(y) * (1 - sig(y))) ** 2, v)
    assert abs(factor - 1 / 16) > 0.05 / 16  # the two hypotheses differ by more than the tolerance
    result = study.run_combination("sigmoid", "fan_in", depth=12, width=1024, batch=256, seed=2)
    # one layer's value: the mean over 1024 units of per-unit offsets ~ chi^2_1, ~4% noise; the last six layers'
    # mean within 5% (the linear theory would put it at 1e-14, the mean term alone at n Var(w)/4 = 0.25)
    assert np.mean(result.profile.forward_var[-6:]) == pytest.approx(v, rel=0.05)
    assert result.backward.measured_factor == pytest.approx(factor, rel=0.02)


def test_relu_is_scale_free_and_tanh_saturates_at_the_first_layer():
    """ReLU(s y) = s ReLU(y): forward variances scale by s^2 exactly, gradients do not change. tanh at s = 10:
    the first layer's gradient is m Var(w) E[tanh'(y)^2] Var(g_2) with y ~ N(0, 100), E = 0.053 (linear: 1)."""
    one = study.run_combination("relu", "fan_in", depth=6, width=256, batch=64, seed=1)
    ten = study.run_combination("relu", "fan_in", depth=6, width=256, batch=64, seed=1, input_scale=10.0)
    np.testing.assert_allclose(ten.profile.forward_var, 100 * one.profile.forward_var, rtol=1e-12)
    np.testing.assert_allclose(ten.profile.grad_var, one.profile.grad_var, rtol=1e-12)
    tanh = study.run_combination("tanh", "fan_in", depth=4, width=1024, batch=256, seed=1, input_scale=10.0)
    y1 = tanh.profile.forward_var[0]
    assert y1 == pytest.approx(100, rel=0.02)
    expected = _gauss(lambda y: (1 - np.tanh(y) ** 2) ** 2, y1)
    assert expected == pytest.approx(0.053, rel=0.05)
    assert tanh.profile.grad_var[0] / tanh.profile.grad_var[1] == pytest.approx(expected, rel=0.05)


def test_sigmoid_networks_are_built_from_nn_sigmoid():
    """build_mlp's "sigmoid" (models/mlp.py) is nn.Sigmoid, so the profile runs its own forward and backward."""
    model = study.build_study_mlp("sigmoid", "fan_avg", [6, 5, 4], generator=np.random.default_rng(0))
    assert all(isinstance(act, nn.Sigmoid) for _, act in study.mlp_blocks(model)[0])
    linear = model.layer0.linear
    assert study.weight_variance("fan_avg", 6, 5, "sigmoid") == pytest.approx(2 / 11)
    assert linear.weight.data.std() > 0 and not linear.bias.data.any()
