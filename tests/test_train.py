"""Trainer: the loop's exact semantics, run-folder files, divergence, failures, and exact kill-and-resume.

The runs are a 2-layer MLP on 8-dim synthetic data (``_resume_worker.py``), 12 batches per epoch.
"""
import json
import math
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import minigrad
from minigrad import optim
from minigrad.checkpoint import CheckpointError, capture_state, load_checkpoint, restore_state
from minigrad.runs import (
    ConfigMismatchError, RunDirError, UnfinishedRunError, load_metrics, load_summary, prepare_run_dir,
)
from minigrad.train import Callback, Trainer, evaluate

from _resume_worker import ArrayLoader, RunningTally, build_model, build_trainer, make_data

WORKER = Path(__file__).resolve().parent / "_resume_worker.py"
EPOCHS = 4


def _comparable_metrics(run_dir):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in load_metrics(run_dir)]


def _comparable_summary(run_dir):
    return {k: v for k, v in load_summary(run_dir).items() if "seconds" not in k}


def _latest_state(run_dir):
    state = load_checkpoint(Path(run_dir) / "checkpoints", "latest")
    arrays = {f"model.{k}": v for k, v in state["model"].items()}
    for index, entry in state["optimizer"]["state"].items():
        arrays.update({f"optim.{index}.{k}": np.asarray(v) for k, v in entry.items()})
    return arrays


def _assert_same_run(run_dir, reference):
    """Bit-identical metrics (seconds aside), gradient statistics, summary and final weights/moments."""
    assert _comparable_metrics(run_dir) == _comparable_metrics(reference)
    assert (Path(run_dir) / "grad_stats.json").read_text() == (Path(reference) / "grad_stats.json").read_text()
    assert _comparable_summary(run_dir) == _comparable_summary(reference)
    ours, theirs = _latest_state(run_dir), _latest_state(reference)
    assert list(ours) == list(theirs)
    for key in ours:
        assert ours[key].tobytes() == theirs[key].tobytes(), key


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted run, the yardstick of every resumed run."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    result = build_trainer(run_dir, epochs=EPOCHS).fit()
    assert result.status == "finished"
    return run_dir


# --------------------------------------------------------------------------------------- the loop itself
def test_fit_equals_a_hand_written_loop(tmp_path):
    """Two epochs by hand (same seeds, same order of operations) give bit-identical metrics and grad stats."""
    epochs = 2
    trainer = build_trainer(tmp_path / "run", epochs=epochs)
    trainer.fit()
    metrics = load_metrics(tmp_path / "run")
    stats = json.loads((tmp_path / "run" / "grad_stats.json").read_text())

    hand = build_trainer(tmp_path / "unused", epochs=epochs)
    model, crit, opt, sched = hand.model, hand.criterion, hand.optimizer, hand.scheduler
    names = [name for name, _ in model.named_parameters()]
    assert list(stats["first_batch"]) == names  # forward order, dotted names
    for epoch in range(1, epochs + 1):
        minigrad.random.set_rng_state(np.random.default_rng([0, epoch, 1]).bit_generator.state)
        model[1].generator.bit_generator.state = np.random.default_rng([0, epoch, 2, 1]).bit_generator.state
        model.train()
        losses, sizes, correct, mean_abs = [], [], 0, []
        lr = opt.param_groups[0]["lr"]
        for x, y in hand.train_loader.epoch(np.random.default_rng([0, epoch])):
            logits = model(x)
            losses.append(crit(logits, y))
            model.backward(crit.backward())
            mean_abs.append({n: float(np.abs(p.grad.astype(np.float64)).mean()) for n, p in model.named_parameters()})
            opt.step()
            opt.zero_grad()
            sizes.append(len(y))
            correct += int((logits.argmax(axis=1) == y).sum())
        val_loss, val_acc, _ = evaluate(model, crit, hand.val_loader, np.random.default_rng([0, epoch, 3]))
        sched.step()
        row = metrics[epoch - 1]
        assert row["epoch"] == epoch and row["lr"] == lr
        assert row["train_loss"] == sum(l * n for l, n in zip(losses, sizes)) / sum(sizes)
        assert row["train_acc"] == correct / sum(sizes)
        assert (row["val_loss"], row["val_acc"]) == (val_loss, val_acc)
        saved = stats["epochs"][epoch - 1]
        assert saved["epoch"] == epoch
        for name in names:
            assert saved["last_batch"][name]["mean_abs"] == mean_abs[-1][name]
            assert saved["mean"][name]["mean_abs"] == pytest.approx(np.mean([m[name] for m in mean_abs]), rel=1e-12)
            assert saved["mean"][name]["numel"] == model.state_dict()[name].size
        if epoch == 1:
            assert stats["first_batch"]["0.weight"]["mean_abs"] == mean_abs[0]["0.weight"]


def test_run_folder_summary_best_and_test(tmp_path, capsys):
    run_dir = tmp_path / "MLP-lr1e-2"
    trainer = build_trainer(run_dir, epochs=3, plots=True, log=None, progress=True)
    result = trainer.fit()
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("epoch ")]
    assert len(lines) == 3
    assert re.fullmatch(r"epoch 2/3  train_loss \d\.\d{4} train_acc \d\.\d{4}  val_loss \d\.\d{4} "
                        r"val_acc \d\.\d{4}  lr \d\.\de-0\d  \d+\.\d s", lines[1]), lines[1]
    metrics = load_metrics(run_dir)
    assert list(metrics[0]) == ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"]
    assert all(0 <= row[k] <= 1 for row in metrics for k in ("train_acc", "val_acc"))
    assert metrics[-1]["val_acc"] > 0.6  # it learns (chance is about 1/3)
    assert [row["lr"] for row in metrics] == pytest.approx([1e-2 * (1 + math.cos(math.pi * e / 3)) / 2 for e in range(3)])
    summary = load_summary(run_dir)
    accs = [row["val_acc"] for row in metrics]
    assert summary["best_epoch"] == accs.index(max(accs)) + 1 and summary["best_val_acc"] == max(accs)
    assert summary["status"] == "finished" == result.status and result.test_acc == summary["test_acc"]
    assert summary["epochs_done"] == 3 and summary["num_parameters"] == 8 * 16 + 16 + 16 * 3 + 3
    assert summary["final_val_acc"] == metrics[-1]["val_acc"] and summary["seconds"] > 0
    # the test figures are those of the best checkpoint, which the model now holds
    best = load_checkpoint(run_dir / "checkpoints", "best")
    assert best["extra"]["epoch"] == summary["best_epoch"]
    model = build_model(seed=5)
    restore_state(best, model)
    (_, _, x_test), (_, _, y_test) = make_data()
    loss, acc, n = evaluate(model, trainer.criterion, ArrayLoader(x_test, y_test, 20), np.random.default_rng(0))
    assert (loss, acc, n) == (summary["test_loss"], summary["test_acc"], 60)
    assert json.loads((run_dir / "config.json").read_text())["model"] == "MLP-8-16-3"
    for figure in ("training_curves.png", "grad_flow_first.png", "grad_flow_last.png"):
        assert (run_dir / figure).stat().st_size > 10_000


def test_best_ties_keep_the_earlier_epoch(tmp_path):
    # lr 0: the weights never move, so every epoch has the same validation accuracy
    build_trainer(tmp_path / "run", epochs=3, lr=0.0).fit()
    accs = {row["val_acc"] for row in load_metrics(tmp_path / "run")}
    assert len(accs) == 1
    assert load_summary(tmp_path / "run")["best_epoch"] == 1


def test_iteration_schedule_and_plateau(tmp_path):
    trainer = build_trainer(tmp_path / "it", epochs=3, scheduler_interval="iteration")
    trainer.scheduler = optim.lr_scheduler.CosineAnnealingLR(trainer.optimizer, T_max=30)
    trainer.fit()
    steps = [0, 12, 24]  # 12 batches per epoch; lr recorded at each epoch's first batch
    expected = [1e-2 * (1 + math.cos(math.pi * s / 30)) / 2 for s in steps]
    assert [row["lr"] for row in load_metrics(tmp_path / "it")] == pytest.approx(expected, rel=1e-12)

    # ReduceLROnPlateau receives the validation loss once per epoch; in mode "max" the first loss is an
    # improvement (on -inf) and a falling one never is, so with patience 0 the lr halves from epoch 2 on
    # (given the validation accuracy, which rises, it would never reduce)
    trainer = build_trainer(tmp_path / "plateau", epochs=3)
    trainer.scheduler = optim.lr_scheduler.ReduceLROnPlateau(trainer.optimizer, mode="max", factor=0.5, patience=0)
    trainer.fit()
    assert [row["lr"] for row in load_metrics(tmp_path / "plateau")] == [1e-2, 1e-2, 5e-3]
    with pytest.raises(ValueError, match="per epoch"):
        build_trainer(tmp_path / "x", scheduler_interval="iteration",
                      scheduler=optim.lr_scheduler.ReduceLROnPlateau(trainer.optimizer))
    for bad in (dict(epochs=0), dict(epochs=2, scheduler_interval="batch")):
        with pytest.raises(ValueError, match="Trainer"):
            Trainer(trainer.model, trainer.criterion, trainer.optimizer, trainer.train_loader,
                    trainer.val_loader, run_dir=tmp_path / "x", **bad)
    with pytest.raises(TypeError, match="train_loader needs an epoch"):
        Trainer(trainer.model, trainer.criterion, trainer.optimizer, [(1, 2)], trainer.val_loader,
                run_dir=tmp_path / "x", epochs=1)


# --------------------------------------------------------------------------------------- divergence, failure
class PoisonLoader(ArrayLoader):
    """Yields NaN inputs at one (epoch call, batch)."""

    def __init__(self, loader, at):
        super().__init__(loader.x, loader.y, loader.batch_size, loader.shuffle, loader.noise, loader.hook)
        self.at = at

    def epoch(self, rng):
        for batch, (x, y) in enumerate(super().epoch(rng), start=1):
            yield (np.full_like(x, np.nan) if (self.calls, batch) == self.at else x), y


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(Path(folder).iterdir()) if p.is_file()}


def test_divergence_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    snapshots = []

    def hook(call, batch):
        if (call, batch) == (2, 1):
            snapshots.append(_snapshot(run_dir / "checkpoints"))

    trainer = build_trainer(run_dir, epochs=EPOCHS, hook=hook, plots=True)
    trainer.train_loader = PoisonLoader(trainer.train_loader, at=(2, 3))
    result = trainer.fit()  # no exception: a study goes on with its next row
    assert result.status == "diverged"
    summary = load_summary(run_dir)
    assert summary["status"] == "diverged"
    assert summary["diverged"] == {"epoch": 2, "batch": 3, "phase": "train", "loss": "nan"}
    assert summary["epochs_done"] == 1 and summary["best_epoch"] == 1 and summary["test_acc"] is None
    assert [row["epoch"] for row in load_metrics(run_dir)] == [1]
    assert _snapshot(run_dir / "checkpoints") == snapshots[0]  # latest and best untouched
    assert load_checkpoint(run_dir / "checkpoints", "latest")["extra"]["epoch"] == 1
    assert (run_dir / "training_curves.png").exists()

    # a NaN validation loss in the first epoch: diverged, nothing saved
    trainer = build_trainer(tmp_path / "val", epochs=2)
    trainer.val_loader = PoisonLoader(trainer.val_loader, at=(1, 2))
    assert trainer.fit().status == "diverged"
    assert load_summary(tmp_path / "val")["diverged"] == {"epoch": 1, "batch": None, "phase": "validation", "loss": "nan"}
    assert not (tmp_path / "val" / "checkpoints").exists()


def test_failure_is_recorded_raised_and_resumable(tmp_path, reference):
    def hook(call, batch):
        if (call, batch) == (3, 4):
            raise RuntimeError("disk on fire")

    run_dir = tmp_path / "run"
    with pytest.raises(RuntimeError, match="disk on fire"):
        build_trainer(run_dir, epochs=EPOCHS, hook=hook).fit()
    summary = load_summary(run_dir)
    assert summary["status"] == "failed" and "disk on fire" in summary["error"]
    assert summary["epochs_done"] == 2
    assert build_trainer(run_dir, epochs=EPOCHS).fit(resume=True).status == "finished"
    _assert_same_run(run_dir, reference)


def test_interrupted_in_process_resume_is_exact(tmp_path, reference):
    def hook(call, batch):
        if (call, batch) == (3, 5):
            raise KeyboardInterrupt  # Ctrl-C: not a failure, the row stays "running"

    run_dir = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        build_trainer(run_dir, epochs=EPOCHS, hook=hook).fit()
    assert load_summary(run_dir)["status"] == "running"
    minigrad.manual_seed(777)  # whatever the global generator holds before the resume
    build_trainer(run_dir, epochs=EPOCHS).fit(resume=True)
    _assert_same_run(run_dir, reference)


def test_study_flow_with_prepare_run_dir(tmp_path):
    """How a study drives a row: prepare the folder, train, re-run (DECISIONS 15)."""
    def hook(call, batch):
        if (call, batch) == (2, 2):
            raise KeyboardInterrupt

    config = build_trainer(tmp_path / "unused", epochs=2).config
    row = prepare_run_dir(tmp_path, "MLP-lr1e-2", config)
    assert row.state == "new"
    with pytest.raises(KeyboardInterrupt):
        build_trainer(row.path, epochs=2, hook=hook).fit(resume=row.resume)
    with pytest.raises(UnfinishedRunError, match="--resume"):
        prepare_run_dir(tmp_path, "MLP-lr1e-2", config)
    row = prepare_run_dir(tmp_path, "MLP-lr1e-2", config, resume=True)
    assert row.state == "resume"
    assert build_trainer(row.path, epochs=2).fit(resume=row.resume).status == "finished"
    row = prepare_run_dir(tmp_path, "MLP-lr1e-2", config)
    assert row.state == "done" and row.summary == load_summary(row.path)


def test_refusals_leave_the_folder_untouched(tmp_path, reference):
    run_dir = tmp_path / "run"
    build_trainer(run_dir, epochs=2).fit()
    before = _snapshot(run_dir)
    with pytest.raises(RunDirError, match="--resume"):
        build_trainer(run_dir, epochs=2).fit()
    with pytest.raises(ConfigMismatchError, match="lr: saved 0.01, given 0.02"):
        build_trainer(run_dir, epochs=2, lr=0.02).fit(resume=True)
    trainer = build_trainer(run_dir, epochs=2)
    trainer.seed = 1
    with pytest.raises(RunDirError, match="seed=0"):
        trainer.fit(resume=True)
    assert _snapshot(run_dir) == before
    # a damaged latest checkpoint: an error naming it, the model untouched, nothing written
    npz = next((run_dir / "checkpoints").glob("latest-*.npz"))
    npz.write_bytes(npz.read_bytes()[:-10])
    before = _snapshot(run_dir)
    trainer = build_trainer(run_dir, epochs=2)
    weights = capture_state(trainer.model)["model"]
    with pytest.raises(CheckpointError, match=npz.name):
        trainer.fit(resume=True)
    assert _snapshot(run_dir) == before
    assert all(np.array_equal(weights[k], v) for k, v in trainer.model.state_dict().items())


# --------------------------------------------------------------------------------------- SIGKILL and resume
def _run_worker(run_dir, *options, kill_at_mark=False):
    command = [sys.executable, str(WORKER), str(run_dir), *options]
    if not kill_at_mark:
        return subprocess.run(command, capture_output=True, text=True, timeout=180)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in process.stdout:
            if line.strip() == "MARK":
                process.send_signal(signal.SIGKILL)
                break
    finally:
        process.wait(timeout=180)
    return process


@pytest.mark.parametrize("kills", [
    # the parent SIGKILLs the run in the middle of epoch 3 (after batch 5 was drawn)
    [("--mark", "3:5")],
    # killed with epoch 2's latest npz written but its JSON not yet; the resumed run is killed just
    # after its epoch-2 metrics.csv was written (metrics one epoch ahead of the checkpoint)
    [("--die-before-replace", "latest.json:2"), ("--resume", "--die-after-replace", "metrics.csv:2")],
], ids=["mid-epoch", "between-files"])
def test_sigkilled_run_resumes_to_identical_metrics(tmp_path, reference, kills):
    run_dir = tmp_path / "run"
    for options in kills:
        process = _run_worker(run_dir, *options, kill_at_mark="--mark" in options)
        assert process.returncode == -signal.SIGKILL, getattr(process, "stderr", "")
    assert load_summary(run_dir)["status"] == "running"
    done = _run_worker(run_dir, "--resume")
    assert done.returncode == 0 and "STATUS finished" in done.stdout, done.stderr
    _assert_same_run(run_dir, reference)
    assert not list(run_dir.rglob("*.tmp")) and len(list((run_dir / "checkpoints").glob("latest-*.npz"))) == 1


# --------------------------------------------------------------------------------------- callbacks
class Recorder(Callback):
    def __init__(self):
        self.calls = []

    def on_fit_start(self, trainer, start_epoch):
        self.calls.append(("fit_start", start_epoch))

    def on_batch_end(self, trainer, epoch, batch, logs):
        # the gradients of this batch are still there (zeroed after the hooks)
        grads = sum(float(np.abs(p.grad).sum()) for p in trainer.model.parameters())
        self.calls.append(("batch_end", epoch, batch, sorted(logs), grads > 0))

    def on_epoch_end(self, trainer, epoch, metrics):
        self.calls.append(("epoch_end", epoch, sorted(metrics)))
        return {"double_val_acc": 2 * metrics["val_acc"], "nothing": None}

    def on_fit_end(self, trainer, result):
        self.calls.append(("fit_end", result.status))


def test_callback_hooks_order_and_metrics_columns(tmp_path, reference):
    recorder = Recorder()
    run_dir = tmp_path / "run"
    build_trainer(run_dir, epochs=EPOCHS, callbacks=[recorder]).fit()
    batches = 12
    assert recorder.calls[0] == ("fit_start", 1) and recorder.calls[-1] == ("fit_end", "finished")
    ends = [c for c in recorder.calls if c[0] == "batch_end"]
    assert [(c[1], c[2]) for c in ends] == [(e, b) for e in range(1, EPOCHS + 1) for b in range(1, batches + 1)]
    assert all(c[3] == ["batch_size", "correct", "loss", "lr", "step"] and c[4] for c in ends)
    epoch_ends = [c for c in recorder.calls if c[0] == "epoch_end"]
    assert [c[1] for c in epoch_ends] == list(range(1, EPOCHS + 1))
    assert epoch_ends[0][2] == sorted(["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"])
    metrics = load_metrics(run_dir)
    assert list(metrics[0])[-2:] == ["double_val_acc", "nothing"]
    assert all(row["double_val_acc"] == 2 * row["val_acc"] and row["nothing"] is None for row in metrics)
    # a callback that only reads leaves the run's numbers as they are
    assert [{k: v for k, v in row.items() if k in ("train_loss", "val_loss", "val_acc")} for row in metrics] == \
        [{k: v for k, v in row.items() if k in ("train_loss", "val_loss", "val_acc")} for row in load_metrics(reference)]


def test_callback_state_is_checkpointed_and_restored(tmp_path):
    def hook(call, batch):
        if (call, batch) == (3, 5):
            raise KeyboardInterrupt

    whole = tmp_path / "whole"
    build_trainer(whole, epochs=EPOCHS, callbacks=[RunningTally()]).fit()
    run_dir = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        build_trainer(run_dir, epochs=EPOCHS, hook=hook, callbacks=[RunningTally()]).fit()
    tally = RunningTally()
    build_trainer(run_dir, epochs=EPOCHS, callbacks=[tally]).fit(resume=True)
    assert tally.fit_starts == [3]  # epochs 1-2 were checkpointed; the interrupted epoch 3 is redone
    assert _comparable_metrics(run_dir) == _comparable_metrics(whole)
    assert load_metrics(run_dir)[-1]["steps_so_far"] == EPOCHS * 12
    # a run saved with a callback does not resume without it (its state would be lost)
    with pytest.raises(KeyboardInterrupt):
        build_trainer(tmp_path / "other", epochs=EPOCHS, hook=hook, callbacks=[RunningTally()]).fit()
    with pytest.raises(RunDirError, match="RunningTally"):
        build_trainer(tmp_path / "other", epochs=EPOCHS).fit(resume=True)


def test_sigkilled_run_with_a_callback_resumes_exactly(tmp_path):
    whole = tmp_path / "whole"
    assert _run_worker(whole, "--callback").returncode == 0
    run_dir = tmp_path / "run"
    process = _run_worker(run_dir, "--callback", "--mark", "3:5", kill_at_mark=True)
    assert process.returncode == -signal.SIGKILL
    done = _run_worker(run_dir, "--callback", "--resume")
    assert done.returncode == 0 and "STATUS finished" in done.stdout, done.stderr
    _assert_same_run(run_dir, whole)
    assert load_metrics(run_dir)[-1]["steps_so_far"] == EPOCHS * 12


def test_callback_refusals(tmp_path):
    with pytest.raises(TypeError, match="Callback instances"):
        build_trainer(tmp_path / "a", callbacks=[lambda *a: None])
    with pytest.raises(ValueError, match="state_key"):
        build_trainer(tmp_path / "b", callbacks=[RunningTally(), RunningTally()])

    class Clash(Callback):
        def on_epoch_end(self, trainer, epoch, metrics):
            return {"val_acc": 1.0}

    with pytest.raises(ValueError, match="already in the metrics row"):
        build_trainer(tmp_path / "c", epochs=1, callbacks=[Clash()]).fit()
    assert load_summary(tmp_path / "c")["status"] == "failed"
