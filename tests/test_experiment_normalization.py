"""The normalisation study: its measurements on models whose answer is known, and the CLI end to end on fake CIFAR."""
import csv
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

import minigrad
from minigrad import nn, optim
from minigrad.callbacks import StepCurve
from minigrad.models.small_cnn import SmallCNN
from minigrad.runs import load_config, load_metrics, load_summary
from minigrad.train import Callback, Trainer

from experiments import normalization, study
from list_loader import ListLoader

# the fake tarball is not the official file: one warning per load (DECISIONS 3), expected here
pytestmark = pytest.mark.filterwarnings("ignore::minigrad.data.CifarChecksumWarning")
REPO = Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------------------------------- running vs batch statistics
def _ce(logits, label):
    z = logits - logits.max()
    return float(np.log(np.exp(z).sum()) - z[label])


def test_batch_statistics_evaluation_by_hand():
    """One BatchNorm1d as the whole model, logits = the normalised input.

    Batches of two points (1, 0) and (0, 1): each feature takes 1 and 0, mean 0.5 and biased variance 0.25, so
    with the batch's own statistics the logits are (+a, -a) and (-a, +a), a = 0.5 / sqrt(0.25 + eps): both
    points right. With the running statistics (mean (10, -10), variance 1) the logits are x - mean:
    (-9, 10) and (-10, 11): the first point wrong, the second right.
    """
    bn = nn.BatchNorm1d(2)
    bn.running_mean[...] = [10.0, -10.0]
    bn.eval()
    x = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    y = np.array([0, 1])
    loader = ListLoader([(x, y), (x, y)])
    a = 0.5 / math.sqrt(0.25 + bn.eps)
    loss, acc, n = normalization.evaluate_batch_statistics(bn, nn.CrossEntropyLoss(), loader)
    assert n == 4 and acc == 1.0
    assert loss == pytest.approx(_ce(np.array([a, -a]), 0), rel=1e-6)
    # the running statistics and the mode are as they were: nothing was tracked
    assert bn.running_mean.tolist() == [10.0, -10.0] and bn.running_var.tolist() == [1.0, 1.0]
    assert int(bn.num_batches_tracked) == 0 and not bn.training
    loss, acc, n = minigrad.train.evaluate(bn, nn.CrossEntropyLoss(), loader, None)
    running_eps = 1 / math.sqrt(1 + bn.eps)
    assert acc == 0.5
    assert loss == pytest.approx((_ce(np.array([-9.0, 10.0]) * running_eps, 0) +
                                  _ce(np.array([-10.0, 11.0]) * running_eps, 1)) / 2, rel=1e-6)
    bn.train()
    normalization.evaluate_batch_statistics(bn, nn.CrossEntropyLoss(), loader)
    assert bn.training and int(bn.num_batches_tracked) == 0


def test_batch_statistics_of_a_large_batch_match_a_model_normalised_by_hand():
    """SmallCNN with BN, one evaluation batch: train-mode logits equal eval-mode logits once the running
    statistics are set to that batch's own (biased) statistics, layer by layer; the model is left untouched."""
    rng = np.random.default_rng(0)
    minigrad.manual_seed(0)
    model = SmallCNN("batch", widths=(4, 8, 8)).double()
    x = rng.standard_normal((6, 3, 16, 16))
    y = np.arange(6) % 10
    before = model.state_dict()
    model.eval()
    loss, acc, _ = normalization.evaluate_batch_statistics(model, nn.CrossEntropyLoss(), ListLoader([(x, y)]))
    after = model.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before) and not model.training

    h, logits = x, None
    for name, stage in model.named_children():  # set each BN's running stats to its input's batch statistics
        if name == "head":
            logits = stage(h)
            break
        c = stage.conv(h)
        stage.norm.running_mean[...] = c.mean(axis=(0, 2, 3))
        stage.norm.running_var[...] = c.var(axis=(0, 2, 3))
        h = stage.pool(stage.act(stage.norm(c))) if "pool" in stage._modules else stage.act(stage.norm(c))
    expected_loss = np.mean([_ce(logits[i], y[i]) for i in range(6)])
    assert loss == pytest.approx(expected_loss, rel=1e-9)
    assert acc == np.mean(np.argmax(logits, axis=1) == y)


def test_batch_statistics_callback_adds_columns_and_changes_nothing(tmp_path):
    runs = {}
    for name, callbacks in (("plain", []), ("with", [normalization.BatchStatisticsEval({"bs": _loader(8, 4)})])):
        runs[name] = _fit(tmp_path / name, "batch", callbacks)
    plain, with_cb = load_metrics(runs["plain"]), load_metrics(runs["with"])
    assert set(with_cb[0]) - set(plain[0]) == {"val_loss_bs", "val_acc_bs"}
    for a, b in zip(plain, with_cb):
        assert all(a[k] == b[k] for k in ("train_loss", "train_acc", "val_loss", "val_acc"))


# ----------------------------------------------------------------------------------------- the validation curve
def _loader(n, batch, seed=0, shuffle=False):
    from minigrad.data import BatchLoader
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 3, 8, 8), dtype=np.uint8)
    labels = np.arange(n) % 3
    images[labels == 1, 0] //= 4  # something to learn
    return BatchLoader(images, labels, batch, shuffle=shuffle, mean=[128] * 3, std=[64] * 3)


class LossLog(Callback):
    state_key = "loss_log"

    def __init__(self):
        self.losses = []

    def on_batch_end(self, trainer, epoch, batch, logs):
        self.losses.append((logs["step"], logs["loss"], logs["batch_size"]))


def _fit(run_dir, norm, callbacks, epochs=2, resume=False):
    minigrad.manual_seed(0)
    model = SmallCNN(norm, num_classes=3, widths=(2, 4, 4))
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    trainer = Trainer(model, nn.CrossEntropyLoss(), opt, _loader(20, 4, shuffle=True), _loader(9, 4, seed=1),
                      epochs=epochs, run_dir=run_dir, seed=3, progress=False, plots=False, log=lambda s: None,
                      callbacks=callbacks)
    trainer.fit(resume=resume)
    return run_dir


def test_validation_curve_points_and_training_loss_by_hand(tmp_path):
    log = LossLog()
    curve = StepCurve(tmp_path / "run" / "curve.csv", _loader(9, 4, seed=1), every=2)
    _fit(tmp_path / "run", "batch", [curve, log])
    points = normalization.load_curve(tmp_path / "run")
    # 5 steps per epoch, 2 epochs: step 0, every 2nd step, and the last one (10)
    assert [p["step"] for p in points] == [0, 2, 4, 6, 8, 10]
    assert [p["epoch"] for p in points] == [0, 1, 1, 2, 2, 2]
    assert [p["images"] for p in points] == [0, 8, 16, 24, 32, 40]
    assert points[0]["train_loss"] is None
    for previous, point in zip(points, points[1:]):  # the mean training loss of the steps in between
        losses = [(loss, n) for step, loss, n in log.losses if previous["step"] < step <= point["step"]]
        assert point["train_loss"] == pytest.approx(sum(l * n for l, n in losses) / sum(n for _, n in losses))
    metrics = load_metrics(tmp_path / "run")
    assert [m["steps"] for m in metrics] == [5, 10]
    # the last point is the model of the last epoch, on the curve's loader: the same as the Trainer's validation
    assert points[-1]["val_acc"] == metrics[-1]["val_acc"] and points[-1]["val_loss"] == pytest.approx(metrics[-1]["val_loss"])


def test_validation_curve_changes_no_training_number(tmp_path):
    plain = load_metrics(_fit(tmp_path / "plain", "batch", []))
    curve = StepCurve(tmp_path / "with" / "curve.csv", _loader(9, 4, seed=1), every=1)
    with_curve = load_metrics(_fit(tmp_path / "with", "batch", [curve]))
    for a, b in zip(plain, with_curve):
        assert all(a[k] == b[k] for k in ("train_loss", "train_acc", "val_loss", "val_acc"))


class Crash(Callback):
    """Raises at one optimiser step, as a killed process would stop there."""

    def __init__(self, step):
        self.step = step

    def on_batch_end(self, trainer, epoch, batch, logs):
        if logs["step"] == self.step:
            raise KeyboardInterrupt("killed")


def test_validation_curve_resumes_as_an_uninterrupted_run(tmp_path):
    def curve(folder):
        return StepCurve(folder / "curve.csv", _loader(9, 4, seed=1), every=3)
    _fit(tmp_path / "whole", "group", [curve(tmp_path / "whole")], epochs=3)
    with pytest.raises(KeyboardInterrupt):  # killed in epoch 2, after a curve point (step 6) and before the next
        _fit(tmp_path / "parts", "group", [curve(tmp_path / "parts"), Crash(8)], epochs=3)
    assert normalization.load_curve(tmp_path / "parts")[-1]["step"] == 3  # the file as of the last epoch end
    _fit(tmp_path / "parts", "group", [curve(tmp_path / "parts")], epochs=3, resume=True)
    assert (tmp_path / "whole" / "curve.csv").read_text() == (tmp_path / "parts" / "curve.csv").read_text()


def test_validation_curve_rejects_a_bad_interval(tmp_path):
    with pytest.raises(ValueError, match="every must be a positive int"):
        StepCurve(tmp_path / "c.csv", _loader(4, 2), every=0)


# ----------------------------------------------------------------------------------------- findings
def test_noise_floor_and_first_step():
    assert normalization.accuracy_noise(0.5, 2500) == pytest.approx(math.sqrt(2 * 0.25 / 2500))
    curve = [{"step": 0, "val_acc": 0.9}, {"step": 5, "val_acc": 0.3}, {"step": 10, "val_acc": 0.5},
             {"step": 15, "val_acc": 0.6}]
    assert normalization.first_step_reaching(curve, 0.5)["step"] == 10  # step 0 never counts
    assert normalization.first_step_reaching(curve, 0.7) is None


def _record(norm, batch, val_acc, **more):
    return {"row": f"{norm}-bs{batch}", "norm": norm, "batch_size": batch, "val_acc": val_acc, "val_err": 1 - val_acc,
            "status": "finished", "n_val": 2500, "val_acc_batch_stats": None, "val_acc_batch_stats_large": None, **more}


def test_findings_say_which_claims_showed():
    # noise floor near 50% on 2,500 images: 2 * sqrt(2 * 0.25 / 2500) = 2.8 points
    records = [_record("none", 32, 0.40), _record("batch", 32, 0.55), _record("group", 32, 0.52),
               _record("batch", 4, 0.42, val_acc_batch_stats=0.47, val_acc_batch_stats_large=0.30),
               _record("group", 4, 0.51)]
    notes = "\n".join(normalization.findings(records, {}))
    assert "higher accuracy showed" in notes
    assert "BN degrades at the small batch: showed" in notes
    assert "flat within the noise floor, as Wu & He" in notes
    assert "GN better than BN at the small batch: showed" in notes
    assert "batches of 4: 47.00%" in notes and "batches of 500: 30.00%" in notes
    assert "(b) Validation error at batch 32: BatchNorm 45.0% < GroupNorm 48.0% (Wu & He at 32:" in notes
    records = [_record("batch", 32, 0.55), _record("batch", 4, 0.54), _record("group", 32, 0.52),
               _record("group", 4, 0.45)]
    notes = "\n".join(normalization.findings(records, {}))
    assert "no degradation of BN beyond the noise floor: did not show" in notes and "not flat" in notes
    assert "GN not better than BN beyond the noise floor: did not show" in notes


# ----------------------------------------------------------------------------------------- the CLI
TINY = ["--epochs", "2", "--train-subset", "40", "--val-size", "20", "--test-subset", "20", "--no-progress",
        "--threads", "1"]


def _run(args, capsys):
    code = normalization.main(args)
    return code, capsys.readouterr()


def test_end_to_end_then_reused_then_refused(fake_cifar10, tmp_path, capsys):
    out = tmp_path / "study"
    args = ["--data-dir", str(fake_cifar10), "--out", str(out), "--norm", "none", "batch", "group",
            "--batch-sizes", "8", "2"] + TINY
    code, captured = _run(args, capsys)
    assert code == 0, captured.err
    rows = [f"{n}-bs{b}" for n in ("none", "batch", "group") for b in (8, 2)]
    with open(out / "results.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [f"{r['norm']}-bs{r['batch_size']}" for r in table] == rows
    for column in ("norm", "batch_size", "val_acc", "train_loss", "steps", "test_acc", "val_acc_batch_stats",
                   "val_acc_batch_stats_large", "seconds", "status"):
        assert column in table[0], column
    for r in table:
        batch = int(r["batch_size"])
        assert int(r["steps"]) == 2 * math.ceil(40 / batch) and r["status"] == "finished"
        assert float(r["lr"]) == pytest.approx(0.025 * batch / 32)
        assert (r["val_acc_batch_stats"] != "") == (r["norm"] == "batch")
        folder = out / f"{r['norm']}-bs{batch}"
        assert load_summary(folder)["status"] == "finished"
        points = normalization.load_curve(folder)
        assert points[0]["step"] == 0 and points[-1]["step"] == int(r["steps"])
        assert (folder / "accuracy_vs_iterations.png").read_bytes()[:4] == b"\x89PNG"
    for figure in ("accuracy_vs_iterations.png", "error_vs_batch_size.png", "running_vs_batch_stats.png"):
        assert (out / figure).read_bytes()[:4] == b"\x89PNG", figure
    markdown = (out / "results.md").read_text()
    assert "(a) Batch 8" in markdown and "(b) BatchNorm validation error" in markdown and "(c) BN trained at batch 2" in markdown
    assert [r["row"] for r in json.loads((out / "manifest.json").read_text())["rows"]] == rows

    # a second run over the same folder reuses every row and rebuilds the table
    before = (out / "batch-bs2" / "summary.json").stat().st_mtime_ns
    code, captured = _run(args, capsys)
    assert code == 0 and captured.out.count("reusing") == 6
    assert (out / "batch-bs2" / "summary.json").stat().st_mtime_ns == before
    # other settings over the same folder stop, naming the setting
    code, captured = _run(args + ["--base-lr", "0.1"], capsys)
    assert code == 2 and "base_lr" in captured.err


def test_rows_list_and_print_commands(capsys, tmp_path):
    code, captured = _run(["--list"], capsys)
    assert code == 0
    assert [line.strip() for line in captured.out.splitlines()[1:]] == ["none-bs32", "batch-bs32", "group-bs32",
                                                                      "batch-bs4", "group-bs4"]
    code, captured = _run(["--preset", "full", "--list"], capsys)
    assert code == 0 and len(captured.out.splitlines()) == 1 + 25 and "instance-bs2" in captured.out
    code, captured = _run(["--norm", "layer", "--list"], capsys)  # one flag alone: the preset's batch sizes
    assert [line.strip() for line in captured.out.splitlines()[1:]] == ["layer-bs32", "layer-bs4"]
    code, captured = _run(["--print-commands", "--out", str(tmp_path)], capsys)
    lines = captured.out.strip().splitlines()
    assert code == 0 and len(lines) == 5
    assert "--norm batch --batch-sizes 4" in lines[3] and all("--resume" in line for line in lines)


def test_row_config_scales_the_learning_rate(capsys):
    args = study.parse_args(normalization.STUDY, ["--norm", "batch", "--batch-sizes", "64", "2"])[1]
    configs = dict(normalization.STUDY.rows(args))
    assert configs["batch-bs64"]["lr"] == 0.05 and configs["batch-bs2"]["lr"] == 0.025 / 16
    args = study.parse_args(normalization.STUDY, ["--batch-sizes", "2", "--lr-scaling", "none", "--base-lr", "0.01"])[1]
    assert {c["lr"] for _, c in normalization.STUDY.rows(args)} == {0.01}
    assert configs["batch-bs2"]["epochs"] == 3 and configs["batch-bs2"]["train_subset"] == 10000


@pytest.mark.parametrize("argv, words", [
    (["--norm", "weight"], "argument --norm: invalid choice: 'weight'"),
    (["--batch-sizes", "0"], "argument --batch-sizes"),
    (["--batch-sizes", "four"], "argument --batch-sizes"),
    (["--base-lr", "-1"], "argument --base-lr"),
    (["--base-lr", "nan"], "argument --base-lr"),
    (["--lr-scaling", "sqrt"], "argument --lr-scaling"),
    (["--groups", "0"], "argument --groups"),
    (["--epochs", "0"], "argument --epochs"),
    (["--only", "batch-bs8"], "no row named batch-bs8"),
    (["--preset", "huge"], "argument --preset"),
])
def test_bad_flags_are_argparse_errors(argv, words, capsys):
    with pytest.raises(SystemExit) as info:
        normalization.main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2 and words in err and "Traceback" not in err, err


def test_missing_data_stops_before_any_row(tmp_path, capsys, monkeypatch):
    from minigrad.data import cifar
    monkeypatch.setattr(cifar, "repo_root", lambda: tmp_path / "no-repo")
    monkeypatch.delenv("MINIGRAD_DATA", raising=False)
    code, captured = _run(["--data-dir", str(tmp_path / "empty"), "--out", str(tmp_path / "o")] + TINY, capsys)
    assert code == 2 and "--download" in captured.err and not (tmp_path / "o" / "none-bs32").exists()


def test_local_launcher_then_collect(fake_cifar10, tmp_path, capsys, monkeypatch):
    pytest.importorskip("submitit", reason='the launcher needs submitit: pip install -e ".[cluster]"')
    path = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", str(REPO) + (os.pathsep + path if path else ""))
    out = tmp_path / "jobs"
    args = ["--data-dir", str(fake_cifar10), "--out", str(out), "--norm", "batch", "group", "--batch-sizes", "4"] + TINY
    code, captured = _run(args + ["--launcher", "local", "--cpus-per-job", "1", "--max-parallel", "2"], capsys)
    assert code == 0, captured.err
    for row in ("batch-bs4", "group-bs4"):
        assert load_summary(out / row)["status"] == "finished" and load_config(out / row)["norm"] == row.split("-")[0]
    table = tmp_path / "table"
    code, captured = _run(["--collect", str(out), "--out", str(table)], capsys)
    assert code == 0, captured.err
    with open(table / "results.csv", newline="") as f:
        assert [(r["norm"], r["batch_size"]) for r in csv.DictReader(f)] == [("batch", "4"), ("group", "4")]
    assert (table / "error_vs_batch_size.png").is_file() and (table / "running_vs_batch_stats.png").is_file()
