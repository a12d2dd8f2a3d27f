"""grad_stats: tensor, grad-output and activation statistics against values computed by hand."""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from minigrad.grad_stats import activation_stats, grad_output_stats, tensor_stats


def test_tensor_stats_by_hand():
    stats = tensor_stats(np.array([[1.0, -2.0], [3.0, -4.0]], dtype=np.float32))
    # mean -0.5; deviations 1.5, -1.5, 3.5, -3.5 -> variance (2.25 + 2.25 + 12.25 + 12.25) / 4
    assert stats == {"mean_abs": 2.5, "l2": math.sqrt(30), "var": 7.25, "max_abs": 4.0, "numel": 4}
    assert all(type(stats[k]) is float for k in ("mean_abs", "l2", "var", "max_abs"))
    assert type(stats["numel"]) is int


def test_tensor_stats_of_an_empty_array_are_zero():
    assert tensor_stats(np.zeros((0, 3))) == {"mean_abs": 0.0, "l2": 0.0, "var": 0.0, "max_abs": 0.0, "numel": 0}


def test_tensor_stats_are_computed_in_float64():
    big = np.full(4, 1e20, dtype=np.float32)  # squares overflow float32
    assert tensor_stats(big)["l2"] == pytest.approx(2e20, rel=1e-7)
    assert tensor_stats(big)["var"] == 0.0
    tiny = np.full(3, 1e-30, dtype=np.float32)  # squares underflow float32
    assert tensor_stats(tiny)["l2"] == pytest.approx(math.sqrt(3) * 1e-30, rel=1e-6)


def test_tensor_stats_do_not_modify_the_input():
    g = np.array([-1.0, 2.0], dtype=np.float32)
    tensor_stats(g)
    grad_output_stats(g.reshape(2, 1))
    activation_stats(g.reshape(2, 1))
    np.testing.assert_array_equal(g, [-1.0, 2.0])


def test_batch_var_by_hand_2d():
    g = np.array([[1.0, 2.0], [3.0, 6.0], [5.0, 10.0]])
    stats = grad_output_stats(g)
    # feature 0: var of 1, 3, 5 = 8/3; feature 1: var of 2, 6, 10 = 32/3; mean 20/3
    assert stats["batch_var"] == pytest.approx(20 / 3, rel=1e-15)
    assert stats["numel"] == 6 and stats["max_abs"] == 10.0
    assert set(stats) == {"mean_abs", "l2", "var", "max_abs", "numel", "batch_var"}


def test_batch_var_by_hand_4d_counts_every_position_as_a_feature():
    g = np.array([[[[1.0, 2.0]]], [[[3.0, 8.0]]]])  # (N=2, C=1, H=1, W=2)
    # position (0,0,0): 1, 3 -> var 1; position (0,0,1): 2, 8 -> var 9; mean 5
    assert grad_output_stats(g)["batch_var"] == pytest.approx(5.0, rel=1e-15)


def test_batch_var_of_a_single_example_is_zero():
    assert grad_output_stats(np.array([[4.0, -3.0]]))["batch_var"] == 0.0


def test_activation_stats_by_hand():
    a = np.array([[1.0, -1.0], [3.0, -1.0], [-2.0, -1.0]])
    stats = activation_stats(a)
    # feature 0: 1, 3, -2 -> mean 2/3, variance 38/9, P=2, N=1 -> diversity 1/3
    # feature 1: all -1 -> variance 0, P=0 -> diversity 0
    assert stats["std"] == pytest.approx(math.sqrt((38 / 9 + 0) / 2), rel=1e-15)
    assert stats["sign_diversity"] == pytest.approx(1 / 6, rel=1e-15)
    assert stats["mean"] == pytest.approx(-1 / 6, rel=1e-15)
    assert stats["numel"] == 6


def test_activation_sign_diversity_ignores_zeros_and_is_half_at_most():
    a = np.array([[0.0, 1.0, 0.0], [0.0, -1.0, 2.0], [0.0, 1.0, -2.0], [0.0, -1.0, 0.0]])
    # feature 0: all zero -> 0; feature 1: 2 positive, 2 negative -> 1/2; feature 2: 1 and 1 -> 1/2
    assert activation_stats(a)["sign_diversity"] == pytest.approx(1 / 3, rel=1e-15)


def test_activation_stats_in_float64():
    a = np.array([[1e20, -1e20], [-1e20, 1e20]], dtype=np.float32)
    assert activation_stats(a)["std"] == pytest.approx(1e20, rel=1e-7)


@given(arrays(np.float64, st.tuples(st.integers(1, 5), st.integers(1, 4), st.integers(1, 3)),
              elements=st.floats(-1e3, 1e3)))
def test_stats_agree_with_their_definitions(g):
    stats = grad_output_stats(g)
    flat = g.reshape(-1)
    assert stats["mean_abs"] == pytest.approx(np.mean(np.abs(flat)), rel=1e-12)
    assert stats["l2"] == pytest.approx(math.sqrt(sum(v * v for v in flat)), rel=1e-12)
    assert stats["var"] == pytest.approx(np.mean((flat - flat.mean()) ** 2), rel=1e-9, abs=1e-9)
    per_feature = g.reshape(g.shape[0], -1)
    expected = np.mean([np.mean((col - col.mean()) ** 2) for col in per_feature.T])
    assert stats["batch_var"] == pytest.approx(expected, rel=1e-9, abs=1e-9)
    act = activation_stats(g)
    assert 0.0 <= act["sign_diversity"] <= 0.5
    assert act["std"] == pytest.approx(math.sqrt(expected), rel=1e-9, abs=1e-6)
