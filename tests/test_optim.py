"""Optimisers: SGD, Adam, AdamW against hand-written update loops, state dicts, parameter groups, errors."""
import copy
import json
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minigrad import optim
from minigrad.nn import Parameter
from minigrad.optim import join_state_dict, split_state_dict

SHAPES = [(3, 4), (5,), (2, 1, 3)]
STEPS = 6


def make_params(seed=0, dtype=np.float64, shapes=SHAPES):
    rng = np.random.default_rng(seed)
    return [Parameter(rng.standard_normal(shape), dtype=dtype) for shape in shapes]


def loss_grad(theta, step, index):
    """A gradient that depends on the parameter and the step: grad of a quadratic plus fixed noise."""
    noise = np.random.default_rng(1000 * step + index).standard_normal(theta.shape)
    return 0.7 * theta - 0.3 * np.sin(theta) + noise


def run(optimizer, params, steps, first_step=0):
    for k in range(first_step, first_step + steps):
        for i, p in enumerate(params):
            p.grad[...] = loss_grad(p.data, k, i)
        optimizer.step()


# ----------------------------------------------------------------------------------------- references
def sgd_reference(theta, index, steps, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
    """SGD written from PyTorch's documented algorithm, one parameter, float64."""
    theta = theta.astype(np.float64).copy()
    buf = None
    for k in range(steps):
        g = loss_grad(theta, k, index) + weight_decay * theta
        if momentum != 0:
            buf = g.copy() if buf is None else momentum * buf + (1 - dampening) * g
            direction = g + momentum * buf if nesterov else buf
        else:
            direction = g
        theta = theta - lr * direction
    return theta


def adam_reference(theta, index, steps, lr, betas, eps, weight_decay, amsgrad, decoupled):
    """Adam/AdamW as written in the papers with PyTorch's conventions (eps after bias correction)."""
    beta1, beta2 = betas
    theta = theta.astype(np.float64).copy()
    m = np.zeros_like(theta)
    v = np.zeros_like(theta)
    v_max = np.zeros_like(theta)
    for t in range(1, steps + 1):
        g = loss_grad(theta, t - 1, index)
        if decoupled:
            theta = theta * (1 - lr * weight_decay)
        else:
            g = g + weight_decay * theta
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        v_max = np.maximum(v_max, v)
        m_hat = m / (1 - beta1 ** t)
        v_hat = (v_max if amsgrad else v) / (1 - beta2 ** t)
        theta = theta - lr * m_hat / (np.sqrt(v_hat) + eps)
    return theta, m, v


# ----------------------------------------------------------------------------------------- SGD
@st.composite
def sgd_options(draw):
    momentum = draw(st.sampled_from([0.0, 0.5, 0.9]) | st.floats(0.01, 0.99))
    nesterov = momentum > 0 and draw(st.booleans())
    dampening = 0.0 if nesterov else draw(st.sampled_from([0.0, 0.3]) | st.floats(0.0, 1.0))
    return dict(lr=draw(st.floats(1e-3, 0.5)), momentum=momentum, dampening=dampening,
                weight_decay=draw(st.sampled_from([0.0, 0.1]) | st.floats(0.0, 0.5)), nesterov=nesterov)


@given(options=sgd_options())
def test_sgd_matches_reference_loop(options):
    params = make_params()
    start = [p.data.copy() for p in params]
    run(optim.SGD(params, **options), params, STEPS)
    for i, (p, theta0) in enumerate(zip(params, start)):
        expected = sgd_reference(theta0, i, STEPS, **options)
        np.testing.assert_allclose(p.data, expected, rtol=1e-12, atol=1e-12)


def test_sgd_first_momentum_step_has_no_dampening():
    # b_1 = g_1 (not (1 - dampening) g_1), so the first step is a plain gradient step.
    p = Parameter(np.array([1.0, -2.0]), dtype=np.float64)
    opt = optim.SGD([p], lr=0.1, momentum=0.9, dampening=0.5)
    p.grad[...] = [1.0, 3.0]
    opt.step()
    np.testing.assert_array_equal(p.data, [1.0 - 0.1, -2.0 - 0.3])
    np.testing.assert_array_equal(opt.state[p]["momentum_buffer"], [1.0, 3.0])
    p.grad[...] = [2.0, 0.0]
    opt.step()
    # b_2 = 0.9 * b_1 + 0.5 * g_2
    np.testing.assert_allclose(opt.state[p]["momentum_buffer"], [0.9 + 1.0, 2.7], rtol=1e-15)
    np.testing.assert_allclose(p.data, [0.9 - 0.19, -2.3 - 0.27], rtol=1e-15)


def test_sgd_does_not_modify_grad_and_keeps_dtype():
    params = make_params(dtype=np.float32)
    opt = optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=0.1, nesterov=True)
    for p in params:
        p.grad[...] = 1.5
    opt.step()
    for p in params:
        assert p.dtype == np.float32 and p.grad.dtype == np.float32
        np.testing.assert_array_equal(p.grad, 1.5)
        assert opt.state[p]["momentum_buffer"].dtype == np.float32


def test_sgd_without_momentum_keeps_no_state():
    params = make_params()
    opt = optim.SGD(params, lr=0.1)
    run(opt, params, 2)
    assert opt.state == {} and opt.state_dict()["state"] == {}


# ----------------------------------------------------------------------------------------- Adam / AdamW
@st.composite
def adam_options(draw):
    return dict(lr=draw(st.floats(1e-4, 0.1)),
                betas=(draw(st.sampled_from([0.0, 0.9]) | st.floats(0.0, 0.99)),
                       draw(st.sampled_from([0.0, 0.999]) | st.floats(0.0, 0.9999))),
                eps=draw(st.sampled_from([1e-8, 1e-3, 0.0]) | st.floats(1e-10, 1e-2)),
                weight_decay=draw(st.sampled_from([0.0, 1e-2]) | st.floats(0.0, 0.5)),
                amsgrad=draw(st.booleans()))


@pytest.mark.parametrize("cls", [optim.Adam, optim.AdamW])
@given(options=adam_options())
def test_adam_matches_reference_loop(cls, options):
    params = make_params()
    start = [p.data.copy() for p in params]
    opt = cls(params, **options)
    run(opt, params, STEPS)
    for i, (p, theta0) in enumerate(zip(params, start)):
        expected, m, v = adam_reference(theta0, i, STEPS, decoupled=cls is optim.AdamW, **options)
        np.testing.assert_allclose(p.data, expected, rtol=1e-11, atol=1e-12)
        state = opt.state[p]
        assert state["step"] == STEPS and isinstance(state["step"], int)
        np.testing.assert_allclose(state["exp_avg"], m, rtol=1e-11, atol=1e-13)
        np.testing.assert_allclose(state["exp_avg_sq"], v, rtol=1e-11, atol=1e-13)
        assert ("max_exp_avg_sq" in state) == options["amsgrad"]


def test_adam_float32_params_stay_float32_and_follow_the_float64_reference():
    params = make_params(dtype=np.float32)
    start = [p.data.astype(np.float64) for p in params]
    opt = optim.Adam(params, lr=0.05, weight_decay=0.01)
    run(opt, params, STEPS)
    for i, (p, theta0) in enumerate(zip(params, start)):
        assert p.dtype == np.float32 and opt.state[p]["exp_avg"].dtype == np.float32
        expected, _, _ = adam_reference(theta0, i, STEPS, 0.05, (0.9, 0.999), 1e-8, 0.01, False, False)
        np.testing.assert_allclose(p.data, expected, rtol=1e-4, atol=1e-5)


def test_adam_adds_eps_after_bias_correction():
    # With a tiny gradient v is tiny and eps decides the step. PyTorch (eps after correction):
    #   theta_1 = theta_0 - lr * g / (|g| + eps)
    # The course's version (eps before correction) would give lr * sqrt(1-b2)/(1-b1) * m / (sqrt(v) + eps).
    lr, eps, g = 0.1, 1e-8, 1e-9
    p = Parameter(np.array([0.0]), dtype=np.float64)
    opt = optim.Adam([p], lr=lr, eps=eps)
    p.grad[...] = g
    opt.step()
    after = -lr * g / (abs(g) + eps)
    m, v = 0.1 * g, 0.001 * g * g
    before = -lr * math.sqrt(1 - 0.999) / (1 - 0.9) * m / (math.sqrt(v) + eps)
    assert p.data[0] == pytest.approx(after, rel=1e-12)
    assert abs(after - before) > 10 * abs(before)  # the two conventions really are distinguishable here


def test_adamw_decouples_weight_decay_and_adam_couples_it():
    theta0, lr, wd = np.array([2.0, -0.5, 1e-3]), 0.01, 0.1
    # No loss gradient: AdamW only shrinks theta; Adam's L2 term goes through the moments and, at step 1,
    # becomes a step of size lr in the direction of sign(theta) (m_hat / sqrt(v_hat) = sign(g)).
    p_w = Parameter(theta0, dtype=np.float64)
    p_a = Parameter(theta0, dtype=np.float64)
    adamw = optim.AdamW([p_w], lr=lr, weight_decay=wd)  # m = 0, so the Adam part is 0 / (0 + eps) = 0
    adam = optim.Adam([p_a], lr=lr, weight_decay=wd, eps=0.0)
    adamw.step()
    adam.step()
    np.testing.assert_allclose(p_w.data, theta0 * (1 - lr * wd), rtol=1e-15)
    np.testing.assert_allclose(p_a.data, theta0 - lr * np.sign(theta0), rtol=1e-14)
    # And AdamW with a gradient: decay first, then the Adam step with the loss gradient alone.
    p = Parameter(theta0, dtype=np.float64)
    opt = optim.AdamW([p], lr=lr, weight_decay=wd, eps=0.0)
    p.grad[...] = [1.0, -2.0, 3.0]
    opt.step()
    np.testing.assert_allclose(p.data, theta0 * (1 - lr * wd) - lr * np.array([1.0, -1.0, 1.0]), rtol=1e-14)


def test_adamw_default_weight_decay_and_adam_defaults():
    adamw = optim.AdamW(make_params())
    adam = optim.Adam(make_params())
    assert adamw.defaults == dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False)
    assert adam.defaults == dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False)


def test_adam_amsgrad_uses_the_running_maximum_of_v():
    p = Parameter(np.array([0.0]), dtype=np.float64)
    opt = optim.Adam([p], lr=1.0, betas=(0.0, 0.5), eps=0.0, amsgrad=True)
    p.grad[...] = 4.0
    opt.step()  # v = 8, v_max = 8, m = 4: step = 4 / sqrt(8 / 0.5) = 1
    np.testing.assert_allclose(p.data, [-1.0], rtol=1e-15)
    p.grad[...] = 1.0
    opt.step()  # v = 4.5 < v_max = 8; m = 1; step = 1 / sqrt(8 / 0.75)
    np.testing.assert_allclose(p.data, [-1.0 - 1.0 / math.sqrt(8 / 0.75)], rtol=1e-15)
    np.testing.assert_array_equal(opt.state[p]["max_exp_avg_sq"], [8.0])
    np.testing.assert_array_equal(opt.state[p]["exp_avg_sq"], [4.5])


def test_adam_state_views_stay_valid_across_copies_and_dtype_changes():
    # The moments live in one buffer per group; copies of the optimiser and a dtype change of the
    # parameters must neither lose state nor write into the wrong arrays.
    params = make_params()
    opt = optim.Adam(params, lr=0.01, amsgrad=True)
    run(opt, params, 2)
    params2, opt2 = copy.deepcopy((params, opt))
    run(opt, params, 3, first_step=2)
    run(opt2, params2, 3, first_step=2)
    for a, b in zip(params, params2):
        np.testing.assert_array_equal(a.data, b.data)
        np.testing.assert_array_equal(opt.state[a]["exp_avg"], opt2.state[b]["exp_avg"])
    # float32 -> float64 mid-run (as module.to does: new arrays): state is carried over and cast
    params = make_params(dtype=np.float32)
    opt = optim.Adam(params, lr=0.01)
    run(opt, params, 2)
    m_before = [opt.state[p]["exp_avg"].copy() for p in params]
    for p in params:
        p.data, p.grad = p.data.astype(np.float64), p.grad.astype(np.float64)
    opt.step()
    for p, m in zip(params, m_before):
        assert opt.state[p]["exp_avg"].dtype == np.float64 and opt.state[p]["step"] == 3
        np.testing.assert_allclose(opt.state[p]["exp_avg"], 0.9 * m + 0.1 * p.grad, rtol=1e-6)


def test_adam_group_with_mixed_dtypes_is_updated_once_per_step_and_resumes_exactly():
    params = make_params(dtype=np.float64)
    params[1] = Parameter(params[1].data, dtype=np.float32)
    start = [p.data.astype(np.float64) for p in params]
    opt = optim.Adam(params, lr=0.05)
    run(opt, params, 2)
    flat = opt._flat[id(opt.param_groups[0])]
    run(opt, params, 1, first_step=2)
    assert opt._flat[id(opt.param_groups[0])] is flat  # the group's buffers are reused, not rebuilt
    assert params[1].dtype == np.float32 and params[0].dtype == np.float64
    saved, saved_data = opt.state_dict(), [p.data.copy() for p in params]
    run(opt, params, 2, first_step=3)
    for i, (p, theta0) in enumerate(zip(params, start)):
        expected, _, _ = adam_reference(theta0, i, 5, 0.05, (0.9, 0.999), 1e-8, 0.0, False, False)
        np.testing.assert_allclose(p.data, expected, rtol=1e-5 if p.dtype == np.float32 else 1e-12)
    resumed = [Parameter(data, dtype=data.dtype) for data in saved_data]
    opt2 = optim.Adam(resumed, lr=0.05)
    opt2.load_state_dict(saved)
    run(opt2, resumed, 2, first_step=3)
    for a, b in zip(params, resumed):
        np.testing.assert_array_equal(a.data, b.data)


def test_adam_switching_amsgrad_on_mid_run_starts_v_max_at_zero():
    params = make_params()
    opt = optim.Adam(params)
    run(opt, params, 2)
    opt.param_groups[0]["amsgrad"] = True
    run(opt, params, 1, first_step=2)
    for p in params:
        np.testing.assert_array_equal(opt.state[p]["max_exp_avg_sq"], opt.state[p]["exp_avg_sq"])


def test_adam_refuses_a_group_whose_parameters_have_different_step_counts():
    params = make_params()
    opt = optim.Adam(params[:2])
    run(opt, params[:2], 1)
    opt.param_groups[0]["params"].append(params[2])  # appended by hand instead of add_param_group
    with pytest.raises(ValueError, match="different step counts"):
        opt.step()


def test_adam_step_counts_separately_per_group():
    params = make_params()
    opt = optim.Adam(params[:2], lr=0.1)
    run(opt, params[:2], 2)
    opt.add_param_group({"params": [params[2]], "lr": 0.2})
    run(opt, params, 1, first_step=2)
    assert [opt.state[p]["step"] for p in params] == [3, 3, 1]
    assert opt.param_groups[1]["betas"] == (0.9, 0.999)


# ----------------------------------------------------------------------------------------- groups, errors
def test_param_groups_override_defaults_per_group():
    params = make_params()
    start = [p.data.copy() for p in params]
    opt = optim.SGD([{"params": params[:2]}, {"params": [params[2]], "lr": 0.5, "momentum": 0.9}],
                    lr=0.1, momentum=0.0)
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.5]
    assert opt.param_groups[0]["nesterov"] is False
    run(opt, params, STEPS)
    np.testing.assert_allclose(params[0].data, sgd_reference(start[0], 0, STEPS, lr=0.1), rtol=1e-13)
    np.testing.assert_allclose(params[2].data, sgd_reference(start[2], 2, STEPS, lr=0.5, momentum=0.9),
                               rtol=1e-13)


def test_lr_can_be_changed_between_steps():
    p = Parameter(np.array([1.0]), dtype=np.float64)
    opt = optim.SGD([p], lr=0.1)
    p.grad[...] = 1.0
    opt.step()
    opt.param_groups[0]["lr"] = 0.01
    opt.step()
    np.testing.assert_allclose(p.data, [1.0 - 0.1 - 0.01], rtol=1e-15)


def test_zero_grad_zeroes_in_place():
    params = make_params(dtype=np.float32)
    grads = [p.grad for p in params]
    for p in params:
        p.grad[...] = 3.0
    opt = optim.Adam(params)
    opt.zero_grad()
    for p, g in zip(params, grads):
        assert p.grad is g and g.dtype == np.float32
        np.testing.assert_array_equal(g, 0.0)


def test_step_calls_the_closure_and_returns_its_loss():
    p = Parameter(np.array([3.0]), dtype=np.float64)
    opt = optim.SGD([p], lr=0.25)

    def closure():
        opt.zero_grad()
        p.grad[...] = 2 * p.data  # d/dp of p^2
        return float(p.data[0] ** 2)

    assert opt.step(closure) == 9.0
    np.testing.assert_array_equal(p.data, [1.5])


def test_params_may_be_a_generator_and_grads_are_only_read():
    params = make_params()
    opt = optim.Adam(p for p in params)
    assert opt.param_groups[0]["params"] == params
    for p in params:
        p.grad[...] = 1.0
    opt.step()
    for p in params:
        np.testing.assert_array_equal(p.grad, 1.0)


@pytest.mark.parametrize("make, match", [
    (lambda ps: optim.SGD(ps, lr=-0.1), "lr"),
    (lambda ps: optim.SGD(ps, lr=float("nan")), "lr"),
    (lambda ps: optim.SGD(ps, lr=0.1, momentum=-0.5), "momentum"),
    (lambda ps: optim.SGD(ps, lr=0.1, weight_decay=-1), "weight_decay"),
    (lambda ps: optim.SGD(ps, lr=0.1, nesterov=True), "nesterov"),
    (lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, dampening=0.1, nesterov=True), "nesterov"),
    (lambda ps: optim.SGD([{"params": ps, "lr": -1.0}], lr=0.1), "lr"),
    (lambda ps: optim.Adam(ps, lr=-1e-3), "lr"),
    (lambda ps: optim.Adam(ps, betas=(1.0, 0.999)), "beta1"),
    (lambda ps: optim.Adam(ps, betas=(-0.1, 0.999)), "beta1"),
    (lambda ps: optim.Adam(ps, betas=(0.9, 1.0)), "beta2"),
    (lambda ps: optim.Adam(ps, betas=(0.9,)), "betas"),
    (lambda ps: optim.Adam(ps, eps=-1e-8), "eps"),
    (lambda ps: optim.AdamW(ps, weight_decay=-0.1), "weight_decay"),
    (lambda ps: optim.Adam([]), "empty"),
    (lambda ps: optim.SGD([{"params": ps}, {"params": ps[:1]}], lr=0.1), "more than one"),
    (lambda ps: optim.SGD([ps[0], ps[0]], lr=0.1), "twice"),
])
def test_bad_hyper_parameters_raise_value_error_naming_them(make, match):
    with pytest.raises(ValueError, match=match):
        make(make_params())


def test_bad_params_raise_type_error():
    p = make_params()[0]
    with pytest.raises(TypeError, match="single Parameter"):
        optim.SGD(p, lr=0.1)
    with pytest.raises(TypeError, match="ndarray"):
        optim.SGD([np.zeros(3)], lr=0.1)
    with pytest.raises(TypeError, match="set"):
        optim.SGD([{"params": {p}}], lr=0.1)


def test_sgd_requires_lr():
    with pytest.raises(TypeError):
        optim.SGD(make_params())


# ----------------------------------------------------------------------------------------- state dicts
OPTIMISERS = {
    "sgd-nesterov": lambda ps: optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
    "adam-amsgrad": lambda ps: optim.Adam(ps, lr=0.01, betas=(0.8, 0.99), weight_decay=1e-3, amsgrad=True),
    "adamw-groups": lambda ps: optim.AdamW([{"params": ps[:1], "lr": 0.02}, {"params": ps[1:]}], lr=0.01),
}


@pytest.mark.parametrize("name", sorted(OPTIMISERS))
def test_state_dict_round_trip_through_npz_and_json_continues_bit_identically(name, tmp_path):
    make = OPTIMISERS[name]
    params = make_params(dtype=np.float32)
    opt = make(params)
    run(opt, params, 3)
    # save: arrays to .npz (no pickle), everything else to JSON
    arrays, meta = split_state_dict(opt.state_dict(), prefix="optim.")
    np.savez(tmp_path / "ckpt.npz", **arrays)
    (tmp_path / "ckpt.json").write_text(json.dumps(meta, allow_nan=False))
    saved_params = [p.data.copy() for p in params]
    run(opt, params, 4, first_step=3)  # the uninterrupted run

    resumed = make_params(seed=99, dtype=np.float32)
    for p, data in zip(resumed, saved_params):
        p.data[...] = data
    opt2 = make(resumed)
    with np.load(tmp_path / "ckpt.npz", allow_pickle=False) as npz:
        opt2.load_state_dict(join_state_dict(npz, json.loads((tmp_path / "ckpt.json").read_text()),
                                             prefix="optim."))
    run(opt2, resumed, 4, first_step=3)
    for a, b in zip(params, resumed):
        np.testing.assert_array_equal(a.data, b.data)
    sd, sd2 = opt.state_dict(), opt2.state_dict()
    assert sd["param_groups"] == sd2["param_groups"]
    assert sd["state"].keys() == sd2["state"].keys()
    for index, entry in sd["state"].items():
        for key, value in entry.items():
            np.testing.assert_array_equal(value, sd2["state"][index][key])


def test_state_dict_layout_is_indexed_and_a_snapshot():
    params = make_params()
    opt = optim.Adam([{"params": params[:2]}, {"params": params[2:], "lr": 0.5}])
    run(opt, params, 1)
    sd = opt.state_dict()
    assert [g["params"] for g in sd["param_groups"]] == [[0, 1], [2]]
    assert sd["param_groups"][1]["lr"] == 0.5
    assert set(sd["state"]) == {0, 1, 2}
    assert sd["state"][2]["step"] == 1 and sd["state"][2]["exp_avg"].shape == params[2].shape
    m = sd["state"][0]["exp_avg"].copy()
    run(opt, params, 1, first_step=1)
    np.testing.assert_array_equal(sd["state"][0]["exp_avg"], m)  # later steps do not change a snapshot
    arrays, meta = split_state_dict(sd)
    assert sorted(arrays) == sorted(f"state.{i}.{k}" for i in range(3) for k in ("exp_avg", "exp_avg_sq"))
    assert meta["state"]["1"] == {"step": 1}
    json.dumps(meta, allow_nan=False)


def test_load_state_dict_errors_leave_the_optimiser_untouched():
    params = make_params()
    opt = optim.Adam(params, lr=0.01)
    run(opt, params, 1)
    good = opt.state_dict()
    other = optim.Adam(make_params(shapes=SHAPES[:2]))
    with pytest.raises(ValueError, match="parameters"):
        other.load_state_dict(good)
    two_groups = optim.Adam([{"params": params[:1]}, {"params": params[1:]}])
    with pytest.raises(ValueError, match="groups"):
        two_groups.load_state_dict(good)
    bad_shape = copy.deepcopy(good)
    bad_shape["state"][1]["exp_avg"] = np.zeros(7)
    before = opt.state_dict()
    with pytest.raises(ValueError, match="shape"):
        opt.load_state_dict(bad_shape)
    bad_lr = copy.deepcopy(good)
    bad_lr["param_groups"][0]["lr"] = -1.0
    with pytest.raises(ValueError, match="lr"):
        opt.load_state_dict(bad_lr)
    after = opt.state_dict()
    assert after["param_groups"] == before["param_groups"]
    np.testing.assert_array_equal(after["state"][1]["exp_avg"], before["state"][1]["exp_avg"])


def test_load_state_dict_accepts_string_indices_and_list_betas():
    params = make_params()
    opt = optim.Adam(params, betas=(0.8, 0.9))
    run(opt, params, 2)
    sd = opt.state_dict()
    from_json = {"state": {str(k): v for k, v in sd["state"].items()},
                 "param_groups": json.loads(json.dumps(sd["param_groups"]))}
    opt2 = optim.Adam(make_params())
    opt2.load_state_dict(from_json)
    assert opt2.param_groups[0]["betas"] == (0.8, 0.9)
    assert opt2.state[opt2.param_groups[0]["params"][0]]["step"] == 2


TYPES = {"SGD": lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9), "Adam": lambda ps: optim.Adam(ps, lr=0.01),
         "AdamW": lambda ps: optim.AdamW(ps, lr=0.01)}


@pytest.mark.parametrize("saved, loading", [(a, b) for a in TYPES for b in TYPES if a != b])
def test_load_state_dict_refuses_another_optimisers_state_naming_both(saved, loading):
    params = make_params()
    source = TYPES[saved](params)
    run(source, params, 2)
    target_params = make_params(seed=5)
    target = TYPES[loading](target_params)
    run(target, target_params, 1)
    before = copy.deepcopy(target.state_dict())
    # as saved, and as it comes back from a checkpoint's npz + JSON
    for state in (source.state_dict(), join_state_dict(*split_state_dict(source.state_dict()))):
        with pytest.raises(ValueError, match=rf"{loading}\.load_state_dict: .*{saved}\b.*not .*{loading}\b"):
            target.load_state_dict(state)
        after = target.state_dict()
        assert after["param_groups"] == before["param_groups"]
        for index, entry in before["state"].items():
            for key, value in entry.items():
                np.testing.assert_array_equal(after["state"][index][key], value)


def test_state_dict_without_a_type_is_checked_by_its_hyper_parameters():
    """A state dict written by hand (or before the type was recorded): another optimiser's hyper-parameters
    are still refused, by name; one of this optimiser's kind loads."""
    params = make_params()
    sgd, adam = optim.SGD(params, lr=0.1, momentum=0.9), optim.Adam(make_params(), lr=0.01)
    run(sgd, params, 1)
    untyped = {k: v for k, v in sgd.state_dict().items() if k != "type"}
    with pytest.raises(ValueError, match=r"Adam\.load_state_dict: .*(momentum|dampening|nesterov).*not by Adam"):
        adam.load_state_dict(untyped)
    fresh = optim.SGD(make_params(), lr=0.5)
    fresh.load_state_dict(untyped)
    assert fresh.param_groups[0]["lr"] == 0.1 and fresh.param_groups[0]["momentum"] == 0.9


# ----------------------------------------------------------------------------------------- PyTorch
@pytest.mark.torch
@pytest.mark.parametrize("name, kwargs", [
    ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=1e-2)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True)),
    ("Adam", dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=1e-2, amsgrad=True)),
    ("AdamW", dict(lr=0.01, weight_decay=0.1)),
])
def test_matches_torch(name, kwargs):
    torch = pytest.importorskip("torch")
    params = make_params()
    tparams = [torch.tensor(p.data.copy(), requires_grad=True) for p in params]
    opt = getattr(optim, name)(params, **kwargs)
    topt = getattr(torch.optim, name)(tparams, **kwargs)
    for k in range(STEPS):
        for i, (p, tp) in enumerate(zip(params, tparams)):
            p.grad[...] = loss_grad(p.data, k, i)
            tp.grad = torch.tensor(loss_grad(tp.detach().numpy(), k, i))
        opt.step()
        topt.step()
    for p, tp in zip(params, tparams):
        np.testing.assert_allclose(p.data, tp.detach().numpy(), rtol=1e-12, atol=1e-12)
