"""Figures of training runs: loss/accuracy curves and gradient flow, drawn from saved run folders.

- ``plot_training_curves(runs, path)``: two panels (loss, accuracy) against epoch; training dashed,
  validation solid, one colour per run (the coursework report's Figure 1).
- ``plot_grad_flow(runs, path, epoch="first")``: mean |grad| of each weight tensor in forward order,
  one line per run, log y by default (the course's gradient-flow plot, SOURCE-NOTES A.6: weights only,
  biases out, BN weight in; by default the gradient of the epoch's last training batch).
- ``plot_grad_flow_epochs(runs, path)``: the same for every epoch of each run, one panel per run, one
  line per epoch coloured by epoch (the report's Figures 2, 3 and 5, which the course draws epoch by epoch).
- ``plot_log_panels(panels, path)``: a grid of panels of positive values (a variance across depth) on a
  log axis, lines given by the caller; ``plot_facets(points, path, ...)``: the same as small multiples of
  flat records (columns, rows and lines by key); ``plot_grouped_bars(...)``: bars with a reference line.
- ``plot_train_accuracy(runs, path)``: training accuracy per epoch, one line per run, a diverged run's
  epoch in its label (the BN-in-ResNets paper's Figure 8).
- ``plot_block_panels(panels, path)``: a value per residual block (or layer), one panel per setting, shared
  log y axis, blocks on the x axis with scale boundaries marked (the BN-in-ResNets paper's Figures 5-15).

Command line, to redraw a run's figures from its metrics.csv and grad_stats.json::

    python -m minigrad.plots RUN_DIR [RUN_DIR ...] [--out DIR] [--pdf]

matplotlib is used through its Agg canvas directly (no pyplot), so importing this module neither
changes the backend of a notebook nor needs a display; ``import minigrad`` does not import it.
"""
import argparse
import math
import os
import sys
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .runs import load_grad_stats, load_metrics, load_summary

__all__ = ["plot_training_curves", "plot_grad_flow", "plot_grad_flow_epochs", "grad_flow_values",
           "default_param_filter", "plot_log_panels", "plot_facets", "plot_grouped_bars", "plot_block_panels",
           "plot_train_accuracy", "main"]


# --------------------------------------------------------------------------------------- inputs
def _as_runs(runs):
    """Normalise ``runs`` to ``[(label, source)]``: a mapping label -> source, or a list of run folders."""
    if isinstance(runs, dict):
        return list(runs.items())
    if isinstance(runs, (str, Path)):
        runs = [runs]
    return [(Path(source).name if isinstance(source, (str, Path)) else f"run {i}", source)
            for i, source in enumerate(runs)]


def _metrics_of(source):
    """A run folder / metrics.csv path, or already-loaded rows (list of dicts)."""
    return load_metrics(source) if isinstance(source, (str, Path)) else list(source)


def _save(fig, path, pdf):
    """Save ``fig`` as PNG at ``path`` (and as PDF next to it if asked); returns the paths written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=150)
    written = [path]
    if pdf:
        fig.savefig(path.with_suffix(".pdf"))
        written.append(path.with_suffix(".pdf"))
    return written


# --------------------------------------------------------------------------------------- training curves
def plot_training_curves(runs, path, title=None, pdf=False):
    """Loss (left) and accuracy (right) per epoch; train dashed, validation solid, a colour per run.

    ``runs``: a mapping ``label -> run folder | list of metrics rows``, or a list of run folders
    (labelled by folder name). Accuracies are fractions in metrics.csv and drawn as percentages.
    Returns the list of files written.
    """
    runs = _as_runs(runs)
    fig = Figure(figsize=(11, 4.2), layout="tight")
    ax_loss, ax_acc = fig.subplots(1, 2)
    colours = [f"C{i % 10}" for i in range(len(runs))]
    for (label, source), colour in zip(runs, colours):
        rows = _metrics_of(source)
        epochs = [row["epoch"] for row in rows]
        for ax, key, scale in ((ax_loss, "loss", 1.0), (ax_acc, "acc", 100.0)):
            ax.plot(epochs, [row[f"train_{key}"] * scale for row in rows], "--", color=colour, marker=".",
                    markersize=4 if len(rows) < 30 else 0)
            ax.plot(epochs, [row[f"val_{key}"] * scale for row in rows], "-", color=colour, marker=".",
                    markersize=4 if len(rows) < 30 else 0, label=label)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss", title="Loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="Accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(True, alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    # one legend for the runs (colours), one for the line styles
    if runs:
        ax_acc.legend(title="run (colour)", fontsize=8, loc="best")
    style_handles = [ax_loss.plot([], [], "--", color="0.3", label="train")[0],
                     ax_loss.plot([], [], "-", color="0.3", label="validation")[0]]
    ax_loss.legend(handles=style_handles, fontsize=8, loc="best")
    if title:
        fig.suptitle(title)
    return _save(fig, path, pdf)


# --------------------------------------------------------------------------------------- gradient flow
def default_param_filter(name):
    """Weights only (SOURCE-NOTES A.6): ``*.weight`` kept (conv, linear and BN gamma), biases and
    recorded grad-output/activation statistics left out."""
    return ":" not in name and (name == "weight" or name.endswith(".weight"))


def _readable(name):
    """``stage0.block0.conv0.weight`` -> ``stage0.block0.conv0`` (the layer, as DECISIONS 12 names it)."""
    return name[: -len(".weight")] if name.endswith(".weight") else name


def _select_stats(stats, epoch, which):
    """Pick ``{param: stats}`` from a grad_stats.json dict; returns (that dict, a description)."""
    if "epochs" not in stats:  # already a {param name: {"mean_abs": ...}} dict, e.g. model.grad_stats
        return stats, None
    if epoch == 0:
        if not stats.get("first_batch"):
            raise ValueError("epoch=0 asks for the run's first batch, which these statistics do not hold")
        return stats["first_batch"], "first batch of the run (before any update)"
    epochs = stats["epochs"]
    if not epochs:
        raise ValueError("these gradient statistics hold no finished epoch yet")
    if epoch == "first":
        entry = epochs[0]
    elif epoch == "last":
        entry = epochs[-1]
    elif isinstance(epoch, int) and not isinstance(epoch, bool):
        matches = [e for e in epochs if e["epoch"] == epoch]
        if not matches:
            raise ValueError(f"epoch {epoch} not in the statistics (epochs {epochs[0]['epoch']}..{epochs[-1]['epoch']})")
        entry = matches[0]
    else:
        raise ValueError(f"epoch must be 'first', 'last', 0 (first batch) or an epoch number, got {epoch!r}")
    if which not in ("last_batch", "mean"):
        raise ValueError(f"which must be 'last_batch' or 'mean', got {which!r}")
    label = "last batch" if which == "last_batch" else "mean over its batches"
    return entry[which], f"epoch {entry['epoch']}, {label}"


def grad_flow_values(stats, epoch="first", which="last_batch", stat="mean_abs", param_filter=None):
    """``(layer names, values)`` in forward order: ``stat`` of each parameter kept by ``param_filter``."""
    chosen, _ = _select_stats(stats, epoch, which)
    keep = param_filter or default_param_filter
    names = [name for name in chosen if keep(name)]
    # None stands for a non-finite value (JSON has no NaN): drawn as a gap
    values = [math.nan if chosen[n][stat] is None else float(chosen[n][stat]) for n in names]
    return [_readable(n) for n in names], values


def plot_grad_flow(runs_or_stats, path, epoch="first", log=True, param_filter=None, which="last_batch",
                   stat="mean_abs", title=None, pdf=False):
    """Mean |grad| per layer, input on the left, one line per run, saved as PNG (and PDF with ``pdf=True``).

    ``runs_or_stats``: a run folder, a list of them, a mapping ``label -> run folder | grad_stats dict``,
    or one grad_stats dict (from grad_stats.json or ``model.grad_stats``).
    ``epoch``: ``"first"`` / ``"last"`` / an epoch number (1-based), or ``0`` for the run's very first
    batch; ``which``: that epoch's ``"last_batch"`` (what the course plots) or ``"mean"`` over its batches.
    ``param_filter(name) -> bool``: default weights only. Runs with different layer lists (VGG08 against
    VGG38) are each stretched over the full width (first layer left, last right); the deepest run's names
    go along the bottom and, if there is one other layer list, its names along the top.
    """
    if isinstance(runs_or_stats, dict) and ("epochs" in runs_or_stats or _is_param_stats(runs_or_stats)):
        runs = [("model", runs_or_stats)]
    else:
        runs = _as_runs(runs_or_stats)
    lines, descriptions = [], []
    for label, source in runs:
        stats = load_grad_stats(source) if isinstance(source, (str, Path)) else source
        descriptions.append(_select_stats(stats, epoch, which)[1])
        names, values = grad_flow_values(stats, epoch, which, stat, param_filter)
        if not names:
            raise ValueError(f"{label}: no parameter passes the filter (names like {list(stats)[:3]})")
        lines.append((label, names, values))
    deep_label, deepest, _ = max(lines, key=lambda line: len(line[1]))
    span = max(len(deepest) - 1, 1)

    def positions(names):
        # each run stretched over the same width: its first layer at the left edge, its last at the right,
        # so the input side and the output side of a shallow and a deep network line up
        return [i * span / max(len(names) - 1, 1) for i in range(len(names))]

    others = [(label, names) for label, names, _ in lines if names != deepest]
    other_lists = {tuple(names) for _, names in others}
    width = min(max(6.0, 0.28 * len(deepest) + 2.5), 18.0)
    fig = Figure(figsize=(width, 6.5 if len(other_lists) == 1 else 5.0), layout="tight")
    ax = fig.subplots()
    for i, (label, names, values) in enumerate(lines):
        shown = [v if v > 0 or not log else math.nan for v in values]  # log scale cannot show 0
        legend = label if len(names) == len(deepest) else f"{label} ({len(names)} layers)"
        ax.plot(positions(names), shown, "-o", color=f"C{i % 10}", markersize=3.5, linewidth=1.4,
                alpha=0.85, label=legend)
    ax.set_xticks(positions(deepest))
    ax.set_xticklabels(deepest, rotation=90, fontsize=7 if len(deepest) > 20 else 8)
    ax.set_xlim(-0.5, span + 0.5)
    if len(other_lists) == 1:
        # a second (shallower) architecture: its layer names along the top axis, at its own positions
        top = ax.secondary_xaxis("top")
        top.set_xticks(positions(others[0][1]))
        top.set_xticklabels(others[0][1], rotation=90, fontsize=7 if len(others[0][1]) > 20 else 8)
        top.set_xlabel(f"layers of {', '.join(label for label, _ in others)}", fontsize=9)
        colour = next(f"C{i % 10}" for i, (_, names, _) in enumerate(lines) if names != deepest)
        top.tick_params(axis="x", colors=colour)  # the colour of the run these names belong to
        xlabel = f"layers of {deep_label} (input left, output right)"
    elif other_lists:
        xlabel = f"relative depth, input left, output right (names: {deep_label})"
    else:
        xlabel = "layer, from input (left) to output (right)"
    if log:
        ax.set_yscale("log")
    quantity = {"mean_abs": "mean |gradient|", "l2": "gradient L2 norm", "max_abs": "max |gradient|",
                "var": "gradient variance"}.get(stat, stat)
    ax.set_ylabel(f"{quantity} of the weights" + (" (log scale)" if log else ""))
    ax.set_xlabel(xlabel)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    if title is None:
        if len(set(descriptions)) > 1:  # e.g. epoch="last" of runs that stopped at different epochs
            descriptions = [f"{label}: {d}" for (label, _, _), d in zip(lines, descriptions)]
        described = "; ".join(dict.fromkeys(d for d in descriptions if d))
        title = f"Gradient flow: {described}" if described else "Gradient flow"
    ax.set_title(title)
    return _save(fig, path, pdf)


def plot_grad_flow_epochs(runs, path, which="last_batch", stat="mean_abs", param_filter=None, title=None,
                          pdf=False):
    """Mean |grad| per layer at every epoch: one panel per run, one line per epoch coloured by epoch.

    ``runs``: a run folder, a list of them, or a mapping ``label -> run folder | grad_stats dict``.
    Log y axis shared by the panels (so a shallow and a deep run compare at a glance), layer names
    along each panel's x axis (input left), a colour bar for the epoch. ``which``: each epoch's
    ``"last_batch"`` (the course's plot) or ``"mean"``. Returns the files written.
    """
    from matplotlib import cm, colors

    runs = _as_runs(runs)
    panels = []
    for label, source in runs:
        stats = load_grad_stats(source) if isinstance(source, (str, Path)) else source
        epochs = [e["epoch"] for e in stats.get("epochs", [])]
        if not epochs:
            raise ValueError(f"{label}: these gradient statistics hold no finished epoch yet")
        lines = [(epoch, *grad_flow_values(stats, epoch, which, stat, param_filter)) for epoch in epochs]
        panels.append((label, lines))
    last_epoch = max(line[0] for _, lines in panels for line in lines)
    norm = colors.Normalize(vmin=1, vmax=max(last_epoch, 2))
    cmap = cm.get_cmap("viridis") if hasattr(cm, "get_cmap") else __import__("matplotlib").colormaps["viridis"]
    widths = [min(max(4.5, 0.22 * len(lines[0][1]) + 2.0), 14.0) for _, lines in panels]
    fig = Figure(figsize=(sum(widths) + 1.2, 5.8), layout="constrained")
    axes = fig.subplots(1, len(panels), sharey=True, squeeze=False, width_ratios=widths)[0]
    for ax, (label, lines) in zip(axes, panels):
        for epoch, names, values in lines:
            shown = [v if v > 0 else math.nan for v in values]  # log scale cannot show 0
            ax.plot(range(len(names)), shown, "-", marker="o", markersize=2.5, linewidth=1.1,
                    color=cmap(norm(epoch)), alpha=0.9)
        names = lines[0][1]
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=90, fontsize=6 if len(names) > 20 else 8)
        ax.set_yscale("log")
        ax.grid(True, which="major", alpha=0.3)
        ax.set_title(f"{label} ({len(lines)} epochs)", fontsize=10)
        ax.set_xlabel("layer, input (left) to output (right)")
    quantity = {"mean_abs": "mean |gradient|", "l2": "gradient L2 norm"}.get(stat, stat)
    axes[0].set_ylabel(f"{quantity} of the weights (log scale)")
    fig.colorbar(cm.ScalarMappable(norm=norm, cmap=cmap), ax=list(axes), label="epoch", pad=0.01)
    batch = "last training batch of each epoch" if which == "last_batch" else "mean over each epoch's batches"
    fig.suptitle(title or f"Gradient flow at every epoch ({batch})")
    return _save(fig, path, pdf)


def plot_train_accuracy(runs, path, title="Training accuracy", pdf=False):
    """Training accuracy (%) against epoch, one line per run folder; "(diverged, epoch E)" after the label
    of a run whose summary says it diverged. ``runs`` as ``plot_training_curves``. Returns the files written."""
    fig = Figure(figsize=(7.0, 4.5), layout="tight")
    ax = fig.subplots()
    for i, (label, source) in enumerate(_as_runs(runs)):
        rows = _metrics_of(source)
        folder = Path(source) if isinstance(source, (str, Path)) else None
        summary = load_summary(folder) if folder is not None and (folder / "summary.json").exists() else {}
        if summary.get("status") == "diverged":
            label += f" (diverged, epoch {summary['diverged']['epoch']})"
        ax.plot([r["epoch"] for r in rows], [100 * r["train_acc"] for r in rows], marker="o", color=f"C{i % 10}",
                label=label)
    ax.set(xlabel="epoch", ylabel="training accuracy (%)", title=title)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path, pdf)


def plot_block_panels(panels, path, title=None, ylabel=None, log=True, sharey=True, colormap=None,
                      colorbar=None, pdf=False):
    """One panel per setting, a value per block on the x axis (input left), log y shared by default.

    ``panels``: ``[(panel title, [(curve label, {block name: value}[, colormap position 0..1])])]``; names like ``scale1.block0`` (or
    any dotted name whose first part is the scale): a dotted line where the scale changes, every block
    ticked. None, NaN and (on a log axis) values <= 0 are gaps. Curves take colours C0, C1, ... or, with
    ``colormap`` (e.g. "viridis"), run along it in order; ``colorbar=(label, first, last)`` adds its bar
    (one scale for all panels: label the curves by e.g. step). Returns the files written.
    """
    from matplotlib import cm, colors
    width = max((len(next(iter(curves), ("", {}))[1]) for _, curves in panels), default=1)
    panel_width = min(max(4.5, 0.16 * width + 2.0), 12.0)
    fig = Figure(figsize=(panel_width * len(panels) + (1.2 if colorbar else 0.3), 4.8), layout="constrained")
    axes = fig.subplots(1, len(panels), sharey=sharey, squeeze=False)[0]
    cmap = __import__("matplotlib").colormaps[colormap] if colormap else None
    for ax, (panel_title, curves) in zip(axes, panels):
        names = []
        for i, (label, values, *position) in enumerate(curves):
            names = list(values)
            shown = [math.nan if v is None or not (v > 0 or not log) else v for v in values.values()]
            colour = cmap(position[0] if position else i / max(len(curves) - 1, 1)) if cmap else f"C{i % 10}"
            ax.plot(range(1, len(shown) + 1), shown, "-o", markersize=2.5 if len(shown) > 30 else 3.5,
                    linewidth=1.1, color=colour, label=label)
        ax.set_xticks(range(1, len(names) + 1))
        ax.set_xticklabels([n.replace("scale", "s").replace(".block", ".b") for n in names], rotation=90,
                           fontsize=5 if len(names) > 40 else 7)
        for i in range(1, len(names)):
            if names[i].split(".")[0] != names[i - 1].split(".")[0]:
                ax.axvline(i + 0.5, color="0.5", linewidth=0.9, linestyle=":")
        if log:
            ax.set_yscale("log")
        ax.set_title(panel_title, fontsize=10)
        ax.set_xlabel("residual block (input left, output right)")
        ax.grid(True, which="major", alpha=0.3)
        if curves and not colorbar and len(curves) <= 12:
            ax.legend(fontsize=7)
    if ylabel:
        axes[0].set_ylabel(ylabel)
    if colorbar:
        label, first, last = colorbar
        fig.colorbar(cm.ScalarMappable(norm=colors.Normalize(first, last), cmap=cmap), ax=list(axes),
                     label=label, pad=0.01)
    if title:
        fig.suptitle(title)
    return _save(fig, path, pdf)


def _is_param_stats(d):
    return bool(d) and all(isinstance(v, dict) and "mean_abs" in v for v in d.values())


# --------------------------------------------------------------------------------------- values across depth
def plot_log_panels(panels, path, title=None, legend_title=None, pdf=False):
    """A grid of panels of positive values on a log axis (e.g. a variance across depth); returns the files.

    ``panels``: rows of panels, each a dict ``{"title", "xlabel", "ylabel", "ylim" (or None), "lines"}``
    (``None`` leaves a cell empty); a line is ``{"x", "y", "label", "color", "style"}``. Values that are
    not finite or not > 0 are left out; where a line stops early (an overflow) an ``x`` marks its last
    point. A grey line marks 1. The legend of the first panel that has lines (one entry per label) sits
    outside the grid, on the right; decade ticks only (over 200 decades matplotlib's default would place
    thousands).
    """
    import numpy as np
    from matplotlib.ticker import LogLocator, NullLocator
    from matplotlib.lines import Line2D

    rows, cols = len(panels), max(len(row) for row in panels)
    fig = Figure(figsize=(4.2 * cols + 1.8, 3.2 * rows + 0.6), layout="constrained")
    axes = np.atleast_2d(fig.subplots(rows, cols, squeeze=False))
    legend = {}
    for r, row in enumerate(panels):
        for c in range(cols):
            ax, panel = axes[r, c], row[c] if c < len(row) else None
            if panel is None:
                ax.set_axis_off()
                continue
            for line in panel["lines"]:
                x = np.asarray(line["x"], float)
                y = np.array([np.nan if v is None else v for v in line["y"]], float)
                ok = np.isfinite(y) & (y > 0)
                if not ok.any():
                    continue
                ax.plot(x[ok], y[ok], line.get("style", "-"), color=line.get("color"), lw=1.5)
                legend.setdefault(line.get("label"), Line2D([], [], ls=line.get("style", "-"), color=line.get("color")))
                if not ok.all():  # the signal stopped (inf/NaN): mark where
                    last = np.flatnonzero(ok)[-1]
                    ax.plot(x[last], y[last], "x", color=line.get("color"), ms=8)
            ax.set_yscale("log")
            ax.yaxis.set_major_locator(LogLocator(base=10, numticks=7))
            ax.yaxis.set_minor_locator(NullLocator())
            if panel.get("ylim"):
                ax.set_ylim(*panel["ylim"])
            ax.axhline(1.0, color="0.6", lw=0.8, zorder=0)
            ax.grid(True, which="major", alpha=0.3)
            ax.set(title=panel.get("title", ""), xlabel=panel.get("xlabel", ""), ylabel=panel.get("ylabel", ""))
    legend.pop(None, None)
    if legend:
        fig.legend(list(legend.values()), list(legend), loc="outside right center", fontsize=8, title=legend_title)
    if title:
        fig.suptitle(title)
    return _save(fig, path, pdf)


def plot_facets(points, path, x, columns, series, rows, style_of, label_of, column_title=str, **kwargs):
    """Small multiples of flat records (``points``: dicts) through ``plot_log_panels``: one column per value of
    the key ``columns``, one panel row per entry of ``rows``, one line per value of the key ``series``.

    A row is ``{"where": {key: value} (optional), "title": prefix (optional), "ylabel", "ylim" (optional),
    "lines": [(y key, dash or None, relative or None, label suffix)]}``: each spec draws ``y`` against ``x``
    for every series value, divided by its own value at index ``relative`` (0: first, -1: last) when given.
    ``style_of(value)`` -> ``(colour, dash)``; ``label_of(value)`` -> the legend's text; ``column_title(value)``.
    ``kwargs`` go to ``plot_log_panels`` (title, legend_title, pdf).
    """
    import numpy as np
    unique = lambda key, pts: list(dict.fromkeys(p[key] for p in pts))  # noqa: E731
    panels = []
    for row in rows:
        selected = [p for p in points if all(p[k] == v for k, v in row.get("where", {}).items())]
        panels.append([])
        for column in unique(columns, points):
            lines = []
            for key, dash, relative, suffix in row["lines"]:
                for value in unique(series, [p for p in selected if p[columns] == column]):
                    pts = [p for p in selected if p[columns] == column and p[series] == value]
                    y = np.array([np.nan if p[key] is None else p[key] for p in pts], float)
                    with np.errstate(all="ignore"):
                        y = y / y[relative] if relative is not None else y
                    colour, own_dash = style_of(value)
                    lines.append({"x": [p[x] for p in pts], "y": y, "label": label_of(value) + suffix,
                                  "color": colour, "style": dash or own_dash})
            panels[-1].append({"title": row.get("title", "") + column_title(column), "xlabel": x,
                               "ylabel": row["ylabel"], "ylim": row.get("ylim"), "lines": lines})
    return plot_log_panels(panels, path, **kwargs)


def plot_grouped_bars(groups, series, value, path, ylabel, title=None, reference=None, pdf=False):
    """Bars grouped by ``groups`` (x labels), one bar per ``series`` entry ``(key, label, color, hatch)``
    in each group; ``value(group, key)`` gives ``(height or None, note)``: a missing bar shows its note
    (e.g. "diverged"). ``reference``: ``(y, label)`` drawn as a dotted line (e.g. chance)."""
    import numpy as np
    fig = Figure(figsize=(2.2 + 1.6 * len(groups) * max(1, len(series)) / 4, 4.2), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / max(1, len(series))
    for k, (key, label, color, hatch) in enumerate(series):
        x = np.arange(len(groups)) + (k - (len(series) - 1) / 2) * width
        values = [value(group, key) for group in groups]
        ax.bar(x, [0.0 if h is None else h for h, _ in values], width, color=color, hatch=hatch,
               edgecolor="white", label=label)
        for xi, (height, note) in zip(x, values):
            if height is None or note:
                ax.text(xi, 0.5, note or "missing", rotation=90, ha="center", va="bottom", fontsize=7, color=color)
    if reference:
        ax.axhline(reference[0], color="0.3", ls=":", lw=1, label=reference[1])
    ax.set_xticks(np.arange(len(groups)), groups)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8, ncols=2)
    ax.grid(True, axis="y", alpha=0.3)
    return _save(fig, path, pdf)


# --------------------------------------------------------------------------------------- command line
def main(argv=None):
    """Redraw training curves and gradient-flow plots (first and last epoch) from run folders."""
    parser = argparse.ArgumentParser(prog="python -m minigrad.plots", description=main.__doc__)
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run folders holding metrics.csv")
    parser.add_argument("--out", help="folder for the figures (default: the run folder, or for several "
                                      "runs the folder that holds them all)")
    parser.add_argument("--pdf", action="store_true", help="also write PDF versions")
    args = parser.parse_args(argv)
    run_dirs = [Path(d) for d in args.run_dirs]
    for folder in run_dirs:
        if not (folder / "metrics.csv").is_file():
            parser.error(f"{folder} is not a run folder (it has no metrics.csv)")
    if args.out:
        out = Path(args.out)
    elif len(run_dirs) == 1:
        out = run_dirs[0]
    else:
        out = Path(os.path.commonpath([str(d.resolve()) for d in run_dirs]))
    if out.exists() and not out.is_dir():
        parser.error(f"--out {out}: is an existing file, not a folder")
    labels = _unique_labels(run_dirs)
    try:
        written = plot_training_curves(dict(zip(labels, run_dirs)), out / "training_curves.png", pdf=args.pdf)
        with_stats = {label: load_grad_stats(d) for label, d in zip(labels, run_dirs)
                      if (d / "grad_stats.json").is_file()}
        with_stats = {label: stats for label, stats in with_stats.items() if stats.get("epochs")}  # diverged in epoch 1
        if with_stats:
            for epoch in ("first", "last"):
                written += plot_grad_flow(with_stats, out / f"grad_flow_{epoch}.png", epoch=epoch, pdf=args.pdf)
            written += plot_grad_flow_epochs(with_stats, out / "grad_flow_epochs.png", pdf=args.pdf)
    except OSError as error:
        print(f"error: cannot write the figures to {out}: {error.strerror or error}", file=sys.stderr)
        return 2
    except ValueError as error:  # a metrics or statistics file that cannot be read
        print(f"error: {error}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    return 0


def _unique_labels(run_dirs):
    labels = [d.resolve().name for d in run_dirs]
    if len(set(labels)) == len(labels):
        return labels
    return [str(d) for d in run_dirs]



# --------------------------------------------------------------------------------------- panels as data
def plot_panels(panels, path, title=None, panel_size=(5, 4.4), dpi=130):
    """Draw one row of line-plot panels into ``path`` (PNG) and return the path.

    ``panels``: one dict per panel with ``lines``, a list of dicts with ``x``, ``y`` and optionally
    ``label``, ``color``, ``style`` (a matplotlib format: "-", "--", "-.") and ``marker``; and optionally
    the panel's ``title``, ``xlabel``, ``ylabel``, ``yscale`` ("log"), ``ylim`` and ``legend`` (its font
    size, default 8; 0 for none). Points whose y is None or not finite (or not positive on a log scale)
    are left out, so a curve that diverges stops where it did.
    """
    fig = Figure(figsize=(panel_size[0] * len(panels), panel_size[1]), layout="tight")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, panel in zip(axes, panels):
        log = panel.get("yscale") == "log"
        for line in panel["lines"]:
            points = [(x, y) for x, y in zip(line["x"], line["y"])
                      if y is not None and math.isfinite(y) and (y > 0 or not log)]
            ax.plot([x for x, _ in points], [y for _, y in points], line.get("style", "-"), color=line.get("color"),
                    marker=line.get("marker"), label=line.get("label"), linewidth=1.6)
        ax.set(**{k: panel[k] for k in ("xlabel", "ylabel", "yscale", "ylim") if k in panel})
        ax.set_title(panel.get("title", ""), fontsize=10)
        ax.grid(True, which="major", alpha=0.3)
        if panel.get("legend", 8) and panel["lines"]:
            ax.legend(fontsize=panel.get("legend", 8))
    if title:
        fig.suptitle(title, fontsize=11)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=dpi)
    return path



def _run_lines(runs, styles, x, y):
    """One line per run: ``x(run_dir)``, ``y(run_dir)`` give its points; ``styles``: label -> (color, style)."""
    lines = []
    for label, folder in _as_runs(runs):
        xs, ys = x(Path(folder)), y(Path(folder))
        if xs:
            color, style = (styles or {}).get(label, (None, "-"))
            lines.append({"x": xs, "y": ys, "label": label, "color": color, "style": style})
    return lines


def plot_gsc_training(runs, path, title=None, styles=None):
    """(A) training error (%) and (B) GSC(L, 0) against epoch, one line per run folder: its metrics.csv and the
    gsc.csv of ``minigrad.measure.gsc_training.GSCMonitor`` (Philipp et al. 2018, Figure 3 B, C)."""
    from .measure.gsc_training import read_results
    return plot_panels([
        {"lines": _run_lines(runs, styles, lambda f: [m["epoch"] for m in load_metrics(f)],
                             lambda f: [100 - 100 * m["train_acc"] for m in load_metrics(f)]),
         "title": "(A) training error", "xlabel": "epoch", "ylabel": "training classification error (%)"},
        {"lines": _run_lines(runs, styles, lambda f: [g["epoch"] for g in read_results(f)["gsc"]],
                             lambda f: [g["gsc_L"] for g in read_results(f)["gsc"]]),
         "title": "(B) GSC(L, 0)", "xlabel": "epoch (0 = initialisation)", "yscale": "log",
         "ylabel": "GSC(L, 0) on a fixed training batch"}], path, title, panel_size=(5.5, 4.2))


def plot_effective_depth(runs, path, title=None, styles=None):
    """(D) effective depth against epoch (solid: the first epsilon, dashed: the last), (E) ||W_l - W_l^0||_2 by
    layer at the last measured epoch, (E') the same over ||W_l^0||_2, one line per run folder, from the
    effective_depth.json and weight_change.json of ``GSCMonitor`` (Philipp et al. 2018, Figure 3 D, E)."""
    from .measure.gsc_training import read_results
    results = {label: read_results(folder) for label, folder in _as_runs(runs)}
    results = {label: r for label, r in results.items() if r["depth"] and r["change"]}
    depth, change = [], {"norm": [], "relative": []}
    for label, r in results.items():
        color, _ = (styles or {}).get(label, (None, "-"))
        epsilons = r["depth"]["epsilons"]
        for eps, style in zip((epsilons[0], epsilons[-1]), ("-", "--")[:len(set(epsilons))]):
            depth.append({"x": [d["epoch"] for d in r["depth"]["epochs"]], "label": f"{label}, eps {eps:g}",
                          "y": [d["effective_depth"][repr(eps)] for d in r["depth"]["epochs"]], "color": color,
                          "style": style, "marker": "."})
        last = r["change"]["epochs"][-1]
        for key in change:
            change[key].append({"x": r["change"]["layers"], "y": last[key], "color": color,
                                "label": f"{label}, epoch {last['epoch']}"})
    layer = "layer l (1 = output layer, counted from the error layer)"
    return plot_panels([
        {"lines": depth, "title": "(D) effective depth", "xlabel": "epoch (0 = initialisation)",
         "ylabel": "effective depth (residual Jacobians)", "legend": 7},
        {"lines": change["norm"], "title": "(E) operator norm of the weight change", "xlabel": layer,
         "ylabel": "||W_l - W_l^0||_2", "yscale": "log", "legend": 7},
        {"lines": change["relative"], "title": "(E') relative to the initial operator norm", "xlabel": layer,
         "ylabel": "||W_l - W_l^0||_2 / ||W_l^0||_2", "yscale": "log", "legend": 7}], path, title)


if __name__ == "__main__":
    sys.exit(main())
