"""Figures from synthetic run folders: non-empty PNGs, the right values, and the command line."""
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from minigrad.plots import grad_flow_values, main, plot_grad_flow, plot_training_curves
from minigrad.runs import write_json_atomic, write_metrics

REPO = Path(__file__).resolve().parent.parent


def _metrics(epochs, final_acc):
    return [{"epoch": e, "train_loss": 2.3 - e * 0.1, "train_acc": final_acc * e / epochs,
             "val_loss": 2.35 - e * 0.08, "val_acc": 0.9 * final_acc * e / epochs, "lr": 1e-3, "seconds": 1.5}
            for e in range(1, epochs + 1)]


def _layer_stats(names, scale):
    return {name: {"mean_abs": scale * (i + 1), "l2": 1.0, "var": 1.0, "max_abs": 1.0, "numel": 4}
            for i, name in enumerate(names)}


def _grad_stats(depth, epochs):
    names = ["entry.conv.weight", "entry.bn.weight", "entry.bn.bias"]
    names += [f"block{i}.conv.weight" for i in range(depth)] + ["head.linear.weight", "head.linear.bias",
                                                                 "head:grad_output"]
    return {"first_batch": _layer_stats(names, 1e-6),
            "epochs": [{"epoch": e, "mean": _layer_stats(names, 1e-4 * e), "last_batch": _layer_stats(names, 1e-3 * e)}
                       for e in range(1, epochs + 1)]}


def _run_dir(folder, depth, epochs=4, final_acc=0.6):
    folder.mkdir(parents=True)
    write_metrics(folder / "metrics.csv", _metrics(epochs, final_acc))
    write_json_atomic(folder / "grad_stats.json", _grad_stats(depth, epochs))
    return folder


def _check_png(path, min_size=(300, 300)):
    path = Path(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = imread(path)
    assert image.shape[0] >= min_size[0] and image.shape[1] >= min_size[1]
    assert image[..., :3].std() > 0.05  # not a blank canvas


def test_training_curves_png(tmp_path):
    runs = {"shallow": _run_dir(tmp_path / "a", 2), "deep": _metrics(6, 0.01)}
    written = plot_training_curves(runs, tmp_path / "fig" / "curves.png", title="two runs", pdf=True)
    assert written == [tmp_path / "fig" / "curves.png", tmp_path / "fig" / "curves.pdf"]
    _check_png(written[0])
    assert written[1].read_bytes()[:5] == b"%PDF-"


def test_grad_flow_values_pick_weights_in_forward_order():
    stats = _grad_stats(depth=2, epochs=3)
    names, values = grad_flow_values(stats, epoch="first")
    assert names == ["entry.conv", "entry.bn", "block0.conv", "block1.conv", "head.linear"]  # no bias, no ':'
    # positions in the full list: 0, 1, 3, 4, 5 -> mean_abs scale*(i+1); epoch 1 last batch scale 1e-3
    np.testing.assert_allclose(values, 1e-3 * np.array([1, 2, 4, 5, 6]))
    np.testing.assert_allclose(grad_flow_values(stats, epoch="last")[1], 3e-3 * np.array([1, 2, 4, 5, 6]))
    np.testing.assert_allclose(grad_flow_values(stats, epoch=2, which="mean")[1], 2e-4 * np.array([1, 2, 4, 5, 6]))
    np.testing.assert_allclose(grad_flow_values(stats, epoch=0)[1], 1e-6 * np.array([1, 2, 4, 5, 6]))
    names, _ = grad_flow_values(stats, param_filter=lambda n: n.endswith("bias"))
    assert names == ["entry.bn.bias", "head.linear.bias"]
    for bad, match in ((7, "epoch 7 not in"), ("middle", "epoch must be"), (True, "epoch must be")):
        with pytest.raises(ValueError, match=match):
            grad_flow_values(stats, epoch=bad)
    with pytest.raises(ValueError, match="which"):
        grad_flow_values(stats, which="median")


def test_grad_flow_png_overlays_runs_of_different_depth(tmp_path):
    runs = {"VGG-small": _run_dir(tmp_path / "small", 1), "VGG-deep": _run_dir(tmp_path / "deep", 30)}
    for epoch in ("last", 0):  # the selection itself is checked on values above
        path = plot_grad_flow(runs, tmp_path / f"flow_{epoch}.png", epoch=epoch)[0]
        _check_png(path)
    # one stats dict straight from a model (model.grad_stats), linear scale, zeros allowed
    stats = _layer_stats(["a.weight", "a.bias", "b.weight"], 0.0)
    _check_png(plot_grad_flow(stats, tmp_path / "model.png", log=False)[0], min_size=(200, 200))
    with pytest.raises(ValueError, match="no parameter passes"):
        plot_grad_flow(stats, tmp_path / "none.png", param_filter=lambda n: False)


def test_cli_redraws_figures_from_run_folders(tmp_path, capsys):
    a, b = _run_dir(tmp_path / "study" / "A-lr1e-3", 2), _run_dir(tmp_path / "study" / "B-lr1e-3", 5, epochs=2)
    assert main([str(a), str(b), "--pdf"]) == 0
    study = tmp_path / "study"  # several runs: figures go to the folder holding them
    expected = ["training_curves", "grad_flow_first", "grad_flow_last", "grad_flow_epochs"]
    for name in expected:
        _check_png(study / f"{name}.png")
        assert (study / f"{name}.pdf").stat().st_size > 1000
    assert capsys.readouterr().out.split() == [str(study / f"{n}.{ext}") for n in expected for ext in ("png", "pdf")]
    with pytest.raises(SystemExit) as info:
        main([str(tmp_path)])
    assert info.value.code == 2 and "has no metrics.csv" in capsys.readouterr().err
    # the real entry point, one run, --out
    result = subprocess.run([sys.executable, "-m", "minigrad.plots", str(a), "--out", str(tmp_path / "figs")],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    for name in expected:
        _check_png(tmp_path / "figs" / f"{name}.png")
    assert not (tmp_path / "figs" / "training_curves.pdf").exists()


def test_cli_on_a_run_that_diverged_early(tmp_path, capsys):
    early = tmp_path / "early"  # diverged in its first epoch: a header-only metrics.csv, no epoch stats
    early.mkdir()
    write_metrics(early / "metrics.csv", [])
    write_json_atomic(early / "grad_stats.json", {"first_batch": None, "epochs": []})
    late = _run_dir(tmp_path / "late", 2)
    stats = _grad_stats(2, 2)
    stats["epochs"][-1]["last_batch"]["block1.conv.weight"]["mean_abs"] = None  # an overflowed gradient
    write_json_atomic(late / "grad_stats.json", stats)
    assert main([str(early), str(late)]) == 0
    assert np.isnan(grad_flow_values(stats, epoch="last")[1][3])  # a gap in the line
    for name in ("training_curves", "grad_flow_first", "grad_flow_last"):
        _check_png(tmp_path / f"{name}.png")


def test_plots_module_is_not_imported_by_minigrad():
    code = "import sys, minigrad, minigrad.train; print('matplotlib' in sys.modules, 'minigrad.plots' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False"]


def test_plot_facets_draws_small_multiples_with_relative_and_overflowing_lines(tmp_path):
    """plot_facets: a panel per (row, column), a line per series; a line that overflows (inf) or holds None
    stops with a marker instead of failing; ``relative`` divides each line by its own first/last value."""
    from minigrad.plots import plot_facets, plot_log_panels
    points = [{"layer": l, "act": act, "init": init, "fwd": 2.0 ** l if init == "a" else (math.inf if l == 3 else 1.0),
               "bwd": None if (act, l) == ("relu", 1) else 0.5 ** l}
              for act in ("tanh", "relu") for init in ("a", "b") for l in range(1, 5)]
    rows = [{"ylabel": "forward", "lines": [("fwd", None, 0, " fwd")]},
            {"where": {"init": "a"}, "title": "a: ", "ylabel": "backward", "lines": [("bwd", "--", -1, " bwd")]}]
    written = plot_facets(points, tmp_path / "facets.png", "layer", "act", "init", rows,
                          lambda v: ("C0" if v == "a" else "C1", "-"), str, str.upper, title="t", legend_title="init")
    image = imread(written[0])
    assert written == [tmp_path / "facets.png"] and image.shape[0] > 300 and image.std() > 0.01
    empty = plot_log_panels([[{"title": "x", "ylabel": "y", "lines": []}, None]], tmp_path / "empty.png")
    assert empty[0].exists()
