"""minigrad.measure.effective_depth and the GSC study's training callbacks, against brute-force expansions."""
import copy
import itertools
from collections import OrderedDict
from types import SimpleNamespace

import numpy as np
import pytest

from minigrad import nn, optim
from minigrad.measure import effective_depth as ED
from minigrad.measure import gsc as G
from minigrad.measure.gsc_training import GSCMonitor, TrainingErrorPlateau, depth_epochs
from minigrad.models.mlp import gsc_mlp


def tanh_layer(d_in, d_out, rng):
    linear = nn.Linear(d_in, d_out, bias=False).double()
    linear.weight.data[...] = rng.normal(size=(d_out, d_in)) / np.sqrt(d_in)
    return nn.Sequential(OrderedDict(linear=linear, act=nn.Tanh()))


def perturbed(layers, rng, scale):
    """Copies of ``layers`` with every weight moved by ``scale`` x a Gaussian."""
    moved = copy.deepcopy(layers)
    for layer in moved:
        for p in layer.parameters():
            p.data += scale * rng.normal(size=p.data.shape)
    return moved


def jacobian(layer, x):
    """d layer(x) / dx of one point (1, d_in) as a (d_out, d_in) matrix, from the layer's own backward."""
    y = layer(x)
    rows = []
    for i in range(y.shape[1]):
        layer(x)
        e = np.zeros_like(y)
        e[0, i] = 1.0
        rows.append(layer.backward(e)[0])
    return np.array(rows)


def dot_error(outputs, labels):
    return G.dot_product_error(outputs, labels)


def test_orders_match_the_brute_force_expansion_of_the_jacobian_product():
    rng = np.random.default_rng(0)
    initial = [tanh_layer(5, 4, rng)] + [tanh_layer(4, 4, rng) for _ in range(4)]
    trained = perturbed(initial, rng, 0.3)
    x, y = rng.normal(size=(1, 5)), rng.normal(size=(1, 4))
    paths = ED.path_decomposition(trained, initial, x, y, error=dot_error)
    # explicit: J_l = I_l + R_l at the trained network's input to each layer, then all 2^4 products
    xs, h = [], x
    for layer in trained:
        xs.append(h)
        h = layer(h)
    J = [jacobian(trained[k], xs[k]) for k in range(1, 5)]
    I = [jacobian(initial[k], xs[k]) for k in range(1, 5)]
    R = [j - i for j, i in zip(J, I)]
    g1 = y[0]  # dE/df_1 of E = <y, f_1>
    v = np.zeros((5, 4))
    for choice in itertools.product((0, 1), repeat=4):  # 1 = residual Jacobian, from the error layer down
        g = g1
        for k, c in zip(range(3, -1, -1), choice):
            g = g @ (R[k] if c else I[k])
        v[sum(choice)] += g
    gradient = v.sum(0)
    assert np.allclose(gradient, g1 @ J[3] @ J[2] @ J[1] @ J[0], rtol=1e-12)
    norm = np.linalg.norm(gradient)
    assert paths.gradient_norm == pytest.approx(norm, rel=1e-10)
    assert np.allclose(paths.share, np.linalg.norm(v, axis=1) / norm, rtol=1e-9, atol=1e-14)
    tails = [np.linalg.norm(v[lam + 1:].sum(0)) / norm for lam in range(5)]
    assert np.allclose(paths.tail, tails, rtol=1e-9, atol=1e-14)
    assert paths.residual < 1e-12
    assert paths.effective_depth(0.1) == ED.effective_depth(tails, 0.1)


def test_untrained_network_has_effective_depth_zero_and_one_changed_layer_gives_order_one():
    rng = np.random.default_rng(1)
    initial = [tanh_layer(6, 6, rng) for _ in range(5)]
    x, y = rng.normal(size=(7, 6)), rng.normal(size=(7, 6))
    paths = ED.path_decomposition(copy.deepcopy(initial), initial, x, y, error=dot_error)
    assert paths.share[0] == pytest.approx(1.0) and np.all(paths.share[1:] == 0) and np.all(paths.tail == 0)
    assert paths.effective_depth(0.01) == 0
    trained = copy.deepcopy(initial)
    trained[2] = perturbed([initial[2]], rng, 0.5)[0]
    paths = ED.path_decomposition(trained, initial, x, y, error=dot_error)
    assert paths.share[1] > 0.01 and np.all(paths.share[2:] == 0)
    assert paths.residual < 1e-12


@pytest.mark.parametrize("arch", ["batch-ReLU", "layer-tanh", "SeLU"])
def test_orders_add_up_to_the_gradient_in_the_study_networks(arch):
    """Batch norm couples the points: the decomposition still adds up to d(sum E)/df_L of the trained net."""
    rng = np.random.default_rng(2)
    model = gsc_mlp(arch, depth=6, width=10, in_features=12, num_classes=3, generator=rng)
    initial = GSCMonitor.layers(model)
    trained = perturbed(initial, rng, 0.05)
    before = [p.data.copy() for layer in trained for p in layer.parameters()]
    x, t = rng.normal(size=(16, 12)).astype(np.float32), rng.integers(0, 3, 16)
    paths = ED.path_decomposition(trained, initial, x, t)
    assert paths.residual < 1e-10 and paths.share[1] > 0
    plain = [copy.deepcopy(m).double() for m in trained]  # d(sum E)/df_L by one plain backward of the whole batch
    h = x.astype(np.float64)
    for m in plain:
        h = m(h)
    g = G.log_probability_error(h, t)[1]
    for m in plain[:0:-1]:
        g = m.backward(g)
    assert paths.gradient_norm == pytest.approx(np.linalg.norm(g), rel=1e-10)
    assert all(np.array_equal(a, p.data) and not p.grad.any()
               for a, p in zip(before, (p for layer in trained for p in layer.parameters())))


def test_effective_depth_and_the_reports_reading_on_hand_made_values():
    tail = [0.5, 0.2, 0.05, 0.005, 0.0]
    assert ED.effective_depth(tail, 0.1) == 2 and ED.effective_depth(tail, 0.01) == 3
    assert ED.effective_depth(tail, 1.0) == 0 and ED.effective_depth([np.nan, 0.0], 0.1) is None
    assert ED.largest_nonnegligible_order([1.0, 0.3, 0.02, 0.001], 0.01) == 2


def test_weight_change_is_the_operator_norm_of_the_difference():
    layer = nn.Linear(2, 2, bias=True).double()
    start = copy.deepcopy(layer)
    start.weight.data[...] = 2 * np.eye(2)
    layer.weight.data[...] = start.weight.data + np.diag([3.0, -1.0])
    layer.bias.data[...] = 100.0  # biases are not weight matrices
    assert ED.weight_change([layer], [start]) == [(pytest.approx(3.0), pytest.approx(2.0))]
    seq = nn.Sequential(OrderedDict(linear=layer, act=nn.ReLU()))
    assert ED.weight_matrices(seq) == [layer.weight]


def test_depth_epochs():
    assert depth_epochs(5, 1) == [0, 1, 2, 3, 4, 5]
    assert depth_epochs(7, 3) == [0, 3, 6, 7]


def test_training_error_plateau_reduces_the_lr_after_five_epochs_without_progress():
    model = nn.Linear(2, 2)
    optimizer = optim.SGD(model.parameters(), lr=1.0)
    rule = TrainingErrorPlateau(optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.333, patience=4))
    lrs = []
    for acc in [0.5, 0.6, 0.6, 0.6, 0.6, 0.6, 0.55]:  # the error stops falling after epoch 2
        rule.on_epoch_end(None, None, {"train_acc": acc, "val_loss": 0.0})
        lrs.append(optimizer.param_groups[0]["lr"])
    assert lrs == [1.0] * 6 + [pytest.approx(0.333)]  # the 5th epoch without a lower error: x0.333
    copy_rule = TrainingErrorPlateau(optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.333, patience=4))
    copy_rule.load_state_dict(rule.state_dict())
    assert copy_rule.scheduler.num_bad_epochs == rule.scheduler.num_bad_epochs == 0


def test_monitor_measures_depth_at_the_chosen_epochs_and_leaves_the_model_alone(tmp_path):
    rng = np.random.default_rng(3)
    model = gsc_mlp("SeLU", depth=4, width=6, in_features=5, num_classes=3, generator=rng)
    x, t = rng.normal(size=(20, 5)).astype(np.float32), rng.integers(0, 3, 20)
    monitor = GSCMonitor(tmp_path, x, t, initial_layers=copy.deepcopy(GSCMonitor.layers(model)), depth_every=2)
    trainer = SimpleNamespace(model=model, epochs=3)
    monitor.on_fit_start(trainer, 1)
    values = []
    for epoch in (1, 2, 3):
        for p in model.parameters():
            p.data += 0.1 * rng.normal(size=p.data.shape).astype(np.float32)
        grads = [p.grad.copy() for p in model.parameters()]
        values.append(monitor.on_epoch_end(trainer, epoch, {}))
        assert all(np.array_equal(g, p.grad) for g, p in zip(grads, model.parameters()))
    assert [v["effective_depth"] is None for v in values] == [True, False, False]
    import json
    depth = json.loads((tmp_path / "effective_depth.json").read_text())
    change = json.loads((tmp_path / "weight_change.json").read_text())
    assert [d["epoch"] for d in depth["epochs"]] == [0, 2, 3] == [c["epoch"] for c in change["epochs"]]
    assert depth["epochs"][0]["effective_depth"] == {"0.1": 0, "0.01": 0}
    assert change["layers"] == [1, 2, 3, 4, 5] and change["epochs"][0]["norm"] == [0.0] * 5
    assert all(r > 0 for r in change["epochs"][-1]["relative"])
    restored = GSCMonitor(tmp_path, x, t, initial_layers=monitor.initial_layers)
    restored.load_state_dict(json.loads(json.dumps(monitor.state_dict())))
    assert restored.depth == monitor.depth and restored.change == monitor.change


def test_plot_panels_skips_missing_and_non_positive_points(tmp_path):
    from minigrad.plots import plot_panels
    path = plot_panels([{"lines": [{"x": [0, 1, 2, 3], "y": [1.0, None, float("nan"), 4.0], "label": "a"}],
                         "yscale": "log", "title": "t"},
                        {"lines": [{"x": [0, 1], "y": [-1.0, 2.0], "style": "--", "marker": "."}], "legend": 0}],
                       tmp_path / "sub" / "p.png", "title")
    assert path.read_bytes()[:4] == b"\x89PNG"
