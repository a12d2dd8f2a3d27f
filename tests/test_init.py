"""nn.init: gains, fans, and that each initialiser's spread matches its formula (statistically)."""
import math

import numpy as np
import pytest

from minigrad import manual_seed, nn
from minigrad.nn import init
from minigrad.nn.init import _calculate_fan_in_and_fan_out

# A weight big enough that the sample variance is within ~1% of the true one (rel. std sqrt(2/n) ~ 0.3%).
BIG = (256, 96, 3, 2)  # non-square kernel; fan_in = 96*6 = 576, fan_out = 256*6 = 1536


def _sample_var_close(array, expected, rel=0.03):
    assert abs(float(np.mean(array))) < 5 * math.sqrt(expected / array.size)  # zero mean, 5 sigma
    assert np.var(array, dtype=np.float64) == pytest.approx(expected, rel=rel)


@pytest.mark.parametrize("name, param, expected", [
    ("linear", None, 1.0), ("conv2d", None, 1.0), ("conv1d", None, 1.0), ("sigmoid", None, 1.0),
    ("tanh", None, 5.0 / 3.0), ("relu", None, math.sqrt(2.0)),
    ("leaky_relu", None, math.sqrt(2.0 / (1 + 0.01 ** 2))), ("leaky_relu", 0.2, math.sqrt(2.0 / 1.04)),
    ("leaky_relu", math.sqrt(5), math.sqrt(1.0 / 3.0)), ("selu", None, 0.75),
])
def test_calculate_gain_table(name, param, expected):
    assert init.calculate_gain(name, param) == pytest.approx(expected, rel=1e-15)


def test_calculate_gain_rejects_unknown_and_bad_slope():
    with pytest.raises(ValueError, match="unsupported nonlinearity"):
        init.calculate_gain("swish")
    with pytest.raises(ValueError, match="negative_slope"):
        init.calculate_gain("leaky_relu", "0.1")
    with pytest.raises(ValueError, match="negative_slope"):
        init.calculate_gain("leaky_relu", True)


@pytest.mark.parametrize("shape, fans", [
    ((7, 5), (5, 7)), ((8, 3, 5, 2), (30, 80)), ((4, 6, 3), (18, 12)), ((2, 3, 1, 1), (3, 2)),
])
def test_fans(shape, fans):
    assert _calculate_fan_in_and_fan_out(np.zeros(shape)) == fans
    assert _calculate_fan_in_and_fan_out(nn.Parameter(np.zeros(shape))) == fans


def test_fans_need_two_dims():
    with pytest.raises(ValueError, match="fewer than 2 dimensions"):
        init.xavier_uniform_(np.zeros(5))


FAN_IN, FAN_OUT = 96 * 6, 256 * 6


@pytest.mark.parametrize("gain", [1.0, 5.0 / 3.0])
def test_xavier_uniform_bound_and_variance(gain):
    w = init.xavier_uniform_(np.empty(BIG), gain=gain, generator=np.random.default_rng(0))
    bound = gain * math.sqrt(6.0 / (FAN_IN + FAN_OUT))
    assert np.abs(w).max() <= bound
    assert np.abs(w).max() > 0.999 * bound
    _sample_var_close(w, bound ** 2 / 3)


@pytest.mark.parametrize("gain", [1.0, math.sqrt(2.0)])
def test_xavier_normal_variance(gain):
    w = init.xavier_normal_(np.empty(BIG), gain=gain, generator=np.random.default_rng(1))
    _sample_var_close(w, gain ** 2 * 2.0 / (FAN_IN + FAN_OUT))


@pytest.mark.parametrize("mode, fan", [("fan_in", FAN_IN), ("fan_out", FAN_OUT)])
@pytest.mark.parametrize("nonlinearity, a", [("relu", 0), ("leaky_relu", 0.1), ("tanh", 0), ("linear", 0)])
def test_kaiming_variance(mode, fan, nonlinearity, a):
    gain = init.calculate_gain(nonlinearity, a)
    w = init.kaiming_normal_(np.empty(BIG), a=a, mode=mode, nonlinearity=nonlinearity,
                             generator=np.random.default_rng(2))
    _sample_var_close(w, gain ** 2 / fan)
    u = init.kaiming_uniform_(np.empty(BIG), a=a, mode=mode, nonlinearity=nonlinearity,
                              generator=np.random.default_rng(3))
    bound = gain * math.sqrt(3.0 / fan)
    assert np.abs(u).max() <= bound
    _sample_var_close(u, gain ** 2 / fan)


def test_kaiming_defaults_are_leaky_relu_fan_in():
    w = init.kaiming_normal_(np.empty(BIG), generator=np.random.default_rng(4))
    _sample_var_close(w, 2.0 / (1 + 0.01 ** 2) / FAN_IN)


def test_kaiming_rejects_bad_mode():
    with pytest.raises(ValueError, match="fan_in"):
        init.kaiming_uniform_(np.empty((3, 4)), mode="fan_avg")


def test_lecun_normal_variance():
    w = init.lecun_normal_(np.empty(BIG), generator=np.random.default_rng(5))
    _sample_var_close(w, 1.0 / FAN_IN)


def test_default_init_matches_pytorch_bound():
    weight = nn.Parameter(np.empty(BIG, dtype=np.float32))
    bias = nn.Parameter(np.empty(BIG[0], dtype=np.float32))
    init.default_init_(weight, bias, generator=np.random.default_rng(6))
    bound = 1.0 / math.sqrt(FAN_IN)
    assert np.abs(weight.data).max() <= bound
    assert np.abs(weight.data).max() > 0.999 * bound
    _sample_var_close(weight.data, 1.0 / (3 * FAN_IN))
    assert np.abs(bias.data).max() <= bound
    assert np.abs(bias.data).max() > 0.8 * bound  # 256 draws: the max is near the bound
    assert weight.dtype == np.float32 and bias.dtype == np.float32


def test_uniform_normal_constant():
    g = np.random.default_rng(7)
    u = init.uniform_(np.empty(20000), -2.0, 3.0, generator=g)
    assert u.min() >= -2.0 and u.max() < 3.0 and u.mean() == pytest.approx(0.5, abs=0.05)
    n = init.normal_(np.empty(20000), 1.5, 0.5, generator=g)
    assert n.mean() == pytest.approx(1.5, abs=0.02) and n.std() == pytest.approx(0.5, rel=0.03)
    assert np.all(init.constant_(np.empty((2, 3)), 0.25) == 0.25)
    assert np.all(init.zeros_(np.ones((2, 3))) == 0)
    assert np.all(init.ones_(np.zeros((2, 3))) == 1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("fn", [init.xavier_uniform_, init.xavier_normal_, init.kaiming_uniform_,
                                init.kaiming_normal_, init.lecun_normal_, init.default_init_])
def test_in_place_keeps_dtype_and_returns_target(fn, dtype):
    param = nn.Parameter(np.zeros((6, 4, 3), dtype=dtype))
    data = param.data
    assert fn(param) is param
    assert param.data is data and param.dtype == dtype and np.any(data != 0)
    array = np.zeros((6, 4), dtype=dtype)
    assert fn(array) is array and array.dtype == dtype and np.any(array != 0)


def test_global_generator_makes_init_reproducible():
    manual_seed(123)
    a = init.kaiming_uniform_(np.empty((5, 4)))
    manual_seed(123)
    b = init.kaiming_uniform_(np.empty((5, 4)))
    c = init.kaiming_uniform_(np.empty((5, 4)))
    assert np.array_equal(a, b) and not np.array_equal(b, c)
    d = init.kaiming_uniform_(np.empty((5, 4)), generator=np.random.default_rng(0))
    e = init.kaiming_uniform_(np.empty((5, 4)), generator=np.random.default_rng(0))
    assert np.array_equal(d, e)


def test_rejects_integer_targets_and_non_arrays():
    with pytest.raises(TypeError, match="floating"):
        init.normal_(np.zeros((3, 3), dtype=np.int64))
    with pytest.raises(TypeError, match="Parameter or ndarray"):
        init.zeros_([1.0, 2.0])
