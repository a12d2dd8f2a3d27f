"""The degradation study: its schedule, curve and findings on known answers, and the CLI end to end on fake CIFAR."""
import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest

import minigrad
from minigrad import nn, optim
from minigrad.callbacks import StepCurve
from minigrad.runs import load_config, load_metrics, load_summary
from minigrad.train import Trainer

from experiments import degradation
from list_loader import ListLoader

pytestmark = pytest.mark.filterwarnings("ignore::minigrad.data.CifarChecksumWarning")
REPO = Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------------------------------- schedule and curve
def test_paper_schedule_warmup_and_milestones():
    opt = optim.SGD([nn.Parameter(np.zeros(1))], lr=0.1)
    schedule = degradation.PaperSchedule(opt, milestones=[5, 8], gamma=0.1, warmup_steps=2, warmup_lr=0.01)
    lrs = [opt.param_groups[0]["lr"]]
    for _ in range(9):
        opt.step()
        schedule.step()
        lrs.append(opt.param_groups[0]["lr"])
    np.testing.assert_allclose(lrs, [0.01, 0.01, 0.1, 0.1, 0.1, 0.01, 0.01, 0.01, 0.001, 0.001])


def _fit(folder, callbacks):
    rng = np.random.default_rng(0)
    batches = [(rng.standard_normal((4, 3)).astype(np.float32), np.array([0, 1, 2, 0])) for _ in range(3)]
    minigrad.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 3))
    trainer = Trainer(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.5), ListLoader(batches),
                      ListLoader(batches[:1]), epochs=2, run_dir=folder, progress=False, log=lambda s: None,
                      plots=False, callbacks=callbacks)
    trainer.fit()
    return folder


def test_error_curve_windows_by_hand_and_changes_no_training_number(tmp_path):
    """Points at steps 0, 2, 4 and 6 (the last); each window's loss/error is the mean of its batches'."""
    test = ListLoader([(np.eye(3, dtype=np.float32), np.array([0, 1, 2]))])
    logged = []

    class Spy(minigrad.train.Callback):
        def on_batch_end(self, trainer, epoch, batch, logs):
            logged.append((logs["loss"], logs["batch_size"] - logs["correct"]))

    folder = _fit(tmp_path / "with", [Spy(), StepCurve(tmp_path / "with" / "curve.csv", test, 2, split="test")])
    plain = _fit(tmp_path / "plain", [])
    points = degradation.load_curve(folder)
    assert [p["step"] for p in points] == [0, 2, 4, 6] and points[0]["train_loss"] is None
    for k, p in enumerate(points[1:]):
        window = logged[2 * k:2 * k + 2]
        assert p["train_loss"] == pytest.approx(np.mean([l for l, _ in window]))
        assert p["train_err"] == pytest.approx(sum(w for _, w in window) / 8)
    assert 0 <= points[-1]["test_err"] <= 1
    for a, b in zip(load_metrics(folder), load_metrics(plain)):
        assert all(a[k] == b[k] for k in ("train_loss", "train_acc", "val_loss", "val_acc"))


# ----------------------------------------------------------------------------------------- findings
def _record(residual, depth, loss, test_err=0.5):
    return {"row": f"{'resnet' if residual else 'plain'}-{depth}", "residual": residual, "depth": depth,
            "train_loss": loss, "test_err": test_err, "status": "finished", "steps": 140,
            "paper_test_err": degradation.PAPER_TEST_ERROR[depth] / 100 if residual else None}


def test_findings_say_plainly_whether_the_claims_showed():
    showed = degradation.STUDY.findings([_record(False, 20, 1.5, 0.4), _record(False, 56, 1.8, 0.5),
                                         _record(True, 20, 1.4), _record(True, 56, 1.3)], [])
    text = "\n".join(showed)
    assert "the degradation showed" in text and "residual learning's fix showed" in text
    assert "and on test error" in text and "resnet-56 50.00% (paper 6.97%)" in text
    absent = "\n".join(degradation.STUDY.findings([_record(False, 20, 1.5), _record(False, 56, 1.4),
                                                   _record(True, 20, 1.4), _record(True, 56, 1.6)], []))
    assert "the degradation did NOT show at this budget" in absent
    assert "residual learning's fix did NOT show at this budget" in absent


# ----------------------------------------------------------------------------------------- the CLI
TINY = ["--depths", "8", "14", "--epochs", "2", "--train-subset", "40", "--val-size", "20", "--test-subset", "20",
        "--no-progress", "--threads", "1"]


def _run(args, capsys):
    code = degradation.main(args)
    return code, capsys.readouterr()


def test_end_to_end_then_reused_then_refused(fake_cifar10, tmp_path, capsys):
    out = tmp_path / "study"
    args = ["--data-dir", str(fake_cifar10), "--out", str(out)] + TINY
    code, captured = _run(args, capsys)
    assert code == 0, captured.err
    rows = ["plain-8", "plain-14", "resnet-8", "resnet-14"]
    with open(out / "results.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [r["model"] for r in table] == rows
    for column in ("model", "depth", "residual", "train_loss", "train_acc", "val_acc", "test_acc", "test_err"):
        assert column in table[0], column
    for r in table:
        folder = out / r["model"]
        assert r["status"] == "finished" and r["residual"] == str(r["model"].startswith("resnet"))
        assert load_config(folder)["depth"] == int(r["depth"]) and int(r["steps"]) == 2  # 40 images, batch 128
        assert [p["step"] for p in degradation.load_curve(folder)] == [0, 2]
        assert (folder / "error_curves.png").read_bytes()[:4] == b"\x89PNG"
    assert table[0]["params"] == table[2]["params"]  # option-A shortcuts have no parameters
    for figure in ("error_curves.png",):
        assert (out / figure).read_bytes()[:4] == b"\x89PNG", figure
    markdown = (out / "results.md").read_text()
    assert "Final training loss" in markdown and "plain-14" in markdown
    assert [r["row"] for r in json.loads((out / "manifest.json").read_text())["rows"]] == rows

    before = (out / "resnet-8" / "summary.json").stat().st_mtime_ns
    code, captured = _run(args, capsys)
    assert code == 0 and captured.out.count("reusing") == 4
    assert (out / "resnet-8" / "summary.json").stat().st_mtime_ns == before
    code, captured = _run(args + ["--full-train"], capsys)
    assert code == 2 and "train_subset" in captured.err


def test_rows_list_and_print_commands(capsys, tmp_path):
    code, captured = _run(["--list"], capsys)
    assert code == 0
    assert [line.strip() for line in captured.out.splitlines()[1:]] == ["plain-20", "plain-56", "resnet-20", "resnet-56"]
    code, captured = _run(["--preset", "full", "--list"], capsys)
    assert len(captured.out.splitlines()) == 11 and "resnet-110" in captured.out
    code, captured = _run(["--print-commands", "--out", str(tmp_path)], capsys)
    lines = captured.out.splitlines()
    assert len(lines) == 4 and "--nets resnet --depths 56" in lines[3] and all("--resume" in line for line in lines)


def test_full_preset_is_the_papers_recipe():
    args = degradation.study.parse_args(degradation.STUDY, ["--preset", "full"])[1]
    rows = dict(degradation.STUDY.rows(args))
    c = rows["resnet-110"]
    assert (c["lr"], c["momentum"], c["weight_decay"], c["batch_size"]) == (0.1, 0.9, 1e-4, 128)
    assert c["milestones"] == [32000, 48000] and c["n_val"] == 2500 and c["train_subset"] is None
    assert c["epochs"] * -(-47500 // 128) in range(64000, 64000 + 372)  # stops at the first epoch end past 64k
    assert c["warmup_steps"] == 400 and rows["resnet-56"]["warmup_steps"] == 0


@pytest.mark.parametrize("argv, words", [
    (["--depths", "21"], "6n + 2"), (["--depths", "x"], "argument --depths"), (["--nets", "vgg"], "--nets"),
    (["--epochs", "0"], "argument --epochs"), (["--only", "plain-8"], "no row named plain-8")])
def test_bad_flags_are_argparse_errors(argv, words, capsys):
    with pytest.raises(SystemExit) as exit_info:
        degradation.main(argv)
    assert exit_info.value.code == 2 and words in capsys.readouterr().err


def test_local_launcher_then_collect(fake_cifar10, tmp_path, capsys, monkeypatch):
    pytest.importorskip("submitit", reason='the launcher needs submitit: pip install -e ".[cluster]"')
    path = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", str(REPO) + (os.pathsep + path if path else ""))
    out = tmp_path / "jobs"
    args = ["--data-dir", str(fake_cifar10), "--out", str(out), "--nets", "plain", "resnet"] + TINY[:1] + ["8"] + TINY[3:]
    code, captured = _run(args + ["--launcher", "local", "--cpus-per-job", "1", "--max-parallel", "2"], capsys)
    assert code == 0, captured.err
    for row in ("plain-8", "resnet-8"):
        assert load_summary(out / row)["status"] == "finished"
    code, captured = _run(["--collect", str(out), "--out", str(tmp_path / "table")], capsys)
    assert code == 0, captured.err
    with open(tmp_path / "table" / "results.csv", newline="") as f:
        assert [r["model"] for r in csv.DictReader(f)] == ["plain-8", "resnet-8"]
    assert (tmp_path / "table" / "error_curves.png").is_file()
