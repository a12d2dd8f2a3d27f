"""A live view of training: loss/accuracy curves and gradient flow, redrawn in place while a Trainer runs.

    from minigrad.callbacks import LivePlot
    Trainer(..., callbacks=[LivePlot()]).fit()            # in a notebook: one figure, updated every epoch
    Trainer(..., callbacks=[LivePlot(every=20)]).fit()    # ... and every 20 optimiser steps

The figure (one per ``fit``) has three panels:

- **Loss** and **Accuracy** against epochs: the epoch means of training (dashed) and validation (solid),
  one point at the end of each epoch, and the running training loss / accuracy (thin line: the mean over
  each block of ``loss_every`` steps, placed at its last step, in fractional epochs).
- **Gradient flow**: mean |grad| of every parameter, layers from input (left) to output (right) by their
  dotted names, on a log y scale that follows the data (exploding gradients stay in view); weights solid
  with dots, biases (and BN's beta) dashed with squares, so nothing is dropped (a layer without a bias
  leaves a gap in the dashed line); one line per epoch,
  coloured by epoch (colour bar), the current epoch drawn thicker. Each epoch's line is the gradient of its
  last batch (the course's gradient-flow plot), or, with ``every=N``, of the latest N-th step so far in that
  epoch. It reads ``trainer.model.grad_stats`` at the end of the batch, when ``p.grad`` still holds that
  batch's gradients. A zero or non-finite value leaves a gap (a log axis cannot show it).

In-place redraw. In a Jupyter kernel the figure is rendered to PNG and shown with
``IPython.display.display(Image(png), display_id=True)``; later redraws call ``handle.update(...)`` on that
display, so the cell keeps one output that changes, never a stack of figures. Rendering through
matplotlib's Agg canvas (no pyplot) means no backend is switched and no stray copy of the figure appears when
the cell ends.

Outside a notebook (no IPython kernel: a script, a terminal, a cluster job) the same figure is written to
``path`` at every redraw (default ``<run folder>/live.png``), replaced atomically so an image viewer never
reads half a file. In a notebook it is written to ``path`` too when one is given. A live view never fails a
training run: an error while drawing is reported once as a warning, and training goes on.

The callback keeps no state in checkpoints (it may be added or left out on resume): on resume it
redraws the finished epochs from ``trainer.history`` and the saved per-epoch gradient statistics. matplotlib
is imported when it first draws, IPython only when a kernel is running.
"""
import io
import math
import sys
import warnings
from pathlib import Path

from ..runs import atomic_open
from ..train import Callback

__all__ = ["LivePlot", "in_notebook"]


def in_notebook():
    """True inside a Jupyter (IPython) kernel; False in a script or a terminal IPython.

    IPython is only looked at when something has imported it already: a kernel always has.
    """
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    try:
        shell = ipython.get_ipython()
    except Exception:  # noqa: BLE001 - a half-initialised IPython is not a notebook
        return False
    return shell is not None and getattr(shell, "kernel", None) is not None


class LivePlot(Callback):
    """Redraw loss/accuracy curves and gradient flow in place while the Trainer runs (see the module doc).

    ``every``: also redraw (and sample the gradient flow) every ``every`` optimiser steps; None: at each
    epoch's end only. ``loss_every``: steps per point of the running training loss and accuracy.
    ``path``: where the PNG goes; outside a notebook it defaults to ``<run folder>/live.png``.
    ``show``: True to display in the notebook, False never, None (default) when an IPython kernel runs.
    ``figsize``, ``dpi``: of the figure. Drawing a frame takes about 0.2 s for a small model and up to 1 s for
    one with 100 named parameters (VGG38), so a small ``every`` slows training; per epoch costs nothing
    worth counting.
    """

    def __init__(self, every=None, loss_every=10, path=None, show=None, figsize=(12, 8), dpi=80):
        for name, value, allow_none in (("every", every, True), ("loss_every", loss_every, False)):
            if value is None and allow_none:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"LivePlot: {name} must be a positive whole number of steps"
                                 f"{' or None' if allow_none else ''}, got {value!r}")
        self.every, self.loss_every = every, loss_every
        self.path = None if path is None else Path(path)
        self.show, self.figsize, self.dpi = show, figsize, dpi
        self.running = []      # (step, mean loss, mean accuracy) per block of loss_every steps
        self.grad_lines = {}   # epoch -> {parameter name: mean |grad|} (its latest sample)
        self.frames = 0        # how many times the figure was drawn
        self.steps_per_epoch = None
        self._block = [0.0, 0, 0]  # loss * n, correct, n of the current block
        self._figure = None
        self._handle = None
        self._warned = False
        self._notebook = False
        self._file = None

    # ------------------------------------------------------------------------------- hooks
    def on_fit_start(self, trainer, start_epoch):
        self.steps_per_epoch = len(trainer.train_loader)
        first_step = (start_epoch - 1) * self.steps_per_epoch + 1
        # the same object reused for a resumed fit keeps what came before the checkpoint only
        self.running = [point for point in self.running if point[0] < first_step]
        self.grad_lines = {e: line for e, line in self.grad_lines.items() if e < start_epoch}
        for entry in trainer.grad_stats.get("epochs", []):  # restored on resume: the finished epochs' lines
            if entry["epoch"] < start_epoch and entry.get("last_batch"):
                self.grad_lines.setdefault(entry["epoch"], _mean_abs(entry["last_batch"]))
        self._block = [0.0, 0, 0]
        self._handle = None  # a new fit (a new cell) gets its own output
        self._notebook = in_notebook() if self.show is None else bool(self.show)
        self._default_file = Path(trainer.run_dir) / "live.png"
        self._file = self.path if self.path is not None or self._notebook else self._default_file
        if trainer.history:
            self._draw(trainer, trainer.history)

    def on_batch_end(self, trainer, epoch, batch, logs):
        block = self._block
        block[0] += logs["loss"] * logs["batch_size"]
        block[1] += logs["correct"]
        block[2] += logs["batch_size"]
        step = logs["step"]
        if step % self.loss_every == 0:
            self.running.append((step, block[0] / block[2], block[1] / block[2]))
            self._block = [0.0, 0, 0]
        sampled = self.every is not None and step % self.every == 0
        if sampled or batch == self.steps_per_epoch:
            try:
                self.grad_lines[epoch] = _mean_abs(trainer.model.grad_stats)
            except Exception as error:  # noqa: BLE001 - a live view never stops training
                self._warn(error)
        if sampled and batch != self.steps_per_epoch:  # the epoch's end draws it anyway
            self._draw(trainer, trainer.history, step=step)

    def on_epoch_end(self, trainer, epoch, metrics):
        self._draw(trainer, [*trainer.history, metrics], step=epoch * self.steps_per_epoch)
        return None

    def on_fit_end(self, trainer, result):
        if result.status != "finished":
            where = result.summary.get("diverged") or {}
            note = f"{result.status} at epoch {where.get('epoch')}, batch {where.get('batch')}" if where \
                else result.status
            self._draw(trainer, trainer.history, note=note)

    # ------------------------------------------------------------------------------- drawing
    def _draw(self, trainer, rows, step=None, note=None):
        """Draw the figure and show it (notebook) and/or write it (file); warn once on any error."""
        try:
            png = self._render(trainer, rows, step, note)
            if self._notebook:
                self._display(png)
            if self._file is not None:
                with atomic_open(self._file, "wb") as f:
                    f.write(png)
            self.frames += 1
        except Exception as error:  # noqa: BLE001 - a live view never stops training
            self._warn(error)

    def _display(self, png):
        from IPython.display import Image, display
        image = Image(data=png, format="png")
        if self._handle is None:
            self._handle = display(image, display_id=True)
            if self._handle is None:  # no display system after all: fall back to the file
                self._notebook = False
                self._file = self._file or self._default_file
        else:
            self._handle.update(image)

    def _warn(self, error):
        if not self._warned:
            self._warned = True
            warnings.warn(f"LivePlot: could not draw ({type(error).__name__}: {error}); training goes on "
                          "without the live view", RuntimeWarning, stacklevel=3)

    def _render(self, trainer, rows, step, note):
        """The figure as PNG bytes (one Figure per callback, cleared and redrawn each time)."""
        if self._figure is None:
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure
            self._figure = Figure(figsize=self.figsize, layout="constrained")
            FigureCanvasAgg(self._figure)
        fig = self._figure
        fig.clear()
        grid = fig.add_gridspec(2, 2, height_ratios=(1.0, 1.35))
        ax_loss, ax_acc = fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1])
        self._draw_curves(ax_loss, ax_acc, rows, trainer.epochs)
        self._draw_grad_flow(fig, fig.add_subplot(grid[1, :]), trainer.epochs)
        done = rows[-1]["epoch"] if rows else 0
        where = f"epoch {done}/{trainer.epochs}" + (f", step {step}" if step is not None else "")
        fig.suptitle(f"{Path(trainer.run_dir).name}: {where}" + (f" ({note})" if note else ""), fontsize=11)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=self.dpi)
        return buffer.getvalue()

    def _draw_curves(self, ax_loss, ax_acc, rows, epochs):
        epochs_x = [row["epoch"] for row in rows]
        running_x = [s / self.steps_per_epoch for s, _, _ in self.running]
        for ax, key, scale, label in ((ax_loss, "loss", 1.0, "cross-entropy loss"), (ax_acc, "acc", 100.0, "accuracy (%)")):
            index = 1 if key == "loss" else 2
            if self.running:
                ax.plot(running_x, [p[index] * scale for p in self.running], "-", color="C0", linewidth=0.8,
                        alpha=0.45, label=f"train, running (mean of {self.loss_every} steps)")
            ax.plot(epochs_x, [_nan(row[f"train_{key}"]) * scale for row in rows], "--o", color="C0",
                    markersize=4, label="train (epoch mean)")
            ax.plot(epochs_x, [_nan(row[f"val_{key}"]) * scale for row in rows], "-o", color="C1", markersize=4,
                    label="validation")
            ax.set(xlabel="epoch", ylabel=label, title="Loss" if key == "loss" else "Accuracy",
                   xlim=(0, max(epochs, 1)))
            ax.xaxis.get_major_locator().set_params(integer=True)
            ax.grid(True, alpha=0.3)
        ax_loss.legend(fontsize=8, loc="best")

    def _draw_grad_flow(self, fig, ax, epochs):
        from matplotlib import colormaps, colors
        from matplotlib.cm import ScalarMappable
        from matplotlib.lines import Line2D

        if not self.grad_lines:
            ax.text(0.5, 0.5, "gradient flow: drawn after the first sample", ha="center", va="center",
                    transform=ax.transAxes, color="0.4")
            ax.set_axis_off()
            return
        # layers in forward order (first appearance across the lines), parameters grouped by kind
        layers, kinds = {}, {}
        for line in self.grad_lines.values():
            for name in line:
                layer, _, kind = name.rpartition(".")
                layers.setdefault(layer, len(layers))
                kinds.setdefault(kind, len(kinds))
        others = [kind for kind in kinds if kind not in ("weight", "bias")]
        styles = {"weight": _STYLES[0], "bias": _STYLES[1],
                  **{kind: _STYLES[2 + i % (len(_STYLES) - 2)] for i, kind in enumerate(others)}}
        cmap = colormaps["viridis"]
        norm = colors.Normalize(vmin=1, vmax=max(epochs, 2))
        latest = max(self.grad_lines)
        positive = False
        for epoch in sorted(self.grad_lines):
            line = self.grad_lines[epoch]
            for kind in kinds:
                # a layer without this kind of parameter (a conv without bias) is a gap, not a straight line
                ys = [math.nan] * len(layers)
                for name, value in line.items():
                    layer, _, own_kind = name.rpartition(".")
                    if own_kind == kind and value > 0 and math.isfinite(value):  # a log axis cannot show 0
                        ys[layers[layer]] = value
                if all(y != y for y in ys):
                    continue
                positive = True
                linestyle, marker = styles[kind]
                ax.plot(range(len(layers)), ys, linestyle=linestyle, marker=marker, color=cmap(norm(epoch)),
                        linewidth=2.0 if epoch == latest else 1.0, markersize=3.5 if epoch == latest else 2.5,
                        alpha=1.0 if epoch == latest else 0.75)
        names = [layer or "(model)" for layer in layers]
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=90, fontsize=6 if len(names) > 30 else 7 if len(names) > 15 else 8)
        ax.set_xlim(-0.5, len(names) - 0.5)
        if positive:
            ax.set_yscale("log")
        ax.grid(True, which="major", alpha=0.3)
        ax.set_ylabel("mean |gradient| (log scale)")
        ax.set_xlabel("layer, from input (left) to output (right)")
        sample = "last batch of each epoch" if self.every is None else f"latest of every {self.every} steps, per epoch"
        ax.set_title(f"Gradient flow ({sample})", fontsize=10)
        ax.legend(handles=[Line2D([], [], color="0.35", linestyle=styles[k][0], marker=styles[k][1], label=k)
                           for k in kinds], fontsize=8, loc="best", title="parameter")
        bar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, pad=0.01, aspect=30)
        bar.set_label("epoch")
        bar.ax.yaxis.get_major_locator().set_params(integer=True)


_STYLES = [("-", "o"), ("--", "s"), (":", "^"), ("-.", "D")]


def _mean_abs(stats):
    """{parameter name: mean |grad|} from a grad_stats dict (recorded ':grad_output' entries left out)."""
    return {name: _nan(values["mean_abs"]) for name, values in stats.items() if ":" not in name}


def _nan(value):
    return math.nan if value is None else float(value)
