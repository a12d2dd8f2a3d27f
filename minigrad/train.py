"""The training loop: epochs of mini-batch updates, validation, checkpoints, metrics and a summary.

One epoch, as a student would write it::

    model.train()
    for x, y in train_loader.epoch(rng):
        loss = criterion(model(x), y)           # forward
        model.backward(criterion.backward())    # backward: d loss / d logits through the network
        optimizer.step()                        # update
        optimizer.zero_grad()
    model.eval(); validate; scheduler.step()    # per epoch (or per batch with scheduler_interval="iteration")

``Trainer`` adds what makes a run trustworthy and restartable, written into its run folder (see
``minigrad.runs``): metrics.csv (one line per epoch), grad_stats.json, summary.json, and checkpoints
``latest`` (every epoch) and ``best`` (highest validation accuracy; strict ``>``, so ties keep the earlier
epoch). At the end the best checkpoint is evaluated on the test loader.

Exact resume. Each epoch draws its randomness from generators derived from ``(seed, epoch)`` alone: the
loader gets ``np.random.default_rng([seed, epoch])``; the library's global generator (dropout without its
own generator) and every generator a module holds are reseeded from ``[seed, epoch, 1]`` and
``[seed, epoch, 2, k]``. The latest checkpoint holds everything else (weights, buffers, optimiser moments
and step counts, scheduler, history, best figures), so a run killed at any moment and resumed with
``fit(resume=True)`` redoes the interrupted epoch and ends with the same metrics, bit for bit, as a run
that was never interrupted (the ``seconds`` column aside). Because of this reseeding, build each model
after its own ``minigrad.manual_seed(seed)``, not from whatever state a previous run left.

Divergence (a NaN or infinite loss) stops the run without raising: summary status ``"diverged"`` with the
epoch and batch, the metrics so far kept, the last good checkpoint untouched (DECISIONS 16).

Callbacks extend the loop without touching it (``Trainer(..., callbacks=[...])``; see ``Callback`` for the
hooks): a measurement at the end of every epoch, a live plot, an event log. A callback's values can join
the epoch's metrics row, and its state is saved in the latest checkpoint and restored on resume, so a
killed-and-resumed run with callbacks still ends as an uninterrupted one.
"""
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .checkpoint import (
    capture_state, checkpoint_exists, load_checkpoint, module_generators, remove_orphans, restore_state,
    save_checkpoint,
)
from .optim.lr_scheduler import ReduceLROnPlateau
from .random import default_generator, set_rng_state
from .runs import (
    METRICS_FIELDS, RunDirError, ensure_config, finite_or_none, json_safe, load_grad_stats, remove_stale_temp_files,
    write_json_atomic, write_metrics,
)

__all__ = ["Trainer", "TrainResult", "Callback", "evaluate"]


@dataclass
class TrainResult:
    """What ``Trainer.fit`` returns: the status (finished | diverged) and the summary written to disk."""

    status: str
    run_dir: Path
    summary: dict = field(repr=False)

    def __getattr__(self, name):  # result.best_val_acc, result.test_acc, ... from the summary
        summary = self.__dict__.get("summary", {})
        if name in summary:
            return summary[name]
        raise AttributeError(name)


def evaluate(model, criterion, loader, rng):
    """Mean loss and accuracy of ``model`` (in eval mode) over one pass of ``loader``.

    Returns ``(loss, accuracy, n)``: loss and accuracy averaged over examples (batch means weighted by
    batch size, so a short last batch counts for what it holds); a non-finite batch loss makes the
    loss non-finite.
    """
    model.eval()
    total_loss, correct, count = 0.0, 0, 0
    for x, y in loader.epoch(rng):
        logits = model(x)
        total_loss += criterion(logits, y) * len(y)
        correct += int((np.argmax(logits, axis=1) == y).sum())
        count += len(y)
    if count == 0:
        raise ValueError("evaluate: the loader yielded no examples")
    return total_loss / count, correct / count, count


class Callback:
    """Base class of the Trainer's callbacks: override the hooks you need (each does nothing here).

    The hooks, in the order a run calls them::

        on_fit_start(trainer, start_epoch)        before the first epoch this fit() runs: 1 for a fresh run,
                                                  the epoch after the checkpoint on resume (the model, optimiser
                                                  and this callback's state are restored by then)
        on_batch_end(trainer, epoch, batch, logs) after each optimiser step (batch counts from 1), before the
                                                  gradients are zeroed: ``p.grad`` still holds this batch's
                                                  gradients. ``logs``: ``loss`` (this batch's), ``batch_size``,
                                                  ``correct``, ``lr`` (the lr of this step), ``step`` (optimiser
                                                  steps since the run began: (epoch - 1) * len(train) + batch)
        on_epoch_end(trainer, epoch, metrics)     after validation and the scheduler step, before the epoch is
                                                  saved; ``metrics`` is the epoch's row (epoch, train_loss,
                                                  train_acc, val_loss, val_acc, lr, seconds). Return a dict to
                                                  add values (numbers) to that row and to metrics.csv
        on_fit_end(trainer, result)               once the run has finished or diverged (``TrainResult``)

    ``state_dict()`` (a tree of dicts, lists, numbers, strings and arrays) is saved with the latest checkpoint
    of every epoch, under ``state_key`` (default: the class name), and handed back to ``load_state_dict``
    on resume. ``trainer.model``, ``trainer.optimizer``, ``trainer.run_dir``, ``trainer.history`` (the
    metrics rows so far) are there to read. A callback must not consume the training randomness (draw from
    its own generator), so adding one never changes the run's numbers.
    """

    state_key = None

    def on_fit_start(self, trainer, start_epoch):
        pass

    def on_batch_end(self, trainer, epoch, batch, logs):
        pass

    def on_epoch_end(self, trainer, epoch, metrics):
        return None

    def on_fit_end(self, trainer, result):
        pass

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


class Trainer:
    """Train ``model`` for ``epochs`` epochs, keeping everything in ``run_dir``.

    ``criterion``: a loss module (``loss = criterion(logits, y)``, ``criterion.backward()``).
    ``train_loader``, ``val_loader``, ``test_loader``: objects with ``epoch(rng)`` yielding ``(x, y)``
    batches and ``len()`` (``minigrad.data.BatchLoader`` or any small in-memory stand-in).
    ``scheduler``: optional; stepped once per epoch after validation (``ReduceLROnPlateau`` gets the
    validation loss) or, with ``scheduler_interval="iteration"``, after every optimiser step.
    ``config``: the run's settings, written to config.json (or checked against it when present).
    ``progress``: tqdm bars (epochs, and batches with running loss/accuracy); ``log``: where the one-line
    epoch summaries go (default ``tqdm.write``, i.e. stdout); ``plots``: draw the run's figures at the end.
    ``callbacks``: ``Callback`` instances, called in the order given.
    """

    def __init__(self, model, criterion, optimizer, train_loader, val_loader, *, epochs, run_dir,
                 scheduler=None, test_loader=None, seed=0, scheduler_interval="epoch", config=None,
                 progress=True, log=None, plots=True, callbacks=()):
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"Trainer: epochs must be a positive int, got {epochs!r}")
        if scheduler_interval not in ("epoch", "iteration"):
            raise ValueError(f"Trainer: scheduler_interval must be 'epoch' or 'iteration', got {scheduler_interval!r}")
        if scheduler_interval == "iteration" and _is_plateau(scheduler):
            raise ValueError("Trainer: ReduceLROnPlateau watches the validation loss, so it steps per epoch")
        for name, loader in (("train_loader", train_loader), ("val_loader", val_loader), ("test_loader", test_loader)):
            if loader is not None and not (callable(getattr(loader, "epoch", None)) and hasattr(loader, "__len__")):
                raise TypeError(f"Trainer: {name} needs an epoch(rng) method and len(), got {type(loader).__name__}")
        self.callbacks = list(callbacks)
        for callback in self.callbacks:
            if not isinstance(callback, Callback):
                raise TypeError(f"Trainer: callbacks must be Callback instances, got {type(callback).__name__}")
        keys = [self._callback_key(c) for c in self.callbacks]
        if len(set(keys)) != len(keys):
            raise ValueError(f"Trainer: two callbacks share a state_key ({keys}); give each its own")
        self.model, self.criterion, self.optimizer, self.scheduler = model, criterion, optimizer, scheduler
        self.train_loader, self.val_loader, self.test_loader = train_loader, val_loader, test_loader
        self.epochs, self.seed, self.scheduler_interval = epochs, int(seed), scheduler_interval
        self.config = config
        self.run_dir = Path(run_dir)
        self.checkpoint_dir = self.run_dir / "checkpoints"
        self.progress, self.plots = progress, plots
        self.log = log or tqdm.write
        # what the run has done so far; restored from the latest checkpoint on resume
        self.history = []  # metrics rows, one per finished epoch
        self.grad_stats = {"first_batch": None, "epochs": []}
        self.best = {"epoch": None, "val_acc": None, "val_loss": None}

    # ----------------------------------------------------------------------------------- the run
    def fit(self, resume=False):
        """Train (or continue, with ``resume=True``) and return a ``TrainResult``.

        Without ``resume`` the run folder must not hold results already. A NaN/Inf loss ends the run
        with status "diverged" (nothing raised); any other error writes status "failed" and is raised.
        """
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.config is not None:
            ensure_config(self.run_dir, self.config)
        # refusals (a run already there, a checkpoint that cannot be used) leave the folder as it is
        start = self._resume() if resume else self._start_fresh()
        try:
            if start == 1:
                write_metrics(self.run_dir / "metrics.csv", [])  # the header, even if epoch 1 diverges
            self._write_summary("running")
            for callback in self.callbacks:
                callback.on_fit_start(self, start)
            epochs_bar = tqdm(range(start, self.epochs + 1), desc="epochs", initial=start - 1,
                              total=self.epochs, disable=not self.progress)
            for epoch in epochs_bar:
                divergence = self._run_epoch(epoch)
                if divergence:
                    epochs_bar.close()
                    return self._end(self._stop_diverged(divergence))
            return self._end(self._finish())
        except Exception as error:
            self._write_summary("failed", error=f"{type(error).__name__}: {error}")
            raise

    def _run_epoch(self, epoch):
        """Train one epoch, validate, step the schedule, save everything; a divergence dict or None."""
        started = time.perf_counter()
        lr = self._lr()  # the lr of the epoch's first batch (per-iteration schedules change it within)
        train = self._train_one_epoch(epoch)
        if "diverged" in train:
            return train["diverged"]
        val_loss, val_acc, _ = evaluate(self.model, self.criterion, self.val_loader,
                                        np.random.default_rng([self.seed, epoch, 3]))
        if not math.isfinite(val_loss):
            return {"epoch": epoch, "batch": None, "phase": "validation", "loss": repr(val_loss)}
        if self.scheduler is not None and self.scheduler_interval == "epoch":
            if _is_plateau(self.scheduler):
                self.scheduler.step(val_loss)
            else:
                self.scheduler.step()
        row = {"epoch": epoch, "train_loss": train["loss"], "train_acc": train["acc"], "val_loss": val_loss,
               "val_acc": val_acc, "lr": lr, "seconds": time.perf_counter() - started}
        for callback in self.callbacks:
            row.update(self._callback_values(callback, callback.on_epoch_end(self, epoch, dict(row)), row))
        self.history.append(row)
        self.grad_stats["epochs"].append({"epoch": epoch, "mean": train["grad_mean"], "last_batch": train["grad_last"]})
        improved = self.best["val_acc"] is None or val_acc > self.best["val_acc"]  # strict: ties keep the earlier
        if improved:
            self.best = {"epoch": epoch, "val_acc": val_acc, "val_loss": val_loss}
        self._save_epoch(epoch, improved)
        self.log(f"epoch {epoch}/{self.epochs}  train_loss {train['loss']:.4f} train_acc {train['acc']:.4f}  "
                 f"val_loss {val_loss:.4f} val_acc {val_acc:.4f}  lr {lr:.1e}  {row['seconds']:.1f} s")
        return None

    def _train_one_epoch(self, epoch):
        """One pass over the training data; returns mean loss/accuracy and the epoch's gradient statistics."""
        rng = self._seed_epoch(epoch)
        model, optimizer = self.model, self.optimizer
        model.train()
        model.zero_grad()
        total_loss, correct, count = 0.0, 0, 0
        grad_sum, grad_last = None, None
        batches = tqdm(self.train_loader.epoch(rng), total=len(self.train_loader), desc=f"epoch {epoch}",
                       leave=False, disable=not self.progress)
        for batch, (x, y) in enumerate(batches, start=1):
            logits = model(x)
            loss = self.criterion(logits, y)
            if not math.isfinite(loss):
                batches.close()
                return {"diverged": {"epoch": epoch, "batch": batch, "phase": "train", "loss": repr(loss)}}
            model.backward(self.criterion.backward())
            grad_last = model.grad_stats  # this batch's gradients, before the step uses them
            grad_sum = _add_stats(grad_sum, grad_last)
            if self.grad_stats["first_batch"] is None:
                self.grad_stats["first_batch"] = grad_last
            step_lr = self._lr()
            optimizer.step()
            right = int((np.argmax(logits, axis=1) == y).sum())
            if self.callbacks:
                logs = {"loss": loss, "batch_size": len(y), "correct": right, "lr": step_lr,
                        "step": (epoch - 1) * len(self.train_loader) + batch}
                for callback in self.callbacks:
                    callback.on_batch_end(self, epoch, batch, logs)
            optimizer.zero_grad()
            if self.scheduler is not None and self.scheduler_interval == "iteration":
                self.scheduler.step()
            total_loss += loss * len(y)
            correct += right
            count += len(y)
            batches.set_postfix(loss=f"{total_loss / count:.4f}", acc=f"{correct / count:.4f}", refresh=False)
        if count == 0:
            raise ValueError("Trainer: the training loader yielded no batches")
        return {"loss": total_loss / count, "acc": correct / count,
                "grad_mean": _scale_stats(grad_sum, 1.0 / batch), "grad_last": grad_last}

    def _seed_epoch(self, epoch):
        """Derive every generator of this epoch from (seed, epoch); returns the loader's generator.

        SeedSequence pads entropy with zeros, so [s, e] and [s, e, 0] would give the same stream: the
        extra words are therefore 1, 2, 3, ... never 0.
        """
        global_type = type(default_generator().bit_generator)
        set_rng_state(global_type(np.random.SeedSequence([self.seed, epoch, 1])).state)
        for k, generator in enumerate(module_generators(self.model).values(), start=1):
            generator.bit_generator.state = type(generator.bit_generator)(
                np.random.SeedSequence([self.seed, epoch, 2, k])).state
        return np.random.default_rng([self.seed, epoch])

    def _lr(self):
        return float(self.optimizer.param_groups[0]["lr"])

    # ----------------------------------------------------------------------------------- saving
    def _save_epoch(self, epoch, improved):
        """Write metrics, gradient statistics and checkpoints of a finished epoch, in a crash-safe order.

        metrics.csv and grad_stats.json go first; the latest checkpoint last. A crash in between leaves
        files one epoch ahead of the checkpoint, and resume cuts them back to it.
        """
        write_metrics(self.run_dir / "metrics.csv", self.history)
        write_json_atomic(self.run_dir / "grad_stats.json", json_safe(self.grad_stats))
        if improved:
            save_checkpoint(self.checkpoint_dir, "best", capture_state(self.model, extra={"epoch": epoch, **self.best}))
        extra = {"epoch": epoch, "history": self.history, "best": self.best,
                 "trainer": {"seed": self.seed, "epochs": self.epochs, "scheduler_interval": self.scheduler_interval},
                 "config": self.config,
                 "callbacks": {self._callback_key(c): c.state_dict() for c in self.callbacks}}
        save_checkpoint(self.checkpoint_dir, "latest", capture_state(self.model, self.optimizer, self.scheduler, extra))
        self._write_summary("running")

    def _start_fresh(self):
        leftovers = [p.name for p in (self.run_dir / "metrics.csv", self.checkpoint_dir / "latest.json") if p.exists()]
        if leftovers:
            raise RunDirError(
                f"{self.run_dir} already holds a run ({', '.join(leftovers)}). Pass --resume (fit(resume=True)) "
                "to continue it, or choose another --out / run_dir."
            )
        return 1

    def _resume(self):
        """Restore the latest checkpoint (if any) and cut the files back to it; returns the epoch to start."""
        remove_stale_temp_files(self.run_dir)  # a process killed mid-write leaves its temporary files
        if self.checkpoint_dir.exists():
            remove_orphans(self.checkpoint_dir)
        if not checkpoint_exists(self.checkpoint_dir, "latest"):
            self.history, self.grad_stats = [], {"first_batch": None, "epochs": []}
            return 1  # killed before the first epoch ended: start again
        source = self.checkpoint_dir / "latest.json"
        state = load_checkpoint(self.checkpoint_dir, "latest")
        trainer = state["extra"]["trainer"]
        for key in ("seed", "scheduler_interval"):
            if trainer[key] != getattr(self, key):
                raise RunDirError(f"{source}: the run was started with {key}={trainer[key]!r}, "
                                  f"now {getattr(self, key)!r}; resume with the same settings")
        extra = restore_state(state, self.model, self.optimizer, self.scheduler, source=source)
        epoch = extra["epoch"]
        if epoch > self.epochs:
            raise RunDirError(f"{source}: the run already trained {epoch} epochs, more than epochs={self.epochs}")
        self.history, self.best = extra["history"], extra["best"]
        # a callback with state must be there on both sides (stateless ones, e.g. a live plot, may come and go)
        saved = {key: value for key, value in extra.get("callbacks", {}).items() if value}
        current = {self._callback_key(c): c for c in self.callbacks}
        lost = [key for key in saved if key not in current]
        if lost:
            raise RunDirError(f"{source}: the run was saved with the callback(s) {lost}, which would lose their "
                              "state; resume it with the callbacks it started with")
        for key, callback in current.items():
            if key in saved:
                callback.load_state_dict(saved[key])
            elif callback.state_dict():
                raise RunDirError(f"{source}: the run was saved without the callback {key!r}; resume it with the "
                                  "callbacks it started with")
        stats = load_grad_stats(self.run_dir) if (self.run_dir / "grad_stats.json").exists() else {"epochs": []}
        kept = [entry for entry in stats["epochs"] if entry["epoch"] <= epoch]
        if [entry["epoch"] for entry in kept] != list(range(1, epoch + 1)):
            raise RunDirError(f"{self.run_dir / 'grad_stats.json'} lacks epochs of checkpoint {source} (epoch {epoch})")
        self.grad_stats = {"first_batch": stats["first_batch"], "epochs": kept}
        write_metrics(self.run_dir / "metrics.csv", self.history)
        write_json_atomic(self.run_dir / "grad_stats.json", json_safe(self.grad_stats))
        self.log(f"resumed {self.run_dir} from epoch {epoch}/{self.epochs}")
        return epoch + 1

    # ----------------------------------------------------------------------------------- the end
    def _finish(self):
        """Evaluate the best checkpoint on the test data (the model keeps those weights), write the summary."""
        test = {}
        if self.test_loader is not None:
            best = load_checkpoint(self.checkpoint_dir, "best")
            restore_state(best, self.model, source=self.checkpoint_dir / "best.json")
            started = time.perf_counter()
            loss, acc, _ = evaluate(self.model, self.criterion, self.test_loader,
                                    np.random.default_rng([self.seed, 0, 4]))
            test = {"test_loss": finite_or_none(loss), "test_acc": acc,
                    "test_seconds": time.perf_counter() - started}
            self.log(f"test (best epoch {self.best['epoch']})  test_loss {loss:.4f} test_acc {acc:.4f}")
        summary = self._write_summary("finished", **test)
        self._draw_figures()
        return TrainResult("finished", self.run_dir, summary)

    def _stop_diverged(self, divergence):
        self.log(f"diverged at epoch {divergence['epoch']}, {divergence['phase']} batch {divergence['batch']}: "
                 f"loss {divergence['loss']}; the last good checkpoint is epoch {len(self.history)}")
        summary = self._write_summary("diverged", diverged=divergence)
        self._draw_figures()
        return TrainResult("diverged", self.run_dir, summary)

    def _end(self, result):
        for callback in self.callbacks:
            callback.on_fit_end(self, result)
        return result

    @staticmethod
    def _callback_key(callback):
        return callback.state_key or type(callback).__name__

    def _callback_values(self, callback, values, row):
        """A callback's additions to the metrics row: a dict of numbers (or None) under new keys."""
        if values is None:
            return {}
        if not isinstance(values, dict):
            raise TypeError(f"{type(callback).__name__}.on_epoch_end must return a dict or None, "
                            f"got {type(values).__name__}")
        for key, value in values.items():
            if key in row:
                raise ValueError(f"{type(callback).__name__}.on_epoch_end: {key!r} is already in the metrics row")
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float, np.number))):
                raise TypeError(f"{type(callback).__name__}.on_epoch_end: {key!r} must be a number or None, "
                                f"got {value!r}")
        return {key: (None if value is None else value.item() if isinstance(value, np.number) else value)
                for key, value in values.items()}

    def _write_summary(self, status, **more):
        """summary.json: status, best and final figures, parameter count, seconds (sum of the epochs')."""
        last = self.history[-1] if self.history else {}
        summary = {
            "status": status,
            "epochs": self.epochs,
            "epochs_done": len(self.history),
            "best_epoch": self.best["epoch"],
            "best_val_acc": self.best["val_acc"],
            "best_val_loss": finite_or_none(self.best["val_loss"]),
            **{f"final_{key}": finite_or_none(last.get(key)) for key in METRICS_FIELDS[1:6]},
            "test_loss": None,
            "test_acc": None,
            "num_parameters": self.model.num_parameters(),
            "seconds": sum(row["seconds"] for row in self.history),
            "diverged": None,
        }
        summary.update(more)
        write_json_atomic(self.run_dir / "summary.json", summary)
        return summary

    def _draw_figures(self):
        if not self.plots or not self.history:
            return
        try:
            from .plots import plot_grad_flow, plot_training_curves  # matplotlib only when drawing
            plot_training_curves({self.run_dir.name: self.history}, self.run_dir / "training_curves.png")
            for epoch in ("first", "last"):
                plot_grad_flow({self.run_dir.name: self.grad_stats}, self.run_dir / f"grad_flow_{epoch}.png", epoch=epoch)
        except Exception as error:  # a figure is never worth losing a finished run's status over
            warnings.warn(f"{self.run_dir}: could not draw the figures ({type(error).__name__}: {error})")


# --------------------------------------------------------------------------------------- helpers
def _is_plateau(scheduler):
    return isinstance(scheduler, ReduceLROnPlateau)


def _add_stats(total, stats):
    """Sum ``grad_stats`` dicts field by field (``numel`` is kept, not summed)."""
    if total is None:
        return {name: dict(values) for name, values in stats.items()}
    for name, values in stats.items():
        for key, value in values.items():
            if key != "numel":
                total[name][key] += value
    return total


def _scale_stats(total, factor):
    return {name: {key: value if key == "numel" else value * factor for key, value in values.items()}
            for name, values in total.items()}
