"""``python -m experiments.init`` end to end on tiny sizes: files, table, figures, re-runs, training rows."""
import csv
import json
import math

import numba
import pytest
from threadpoolctl import threadpool_limits

from experiments import init as cli
from fake_cifar import make_fake_cifar
from minigrad.data import cifar

TINY = ["--depth", "4", "--width", "32", "--batch", "32", "--activations", "relu", "tanh",
        "--inits", "he_normal", "normal_0.01", "normal_1", "--patterns", "--input-scales", "--threads", "1",
        "--no-progress"]  # part 1 only: parts 2 and 3 have their own test
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def _restore_threads():
    """The CLI sets the process's thread counts (--threads 1); give the next test what it had."""
    before = numba.get_num_threads()
    with threadpool_limits():
        yield
    numba.set_num_threads(before)


def _csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _run(out, *extra):
    return cli.main(TINY + ["--out", str(out), *extra])


def test_tiny_run_writes_table_csv_figures_and_says_where(tmp_path, capsys):
    out = tmp_path / "init"
    assert _run(out) == 0
    printed = capsys.readouterr().out
    assert printed.strip().splitlines()[-1].startswith(f"Everything is in {out}/")
    for name in ("results.md", "results.csv", "curves.csv", "manifest.json", "forward.png", "backward.png"):
        assert (out / name).exists(), name
    for name in ("forward.png", "backward.png"):
        data = (out / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 20_000  # a real, drawn figure
    assert not (out / "training.png").exists()

    rows = {(r["activation"], r["init"]): r for r in _csv(out / "results.csv")}
    assert len(rows) == 6
    assert rows[("ReLU", "He normal")]["fwd_verdict"] == rows[("ReLU", "He normal")]["bwd_verdict"] == "stable"
    assert float(rows[("ReLU", "He normal")]["fwd_theory"]) == pytest.approx(1.0)
    assert rows[("ReLU", "N(0, 0.01²)")]["fwd_verdict"] == "vanishing"
    assert rows[("ReLU", "N(0, 1)")]["bwd_verdict"] == "exploding"
    assert float(rows[("tanh", "N(0, 1)")]["fwd_theory"]) == pytest.approx(32.0)  # n Var(w) c = 32 * 1 * 1

    table = (out / "results.md").read_text()
    assert table.startswith("# Initialisation study") and "| equal 32 | ReLU | He normal | x1 | 1 |" in table
    assert "- ReLU: stable both ways with He normal." in table

    curves = _csv(out / "curves.csv")
    assert len(curves) == 6 * 4
    assert {c["layer"] for c in curves} == {"1", "2", "3", "4"}
    he = [c for c in curves if c["activation"] == "relu" and c["init"] == "he_normal"]
    assert all(float(c["forward_var"]) > 0 for c in he)

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["study"] == "init" and manifest["preset"] == "quick"
    assert [r["status"] for r in manifest["rows"]] == ["finished"] * 6
    row = out / "relu-he_normal"
    config = json.loads((row / "config.json").read_text())
    assert (config["activation"], config["init"], config["depth"], config["width"], config["seed"]) == \
        ("relu", "he_normal", 4, 32, 0)
    summary = json.loads((row / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["forward"]["theory_factor"] == pytest.approx(1.0)
    assert len(_csv(row / "curves.csv")) == 4


def test_deterministic_with_a_seed(tmp_path):
    args = ["--activations", "relu", "--inits", "he_uniform", "--no-figures"]
    assert _run(tmp_path / "a", *args) == 0 and _run(tmp_path / "b", *args) == 0
    assert _run(tmp_path / "c", *args, "--seed", "1") == 0
    curves = {k: (tmp_path / k / "curves.csv").read_text() for k in "abc"}
    assert curves["a"] == curves["b"] and curves["a"] != curves["c"]


def test_rerun_reuses_rows_and_refuses_other_settings(tmp_path, capsys):
    out = tmp_path / "init"
    assert _run(out, "--no-figures") == 0
    assert not (out / "forward.png").exists()
    summary = (out / "relu-he_normal" / "summary.json").read_text()
    (out / "results.md").unlink()
    assert _run(out, "--no-figures") == 0  # finished rows are reused, the table rebuilt
    assert (out / "relu-he_normal" / "summary.json").read_text() == summary
    assert (out / "results.md").exists()
    capsys.readouterr()
    assert cli.main(TINY + ["--out", str(out), "--width", "16"]) == 2
    err = capsys.readouterr().err
    assert "width: saved 32, given 16" in err and "another --out" in err
    # a row that did not finish needs --resume
    (out / "tanh-he_normal" / "summary.json").write_text('{"status": "running"}')
    assert _run(out, "--no-figures") == 2
    assert "--resume" in capsys.readouterr().err
    assert _run(out, "--resume", "--no-figures") == 0
    assert json.loads((out / "tanh-he_normal" / "summary.json").read_text())["status"] == "finished"


@pytest.mark.parametrize("argv, message", [(["--depth", "1"], "--depth must be >= 2"),
                                           (["--threshold", "0.5"], "--threshold must be > 1")])
def test_bad_settings_stop_with_a_message(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as info:
        cli.main(["--out", str(tmp_path / "x"), *argv])
    assert info.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_list_prints_rows_and_runs_nothing(tmp_path, capsys):
    assert cli.main(["--list", "--train", "--out", str(tmp_path / "x")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("preset quick:") and len(lines) == 1 + 2 * 28 + 24 + 9
    assert "  relu-he_normal" in lines and "  train-relu-he_normal-lr1e-2" in lines
    assert "  sigmoid-xavier_normal" in lines
    assert "  pyramid-relu-fan_avg" in lines and "  alternating-linear-fan_out" in lines
    assert "  equal-tanh-fan_in-x0.1" in lines and "  equal-sigmoid-fan_in-x10" in lines
    assert not (tmp_path / "x").exists()


def test_train_without_data_stops_at_once(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cifar, "repo_root", lambda: tmp_path / "repo")  # hide <repo>/data and ../shared/data
    monkeypatch.delenv("MINIGRAD_DATA", raising=False)
    out = tmp_path / "init"
    assert _run(out, "--train", "--data-dir", str(tmp_path / "empty")) == 2
    err = capsys.readouterr().err
    assert "cifar-10-python.tar.gz" in err and "--download" in err
    assert not out.exists()  # nothing measured, nothing written


@pytest.fixture(scope="module")
def fake_data(tmp_path_factory):
    """2,600 fake training images: the fixed 2,500-image validation split plus 100 to train on."""
    return make_fake_cifar(tmp_path_factory.mktemp("cifar"), n_train=2600, n_test=10, as_tarball=False).parent


def test_train_rows_end_to_end_on_fake_cifar(tmp_path, fake_data, monkeypatch):
    """He trains; N(0, 1) over 60 ReLU layers of width 64 (x32 variance per layer) overflows float32: diverged."""
    monkeypatch.setattr(cifar, "repo_root", lambda: tmp_path / "repo")
    out = tmp_path / "init"
    argv = ["--depth", "60", "--width", "64", "--batch", "16", "--activations", "relu", "--inits", "he_normal",
            "normal_1", "--patterns", "--input-scales", "--train", "--data-dir", str(fake_data),
            "--train-subset", "40", "--train-epochs", "2",
            "--train-batch", "20", "--threads", "1", "--no-progress", "--out", str(out)]
    assert cli.main(argv) == 0  # a diverged row is a result, not a failure
    he, normal = (out / f"train-relu-{init}-lr1e-2" for init in ("he_normal", "normal_1"))
    summary = json.loads((he / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["steps"] == 4
    assert (summary["activation"], summary["init"]) == ("relu", "he_normal")
    config = json.loads((he / "config.json").read_text())
    assert (config["optimizer"], config["lr"], config["train_subset"], config["epochs"]) == ("sgd", 0.01, 40, 2)
    assert len(_csv(he / "metrics.csv")) == 2
    signal = _csv(he / "signal.csv")
    assert [r["phase"] for r in signal] == ["init"] * 60 + ["trained"] * 60
    assert summary["signal_trained"]["backward_ratio"] > 0
    assert not (he / "checkpoints").exists()  # resume-only files go once the row is finished
    diverged = json.loads((normal / "summary.json").read_text())
    assert diverged["status"] == "diverged" and diverged["diverged"]["epoch"] == 1
    assert {r["phase"] for r in _csv(normal / "signal.csv")} == {"init"}
    assert (out / "training.png").read_bytes().startswith(PNG_MAGIC)
    table = (out / "results.md").read_text()
    assert "| training | train loss | val acc % | Var(g_1)/Var(g_L) trained |" in table
    assert "| diverged (epoch 1, batch 1) |" in table
    manifest = json.loads((out / "manifest.json").read_text())
    assert [r["status"] for r in manifest["rows"]] == ["finished", "finished", "finished", "diverged"]
    summaries = {p: p.read_text() for p in out.glob("*/summary.json")}
    assert cli.main(argv + ["--no-figures"]) == 0  # everything reused, nothing retrained
    assert {p: p.read_text() for p in out.glob("*/summary.json")} == summaries


def test_widths_and_input_scale_rows_build_their_table_and_figures(tmp_path):
    """Parts 2 and 3 on a tiny net: the rules' theory columns are the exact n Var(w) c of the widths, the
    input-scale rows keep ReLU's gradient and scale its forward signal, and widths.png / input_scale.png are
    drawn."""
    out = tmp_path / "init"
    argv = ["--depth", "6", "--width", "32", "--batch", "32", "--activations", "relu", "--inits", "he_normal",
            "--rule-activations", "linear", "relu", "--threads", "1", "--no-progress", "--out", str(out)]
    assert cli.main(argv) == 0
    table = {(r["pattern"], r["activation"], r["init"], r["input"]): r for r in _csv(out / "results.csv")}
    assert len(table) == 1 + 2 * 2 * 3 + 3
    config = json.loads((out / "pyramid-linear-fan_in" / "config.json").read_text())
    assert config["widths"] == [round(256 * (8 / 256) ** (k / 6)) for k in range(7)] and config["kind"] == "rule"
    pyramid = config["widths"]
    fan_in = table[("pyramid 256->8", "linear", "k/n (fan-in)", "x1")]
    assert float(fan_in["fwd_theory"]) == pytest.approx(1.0)
    # backward theory of k/n: the geometric mean of m/n over layers 2..L
    ratios = [m / n for n, m in zip(pyramid[1:-1], pyramid[2:])]
    assert float(fan_in["bwd_theory"]) == pytest.approx(math.prod(ratios) ** (1 / len(ratios)))
    fan_out = table[("pyramid 256->8", "linear", "k/m (fan-out)", "x1")]
    assert float(fan_out["bwd_theory"]) == pytest.approx(1.0)
    assert float(fan_out["fwd_theory"]) == pytest.approx(math.prod(1 / r for r in ratios) ** (1 / len(ratios)))
    alternating = table[("alternating 64/16", "ReLU", "2k/(n+m) (compromise)", "x1")]
    # compromise on alternating widths: forward x backward = 4nm/(n+m)^2 = 0.64 per layer, exactly
    assert float(alternating["fwd_theory"]) * float(alternating["bwd_theory"]) == pytest.approx(0.64)
    assert {r["kept"] for r in table.values()} <= {"both", "forward", "backward", "neither"}
    relu = {s: table[("equal 32", "ReLU", "k/n (fan-in)", s)] for s in ("x0.1", "x1", "x10")}
    assert relu["x0.1"]["bwd_ratio"] == relu["x1"]["bwd_ratio"] == relu["x10"]["bwd_ratio"]  # homogeneous
    summaries = {s: json.loads((out / f"equal-relu-fan_in-{s}" / "summary.json").read_text()) for s in relu}
    assert summaries["x10"]["ends"]["forward_first"] == pytest.approx(100 * summaries["x1"]["ends"]["forward_first"])
    assert summaries["x10"]["ends"]["grad_first"] == pytest.approx(summaries["x0.1"]["ends"]["grad_first"])
    for name in ("widths.png", "input_scale.png"):
        assert (out / name).read_bytes().startswith(PNG_MAGIC) and (out / name).stat().st_size > 20_000
    md = (out / "results.md").read_text()
    assert "pyramid 256->8, within x10" in md and "Input scale" in md
    curves = _csv(out / "curves.csv")
    assert {c["kind"] for c in curves} == {"signal", "rule", "scale"} and len(curves) == 6 * len(table)


def test_launcher_local_then_collect_builds_the_table(tmp_path):
    """--launcher local runs the rows as jobs; --collect rebuilds the same table from the folders."""
    pytest.importorskip("submitit")
    out = tmp_path / "init"
    argv = ["--depth", "3", "--width", "16", "--batch", "8", "--activations", "relu", "--inits", "he_normal",
            "--patterns", "alternating", "--rule-activations", "relu", "--input-scales", "--threads", "1",
            "--no-progress", "--no-figures"]
    assert cli.main(argv + ["--launcher", "local", "--out", str(out)]) == 0
    table = (out / "results.csv").read_text()
    (out / "results.csv").unlink()
    assert cli.main(argv + ["--collect", str(out), "--out", str(out)]) == 0
    assert (out / "results.csv").read_text() == table and len(table.splitlines()) == 1 + 1 + 3
