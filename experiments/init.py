"""The initialisation study: why Xavier and He initialisation work, layer by layer.

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
import math
import shutil
import sys
from pathlib import Path

import numpy as np

import minigrad
from minigrad.measure import signal_variance
from minigrad.runs import finite_or_none, load_config, load_summary, write_json_atomic

from . import study
from .study import Preset, Study, format_cell, new_figure, positive_float, positive_int, read_csv, row_name, write_csv

CURVE_FIELDS = ("layer", "fan_in", "fan_out", "weight_var", "forward_var", "output_var", "grad_var",
                "weight_grad_var", "theory_forward_factor", "theory_backward_factor")
SIGNAL_FIELDS = ("phase", "layer", "forward_var", "grad_var", "weight_grad_var")
INIT_STYLE = {"normal_1": ("C3", "-"), "normal_0.01": ("C0", "-"), "xavier_normal": ("C2", "-"),
              "xavier_uniform": ("C2", "--"), "he_normal": ("C1", "-"), "he_uniform": ("C1", "--"),
              "pytorch_default": ("C4", "-")}


class Initialisation(Study):
    name = "init"
    title = "Initialisation study"
    description = __doc__
    presets = {
        "quick": Preset("21 combinations at init (50 layers x 256, batch 256); --train adds 100 SGD steps each on "
                        "a 5,000-image CIFAR-10 subset", depth=50, width=256, batch=256, train=False,
                        train_subset=5000, train_epochs=2, train_batch=100),
        "full": Preset("21 combinations at init (batch 1024) and 300 SGD steps each on a 10,000-image CIFAR-10 "
                       "subset", depth=50, width=256, batch=1024, train=True, train_subset=10000, train_epochs=3,
                       train_batch=100),
    }
    columns = [
        ("activation", "Activation", None), ("init", "Init", None),
        ("fwd_theory", "n Var(w) c", "g3"), ("fwd_measured", "fwd factor", "g3"),
        ("fwd_ratio", "Var(y_L)/Var(y_1)", "ratio"), ("fwd_verdict", "forward", None),
        ("bwd_theory", "m Var(w) c", "g3"), ("bwd_measured", "bwd factor", "g3"),
        ("bwd_ratio", "Var(g_1)/Var(g_L)", "ratio"), ("bwd_verdict", "backward", None)]
    train_columns = [("train_status", "training", None), ("final_train_loss", "train loss", None),
                     ("best_val_acc", "val acc %", "pct"), ("trained_bwd_ratio", "Var(g_1)/Var(g_L) trained", "sci")]

    def add_arguments(self, parser):
        parser.add_argument("--depth", type=positive_int, default=None, help="hidden layers (default: the preset's, 50)")
        parser.add_argument("--width", type=positive_int, default=None, help="units per hidden layer (default 256)")
        parser.add_argument("--batch", type=positive_int, default=None,
                            help="Gaussian batch for the measurements (quick 256)")
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
        parser.add_argument("--train-subset", type=positive_int, default=None, help="training images (stratified subset)")
        parser.add_argument("--train-epochs", type=positive_int, default=None, help="epochs over the subset")
        parser.add_argument("--train-batch", type=positive_int, default=None, help="training batch size (default 100)")
        parser.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd",
                            help="sgd (momentum 0.9; shows the gradient scale) or adam (normalises it away)")
        parser.add_argument("--lr", type=positive_float, default=None, help="learning rate (default: sgd 1e-2, adam 1e-3)")
        parser.add_argument("--keep-checkpoints", action="store_true", help="keep finished training rows' checkpoints")
        parser.add_argument("--no-figures", action="store_true", help="write the tables and CSVs only")

    def check_arguments(self, args):
        settings = self.settings(args)
        if settings["depth"] < 2:
            raise ValueError(f"--depth must be >= 2, got {settings['depth']}")
        if not args.threshold > 1:
            raise ValueError(f"--threshold must be > 1, got {args.threshold}")

    def settings(self, args):
        """The command's effective settings (preset values unless overridden)."""
        preset = self.presets[args.preset]
        train = preset.train if args.train is None else args.train
        return dict(depth=args.depth or preset.depth, width=args.width or preset.width, batch=args.batch or preset.batch,
                    train=train, train_subset=args.train_subset or preset.train_subset,
                    train_epochs=args.train_epochs or preset.train_epochs,
                    train_batch=args.train_batch or preset.train_batch, optimizer=args.optimizer,
                    lr=args.lr or (1e-2 if args.optimizer == "sgd" else 1e-3))

    def uses_data(self, args):
        return bool(self.settings(args)["train"])

    def rows(self, args):
        s = self.settings(args)
        combos = [(a, i) for a in dict.fromkeys(args.activations) for i in dict.fromkeys(args.inits)]
        rows = [(f"{a}-{i}", self.signal_config(args, s, a, i)) for a, i in combos]
        if s["train"]:
            rows += [(row_name(f"train-{a}-{i}", s["lr"]), self.train_config(args, s, a, i)) for a, i in combos]
        return rows

    def row_flags(self, name, config):
        return ["--activations", config["activation"], "--inits", config["init"]] + \
               (["--train"] if config["kind"] == "train" else ["--no-train"])

    def _shared(self, args, s, activation, init):
        return {"study": self.name, "preset": args.preset, "model": f"MLP{s['depth']}x{s['width']}",
                "activation": activation, "init": init,
                "negative_slope": args.negative_slope if activation == "leaky_relu" else None,
                "depth": s["depth"], "width": s["width"], "seed": args.seed}

    def signal_config(self, args, s, activation, init):
        return {**self._shared(args, s, activation, init), "kind": "signal", "batch": s["batch"], "dtype": "float64",
                "input": "N(0, 1)", "upstream_gradient": "N(0, 1)",
                "minigrad_version": minigrad.__version__, "threads": args.threads}

    def train_config(self, args, s, activation, init):
        return {**self._shared(args, s, activation, init), "kind": "train", "dataset": "cifar10",
                "input": "flattened 3x32x32, per-channel normalised", "train_subset": s["train_subset"], "n_val": 2500,
                "split_seed": 0, "epochs": s["train_epochs"], "batch_size": s["train_batch"],
                "optimizer": s["optimizer"], "lr": s["lr"], "momentum": 0.9 if s["optimizer"] == "sgd" else None,
                "profile_batch": 256, "dtype": "float32", "keep_checkpoints": args.keep_checkpoints,
                "minigrad_version": minigrad.__version__, "threads": args.threads}

    def run_row(self, row):
        return (self._run_signal if row.config["kind"] == "signal" else self._run_train)(row)

    def _run_signal(self, row):
        """Measure one combination at init: curves.csv and the summary (factors, ratios, verdicts)."""
        c = row.config
        write_json_atomic(row.path / "summary.json", {"status": "running"})
        result = signal_variance.run_combination(c["activation"], c["init"], depth=c["depth"], width=c["width"],
                                            batch=c["batch"], seed=c["seed"],
                                            negative_slope=c["negative_slope"] or 0.01)
        write_csv(row.path / "curves.csv", CURVE_FIELDS, result.curves())
        summary = {"status": "finished", "row": row.name, "label": result.label, "activation": c["activation"],
                   "init": c["init"], "forward": _direction_json(result.forward),
                   "backward": _direction_json(result.backward), "fp_errors": result.profile.fp_errors,
                   "seconds": result.seconds}
        write_json_atomic(row.path / "summary.json", summary)
        f, b = result.forward, result.backward
        row.say(f"forward factor {f.measured_factor:.4g} (theory {f.theory_factor:.4g}), last/first {f.ratio:.3g}: "
                f"{f.verdict}; backward factor {b.measured_factor:.4g} (theory {b.theory_factor:.4g}), first/last "
                f"{b.ratio:.3g}: {b.verdict}" + (f"; overflow at layer {f.nonfinite_layer}" if f.nonfinite_layer else ""))
        return summary

    def _run_train(self, row):
        """Train one combination; profile the signal at init and after training (signal.csv)."""
        from minigrad import optim
        c = row.config
        splits = row.splits()
        model = signal_variance.build_study_mlp(c["activation"], c["init"], [3 * 32 * 32] + [c["width"]] * c["depth"],
                                     num_classes=10, negative_slope=c["negative_slope"] or 0.01, dtype=np.float32,
                                     generator=np.random.default_rng([c["seed"], 1]))
        if c["optimizer"] == "sgd":
            optimizer = optim.SGD(model.parameters(), lr=c["lr"], momentum=0.9)
        else:
            optimizer = optim.Adam(model.parameters(), lr=c["lr"])
        train, val, _ = row.loaders(c["batch_size"], augment=False, flat=True, val_batch=500, test=False)
        probe = study.FlatLoader(type(train.loader)(splits.val_images[:256], splits.val_labels[:256], 256,
                                                    mean=splits.mean, std=splits.std))
        probe_x, probe_y = next(probe.epoch())  # the same 256 validation images before and after training
        init_rows, init_ratio = _profile_rows(model, probe_x, probe_y, "init")
        trainer = row.trainer(model, optimizer, train, val)
        with np.errstate(over="ignore", invalid="ignore"):  # an exploding row diverges: the summary reports it
            summary = row.fit(trainer)
        trained_rows, trained_ratio = ([], None)
        if summary["status"] == "finished":
            trained_rows, trained_ratio = _profile_rows(model, probe_x, probe_y, "trained")
        write_csv(row.path / "signal.csv", SIGNAL_FIELDS, init_rows + trained_rows)
        summary.update({"row": row.name, "activation": c["activation"], "init": c["init"],
                        "signal_init": init_ratio, "signal_trained": trained_ratio, "steps": len(train) * c["epochs"]})
        write_json_atomic(row.path / "summary.json", summary)
        if summary["status"] == "finished" and not c["keep_checkpoints"]:
            shutil.rmtree(row.path / "checkpoints", ignore_errors=True)  # resume-only; ~50 MB per row
        return summary

    def sort_folders(self, folders):
        acts = {a: i for i, a in enumerate(signal_variance.ACTIVATIONS)}
        inits = {a: i for i, a in enumerate(signal_variance.INITS)}

        def key(folder):
            c = load_config(folder)
            return c.get("kind") != "signal", acts.get(c.get("activation"), 99), inits.get(c.get("init"), 99)
        return sorted(folders, key=key)

    def records(self, folders):
        """One record per combination: its signal row, with its training row's figures when there is one."""
        configs = {f: load_config(f) for f in folders}
        trained = {(c["activation"], c["init"]): f for f, c in configs.items() if c.get("kind") == "train"}
        threshold = self.args.threshold if self.args is not None else signal_variance.VERDICT_THRESHOLD
        records = []
        for folder, c in configs.items():
            if c.get("kind") != "signal" or not (folder / "summary.json").exists():
                continue
            summary = load_summary(folder)
            if summary.get("status") != "finished":
                continue
            record = _signal_record(folder, c, summary, threshold)
            if (c["activation"], c["init"]) in trained:
                record.update(_train_record(trained[(c["activation"], c["init"])]))
            records.append(record)
        return records

    def table_columns(self, records):
        return self.columns + (self.train_columns if any("train_status" in r for r in records) else [])

    def format_cell(self, value, kind):
        if kind == "g3":
            return f"{value:.3g}" if isinstance(value, float) and math.isfinite(value) else format_cell(value)
        if kind == "ratio":
            return "inf (overflow)" if value == math.inf else format_cell(value, "sci")
        return format_cell(value, kind)

    def table_title(self, records, preset):
        c = load_config(Path(records[0]["folder"])) if records else {}
        return (f"Initialisation study: {c.get('depth')}-layer MLP of width {c.get('width')} at initialisation "
                f"(preset {preset})")

    def findings(self, records, folders):
        return findings(records, folders)

    def figures(self, records, folders, out_dir):
        signal = [f for f in folders if load_config(f).get("kind") == "signal" and (f / "curves.csv").exists()]
        curves = [{"activation": load_config(f)["activation"], "init": load_config(f)["init"], **row}
                  for f in signal for row in read_csv(f / "curves.csv")]
        written = [write_csv(out_dir / "curves.csv", ("activation", "init") + CURVE_FIELDS, curves)]
        if (self.args is not None and self.args.no_figures) or not curves:
            return written
        activations = list(dict.fromkeys(c["activation"] for c in curves))
        slope = next((load_config(f)["negative_slope"] for f in signal if load_config(f)["negative_slope"]), 0.01)
        written += [plot_forward(curves, activations, slope, out_dir / "forward.png"),
                    plot_backward(curves, activations, slope, out_dir / "backward.png")]
        if any("train_status" in r for r in records):
            written.append(plot_training([r for r in records if "train_status" in r], out_dir / "training.png"))
        return written


def _direction_json(d):
    """A DirectionSummary for summary.json (JSON has no inf: an infinite ratio is flagged instead)."""
    return {"theory_factor": finite_or_none(d.theory_factor), "measured_factor": finite_or_none(d.measured_factor),
            "ratio": finite_or_none(d.ratio), "ratio_is_inf": d.ratio == math.inf,
            "nonfinite_layer": d.nonfinite_layer}


def _direction(d, threshold):
    """(theory, measured, ratio, verdict) from a saved direction; an infinite ratio is inf again."""
    overflowed = d.get("nonfinite_layer") is not None
    ratio = math.inf if overflowed or d.get("ratio_is_inf") else (math.nan if d.get("ratio") is None else d["ratio"])
    verdict = signal_variance.classify(ratio, overflowed, threshold)
    layer = d.get("nonfinite_layer")
    return {"theory": d.get("theory_factor"), "measured": d.get("measured_factor"), "ratio": ratio, "verdict": verdict,
            "text": verdict + (f" (overflow, layer {layer})" if layer else "")}


def _signal_record(folder, config, summary, threshold):
    fwd, bwd = _direction(summary["forward"], threshold), _direction(summary["backward"], threshold)
    return {"row": folder.name, "folder": str(folder), "status": summary.get("status"),
            "activation": signal_variance.activation_label(config["activation"], config["negative_slope"] or 0.01),
            "init": signal_variance.INIT_LABELS[config["init"]], "activation_key": config["activation"],
            "init_key": config["init"], "threshold": threshold,
            "fwd_theory": fwd["theory"], "fwd_measured": fwd["measured"], "fwd_ratio": fwd["ratio"],
            "fwd_verdict": fwd["text"], "bwd_theory": bwd["theory"], "bwd_measured": bwd["measured"],
            "bwd_ratio": bwd["ratio"], "bwd_verdict": bwd["text"], "fwd_verdict_key": fwd["verdict"],
            "bwd_verdict_key": bwd["verdict"], "fp_errors": summary.get("fp_errors") or {}}


def _train_record(folder):
    train = load_summary(folder)
    config = load_config(folder)
    diverged = train.get("diverged") or {}
    return {"train_status": train.get("status") + (f" (epoch {diverged.get('epoch')}, batch {diverged.get('batch')})"
                                                    if diverged else ""),
            "final_train_loss": train.get("final_train_loss"), "best_val_acc": train.get("best_val_acc"),
            "trained_bwd_ratio": (train.get("signal_trained") or {}).get("backward_ratio"),
            "train_config": {k: config.get(k) for k in ("optimizer", "lr", "epochs", "train_subset", "batch_size")}}


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


def findings(records, folders):
    """Notes under the table: what the columns mean and what the measurements say."""
    if not records:
        return []
    c = load_config(Path(records[0]["folder"]))
    threshold = records[0]["threshold"]
    notes = [
        f"Deep MLP: {c['depth']} blocks of Linear({c['width']}, {c['width']}) + activation, Gaussian batch of "
        f"{c['batch']}, Gaussian upstream gradient, float64, seed {c['seed']}. The lecture's rule: Var(y_l) = "
        "n Var(w) c Var(y_{l-1}) forward and Var(g_{l-1}) = m Var(w) c Var(g_l) backward (y: pre-activation, "
        "g = dL/dy; c = 1 linear/tanh near 0, 1/2 ReLU, (1 + a^2)/2 LeakyReLU).",
        "'factor': the measured per-layer factor, the geometric mean of the layer-to-layer variance ratios "
        "(theory: n Var(w) c forward, m Var(w) c backward). Ratios: the variance at the last layer the signal "
        f"reaches over the first; vanishing below 1/{threshold:g}, exploding above {threshold:g} or on overflow.",
    ]
    stable = {}
    for r in records:
        if r["fwd_verdict_key"] == "stable" and r["bwd_verdict_key"] == "stable":
            stable.setdefault(r["activation"], []).append(r["init"])
    for activation in dict.fromkeys(r["activation"] for r in records):
        names = stable.get(activation)
        notes.append(f"{activation}: stable both ways with {', '.join(names) if names else 'no init tried'}.")
    by_key = {(r["activation_key"], r["init_key"]): r for r in records}
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
             for r in records if r["fp_errors"]]
    if noisy:
        notes.append("NumPy floating-point warnings were suppressed while measuring (an exploding signal is a "
                     f"result here) and counted: {'; '.join(noisy)}.")
    trained = [r for r in records if "train_status" in r]
    if trained:
        t = trained[0]["train_config"]
        notes.append("Training: flattened CIFAR-10, the same MLP with a Linear(width, 10) head, "
                     f"{t['optimizer'].upper()} lr {t['lr']:g}, {t['epochs']} epochs over {t['train_subset']:,} "
                     f"images (batch {t['batch_size']}); 'val acc' is the best validation accuracy (chance 10%); the "
                     "last column is the backward ratio after training, on 256 validation images with the "
                     "cross-entropy gradient (per-layer curves in each row's signal.csv).")
    return notes


# --------------------------------------------------------------------------------------- figures
def _panels(curves, activations, negative_slope, rows_spec, title, path, xlabel="layer"):
    """One column per activation, one row per (key, ylabel, ylim) in ``rows_spec``, one curve per init."""
    from matplotlib.ticker import LogLocator, NullLocator

    fig = new_figure(4.6 * len(activations), 3.4 * len(rows_spec), layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(rows_spec), len(activations), squeeze=False))
    for col, activation in enumerate(activations):
        for r, (key, ylabel, ylim) in enumerate(rows_spec):
            ax = axes[r, col]
            for init in INIT_STYLE:
                points = [(c["layer"], c[key]) for c in curves if c["activation"] == activation and c["init"] == init]
                if not points:
                    continue
                layers = np.array([p[0] for p in points], float)
                values = np.array([np.nan if p[1] is None else p[1] for p in points], float)
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


def plot_training(records, path):
    """Best validation accuracy per combination: bars grouped by activation, chance at 10%."""
    activations = list(dict.fromkeys(r["activation"] for r in records))
    inits = list(dict.fromkeys(r["init_key"] for r in records))
    fig = new_figure(2.2 + 1.6 * len(activations) * max(1, len(inits)) / 4, 4.2, layout="constrained")
    ax = fig.subplots()
    width = 0.8 / max(1, len(inits))
    for k, init in enumerate(inits):
        colour, style = INIT_STYLE[init]
        values, statuses = [], []
        for activation in activations:
            r = next((r for r in records if r["activation"] == activation and r["init_key"] == init), None)
            acc = r.get("best_val_acc") if r else None
            values.append(100 * acc if acc is not None else 0.0)
            statuses.append((r or {}).get("train_status") or "")
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
    fig.savefig(path, dpi=130)
    return Path(path)


STUDY = Initialisation()


def main(argv=None):
    return study.main(STUDY, argv)


if __name__ == "__main__":
    sys.exit(main())
