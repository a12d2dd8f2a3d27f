"""The initialisation study: why Xavier and He initialisation work, layer by layer (issue 7).

    python -m experiments.init                          # quick: 21 combinations at init, seconds
    python -m experiments.init --train --download       # plus a short SGD run on CIFAR-10 for each
    python -m experiments.init --preset full --download # larger batch, and 300 SGD steps per combination
    python -m experiments.init --activations relu --inits he_normal xavier_normal --depth 100

Deep MLPs (default 50 layers of width 256) with tanh, ReLU and LeakyReLU under N(0, 1), N(0, 0.01^2),
Xavier normal/uniform, He normal/uniform and PyTorch's default init. At initialisation a Gaussian batch
runs forward and a Gaussian upstream gradient backward through minigrad's own layers, in float64; per
layer the study records Var(pre-activation), Var(dL/d pre-activation) and Var(dL/dW), and compares the
measured per-layer factor with the lecture's n Var(w) c (see ``minigrad.measure.signal_variance``). With ``--train``
each combination also trains (flattened CIFAR-10 images, a 10-way Linear head, SGD with momentum) to
show which train at all.

Results (``--out``, default ``results/init/``): ``results.md`` (the table), ``results.csv``,
``curves.csv`` (every per-layer curve), ``forward.png`` and ``backward.png`` (variance per layer, one
panel per activation, one curve per init), ``training.png`` with ``--train``, ``manifest.json``, and one
folder per row (``relu-he_normal/``: config.json, curves.csv, summary.json; ``train-relu-he_normal-lr1e-2/``:
the Trainer's files plus signal.csv, the per-layer profile at init and after training). Finished rows
are reused on a re-run; checkpoints of finished training rows are deleted (they only serve ``--resume``)
unless ``--keep-checkpoints``.
"""
import argparse
import copy
import csv
import io
import math
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

import minigrad
from minigrad.measure import signal_variance
from minigrad.runs import (RunDirError, finite_or_none, load_summary, prepare_run_dir, write_json_atomic,
                           write_text_atomic)

from . import common

STUDY = "init"


@dataclass(frozen=True)
class Preset:
    depth: int
    width: int
    batch: int
    train: bool
    train_subset: int
    train_epochs: int
    train_batch: int
    description: str


PRESETS = {
    "quick": Preset(depth=50, width=256, batch=256, train=False, train_subset=5000, train_epochs=2, train_batch=100,
                    description="21 combinations at init (50 layers x 256, batch 256); --train adds 100 SGD "
                                "steps each on a 5,000-image CIFAR-10 subset"),
    "full": Preset(depth=50, width=256, batch=1024, train=True, train_subset=10000, train_epochs=3, train_batch=100,
                   description="21 combinations at init (batch 1024) and 300 SGD steps each on a "
                               "10,000-image CIFAR-10 subset"),
}


def build_parser():
    parser = common.make_parser(STUDY, __doc__)
    common.add_common_args(parser, STUDY, PRESETS)
    parser.add_argument("--depth", type=int, default=None, help="hidden layers (default: the preset's, 50)")
    parser.add_argument("--width", type=int, default=None, help="units per hidden layer (default 256)")
    parser.add_argument("--batch", type=int, default=None, help="Gaussian batch for the measurements (quick 256)")
    parser.add_argument("--activations", nargs="+", choices=signal_variance.ACTIVATIONS,
                        default=list(signal_variance.STUDY_ACTIVATIONS), help="activations (default: tanh relu leaky_relu)")
    parser.add_argument("--inits", nargs="+", choices=signal_variance.INITS, default=list(signal_variance.INITS),
                        help="initialisation schemes (default: all seven)")
    parser.add_argument("--negative-slope", type=float, default=0.01, help="LeakyReLU's slope (default 0.01)")
    parser.add_argument("--threshold", type=float, default=signal_variance.VERDICT_THRESHOLD,
                        help="last/first variance ratio beyond which a signal is vanishing/exploding (default 1e3)")
    parser.add_argument("--train", action=argparse.BooleanOptionalAction, default=None,
                        help="also train each combination briefly on CIFAR-10 (--no-train: do not; default: "
                             "the preset's, off for quick, on for full)")
    parser.add_argument("--train-subset", type=int, default=None, help="training images (stratified subset)")
    parser.add_argument("--train-epochs", type=int, default=None, help="epochs over the subset")
    parser.add_argument("--train-batch", type=int, default=None, help="training batch size (default 100)")
    parser.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd",
                        help="sgd (momentum 0.9; shows the gradient scale) or adam (normalises it away)")
    parser.add_argument("--lr", type=float, default=None, help="learning rate (default: sgd 1e-2, adam 1e-3)")
    parser.add_argument("--keep-checkpoints", action="store_true", help="keep finished training rows' checkpoints")
    parser.add_argument("--no-figures", action="store_true", help="write the tables and CSVs only")
    parser.add_argument("--list", action="store_true", help="list the rows of this command and exit")
    return parser


# --------------------------------------------------------------------------------------- settings
def settings(args):
    """The command's effective settings (preset values unless overridden)."""
    preset = PRESETS[args.preset]
    train = preset.train if args.train is None else args.train
    lr = args.lr if args.lr is not None else (1e-2 if args.optimizer == "sgd" else 1e-3)
    values = dict(depth=args.depth or preset.depth, width=args.width or preset.width,
                  batch=args.batch or preset.batch, train=train, train_subset=args.train_subset or preset.train_subset,
                  train_epochs=args.train_epochs or preset.train_epochs,
                  train_batch=args.train_batch or preset.train_batch, optimizer=args.optimizer, lr=lr)
    for key in ("depth", "width", "batch", "train_subset", "train_epochs", "train_batch"):
        if values[key] < (2 if key == "depth" else 1):
            raise ValueError(f"--{key.replace('_', '-')} must be >= {2 if key == 'depth' else 1}, got {values[key]}")
    if not args.threshold > 1:
        raise ValueError(f"--threshold must be > 1, got {args.threshold}")
    return values


def combinations(args):
    return [(a, i) for a in dict.fromkeys(args.activations) for i in dict.fromkeys(args.inits)]


def signal_row_name(activation, init):
    return f"{activation}-{init}"


def train_row_name(activation, init, lr):
    return common.row_name(f"train-{activation}-{init}", lr)


def _slope(args, activation):
    """The LeakyReLU slope, for LeakyReLU rows only (other rows do not depend on it)."""
    return args.negative_slope if activation == "leaky_relu" else None


def signal_config(args, s, activation, init):
    return {"study": STUDY, "kind": "signal", "preset": args.preset, "model": f"MLP{s['depth']}x{s['width']}",
            "activation": activation, "init": init, "negative_slope": _slope(args, activation),
            "depth": s["depth"], "width": s["width"], "batch": s["batch"], "seed": args.seed, "dtype": "float64",
            "input": "N(0, 1)", "upstream_gradient": "N(0, 1)", "minigrad_version": minigrad.__version__,
            "threads": args.threads}


def train_config(args, s, activation, init):
    return {"study": STUDY, "kind": "train", "preset": args.preset, "model": f"MLP{s['depth']}x{s['width']}",
            "activation": activation, "init": init, "negative_slope": _slope(args, activation),
            "depth": s["depth"], "width": s["width"], "seed": args.seed, "dataset": "cifar10",
            "input": "flattened 3x32x32, per-channel normalised", "train_subset": s["train_subset"],
            "n_val": 2500, "split_seed": 0, "epochs": s["train_epochs"], "batch_size": s["train_batch"],
            "optimizer": s["optimizer"], "lr": s["lr"], "momentum": 0.9 if s["optimizer"] == "sgd" else None,
            "profile_batch": 256, "dtype": "float32", "minigrad_version": minigrad.__version__,
            "threads": args.threads}


# --------------------------------------------------------------------------------------- CSV helpers
CURVE_FIELDS = ("layer", "fan_in", "fan_out", "weight_var", "forward_var", "output_var", "grad_var",
                "weight_grad_var", "theory_forward_factor", "theory_backward_factor")


def _csv_text(fields, rows):
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(fields)
    for row in rows:
        writer.writerow(["" if row.get(k) is None else (repr(row[k]) if isinstance(row[k], float) else row[k])
                         for k in fields])
    return buffer.getvalue()


def _read_csv(path):
    """Rows of a CSV this study wrote: numbers back as int/float ('inf'/'nan' included), '' as None."""
    def value(text):
        if text == "":
            return None
        for kind in (int, float):
            try:
                return kind(text)
            except ValueError:
                pass
        return text
    with open(path, newline="", encoding="utf-8") as f:
        return [{k: value(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _direction_json(d):
    """A DirectionSummary for summary.json (JSON has no inf: an infinite ratio is flagged instead)."""
    return {"theory_factor": finite_or_none(d.theory_factor), "measured_factor": finite_or_none(d.measured_factor),
            "ratio": finite_or_none(d.ratio), "ratio_is_inf": d.ratio == math.inf,
            "nonfinite_layer": d.nonfinite_layer}


def _direction_from_json(d, threshold):
    """(theory, measured, ratio, verdict) from a saved direction; an infinite ratio is inf again."""
    overflowed = d.get("nonfinite_layer") is not None
    if overflowed or d.get("ratio_is_inf"):
        ratio = math.inf
    else:
        ratio = math.nan if d.get("ratio") is None else d["ratio"]
    return {"theory": d.get("theory_factor"), "measured": d.get("measured_factor"), "ratio": ratio,
            "verdict": signal_variance.classify(ratio, overflowed, threshold), "nonfinite_layer": d.get("nonfinite_layer")}


# --------------------------------------------------------------------------------------- signal rows
def run_signal_row(args, s, activation, init, log):
    """Measure one combination at init into ``OUT/<activation>-<init>/`` (or reuse it); returns its summary."""
    name = signal_row_name(activation, init)
    run = prepare_run_dir(args.out, name, signal_config(args, s, activation, init), resume=args.resume)
    if run.done:
        return run.summary
    write_json_atomic(run.summary_path, {"status": "running"})
    try:
        result = signal_variance.run_combination(activation, init, depth=s["depth"], width=s["width"], batch=s["batch"],
                                            seed=args.seed, negative_slope=args.negative_slope)
    except Exception as error:
        write_json_atomic(run.summary_path, {"status": "failed", "error": f"{type(error).__name__}: {error}"})
        raise
    write_text_atomic(run.path / "curves.csv", _csv_text(CURVE_FIELDS, result.curves()))
    summary = {"status": "finished", "row": name, "label": result.label, "activation": activation, "init": init,
               "forward": _direction_json(result.forward), "backward": _direction_json(result.backward),
               "fp_errors": result.profile.fp_errors, "seconds": result.seconds}
    write_json_atomic(run.summary_path, summary)
    f, b = result.forward, result.backward
    log(f"[{name}] forward factor {f.measured_factor:.4g} (theory {f.theory_factor:.4g}), last/first "
        f"{f.ratio:.3g}: {f.verdict}; backward factor {b.measured_factor:.4g} (theory {b.theory_factor:.4g}), "
        f"first/last {b.ratio:.3g}: {b.verdict}"
        + (f"; overflow at layer {f.nonfinite_layer}" if f.nonfinite_layer else ""))
    return summary


# --------------------------------------------------------------------------------------- training rows
def load_data(s, args):
    from minigrad.data import load_cifar, prepare_cifar
    data = load_cifar("cifar10", data_dir=args.data_dir, download=args.download)
    return prepare_cifar(data, n_val=2500, split_seed=0, train_subset=s["train_subset"])


def _profile_rows(model, x, y, phase):
    """Per-layer profile of a (float32) model on a CIFAR batch with the cross-entropy gradient, in float64."""
    from minigrad import nn
    model64 = copy.deepcopy(model).double()
    x64 = x.astype(np.float64)
    criterion = nn.CrossEntropyLoss()
    with np.errstate(all="ignore"):
        loss = criterion(model64(x64), y)
        grad = criterion.backward()
    if not math.isfinite(loss):
        return [], None
    profile = signal_variance.signal_profile(model64, x64, grad)
    rows = [{"phase": phase, "layer": l + 1, "forward_var": float(profile.forward_var[l]),
             "grad_var": float(profile.grad_var[l]), "weight_grad_var": float(profile.weight_grad_var[l])}
            for l in range(profile.depth)]
    with np.errstate(all="ignore"):  # 0/0 or inf/inf: recorded as None
        ratio = {"forward_ratio": finite_or_none(profile.forward_var[-1] / profile.forward_var[0]),
                 "backward_ratio": finite_or_none(profile.grad_var[0] / profile.grad_var[-1])}
    return rows, ratio


SIGNAL_FIELDS = ("phase", "layer", "forward_var", "grad_var", "weight_grad_var")


def run_train_row(args, s, activation, init, splits, log):
    """Train one combination into ``OUT/train-<activation>-<init>-lr<lr>/`` (or reuse it); returns its summary."""
    from minigrad import nn, optim
    from minigrad.data import BatchLoader
    from minigrad.train import Trainer

    name = train_row_name(activation, init, s["lr"])
    config = train_config(args, s, activation, init)
    run = prepare_run_dir(args.out, name, config, resume=args.resume)
    if run.done:
        return run.summary
    model = signal_variance.build_study_mlp(activation, init, [3 * 32 * 32] + [s["width"]] * s["depth"],
                                            num_classes=10, negative_slope=args.negative_slope, dtype=np.float32,
                                            generator=np.random.default_rng([args.seed, 1]))
    if s["optimizer"] == "sgd":
        optimizer = optim.SGD(model.parameters(), lr=s["lr"], momentum=0.9)
    else:
        optimizer = optim.Adam(model.parameters(), lr=s["lr"])
    kw = dict(mean=splits.mean, std=splits.std)
    train_loader = common.FlatLoader(BatchLoader(splits.train_images, splits.train_labels, s["train_batch"], shuffle=True,
                                          **kw))
    val_loader = common.FlatLoader(BatchLoader(splits.val_images, splits.val_labels, 500, **kw))
    probe = common.FlatLoader(BatchLoader(splits.val_images[:256], splits.val_labels[:256], 256, **kw))
    probe_x, probe_y = next(probe.epoch())  # the same 256 validation images before and after training
    init_rows, init_ratio = _profile_rows(model, probe_x, probe_y, "init")
    log(f"[{name}] {model.num_parameters():,} parameters, {len(train_loader)} steps/epoch, "
        f"{s['train_epochs']} epochs -> {run.path}")
    trainer = Trainer(model, nn.CrossEntropyLoss(), optimizer, train_loader, val_loader, epochs=s["train_epochs"],
                      run_dir=run.path, seed=args.seed, config=config, progress=not args.no_progress,
                      plots=False, log=log)
    with np.errstate(over="ignore", invalid="ignore"):  # an exploding row diverges: the summary reports it
        result = trainer.fit(resume=run.resume)
    trained_rows, trained_ratio = ([], None)
    if result.status == "finished":
        trained_rows, trained_ratio = _profile_rows(model, probe_x, probe_y, "trained")
    write_text_atomic(run.path / "signal.csv", _csv_text(SIGNAL_FIELDS, init_rows + trained_rows))
    summary = load_summary(run.path)
    summary.update({"row": name, "activation": activation, "init": init,
                    "signal_init": init_ratio, "signal_trained": trained_ratio,
                    "steps": len(train_loader) * s["train_epochs"]})
    write_json_atomic(run.summary_path, summary)
    if result.status == "finished" and not args.keep_checkpoints:
        shutil.rmtree(run.checkpoint_dir, ignore_errors=True)  # resume-only; ~50 MB per row
    return summary


# --------------------------------------------------------------------------------------- table
COLUMNS = [
    ("activation", "Activation", None), ("init", "Init", None),
    ("fwd_theory", "n Var(w) c", "g"), ("fwd_measured", "fwd factor", "g"), ("fwd_ratio", "Var(y_L)/Var(y_1)", "sci"),
    ("fwd_verdict", "forward", None),
    ("bwd_theory", "m Var(w) c", "g"), ("bwd_measured", "bwd factor", "g"), ("bwd_ratio", "Var(g_1)/Var(g_L)", "sci"),
    ("bwd_verdict", "backward", None),
]
TRAIN_COLUMNS = [("train_status", "training", None), ("final_train_loss", "train loss", None),
                 ("best_val_acc", "val acc %", "pct"), ("trained_bwd_ratio", "Var(g_1)/Var(g_L) trained", "sci")]


def _format(value, kind):
    if kind == "g" and isinstance(value, float) and math.isfinite(value):
        return f"{value:.3g}"
    if kind == "sci" and value == math.inf:
        return "inf (overflow)"
    return common.format_cell(value, None if kind == "g" else kind)


def _verdict_text(direction):
    layer = direction["nonfinite_layer"]
    return direction["verdict"] + (f" (overflow, layer {layer})" if layer else "")


def table_rows(args, s, summaries, train_summaries):
    """One dict per combination: the table's columns (display and raw) plus keys for figures and notes."""
    rows = []
    for (activation, init), summary in summaries.items():
        fwd = _direction_from_json(summary["forward"], args.threshold)
        bwd = _direction_from_json(summary["backward"], args.threshold)
        row = {"row": signal_row_name(activation, init),
               "activation": signal_variance.activation_label(activation, args.negative_slope),
               "init": signal_variance.INIT_LABELS[init], "activation_key": activation, "init_key": init,
               "fwd_theory": fwd["theory"], "fwd_measured": fwd["measured"], "fwd_ratio": fwd["ratio"],
               "fwd_verdict": _verdict_text(fwd),
               "bwd_theory": bwd["theory"], "bwd_measured": bwd["measured"], "bwd_ratio": bwd["ratio"],
               "bwd_verdict": _verdict_text(bwd),
               "fwd_verdict_key": fwd["verdict"], "bwd_verdict_key": bwd["verdict"], "status": summary.get("status"),
               "fp_errors": summary.get("fp_errors") or {}}
        train = train_summaries.get((activation, init))
        if train is not None:
            diverged = train.get("diverged") or {}
            row.update({"train_status": train.get("status") + (f" (epoch {diverged.get('epoch')}, batch "
                                                               f"{diverged.get('batch')})" if diverged else ""),
                        "final_train_loss": train.get("final_train_loss"), "best_val_acc": train.get("best_val_acc"),
                        "trained_bwd_ratio": (train.get("signal_trained") or {}).get("backward_ratio")})
        rows.append(row)
    return rows


def findings(args, s, rows):
    """Notes under the table: what the columns mean and what the measurements say."""
    notes = [
        f"Deep MLP: {s['depth']} blocks of Linear({s['width']}, {s['width']}) + activation, Gaussian batch of "
        f"{s['batch']}, Gaussian upstream gradient, float64, seed {args.seed}. The lecture's rule: Var(y_l) = "
        "n Var(w) c Var(y_{l-1}) forward and Var(g_{l-1}) = m Var(w) c Var(g_l) backward (y: pre-activation, "
        "g = dL/dy; c = 1 linear/tanh near 0, 1/2 ReLU, (1 + a^2)/2 LeakyReLU).",
        "'factor': the measured per-layer factor, the geometric mean of the layer-to-layer variance ratios "
        "(theory: n Var(w) c forward, m Var(w) c backward). Ratios: the variance at the last layer the signal "
        f"reaches over the first; vanishing below 1/{args.threshold:g}, exploding above {args.threshold:g} "
        "or on overflow.",
    ]
    stable = {}
    for row in rows:
        if row["fwd_verdict_key"] == "stable" and row["bwd_verdict_key"] == "stable":
            stable.setdefault(row["activation"], []).append(row["init"])
    for activation in dict.fromkeys(r["activation"] for r in rows):
        names = stable.get(activation)
        notes.append(f"{activation}: stable both ways with {', '.join(names) if names else 'no init tried'}.")
    by_key = {(r["activation_key"], r["init_key"]): r for r in rows}
    notes.append("Var(dL/dW_l) (backward.png, bottom row) is nearly flat across layers even where both signals "
                 "vanish or explode: it is the product of the forward signal reaching layer l and the gradient "
                 "reaching it (Glorot & Bengio's observation); its level, not its slope, shows the problem.")
    for key, text in ((("relu", "he_normal"), "He normal + ReLU"), (("tanh", "xavier_normal"), "Xavier normal + tanh"),
                      (("relu", "xavier_normal"), "Xavier normal + ReLU"),
                      (("relu", "pytorch_default"), "PyTorch default + ReLU")):
        r = by_key.get(key)
        if r and r["fwd_measured"] is not None and r["bwd_measured"] is not None:
            notes.append(f"{text}: measured {r['fwd_measured']:.3g} forward / {r['bwd_measured']:.3g} backward per "
                         f"layer (theory {r['fwd_theory']:.3g} / {r['bwd_theory']:.3g}).")
    noisy = [f"{r['row']} ({', '.join(f'{kind} x{count}' for kind, count in r['fp_errors'].items())})"
             for r in rows if r["fp_errors"]]
    if noisy:
        notes.append("NumPy floating-point warnings were suppressed while measuring (an exploding signal is a "
                     f"result here) and counted: {'; '.join(noisy)}.")
    if any("train_status" in r for r in rows):
        notes.append("Training: flattened CIFAR-10, the same MLP with a Linear(width, 10) head, "
                     f"{s['optimizer'].upper()} lr {s['lr']:g}, {s['train_epochs']} epochs over {s['train_subset']:,} "
                     f"images (batch {s['train_batch']}); 'val acc' is the best validation accuracy (chance 10%); the "
                     "last column is the backward ratio after training, on 256 validation images with the "
                     "cross-entropy gradient (per-layer curves in each row's signal.csv).")
    return notes


def write_table(out_dir, title, rows, columns, notes):
    """results.md / results.csv (common.write_study_table, with this study's number formats)."""
    notes = [f"- {note}" for note in notes]  # a Markdown list: one note per line
    return common.write_study_table(out_dir, rows, columns, title, notes, formatter=_format)


def write_curves(out_dir, summaries):
    rows = []
    for activation, init in summaries:
        for row in _read_csv(Path(out_dir) / signal_row_name(activation, init) / "curves.csv"):
            rows.append({"activation": activation, "init": init, **row})
    write_text_atomic(Path(out_dir) / "curves.csv", _csv_text(("activation", "init") + CURVE_FIELDS, rows))
    return rows


# --------------------------------------------------------------------------------------- figures
INIT_STYLE = {"normal_1": ("C3", "-"), "normal_0.01": ("C0", "-"), "xavier_normal": ("C2", "-"),
              "xavier_uniform": ("C2", "--"), "he_normal": ("C1", "-"), "he_uniform": ("C1", "--"),
              "pytorch_default": ("C4", "-")}


def _panels(curves, activations, negative_slope, rows_spec, title, path, xlabel="layer"):
    """One column per activation, one row per (key, ylabel, ylim) in ``rows_spec``, one curve per init."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import LogLocator, NullLocator

    fig = Figure(figsize=(4.6 * len(activations), 3.4 * len(rows_spec)), layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(rows_spec), len(activations), squeeze=False))
    for col, activation in enumerate(activations):
        for r, (key, ylabel, ylim) in enumerate(rows_spec):
            ax = axes[r, col]
            for init in INIT_STYLE:
                points = [(c["layer"], c[key]) for c in curves if c["activation"] == activation and c["init"] == init]
                if not points:
                    continue
                layers = np.array([p[0] for p in points], float)
                values = np.array([p[1] for p in points], float)
                ok = np.isfinite(values) & (values > 0)
                colour, style = INIT_STYLE[init]
                ax.plot(layers[ok], values[ok], style, color=colour, lw=1.6, label=signal_variance.INIT_LABELS[init])
                if not ok.all() and ok.any():  # overflow: mark where the curve stops
                    last = np.flatnonzero(ok)[-1]
                    ax.plot(layers[last], values[last], "x", color=colour, ms=8)
            ax.set_yscale("log")
            # a few decade ticks: over 200 decades, matplotlib's default places (and measures) thousands
            ax.yaxis.set_major_locator(LogLocator(base=10, numticks=7))
            ax.yaxis.set_minor_locator(NullLocator())
            if ylim:
                ax.set_ylim(*ylim)
            ax.axhline(1.0, color="0.5", lw=0.8, zorder=0)
            ax.grid(True, which="major", alpha=0.3)
            ax.set_xlabel(xlabel)
            if col == 0:
                ax.set_ylabel(ylabel)
            if r == 0:
                ax.set_title(signal_variance.activation_label(activation, negative_slope))
    axes[0, -1].legend(fontsize=8, loc="best")
    fig.suptitle(title)
    FigureCanvasAgg(fig)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    return Path(path)


def plot_forward(curves, activations, negative_slope, path):
    return _panels(curves, activations, negative_slope, [
        ("forward_var", "Var(y_l), pre-activation", None),
        ("forward_var", "Var(y_l), zoom on 1e-4..1e4", (1e-4, 1e4)),
    ], "Forward: variance of the signal per layer at initialisation (flat = the rule n Var(w) c = 1 holds)", path)


def plot_backward(curves, activations, negative_slope, path):
    return _panels(curves, activations, negative_slope, [
        ("grad_var", "Var(dL/dy_l)  (gradient travels right to left)", None),
        ("grad_var", "Var(dL/dy_l), zoom on 1e-4..1e4", (1e-4, 1e4)),
        ("weight_grad_var", "Var(dL/dW_l)", None),
    ], "Backward: variance of the gradient per layer at initialisation (flat = m Var(w) c = 1)", path)


def plot_training(rows, path):
    """Best validation accuracy per combination: bars grouped by activation, chance at 10%."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    activations = list(dict.fromkeys(r["activation"] for r in rows))
    inits = list(dict.fromkeys(r["init_key"] for r in rows))
    fig = Figure(figsize=(2.2 + 1.6 * len(activations) * max(1, len(inits)) / 4, 4.2), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / max(1, len(inits))
    for k, init in enumerate(inits):
        colour, style = INIT_STYLE[init]
        values, statuses = [], []
        for activation in activations:
            row = next((r for r in rows if r["activation"] == activation and r["init_key"] == init), None)
            acc = row.get("best_val_acc") if row else None
            values.append(100 * acc if acc is not None else 0.0)
            statuses.append((row or {}).get("train_status") or "")
        x = np.arange(len(activations)) + (k - (len(inits) - 1) / 2) * width
        ax.bar(x, values, width, color=colour, hatch="//" if style == "--" else None, edgecolor="white",
               label=signal_variance.INIT_LABELS[init])
        for xi, status in zip(x, statuses):
            if not status.startswith("finished"):  # no bar to see: say why
                ax.text(xi, 0.5, status.split(" ")[0] or "missing", rotation=90, ha="center", va="bottom",
                        fontsize=7, color=colour)
    ax.axhline(10, color="0.3", ls=":", lw=1, label="chance (10%)")
    ax.set_xticks(np.arange(len(activations)), activations)
    ax.set_ylabel("best validation accuracy (%)")
    ax.set_title("Which combinations train at all (short SGD run on CIFAR-10)")
    ax.legend(fontsize=8, ncols=2)
    ax.grid(True, axis="y", alpha=0.3)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=130)
    return Path(path)


# --------------------------------------------------------------------------------------- main
def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.out is None:
        args.out = common.default_out(STUDY)
    try:
        s = settings(args)
    except ValueError as error:
        return common.fail(str(error))
    combos = combinations(args)
    if args.list:
        common.say(f"preset {args.preset}: {PRESETS[args.preset].description}")
        for activation, init in combos:
            common.say(f"  {signal_row_name(activation, init)}"
                       + (f"   {train_row_name(activation, init, s['lr'])}" if s["train"] else ""))
        return 0
    threads = common.apply_threads(args.threads)
    started = time.perf_counter()
    log = (lambda text: tqdm.write(text, file=sys.stdout)) if not args.no_progress else common.say
    common.say(f"Initialisation study, preset {args.preset}: {len(combos)} combination(s), MLP {s['depth']} x "
               f"{s['width']}, batch {s['batch']}{', with training' if s['train'] else ''} -> {args.out} "
               f"({threads} threads)")
    splits = None
    if s["train"]:  # find the data first: without it, stop before doing anything (DECISIONS 1)
        from minigrad.data import DatasetNotFoundError
        try:
            splits = load_data(s, args)
        except DatasetNotFoundError as error:
            return common.fail(str(error))

    summaries, train_summaries, failed = {}, {}, []
    bar = tqdm(combos, desc="at init", unit="combo", disable=args.no_progress, file=sys.stdout)
    for activation, init in bar:
        bar.set_postfix_str(signal_row_name(activation, init), refresh=False)
        try:
            summaries[(activation, init)] = run_signal_row(args, s, activation, init, log)
        except RunDirError as error:
            bar.close()
            return common.fail(str(error))
        except (ValueError, RuntimeError, FloatingPointError, MemoryError) as error:
            failed.append(signal_row_name(activation, init))
            print(f"error: row {failed[-1]} failed: {error}", file=sys.stderr, flush=True)
    if s["train"]:
        for activation, init in tqdm(combos, desc="training", unit="row", disable=args.no_progress, file=sys.stdout):
            try:
                train_summaries[(activation, init)] = run_train_row(args, s, activation, init, splits, log)
            except RunDirError as error:
                return common.fail(str(error))
            except (ValueError, RuntimeError, FloatingPointError, OSError) as error:
                failed.append(train_row_name(activation, init, s["lr"]))
                print(f"error: row {failed[-1]} failed: {error}", file=sys.stderr, flush=True)

    rows = table_rows(args, s, summaries, train_summaries)
    columns = COLUMNS + (TRAIN_COLUMNS if train_summaries else [])
    title = (f"Initialisation study: {s['depth']}-layer MLP of width {s['width']} at initialisation "
             f"(preset {args.preset})")
    table = write_table(args.out, title, rows, columns, findings(args, s, rows))
    curves = write_curves(args.out, summaries)
    activations = list(dict.fromkeys(a for a, _ in combos))
    figures = []
    if not args.no_figures:
        figures += [plot_forward(curves, activations, args.negative_slope, args.out / "forward.png"),
                    plot_backward(curves, activations, args.negative_slope, args.out / "backward.png")]
    if train_summaries and not args.no_figures:
        figures.append(plot_training([r for r in rows if "train_status" in r], args.out / "training.png"))
    manifest_rows = [{"row": signal_row_name(a, i), "folder": str(args.out / signal_row_name(a, i)),
                      "status": summaries[(a, i)].get("status")} for a, i in summaries]
    manifest_rows += [{"row": train_row_name(a, i, s["lr"]), "folder": str(args.out / train_row_name(a, i, s["lr"])),
                       "status": t.get("status")} for (a, i), t in train_summaries.items()]
    common.write_manifest(args.out, STUDY, args.preset, manifest_rows)

    common.say("")
    common.say(Path(table).read_text())
    common.say(f"Done in {time.perf_counter() - started:.0f} s. Everything is in {args.out}/: results.md (the table), "
               f"results.csv, curves.csv (every per-layer curve), {''.join(f.name + ', ' for f in figures)}"
               f"manifest.json, and one folder per row.")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
