"""experiments.gsc end to end: tiny runs of the command line into a tmp folder (table, CSVs, PNG, re-runs)."""
import csv
import json

import numpy as np
import pytest

from experiments import gsc as study
from minigrad.models.mlp import ARCHITECTURES, EXPLODING_IN_PAPER

TINY = ["--preset", "quick", "--datasets", "2", "--points", "64", "--depth", "10", "--no-progress"]


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gsc")
    return out, study.main(TINY + ["--out", str(out), "--threads", "1"])


def test_tiny_run_writes_table_curves_figure_and_manifest(tiny_run, capsys):
    out, code = tiny_run
    assert code == 0
    table = (out / "results.md").read_text()
    for arch in ARCHITECTURES:
        assert f"| {arch} |" in table
    rows = read_csv(out / "results.csv")
    assert [r["architecture"] for r in rows] == list(ARCHITECTURES)
    curves = read_csv(out / "gsc_curves.csv")
    assert len(curves) == 7 * 11  # layers l = 0..10 per architecture
    for r in rows:
        curve = [c for c in curves if c["architecture"] == r["architecture"]]
        assert [int(c["layer"]) for c in curve] == list(range(11))
        assert float(curve[0]["gsc"]) == 1.0
        assert float(curve[-1]["gsc"]) == pytest.approx(float(r["gsc_L"]), rel=1e-12)
        assert r["explodes_in_paper"] == str(r["architecture"] in EXPLODING_IN_PAPER)
        assert 0 <= float(curve[-1]["sign_diversity"]) <= 0.5
    png = (out / "gsc_figure1.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    manifest = json.loads((out / "manifest.json").read_text())
    assert [(r["row"], r["status"]) for r in manifest["rows"]] == [(a, "finished") for a in ARCHITECTURES]
    summary = json.loads((out / "batch-ReLU" / "summary.json").read_text())
    config = json.loads((out / "batch-ReLU" / "config.json").read_text())
    assert summary["status"] == "finished" and summary["datasets"] == 2 and summary["points"] == 128
    assert 0 < summary["cpu_seconds"] < 60 and summary["seconds"] > 0
    assert config["dtype"] == "float32" and config["depth"] == 10 and config["datasets"] == 2


def test_batch_relu_explodes_even_in_a_tiny_run(tiny_run):
    out, _ = tiny_run
    rows = {r["architecture"]: r for r in read_csv(out / "results.csv")}
    # 1.2 per layer over 10 layers: ~5x; the definition is tested in test_gsc.py
    assert float(rows["batch-ReLU"]["growth_per_layer"]) > 1.1
    assert float(rows["batch-ReLU"]["gsc_L"]) > 3 * float(rows["ReLU"]["gsc_L"])


def test_rerun_reuses_rows_and_refuses_other_settings(tiny_run, capsys):
    out, _ = tiny_run
    before = (out / "results.csv").read_text()
    capsys.readouterr()
    assert study.main(TINY + ["--out", str(out), "--threads", "1"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("reusing") == 7
    assert printed.strip().splitlines()[-1].startswith(f"Everything is in {out}/")
    assert (out / "results.csv").read_text() == before
    code = study.main([a if a != "64" else "32" for a in TINY] + ["--out", str(out), "--threads", "1"])
    assert code == 2
    assert "points" in capsys.readouterr().err


def test_worker_processes_give_the_same_numbers(tmp_path):
    args = ["--preset", "quick", "--datasets", "3", "--points", "40", "--depth", "4", "--no-progress",
            "--arch", "batch_relu", "tanh"]
    assert study.main(args + ["--out", str(tmp_path / "one"), "--threads", "1"]) == 0
    assert study.main(args + ["--out", str(tmp_path / "two"), "--threads", "2"]) == 0
    one, two = read_csv(tmp_path / "one" / "gsc_curves.csv"), read_csv(tmp_path / "two" / "gsc_curves.csv")
    assert [r["architecture"] for r in one] == ["batch-ReLU"] * 5 + ["tanh"] * 5
    for a, b in zip(one, two):
        for key in ("gsc", "pre_activation_std", "sign_diversity"):
            np.testing.assert_allclose(float(a[key]), float(b[key]), rtol=1e-12, equal_nan=True)


@pytest.mark.parametrize("argv, message", [
    (["--download"], "--download is only for --train"),
    (["--arch", "sigmoid"], "unknown MLP architecture"),
    (["--datasets", "0"], "argument --datasets: expected a positive whole number, got '0'"),
])
def test_bad_arguments(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        study.main(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_train_tiny_run_on_fake_cifar(tmp_path, capsys):
    from fake_cifar import make_fake_cifar

    data = tmp_path / "data"
    make_fake_cifar(data, "cifar10", n_train=2600, n_test=20, as_tarball=False)
    out = tmp_path / "out"
    argv = ["--train", "--data-dir", str(data), "--out", str(out), "--arch", "batch-ReLU", "SeLU", "--lr", "1e-2",
            "--epochs", "2", "--train-subset", "60", "--gsc-batch", "30", "--depth", "4", "--width", "8",
            "--batch-size", "20", "--no-progress", "--threads", "1"]
    assert study.main(argv) == 0
    row = out / "cifar10" / "batch-ReLU-lr1e-2"
    gsc_rows = read_csv(row / "gsc.csv")
    assert [int(r["epoch"]) for r in gsc_rows] == [0, 1, 2]  # initialisation, then after each epoch
    assert all(float(r["gsc_L"]) > 0 and float(r["gsc_l0"]) == 1.0 for r in gsc_rows)
    assert len(gsc_rows[0]) == 3 + 6  # epoch, gsc_L, gsc_1, and l = 0..5 (4 hidden + out.linear)
    config = json.loads((row / "config.json").read_text())
    assert config["linear_layers"] == 5 and config["factor"] == 0.333 and config["optimizer"] == "SGD"
    assert len(read_csv(row / "metrics.csv")) == 2
    table = (out / "cifar10" / "results.md").read_text()
    assert "batch-ReLU" in table and "SeLU" in table and "Best lr per architecture" in table
    assert (out / "cifar10" / "training_gsc.png").read_bytes()[:4] == b"\x89PNG"
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith(f"Everything is in {out / 'cifar10'}/")
    # Figure 3 (D, E): effective depth and weight change at epochs 0, 1, 2 (the quick preset: every epoch)
    depth = json.loads((row / "effective_depth.json").read_text())
    change = json.loads((row / "weight_change.json").read_text())
    assert [d["epoch"] for d in depth["epochs"]] == [0, 1, 2] == [c["epoch"] for c in change["epochs"]]
    assert depth["layers"] == 5 and len(depth["epochs"][-1]["share"]) == 5  # orders 0..4 (4 Jacobians)
    assert depth["epochs"][0]["effective_depth"] == {"0.1": 0, "0.01": 0}
    assert all(d["residual"] < 1e-9 for d in depth["epochs"])
    assert change["layers"] == [1, 2, 3, 4, 5] and all(n > 0 for n in change["epochs"][-1]["norm"])
    metrics = read_csv(row / "metrics.csv")
    assert all(m["effective_depth"] != "" for m in metrics)
    assert config["depth_every"] == 1 and config["depth_batch"] == 100 and config["epsilons"] == [0.1, 0.01]
    assert config["plateau_metric"] == "val_loss"  # the quick preset keeps the validation loss
    assert "Eff. depth (eps 0.1)" in table and "max ||dW||/||W0||" in table
    assert (out / "cifar10" / "training_depth.png").read_bytes()[:4] == b"\x89PNG"


def test_train_presets_report_and_full_follow_the_report_and_the_paper():
    report, full = study.TRAINING.presets["report"], study.TRAINING.presets["full"]
    assert report.lrs == (1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4) and report.epochs == 100
    assert full.lrs == (1e5, 3e4, 1e4, 3e3, 1e3, 3e2, 1e2, 3e1, 1e1, 3, 1, 3e-1, 1e-1, 3e-2, 1e-2, 3e-3, 1e-3,
                        3e-4, 1e-4, 3e-5, 1e-5)
    assert full.epochs == 500 and full.plateau_on == report.plateau_on == "train_error"
    assert full.train_subset is None and "quick" in study.TRAINING.presets


def test_train_with_the_papers_decay_rule_runs_on_the_training_error(tmp_path):
    from fake_cifar import make_fake_cifar

    data = tmp_path / "data"
    make_fake_cifar(data, "cifar10", n_train=2600, n_test=20, as_tarball=False)
    out = tmp_path / "out"
    argv = ["--train", "--data-dir", str(data), "--out", str(out), "--arch", "SeLU", "--lr", "1e-2", "--epochs", "3",
            "--train-subset", "40", "--gsc-batch", "20", "--depth-batch", "10", "--depth-every", "2", "--depth", "3",
            "--width", "6", "--batch-size", "20", "--no-progress", "--threads", "1", "--plateau-on", "train_error"]
    assert study.main(argv) == 0
    row = out / "cifar10" / "SeLU-lr1e-2"
    config = json.loads((row / "config.json").read_text())
    assert config["plateau_metric"] == "train_error" and config["depth_batch"] == 10
    depth = json.loads((row / "effective_depth.json").read_text())
    assert [d["epoch"] for d in depth["epochs"]] == [0, 2, 3]
    checkpoint = json.loads(next((row / "checkpoints").glob("latest*.json")).read_text())
    assert "lr_on_training_error" in json.dumps(checkpoint)  # the rule's state is in the checkpoint


def test_a_failing_architecture_is_recorded_and_the_others_still_reported(tmp_path, monkeypatch, capsys):
    from minigrad.measure import gsc_synthetic

    real = gsc_synthetic.measure_one

    def flaky(architecture, k, config):
        if architecture == "tanh":
            raise FloatingPointError("boom")
        return real(architecture, k, config)

    monkeypatch.setattr(gsc_synthetic, "measure_one", flaky)
    args = ["--preset", "quick", "--datasets", "1", "--points", "16", "--depth", "3", "--no-progress",
            "--threads", "1", "--arch", "ReLU", "tanh", "--out", str(tmp_path)]
    assert study.main(args) == 1
    assert "tanh failed: FloatingPointError: boom" in capsys.readouterr().err
    assert json.loads((tmp_path / "tanh" / "summary.json").read_text())["status"] == "failed"
    assert [r["architecture"] for r in read_csv(tmp_path / "results.csv")] == ["ReLU"]
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert [(r["row"], r["status"]) for r in manifest["rows"]] == [("ReLU", "finished"), ("tanh", "failed")]
    # the failed row is unfinished: a re-run asks for --resume, and --resume measures it again
    monkeypatch.setattr(gsc_synthetic, "measure_one", real)
    assert study.main(args) == 2 and "--resume" in capsys.readouterr().err
    assert study.main(args + ["--resume"]) == 0
    assert [r["architecture"] for r in read_csv(tmp_path / "results.csv")] == ["ReLU", "tanh"]
