"""TensorBoard event files of a training run, written through tensorboardX (``pip install -e ".[tensorboard]"``).

    from minigrad.callbacks import TensorBoard
    Trainer(..., run_dir="runs/a", callbacks=[TensorBoard("tb/a")]).fit()
    # then: tensorboard --logdir tb

Every study takes ``--tensorboard DIR`` and writes each row's events to ``DIR/<row>/``.

What is written. The global step is the number of optimiser steps since the run began (the Trainer's
``logs["step"]``), so runs with different batch sizes still line up by updates, and a resumed run continues
the same axis::

    per epoch, at step = epoch * steps_per_epoch (the epoch's last update)
        train/loss  train/acc  val/loss  val/acc  lr          the epoch's metrics row (accuracies 0-1; lr of
                                                             the epoch's first batch, as in metrics.csv)
    at step 1 and every ``every`` steps (default 50), for each parameter, biases included
        grad_mean_abs/<name>    mean |grad| of that batch's gradient (``model.grad_stats``, float64)
        grad_hist/<name>        histogram of |grad| of that batch, in the log-spaced buckets below

``<name>`` is the dotted parameter name (``stage0.block0.conv0.weight``, ``head.linear.bias``). The
gradients are those of the batch just used by the optimiser step (the hook runs before they are zeroed).

Buckets. tensorboardX's own ``add_histogram`` bins are +-1e-12 * 1.1^k: everything smaller than 1e-12 (the
early layers of a network whose gradients vanish) falls into one bucket, and numpy's bins ('auto')
are linear, so one large entry squeezes the rest into the first bin. Here |grad| is counted with numpy
into fixed buckets 8 per decade, edges ``10**(k/8)`` from 1e-45 to 1e38 (each bucket spans a factor
1.33; every non-zero finite float32 magnitude falls within them), plus ``[0, 1e-45)`` for zeros and
``[1e38, max]``. The same edges serve every layer and step, so histograms compare across layers and over
time. Only the occupied span is written, through ``add_histogram_raw`` (TensorBoard takes each bucket's
right edge from its limit and the first bucket's left edge from ``min``). Non-finite entries are left out of
the histogram; the scalar shows them (inf/nan).

Resume. The writer opens with ``purge_step`` = the first step this ``fit()`` runs (1 for a fresh run,
``(start_epoch - 1) * steps_per_epoch + 1`` on resume). That writes a SessionLog START event at that step:
TensorBoard then drops every event at that step or later from the files written before, i.e. what a
killed run wrote after its last checkpoint, which the resumed run writes again. (TensorBoard's Rust data
server drops them too, tag by tag, when the same steps come again; a deterministic resume rewrites them.)
A fresh run into a folder that already holds events therefore replaces them. Each session writes its own
file, named ``events.out.tfevents.<time>.<host>.step<first step>`` so two sessions started in the same second
neither collide nor sort out of order. The callback keeps no state of its own (it may be added or left out
on resume); it flushes at every epoch end and closes its file when the run ends.
"""
import importlib.util
import math
from pathlib import Path

import numpy as np

from ..train import Callback

__all__ = ["TensorBoard", "HIST_EDGES", "abs_histogram", "require_tensorboardx"]

# |grad| bucket edges: 10**(k/8), 1e-45 .. 1e38
HIST_EDGES = 10.0 ** (np.arange(-45 * 8, 38 * 8 + 1) / 8.0)

INSTALL_HINT = 'pip install tensorboardX (or pip install -e ".[tensorboard]" in the minigrad repository)'


def require_tensorboardx():
    """Raise ImportError with the install command if tensorboardX is missing (without importing it)."""
    if importlib.util.find_spec("tensorboardX") is None:
        raise ImportError(f"TensorBoard logging needs tensorboardX, which is not installed: {INSTALL_HINT}")


def abs_histogram(values, edges=HIST_EDGES):
    """Histogram of |values| in the buckets ``[0, e0), [e0, e1), ..., [e_last, max]``, trimmed.

    Returns a dict of ``add_histogram_raw``'s arguments (``min``, ``max``, ``num``, ``sum``,
    ``sum_squares`` of |values|, ``bucket_limits`` = each bucket's right edge, ``bucket_counts``) over the
    span from the first occupied bucket to the last; None when no value is finite.
    """
    a = np.abs(np.asarray(values, dtype=np.float64).ravel())
    a = a[np.isfinite(a)]
    if a.size == 0:
        return None
    index = np.searchsorted(edges, a, side="right")  # 0: below e0; k: [e_{k-1}, e_k); len(edges): >= e_last
    counts = np.bincount(index, minlength=len(edges) + 1)
    top = float(a.max())
    limits = np.append(edges, max(top, edges[-1]))
    occupied = np.flatnonzero(counts)
    lo, hi = int(occupied[0]), int(occupied[-1])
    return {"min": float(a.min()), "max": top, "num": int(a.size), "sum": float(a.sum()),
            "sum_squares": float(a @ a), "bucket_limits": limits[lo:hi + 1].tolist(),
            "bucket_counts": counts[lo:hi + 1].tolist()}


class TensorBoard(Callback):
    """Write a run's metrics and gradient statistics as TensorBoard events into ``log_dir``.

    ``every``: log each parameter's mean |grad| and |grad| histogram at step 1 and every ``every``
    optimiser steps (0 or None: never). ``histograms=False`` keeps the scalars only. ``flush_secs``:
    tensorboardX's flush interval (the callback also flushes at every epoch end). The tags, buckets and
    resume behaviour are in the module docstring. Raises ImportError naming the install command when
    tensorboardX is missing.
    """

    def __init__(self, log_dir, every=50, histograms=True, flush_secs=30):
        require_tensorboardx()
        if every is not None and (isinstance(every, bool) or not isinstance(every, int) or every < 0):
            raise ValueError(f"TensorBoard: every must be a whole number of steps >= 0 or None, got {every!r}")
        self.log_dir = Path(log_dir)
        self.every, self.histograms, self.flush_secs = every or 0, histograms, flush_secs
        self.writer = None
        self.steps_per_epoch = None

    # ------------------------------------------------------------------------------- hooks
    def on_fit_start(self, trainer, start_epoch):
        from tensorboardX import SummaryWriter
        self.close()
        self.steps_per_epoch = len(trainer.train_loader)
        first_step = (start_epoch - 1) * self.steps_per_epoch + 1
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.writer = SummaryWriter(logdir=str(self.log_dir), purge_step=first_step, flush_secs=self.flush_secs,
                                    filename_suffix=f".step{first_step:012d}")

    def on_batch_end(self, trainer, epoch, batch, logs):
        step = logs["step"]
        if self.writer is None or not self.every or not (step == 1 or step % self.every == 0):
            return
        model = trainer.model
        for name, stats in model.grad_stats.items():
            if ":" not in name:  # recorded grad-output / activation statistics are not parameters
                self.writer.add_scalar(f"grad_mean_abs/{name}", _finite_or_nan(stats["mean_abs"]), step)
        if self.histograms:
            for name, param in model.named_parameters():
                histogram = abs_histogram(param.grad)
                if histogram is not None:
                    self.writer.add_histogram_raw(f"grad_hist/{name}", global_step=step, **histogram)

    def on_epoch_end(self, trainer, epoch, metrics):
        if self.writer is None:
            return None
        step = epoch * self.steps_per_epoch
        for tag, key in (("train/loss", "train_loss"), ("train/acc", "train_acc"), ("val/loss", "val_loss"),
                         ("val/acc", "val_acc"), ("lr", "lr")):
            self.writer.add_scalar(tag, _finite_or_nan(metrics[key]), step)
        self.writer.flush()
        return None

    def on_fit_end(self, trainer, result):
        self.close()

    def close(self):
        """Flush and close the event file (the next ``fit`` opens a new one)."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _finite_or_nan(value):
    return math.nan if value is None else float(value)
