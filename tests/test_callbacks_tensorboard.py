"""TensorBoard callback: tags and steps read back with TensorBoard's own event reader, the log-spaced |grad|
buckets, resume without duplicate or stale steps, and a study's ``--tensorboard DIR``.

Tests that write events need tensorboardX and read them with the ``tensorboard`` package (both in the
``test`` extra); they skip cleanly when either is missing.
"""
import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from _resume_worker import build_trainer
from minigrad.callbacks import tensorboard as tb_module
from minigrad.callbacks.tensorboard import HIST_EDGES, TensorBoard, abs_histogram
from minigrad.runs import load_metrics
from minigrad.train import Callback

REPO = Path(__file__).resolve().parent.parent
EPOCH_TAGS = {"train/loss", "train/acc", "val/loss", "val/acc", "lr"}
STEPS_PER_EPOCH = 12  # _resume_worker: 240 training points, batch 20


def _needs_tensorboard():
    pytest.importorskip("tensorboardX")
    return pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")


def read_events(path):
    """TensorBoard's reader over a run folder (or one event file): {tag: [(step, value)]} and histograms."""
    event_accumulator = _needs_tensorboard()
    reader = event_accumulator.EventAccumulator(str(path), size_guidance={"scalars": 0, "histograms": 0})
    reader.Reload()
    tags = reader.Tags()
    scalars = {tag: [(e.step, e.value) for e in reader.Scalars(tag)] for tag in tags["scalars"]}
    histograms = {tag: [(e.step, e.histogram_value) for e in reader.Histograms(tag)] for tag in tags["histograms"]}
    return scalars, histograms


def param_names(trainer):
    return [name for name, _ in trainer.model.named_parameters()]


# --------------------------------------------------------------------------------------- the buckets
def test_abs_histogram_counts_every_value_in_its_log_bucket():
    rng = np.random.default_rng(0)
    exponents = rng.uniform(-44, 37, size=5000)
    values = np.concatenate([10.0 ** exponents * rng.choice([-1, 1], size=5000), [0.0, -0.0, 0.0],
                             [1e-50, 5e38, np.inf, -np.inf, np.nan]])
    h = abs_histogram(values)
    finite = np.abs(values[np.isfinite(values)])
    assert h["num"] == len(finite) == sum(h["bucket_counts"])
    assert h["min"] == 0.0 and h["max"] == 5e38
    assert math.isclose(h["sum"], finite.sum()) and math.isclose(h["sum_squares"], float(finite @ finite))
    limits, counts = np.array(h["bucket_limits"]), np.array(h["bucket_counts"])
    # each bucket is [previous limit, limit): rebuild the counts by brute force
    lefts = np.concatenate([[0.0], limits[:-1]])
    brute = [int(((finite >= lo) & (finite < hi)).sum()) for lo, hi in zip(lefts, limits)]
    brute[-1] += int((finite == limits[-1]).sum())  # the top bucket [1e38, max] holds its max
    assert brute == counts.tolist()
    inner = limits[1:-1]  # the log-spaced edges, 8 per decade
    assert np.allclose(inner[1:] / inner[:-1], 10 ** (1 / 8))
    assert np.isin(limits[:-1], HIST_EDGES).all()


def test_tiny_gradients_get_their_own_buckets_and_only_the_occupied_span_is_written():
    g = np.array([3e-14, 3.1e-14, 2e-13, 5e-9, 0.0], dtype=np.float32)
    h = abs_histogram(g)
    counts, limits = h["bucket_counts"], h["bucket_limits"]
    assert (counts[0], limits[0]) == (1, HIST_EDGES[0])  # the zero, in [0, 1e-45)
    assert [c for c in counts if c] == [1, 2, 1, 1]  # 0; 3e-14 and 3.1e-14 together; 2e-13; 5e-9
    small = abs_histogram(np.array([3e-14, 2e-13]))
    # only the occupied span: its first bucket is [10**(k/8), 10**((k+1)/8)) around 3e-14, its last holds 2e-13
    assert small["bucket_counts"][0] == 1 and small["bucket_counts"][-1] == 1
    assert 3e-14 < small["bucket_limits"][0] <= 3e-14 * 10 ** (1 / 8)
    span = math.floor(8 * math.log10(2e-13)) - math.floor(8 * math.log10(3e-14)) + 1  # buckets 3e-14 .. 2e-13
    assert small["bucket_limits"][-1] > 2e-13 and len(small["bucket_counts"]) == span == 8
    assert abs_histogram(np.array([np.nan, np.inf])) is None


# --------------------------------------------------------------------------------------- a run's events
def test_tags_steps_and_values_read_back(tmp_path):
    _needs_tensorboard()
    callback = TensorBoard(tmp_path / "tb", every=4)
    trainer = build_trainer(tmp_path / "run", epochs=3, callbacks=[callback])
    assert trainer.fit().status == "finished"
    assert callback.writer is None  # closed at the end
    scalars, histograms = read_events(tmp_path / "tb")
    names = param_names(trainer)
    assert set(scalars) == EPOCH_TAGS | {f"grad_mean_abs/{n}" for n in names}
    assert set(histograms) == {f"grad_hist/{n}" for n in names}

    rows = load_metrics(tmp_path / "run")
    for tag, key in (("train/loss", "train_loss"), ("train/acc", "train_acc"), ("val/loss", "val_loss"),
                     ("val/acc", "val_acc"), ("lr", "lr")):
        assert [s for s, _ in scalars[tag]] == [12, 24, 36]  # global step = optimiser steps, epoch's last
        assert np.allclose([v for _, v in scalars[tag]], [row[key] for row in rows], rtol=1e-6)

    grad_steps = [1] + list(range(4, 37, 4))
    stats = json.loads((tmp_path / "run" / "grad_stats.json").read_text())
    for name in names:
        logged = dict(scalars[f"grad_mean_abs/{name}"])
        assert list(logged) == grad_steps
        # the first batch, and the last batch of each epoch, are also in grad_stats.json
        assert math.isclose(logged[1], stats["first_batch"][name]["mean_abs"], rel_tol=1e-6)
        for entry in stats["epochs"]:
            assert math.isclose(logged[entry["epoch"] * STEPS_PER_EPOCH], entry["last_batch"][name]["mean_abs"],
                                rel_tol=1e-6)
        hist = dict(histograms[f"grad_hist/{name}"])
        assert list(hist) == grad_steps
        numel = stats["first_batch"][name]["numel"]
        for step, h in hist.items():
            assert h.num == numel and sum(h.bucket) == numel
            assert math.isclose(h.sum / h.num, logged[step], rel_tol=1e-5)  # mean |grad| from the buckets' sum
            assert np.isin(list(h.bucket_limit)[:-1], HIST_EDGES).all()


class Crash(Callback):
    """Flush the TensorBoard file (as if its queue had been written) and fail at ``epoch``, ``batch``."""

    def __init__(self, board, epoch, batch):
        self.board, self.epoch, self.batch = board, epoch, batch

    def on_batch_end(self, trainer, epoch, batch, logs):
        if (epoch, batch) == (self.epoch, self.batch):
            if self.board is not None:
                self.board.writer.flush()
            raise RuntimeError("killed")


def test_resume_purges_what_the_killed_run_wrote_after_its_checkpoint(tmp_path):
    _needs_tensorboard()
    reference = TensorBoard(tmp_path / "tb-ref", every=4)
    build_trainer(tmp_path / "ref", epochs=3, callbacks=[reference]).fit()

    first = TensorBoard(tmp_path / "tb", every=4)
    with pytest.raises(RuntimeError, match="killed"):  # in epoch 2, after steps 16 and 20 were written
        build_trainer(tmp_path / "run", epochs=3, callbacks=[first, Crash(first, 2, 9)]).fit()
    first.close()
    [old_file] = list((tmp_path / "tb").iterdir())
    stale, _ = read_events(old_file)
    assert [s for s, _ in stale["grad_mean_abs/0.weight"]] == [1, 4, 8, 12, 16, 20]

    second = TensorBoard(tmp_path / "tb", every=4)  # the checkpoint is epoch 1: this session starts at step 13
    assert build_trainer(tmp_path / "run", epochs=3, callbacks=[second]).fit(resume=True).status == "finished"
    files = sorted(p.name for p in (tmp_path / "tb").iterdir())
    assert len(files) == 2 and files[0] == old_file.name and files[1].endswith(".step000000000013")

    ours, our_hists = read_events(tmp_path / "tb")
    theirs, their_hists = read_events(tmp_path / "tb-ref")
    assert set(ours) == set(theirs) and set(our_hists) == set(their_hists)
    for tag in theirs:  # the same steps, once each, in order, and (exact resume) the same values
        assert ours[tag] == theirs[tag], tag
    for tag in their_hists:
        assert [s for s, _ in our_hists[tag]] == [s for s, _ in their_hists[tag]]
        assert [list(h.bucket) for _, h in our_hists[tag]] == [list(h.bucket) for _, h in their_hists[tag]]


def test_a_fresh_run_replaces_the_events_of_an_older_one_in_the_same_folder(tmp_path):
    _needs_tensorboard()
    build_trainer(tmp_path / "a", epochs=2, callbacks=[TensorBoard(tmp_path / "tb", every=0)]).fit()
    build_trainer(tmp_path / "b", epochs=1, lr=1e-3, callbacks=[TensorBoard(tmp_path / "tb", every=0)]).fit()
    scalars, histograms = read_events(tmp_path / "tb")
    assert set(scalars) == EPOCH_TAGS and not histograms  # every=0: no gradient tags
    assert scalars["lr"] == [(12, pytest.approx(1e-3))]  # only run b's single epoch


def test_stateless_so_it_may_join_or_leave_on_resume(tmp_path):
    _needs_tensorboard()
    with pytest.raises(RuntimeError, match="killed"):
        build_trainer(tmp_path / "run", epochs=2, callbacks=[Crash(None, 2, 1)]).fit()
    board = TensorBoard(tmp_path / "tb", every=0)
    assert build_trainer(tmp_path / "run", epochs=2, callbacks=[board]).fit(resume=True).status == "finished"
    scalars, _ = read_events(tmp_path / "tb")
    assert [s for s, _ in scalars["val/acc"]] == [24]  # only what this session trained


# --------------------------------------------------------------------------------------- without tensorboardX
def test_missing_tensorboardx_names_the_install_command(monkeypatch, tmp_path, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(tb_module.importlib.util, "find_spec",
                        lambda name, *a: None if name == "tensorboardX" else real(name, *a))
    with pytest.raises(ImportError, match=r"\.\[tensorboard\]"):
        TensorBoard(tmp_path / "tb")
    from experiments import vgg_depth
    with pytest.raises(SystemExit) as exit_info:
        vgg_depth.main(["--model", "VGG08", "--tensorboard", str(tmp_path / "tb"), "--out", str(tmp_path / "o")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--tensorboard" in err and "tensorboardX" in err and len(err.strip().splitlines()) == 2
    assert not (tmp_path / "o").exists()


def test_importing_the_callbacks_imports_no_optional_package():
    code = ("import sys, minigrad.callbacks; "
            "print([m for m in ('tensorboardX', 'matplotlib', 'IPython', 'tensorboard') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_every_must_be_a_whole_number(tmp_path):
    pytest.importorskip("tensorboardX")
    for bad in (-1, 2.5, True, "50"):
        with pytest.raises(ValueError, match="every"):
            TensorBoard(tmp_path, every=bad)


# --------------------------------------------------------------------------------------- a study's --tensorboard
@pytest.fixture
def fake_cifar(tmp_path, monkeypatch):
    from fake_cifar import make_fake_cifar
    from minigrad.data import cifar
    monkeypatch.setattr(cifar, "repo_root", lambda: tmp_path / "no-repo")
    monkeypatch.delenv("MINIGRAD_DATA", raising=False)
    data = tmp_path / "data"
    data.mkdir()
    make_fake_cifar(data, "cifar10", n_train=400, n_test=30)
    return data


def test_vgg_study_with_tensorboard_writes_each_rows_events(fake_cifar, tmp_path, capsys):
    _needs_tensorboard()
    from experiments import vgg_depth
    from minigrad.models.vgg import build_vgg
    events = tmp_path / "tb"
    args = ["--model", "VGG08", "--epochs", "1", "--train-subset", "300", "--dataset", "cifar10",
            "--data-dir", str(fake_cifar), "--out", str(tmp_path / "out"), "--val-size", "20", "--batch-size", "20",
            "--no-progress", "--threads", "1"]
    assert vgg_depth.main(args + ["--tensorboard", str(events)]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert f"tensorboard --logdir {events}" in out
    row = "VGG08-lr1e-3"
    assert [p.name for p in events.iterdir()] == [row]
    scalars, histograms = read_events(events / row)
    names = [name for name, _ in build_vgg("VGG08", num_classes=10).named_parameters()]
    assert any(n.endswith(".bias") for n in names)
    assert set(scalars) == EPOCH_TAGS | {f"grad_mean_abs/{n}" for n in names}
    assert set(histograms) == {f"grad_hist/{n}" for n in names}
    assert all([s for s, _ in scalars[tag]] == [15] for tag in EPOCH_TAGS)  # 300 images / batch 20
    assert all([s for s, _ in series] == [1] for tag, series in scalars.items() if tag.startswith("grad_"))
    # the flag is no setting of the row: the same command without it reuses the finished row
    assert "tensorboard" not in (tmp_path / "out" / row / "config.json").read_text()
    assert vgg_depth.main(args) == 0
    assert "reusing" in capsys.readouterr().out


def test_rows_run_as_local_jobs_write_their_events_too(fake_cifar, tmp_path, monkeypatch, capsys):
    _needs_tensorboard()
    pytest.importorskip("submitit")
    import os
    from experiments import vgg_depth
    monkeypatch.setenv("PYTHONPATH", str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))  # the job's import
    events = tmp_path / "tb"
    code = vgg_depth.main(["--model", "VGG08", "--epochs", "1", "--train-subset", "100", "--val-size", "20",
                           "--batch-size", "20", "--data-dir", str(fake_cifar), "--out", str(tmp_path / "out"),
                           "--no-progress", "--launcher", "local", "--cpus-per-job", "1", "--tensorboard", str(events)])
    assert code == 0, capsys.readouterr().err
    scalars, histograms = read_events(events / "VGG08-lr1e-3")
    assert EPOCH_TAGS <= set(scalars) and [s for s, _ in scalars["val/acc"]] == [5]
    assert "grad_hist/entry.conv.weight" in histograms
