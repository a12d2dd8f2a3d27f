"""Learning-rate schedulers against their closed forms and hand-traced ReduceLROnPlateau sequences."""
import bisect
import json
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minigrad import optim
from minigrad.nn import Parameter
from minigrad.optim.lr_scheduler import (CosineAnnealingLR, LRScheduler, MultiStepLR, ReduceLROnPlateau,
                                         StepLR)


def make_optimizer(lrs=(0.1,), cls=optim.SGD):
    groups = [{"params": [Parameter(np.zeros(2))], "lr": lr} for lr in lrs]
    return cls(groups, lr=lrs[0])


def lr_sequence(scheduler, steps):
    """lr after the constructor (t = 0), then after each of ``steps`` calls of step()."""
    lrs = [scheduler.get_last_lr()]
    for _ in range(steps):
        scheduler.optimizer.step()
        scheduler.step()
        lrs.append(scheduler.get_last_lr())
    return np.array(lrs)


def cosine_closed_form(base_lr, eta_min, T_max, t):
    return eta_min + (base_lr - eta_min) * (1 + math.cos(math.pi * t / T_max)) / 2


# ----------------------------------------------------------------------------------------- base class
def test_constructor_performs_the_initial_step():
    opt = make_optimizer((0.1, 0.02))
    sched = CosineAnnealingLR(opt, T_max=10)
    assert sched.last_epoch == 0 and sched._step_count == 1
    assert sched.get_last_lr() == [0.1, 0.02] and sched.base_lrs == [0.1, 0.02]
    assert [g["initial_lr"] for g in opt.param_groups] == [0.1, 0.02]
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.02]


def test_get_last_lr_is_a_copy():
    sched = StepLR(make_optimizer(), step_size=2)
    sched.get_last_lr().append(5.0)
    assert sched.get_last_lr() == [0.1]


def test_resuming_with_last_epoch_needs_initial_lr():
    with pytest.raises(KeyError, match="initial_lr"):
        StepLR(make_optimizer(), step_size=2, last_epoch=4)
    opt = make_optimizer()
    opt.param_groups[0]["initial_lr"] = 1.0
    sched = StepLR(opt, step_size=2, last_epoch=4)
    assert sched.last_epoch == 5 and sched.base_lrs == [1.0]


def test_scheduler_needs_an_optimizer():
    with pytest.raises(TypeError, match="Optimizer"):
        StepLR([Parameter(np.zeros(1))], step_size=1)
    with pytest.raises(TypeError, match="Optimizer"):
        ReduceLROnPlateau("adam")


# ----------------------------------------------------------------------------------------- cosine
@given(T_max=st.integers(1, 40), eta_min=st.sampled_from([0.0, 1e-4]) | st.floats(0.0, 0.05),
       base_lr=st.floats(0.06, 2.0))
def test_cosine_matches_the_closed_form_up_to_and_past_t_max(T_max, eta_min, base_lr):
    opt = make_optimizer((base_lr, base_lr / 3))
    steps = 5 * T_max + 3
    lrs = lr_sequence(CosineAnnealingLR(opt, T_max=T_max, eta_min=eta_min), steps)
    for t in range(steps + 1):
        for g, base in enumerate((base_lr, base_lr / 3)):
            # (eta_min may exceed the second group's base lr: the formula then rises, and still holds)
            assert abs(lrs[t, g] - cosine_closed_form(base, eta_min, T_max, t)) <= 1e-12 * base_lr, (t, g)
    # recursive continuation: periodic with period 2 T_max, back at eta_min at every odd multiple of T_max
    np.testing.assert_allclose(lrs[2 * T_max:], lrs[:len(lrs) - 2 * T_max], rtol=0, atol=1e-12 * base_lr)
    for k in (1, 3):
        assert abs(lrs[k * T_max, 0] - eta_min) <= 1e-12 * base_lr
    assert abs(lrs[2 * T_max, 0] - base_lr) <= 1e-12 * base_lr


def test_cosine_known_values():
    opt = make_optimizer((1.0,))
    lrs = lr_sequence(CosineAnnealingLR(opt, T_max=4, eta_min=0.0), 9)[:, 0]
    c = math.cos(math.pi / 4)
    expected = [1, (1 + c) / 2, 0.5, (1 - c) / 2, 0, (1 - c) / 2, 0.5, (1 + c) / 2, 1, (1 + c) / 2]
    np.testing.assert_allclose(lrs, expected, rtol=0, atol=1e-15)


def test_cosine_known_values_with_eta_min():
    """Values of torch.optim.lr_scheduler.CosineAnnealingLR (PyTorch 2.13) for eta_min = 0.01, T_max = 3, written
    out: cos(pi/3) = 1/2, so the cosine factor (1 + cos(pi t / 3)) / 2 steps through 1, 3/4, 1/4, 0, 1/4, 3/4, 1.
    The second group starts below eta_min, so its lr rises towards eta_min and falls back."""
    lrs = lr_sequence(CosineAnnealingLR(make_optimizer((0.1, 0.004)), T_max=3, eta_min=0.01), 8)
    expected = [[0.1, 0.004], [0.0775, 0.0055], [0.0325, 0.0085], [0.01, 0.01], [0.0325, 0.0085],
                [0.0775, 0.0055], [0.1, 0.004], [0.0775, 0.0055], [0.0325, 0.0085]]
    np.testing.assert_allclose(lrs, expected, rtol=0, atol=1e-15)


def test_cosine_is_chainable_like_pytorch():
    # The recursive form scales the CURRENT lr: a hand-made change between steps is carried along.
    opt = make_optimizer((1.0,))
    sched = CosineAnnealingLR(opt, T_max=4)
    sched.step()
    opt.param_groups[0]["lr"] /= 2
    sched.step()
    assert sched.get_last_lr()[0] == pytest.approx(0.25, rel=1e-14)  # half of the closed form 0.5


@pytest.mark.parametrize("T_max", [0, -3, 2.5, True])
def test_cosine_rejects_bad_t_max(T_max):
    with pytest.raises(ValueError, match="T_max"):
        CosineAnnealingLR(make_optimizer(), T_max=T_max)


# ----------------------------------------------------------------------------------------- step / multistep
@given(step_size=st.integers(1, 7), gamma=st.floats(0.05, 0.95))
def test_steplr_closed_form(step_size, gamma):
    lrs = lr_sequence(StepLR(make_optimizer((0.3, 0.01)), step_size=step_size, gamma=gamma), 30)
    for t in range(31):
        factor = gamma ** (t // step_size)
        np.testing.assert_allclose(lrs[t], [0.3 * factor, 0.01 * factor], rtol=1e-12)


def test_steplr_known_values_and_errors():
    lrs = lr_sequence(StepLR(make_optimizer((1.0,)), step_size=2, gamma=0.5), 6)[:, 0]
    np.testing.assert_array_equal(lrs, [1, 1, 0.5, 0.5, 0.25, 0.25, 0.125])
    with pytest.raises(ValueError, match="step_size"):
        StepLR(make_optimizer(), step_size=0)


@given(milestones=st.lists(st.integers(1, 25), max_size=5), gamma=st.floats(0.05, 0.95))
def test_multisteplr_closed_form(milestones, gamma):
    lrs = lr_sequence(MultiStepLR(make_optimizer((0.2,)), milestones=milestones, gamma=gamma), 30)
    ordered = sorted(milestones)
    for t in range(31):
        np.testing.assert_allclose(lrs[t, 0], 0.2 * gamma ** bisect.bisect_right(ordered, t), rtol=1e-12)


def test_multisteplr_known_values_with_unsorted_and_repeated_milestones():
    lrs = lr_sequence(MultiStepLR(make_optimizer((1.0,)), milestones=[4, 2, 4], gamma=0.5), 5)[:, 0]
    np.testing.assert_array_equal(lrs, [1, 1, 0.5, 0.5, 0.125, 0.125])
    with pytest.raises(ValueError, match="milestones"):
        MultiStepLR(make_optimizer(), milestones=[1.5])


# ----------------------------------------------------------------------------------------- plateau
def plateau_lrs(metrics, **kwargs):
    opt = make_optimizer((1.0,))
    sched = ReduceLROnPlateau(opt, **kwargs)
    out = []
    for metric in metrics:
        sched.step(metric)
        out.append(sched.get_last_lr()[0])
    return out, sched


def test_plateau_reduces_when_bad_epochs_exceed_patience_then_resets():
    # patience 2: the third non-improving value in a row reduces, and counting restarts from zero.
    lrs, sched = plateau_lrs([5, 4, 4, 4, 4, 4, 4, 4, 3, 3], patience=2, factor=0.5)
    assert lrs == [1, 1, 1, 1, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25]
    assert sched.best == 3 and sched.num_bad_epochs == 1 and sched.last_epoch == 10


def test_plateau_patience_zero_reduces_at_every_non_improvement():
    lrs, _ = plateau_lrs([1.0, 2.0, 0.5, 0.5, 0.4], patience=0, factor=0.1)
    assert lrs == pytest.approx([1, 0.1, 0.1, 0.01, 0.01], rel=1e-15)


def test_plateau_threshold_rel_vs_abs():
    # best = 10; 9.5 is an improvement by abs threshold 0.1 (9.5 < 9.9) but not by rel 0.1 (9.5 < 9.0 fails)
    rel, _ = plateau_lrs([10, 9.5, 9.5], patience=1, factor=0.5, threshold=0.1, threshold_mode="rel")
    abs_, sched = plateau_lrs([10, 9.5, 9.5], patience=1, factor=0.5, threshold=0.1, threshold_mode="abs")
    assert rel == [1, 1, 0.5]
    assert abs_ == [1, 1, 1] and sched.best == 9.5


def test_plateau_mode_max():
    lrs, sched = plateau_lrs([0.5, 0.6, 0.6, 0.55, 0.7, 0.7], mode="max", patience=1, factor=0.5)
    assert lrs == [1, 1, 1, 0.5, 0.5, 0.5]
    assert sched.best == 0.7
    rel, _ = plateau_lrs([1.0, 1.05, 1.05], mode="max", patience=0, factor=0.5, threshold=0.1)
    assert rel == [1, 0.5, 0.25]  # 1.05 is not above 1.0 * 1.1


def test_plateau_cooldown_ignores_bad_epochs():
    lrs, _ = plateau_lrs([1, 2, 2, 2, 2, 2, 2], patience=0, factor=0.5, cooldown=2)
    # reduce at t=2, then two cooldown steps count nothing, then reduce at the next bad epoch
    assert lrs == [1, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25]


def test_plateau_min_lr_and_eps():
    lrs, _ = plateau_lrs([1, 2, 2, 2, 2], patience=0, factor=0.1, min_lr=0.05)
    assert lrs == [1, 0.1, 0.05, 0.05, 0.05]
    # a reduction smaller than eps is skipped
    lrs, _ = plateau_lrs([1, 2, 2], patience=0, factor=0.5, eps=0.6)
    assert lrs == [1, 1, 1]
    opt = make_optimizer((1.0, 0.1))
    sched = ReduceLROnPlateau(opt, patience=0, factor=0.1, min_lr=[0.5, 0.0])
    sched.step(1.0)
    sched.step(1.0)
    assert sched.get_last_lr() == pytest.approx([0.5, 0.01], rel=1e-15)


def test_plateau_first_metric_is_always_the_best_so_far_and_nan_is_never_better():
    lrs, sched = plateau_lrs([1e30, float("nan"), float("nan")], patience=1, factor=0.5)
    assert lrs == [1, 1, 0.5] and sched.best == 1e30


@pytest.mark.parametrize("kwargs, match", [
    (dict(factor=1.0), "factor"), (dict(mode="avg"), "mode"), (dict(threshold_mode="pct"), "threshold_mode"),
    (dict(min_lr=[0.1, 0.2]), "min_lrs"),
])
def test_plateau_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ReduceLROnPlateau(make_optimizer(), **kwargs)


# ----------------------------------------------------------------------------------------- state dicts
SCHEDULERS = {
    "cosine": (lambda opt: CosineAnnealingLR(opt, T_max=5, eta_min=1e-3), None),
    "step": (lambda opt: StepLR(opt, step_size=3, gamma=0.3), None),
    "multistep": (lambda opt: MultiStepLR(opt, milestones=[2, 6, 6], gamma=0.5), None),
    "plateau": (lambda opt: ReduceLROnPlateau(opt, patience=1, factor=0.5, cooldown=1),
                [3, 2, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1]),
}


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_state_dict_round_trip_through_json(name):
    make, metrics = SCHEDULERS[name]

    def advance(sched, steps, offset):
        for k in range(offset, offset + steps):
            sched.optimizer.step()
            sched.step(metrics[k]) if metrics else sched.step()
        return sched.get_last_lr()

    opt = make_optimizer((0.1, 0.05), cls=optim.Adam)
    sched = make(opt)
    advance(sched, 6, 0)
    opt_state = opt.state_dict()
    saved = json.loads(json.dumps(sched.state_dict(), allow_nan=False))
    expected = [advance(sched, 1, 6 + k) for k in range(8)]

    opt2 = make_optimizer((0.7, 0.7), cls=optim.Adam)
    sched2 = make(opt2)
    opt2.load_state_dict(opt_state)
    sched2.load_state_dict(saved)
    assert [advance(sched2, 1, 6 + k) for k in range(8)] == expected
    assert sched2.state_dict() == sched.state_dict()


def test_plateau_state_dict_writes_infinity_as_a_string():
    sched = ReduceLROnPlateau(make_optimizer())
    state = sched.state_dict()
    assert state["best"] == "inf"
    json.dumps(state, allow_nan=False)
    sched2 = ReduceLROnPlateau(make_optimizer(), mode="max")
    sched2.load_state_dict(state)
    assert sched2.best == math.inf and sched2.mode == "min"


def test_load_state_dict_rejects_foreign_keys():
    sched = StepLR(make_optimizer(), step_size=2)
    state = sched.state_dict()
    with pytest.raises(KeyError, match="T_max"):
        sched.load_state_dict({**state, "T_max": 3})
    del state["gamma"]
    with pytest.raises(KeyError, match="gamma"):
        sched.load_state_dict(state)
    assert isinstance(sched, LRScheduler) and isinstance(ReduceLROnPlateau(make_optimizer()), LRScheduler)


# ----------------------------------------------------------------------------------------- PyTorch
@pytest.mark.torch
def test_cosine_and_steps_match_torch():
    torch = pytest.importorskip("torch")
    for make, tmake in [
        (lambda o: CosineAnnealingLR(o, T_max=7, eta_min=1e-3),
         lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=7, eta_min=1e-3)),
        (lambda o: StepLR(o, step_size=3, gamma=0.3), lambda o: torch.optim.lr_scheduler.StepLR(o, 3, 0.3)),
        (lambda o: MultiStepLR(o, [2, 5, 5], 0.5), lambda o: torch.optim.lr_scheduler.MultiStepLR(o, [2, 5, 5], 0.5)),
    ]:
        sched = make(make_optimizer((0.1, 0.03)))
        topt = torch.optim.SGD([{"params": [torch.zeros(1, requires_grad=True)], "lr": lr} for lr in (0.1, 0.03)])
        tsched = tmake(topt)
        for _ in range(40):
            sched.optimizer.step()
            topt.step()
            sched.step()
            tsched.step()
            assert sched.get_last_lr() == pytest.approx(tsched.get_last_lr(), rel=1e-13, abs=1e-16)


@pytest.mark.torch
def test_plateau_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    metrics = np.round(np.cumsum(rng.standard_normal(60) * 0.1) + 3, 1)
    for kwargs in [dict(), dict(patience=2, factor=0.5, cooldown=1, min_lr=1e-3),
                   dict(mode="max", patience=1, threshold=0.05, threshold_mode="abs")]:
        sched = ReduceLROnPlateau(make_optimizer((0.1,)), **kwargs)
        topt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
        tsched = torch.optim.lr_scheduler.ReduceLROnPlateau(topt, **kwargs)
        for metric in metrics:
            sched.step(float(metric))
            tsched.step(float(metric))
            assert sched.get_last_lr() == pytest.approx(tsched.get_last_lr(), rel=1e-15)
