"""Run folders: atomic writers, metrics.csv round trip, and the re-run rules of DECISIONS 15."""
import json
import math
import os

import pytest
from hypothesis import given, strategies as st

from minigrad import runs
from minigrad.runs import (
    ConfigMismatchError, RunDirError, UnfinishedRunError, atomic_open, compare_configs, load_metrics,
    prepare_run_dir, write_json_atomic, write_metrics, write_text_atomic,
)


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


# --------------------------------------------------------------------------------------- atomic writes
def test_crash_mid_write_keeps_old_file(tmp_path):
    target = tmp_path / "metrics.csv"
    write_text_atomic(target, "old content\n")
    with pytest.raises(RuntimeError, match="crash"):
        with atomic_open(target) as f:
            f.write("new content, half of it")
            f.flush()  # the partial data really is on disk, in the temporary file
            raise RuntimeError("simulated crash mid-write")
    assert target.read_text() == "old content\n"
    assert _leftovers(tmp_path) == []


def test_crash_before_replace_keeps_old_file(tmp_path, monkeypatch):
    target = tmp_path / "summary.json"
    write_json_atomic(target, {"status": "running"})

    def failing_fsync(fd):
        raise OSError("disk gone")

    monkeypatch.setattr(runs.os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="disk gone"):
        write_json_atomic(target, {"status": "finished"})
    monkeypatch.undo()
    assert json.loads(target.read_text()) == {"status": "running"}
    assert _leftovers(tmp_path) == []


def test_crash_on_first_write_leaves_no_file(tmp_path):
    target = tmp_path / "new.txt"
    with pytest.raises(ValueError):
        with atomic_open(target) as f:
            f.write("partial")
            raise ValueError("boom")
    assert not target.exists() and _leftovers(tmp_path) == []


def test_atomic_binary_and_replace(tmp_path):
    target = tmp_path / "sub" / "x.bin"
    with atomic_open(target, "wb") as f:
        f.write(b"\x00\x01")
    with atomic_open(target, "wb") as f:
        f.write(b"\x02")
    assert target.read_bytes() == b"\x02"
    with pytest.raises(ValueError, match="mode"):
        with atomic_open(target, "a"):
            pass


def test_json_writer_refuses_nan_before_touching_the_file(tmp_path):
    target = tmp_path / "s.json"
    write_json_atomic(target, {"a": 1})
    with pytest.raises(ValueError):
        write_json_atomic(target, {"a": math.nan})
    assert json.loads(target.read_text()) == {"a": 1}


# --------------------------------------------------------------------------------------- metrics.csv
finite = st.floats(allow_nan=False, allow_infinity=False, width=64)


@given(st.lists(st.tuples(finite, finite, finite, finite, finite, finite), min_size=0, max_size=5))
def test_metrics_round_trip_is_exact(tmp_path_factory, values):
    path = tmp_path_factory.mktemp("m") / "metrics.csv"
    rows = [dict(zip(runs.METRICS_FIELDS, (epoch, *v))) for epoch, v in enumerate(values, start=1)]
    write_metrics(path, rows)
    back = load_metrics(path)
    assert back == rows  # floats compare bit-exactly: repr round-trips
    assert all(type(r["epoch"]) is int for r in back)
    assert path.read_text().splitlines()[0] == ",".join(runs.METRICS_FIELDS)


def test_metrics_errors_name_the_file(tmp_path):
    with pytest.raises(KeyError, match="lacks"):
        write_metrics(tmp_path / "m.csv", [{"epoch": 1, "train_loss": 1.0}])
    bad = tmp_path / "metrics.csv"
    bad.write_text("epoch,train_loss\n1,abc\n")
    with pytest.raises(ValueError, match="metrics.csv, line 2"):
        load_metrics(tmp_path)  # a folder: reads its metrics.csv
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="other.csv: not a metrics file"):
        load_metrics(tmp_path / "other.csv")


# --------------------------------------------------------------------------------------- configs
def test_compare_configs():
    saved = {"model": "VGG38", "optimizer": {"lr": 1e-3, "betas": [0.9, 0.999]}, "threads": 2, "flag": True}
    assert compare_configs(saved, {"model": "VGG38", "optimizer": {"lr": 1e-3, "betas": (0.9, 0.999)},
                                   "threads": 8, "flag": True}) == []
    diff = compare_configs(saved, {"model": "VGG08", "optimizer": {"lr": 1e-2, "betas": [0.9, 0.999]},
                                   "flag": 1, "epochs": 3})
    assert diff == [("model", "VGG38", "VGG08"), ("optimizer.lr", 1e-3, 1e-2), ("flag", True, 1),
                    ("epochs", "<unset>", 3)]
    assert compare_configs({"a": 1}, {"a": 1.0}) == []
    with pytest.raises(TypeError, match="JSON"):
        compare_configs({"a": 1}, {"a": object()})


# --------------------------------------------------------------------------------------- DECISIONS 15
CONFIG = {"model": "MLP", "lr": 0.01, "epochs": 3, "seed": 0, "threads": 2}


def _finish(run_dir, status):
    write_json_atomic(run_dir.summary_path, {"status": status, "best_val_acc": 0.5})


def test_new_row_writes_config(tmp_path):
    run_dir = prepare_run_dir(tmp_path, "MLP-lr1e-2", CONFIG)
    assert run_dir.state == "new" and not run_dir.done and not run_dir.resume
    assert run_dir.path == tmp_path / "MLP-lr1e-2"
    assert json.loads(run_dir.config_path.read_text()) == CONFIG


def test_finished_and_diverged_rows_are_reused(tmp_path):
    for status in ("finished", "diverged"):
        run_dir = prepare_run_dir(tmp_path, status, CONFIG)
        _finish(run_dir, status)
        again = prepare_run_dir(tmp_path, status, dict(CONFIG, threads=16))  # threads may change
        assert again.state == "done" and again.done
        assert again.summary == {"status": status, "best_val_acc": 0.5}


@pytest.mark.parametrize("status", [None, "running", "failed"])
def test_unfinished_row_needs_resume(tmp_path, status):
    run_dir = prepare_run_dir(tmp_path, "row", CONFIG)
    assert prepare_run_dir(tmp_path, "row", CONFIG).state == "new"  # only config.json: nothing trained yet
    (run_dir.path / "metrics.csv").write_text("epoch\n")
    if status:
        _finish(run_dir, status)
    with pytest.raises(UnfinishedRunError, match="--resume") as info:
        prepare_run_dir(tmp_path, "row", CONFIG)
    assert "--out" in str(info.value) and "row" in str(info.value)
    resumed = prepare_run_dir(tmp_path, "row", CONFIG, resume=True)
    assert resumed.state == "resume" and resumed.resume


@pytest.mark.parametrize("status", [None, "finished"])
def test_config_mismatch_names_the_setting(tmp_path, status):
    run_dir = prepare_run_dir(tmp_path, "row", CONFIG)
    if status:
        _finish(run_dir, status)
    before = run_dir.config_path.read_text()
    with pytest.raises(ConfigMismatchError) as info:
        prepare_run_dir(tmp_path, "row", dict(CONFIG, lr=0.1, epochs=5), resume=True)
    message = str(info.value)
    assert "lr: saved 0.01, given 0.1" in message and "epochs: saved 3, given 5" in message
    assert "seed" not in message and "threads" not in message
    assert run_dir.config_path.read_text() == before  # never overwritten


def test_folder_without_config_is_refused_unless_empty(tmp_path):
    (tmp_path / "empty").mkdir()
    assert prepare_run_dir(tmp_path, "empty", CONFIG).state == "new"
    (tmp_path / "stranger").mkdir()
    (tmp_path / "stranger" / "metrics.csv").write_text("x")
    with pytest.raises(RunDirError, match="no config.json"):
        prepare_run_dir(tmp_path, "stranger", CONFIG)
    for bad in ("", "a/b", "..", None):
        with pytest.raises(ValueError, match="row_name"):
            prepare_run_dir(tmp_path, bad, CONFIG)


def test_ensure_config(tmp_path):
    runs.ensure_config(tmp_path, CONFIG)
    runs.ensure_config(tmp_path, dict(CONFIG, threads=1))
    with pytest.raises(ConfigMismatchError, match="model: saved 'MLP', given 'CNN'"):
        runs.ensure_config(tmp_path, dict(CONFIG, model="CNN"))
    assert os.listdir(tmp_path) == ["config.json"]
