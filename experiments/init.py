"""The initialisation study: why Xavier and He initialisation work, layer by layer, and where the rules part.

    python -m experiments.init                          # quick: 61 networks at init, a few minutes
    python -m experiments.init --train --download       # plus a short SGD run on CIFAR-10 for part 1
    python -m experiments.init --activations relu --inits he_normal --patterns pyramid --input-scales

Deep MLPs at init, float64: a Gaussian batch forward and a Gaussian upstream gradient backward through
minigrad's layers; per layer Var(y), Var(dL/dy), Var(dL/dW) against the lecture's n Var(w) c (the maths:
``minigrad.measure.signal_variance``). Part 1: init schemes x activations at width 256; part 2: the rules
Var(w) = k/n, k/m, 2k/(n+m) on unequal widths (alternating 512/128, pyramid 2048 -> 64); part 3: the
input scaled x0.1, x1, x10. Figures: forward.png, backward.png (1), widths.png (2), input_scale.png (3).
"""
import argparse
import math
import shutil
import sys
from pathlib import Path

import numpy as np

import minigrad
from minigrad.measure import signal_variance as sv
from minigrad.runs import load_config, load_summary, write_json_atomic

from . import study
from .study import Preset, Study, format_cell, positive_float, positive_int, read_csv, row_name, write_csv

STYLE = {"normal_1": ("C3", "-"), "normal_0.01": ("C0", "-"), "xavier_normal": ("C2", "-"),
         "xavier_uniform": ("C2", "--"), "he_normal": ("C1", "-"), "he_uniform": ("C1", "--"),
         "pytorch_default": ("C4", "-"), "fan_in": ("C0", "-"), "fan_out": ("C3", "-"), "fan_avg": ("C2", "-")}
SCALES = {0.1: ("C0", "-"), 1.0: ("0.35", "--"), 10.0: ("C3", ":")}  # dashes: ReLU's gradients coincide
KINDS = ("signal", "rule", "scale", "train")  # parts 1, 2, 3 and the training rows
KIND = {"g3": None, "ratio": "sci"}  # this study's cell formats -> the shared ones


class Initialisation(Study):
    name = "init"
    title = "Initialisation study"
    description = __doc__
    presets = {
        "quick": Preset("61 MLPs of 50 layers at init, batch 256 (--train: 100 SGD steps each of part 1, 5,000 "
                        "images)", depth=50, width=256, batch=256, train=False, train_subset=5000, train_epochs=2,
                        train_batch=100),
        "full": Preset("the quick rows at batch 1024, and 300 SGD steps each of part 1 on 10,000 CIFAR-10 images",
                       depth=50, width=256, batch=1024, train=True, train_subset=10000, train_epochs=3,
                       train_batch=100),
    }
    columns = [
        ("pattern", "Widths", None), ("activation", "Activation", None), ("init", "Init / rule", None),
        ("input", "Input", None), ("fwd_theory", "n Var(w) c", "g3"), ("fwd_measured", "fwd factor", "g3"),
        ("fwd_ratio", "Var(y_L)/Var(y_1)", "ratio"), ("fwd_verdict", "forward", None),
        ("bwd_theory", "m Var(w) c", "g3"), ("bwd_measured", "bwd factor", "g3"),
        ("bwd_ratio", "Var(g_1)/Var(g_L)", "ratio"), ("bwd_verdict", "backward", None), ("kept", "within x10", None)]
    train_columns = [("train_status", "training", None), ("final_train_loss", "train loss", None),
                     ("best_val_acc", "val acc %", "pct"), ("trained_bwd_ratio", "Var(g_1)/Var(g_L) trained", "sci")]

    def add_arguments(self, parser):
        add = parser.add_argument
        add("--depth", type=positive_int, default=None, help="hidden layers (default: the preset's, 50)")
        add("--width", type=positive_int, default=None, help="w (256; alternating 2w/(w/2), pyramid 8w->w/4)")
        add("--batch", type=positive_int, default=None, help="Gaussian batch for the measurements (quick 256)")
        add("--activations", nargs="+", choices=sv.ACTIVATIONS, default=list(sv.STUDY_ACTIVATIONS), help="part 1's")
        add("--inits", nargs="+", choices=sv.INITS, default=list(sv.INITS), help="part 1's schemes (default: all 7)")
        add("--patterns", nargs="*", choices=sv.WIDTH_PATTERNS, default=["alternating", "pyramid"], help="part 2's")
        add("--rule-activations", nargs="+", choices=sv.ACTIVATIONS, default=["linear", "tanh", "sigmoid", "relu"],
            help="parts 2 and 3's activations (part 3 leaves linear out)")
        add("--input-scales", nargs="*", type=positive_float, default=[0.1, 1.0, 10.0], help="part 3's (none: skip)")
        add("--negative-slope", type=float, default=0.01, help="LeakyReLU's slope (default 0.01)")
        add("--threshold", type=float, default=sv.VERDICT_THRESHOLD, help="vanishing/exploding beyond (default 1e3)")
        add("--train", action=argparse.BooleanOptionalAction, default=None, help="train part 1 briefly on CIFAR-10")
        add("--train-subset", type=positive_int, default=None, help="training images (stratified subset)")
        add("--train-epochs", type=positive_int, default=None, help="epochs over the subset")
        add("--train-batch", type=positive_int, default=None, help="training batch size (default 100)")
        add("--optimizer", choices=("sgd", "adam"), default="sgd", help="sgd (momentum 0.9) or adam")
        add("--lr", type=positive_float, default=None, help="learning rate (default: sgd 1e-2, adam 1e-3)")
        add("--keep-checkpoints", action="store_true", help="keep finished training rows' checkpoints")
        add("--no-figures", action="store_true", help="write the tables and CSVs only")

    def check_arguments(self, args):
        if (depth := self.settings(args)["depth"]) < 2:
            raise ValueError(f"--depth must be >= 2, got {depth}")
        if not args.threshold > 1:
            raise ValueError(f"--threshold must be > 1, got {args.threshold}")

    def settings(self, args):
        """The command's effective settings (preset values unless overridden)."""
        p = self.presets[args.preset]
        return dict(depth=args.depth or p.depth, width=args.width or p.width, batch=args.batch or p.batch,
                    train=p.train if args.train is None else args.train,
                    train_subset=args.train_subset or p.train_subset,
                    train_epochs=args.train_epochs or p.train_epochs, train_batch=args.train_batch or p.train_batch,
                    optimizer=args.optimizer, lr=args.lr or (1e-2 if args.optimizer == "sgd" else 1e-3))

    def uses_data(self, args):
        return bool(self.settings(args)["train"])

    def rows(self, args):
        s, unique = self.settings(args), lambda values: list(dict.fromkeys(values))
        combos = [(a, i) for a in unique(args.activations) for i in unique(args.inits)]
        rows = [(f"{a}-{i}", self.signal_config(args, s, a, i)) for a, i in combos]
        rows += [(f"{p}-{a}-{r}", self.rule_config(args, s, "rule", p, a, r, 1.0))
                 for p in unique(args.patterns) for a in unique(args.rule_activations) for r in sv.RULES]
        rows += [(f"equal-{a}-fan_in-x{x:g}", self.rule_config(args, s, "scale", "equal", a, "fan_in", x))
                 for a in unique(args.rule_activations) if a != "linear" for x in unique(args.input_scales)]
        if s["train"]:
            rows += [(row_name(f"train-{a}-{i}", s["lr"]), self.train_config(args, s, a, i)) for a, i in combos]
        return rows

    def _shared(self, args, s, activation, init):
        return {"study": self.name, "preset": args.preset, "model": f"MLP{s['depth']}x{s['width']}",
                "activation": activation, "init": init,
                "negative_slope": args.negative_slope if activation == "leaky_relu" else None,
                "depth": s["depth"], "width": s["width"], "seed": args.seed}

    def signal_config(self, args, s, activation, init):
        return {**self._shared(args, s, activation, init), "kind": "signal", "batch": s["batch"], "dtype": "float64",
                "input": "N(0, 1)", "upstream_gradient": "N(0, 1)", "minigrad_version": minigrad.__version__,
                "threads": args.threads}

    def rule_config(self, args, s, kind, pattern, activation, rule, scale):
        return {**self.signal_config(args, s, activation, rule), "kind": kind, "model": f"MLP{s['depth']}-{pattern}",
                "pattern": pattern, "widths": sv.pattern_widths(pattern, s["depth"], s["width"]),
                "input_scale": scale, "input": f"{scale:g} N(0, 1)"}

    def train_config(self, args, s, activation, init):
        return {**self._shared(args, s, activation, init), "kind": "train", "dataset": "cifar10",
                "input": "flattened 3x32x32, per-channel normalised", "train_subset": s["train_subset"], "n_val": 2500,
                "split_seed": 0, "epochs": s["train_epochs"], "batch_size": s["train_batch"],
                "optimizer": s["optimizer"], "lr": s["lr"], "momentum": 0.9 if s["optimizer"] == "sgd" else None,
                "profile_batch": 256, "dtype": "float32", "keep_checkpoints": args.keep_checkpoints,
                "minigrad_version": minigrad.__version__, "threads": args.threads}

    def run_row(self, row):
        return (self._run_train if row.config["kind"] == "train" else self._run_signal)(row)

    def _run_signal(self, row):
        """Measure one network at init: curves.csv and the summary (factors, ratios, verdicts)."""
        c = row.config
        write_json_atomic(row.path / "summary.json", {"status": "running"})
        result = sv.run_combination(c["activation"], c["init"], depth=c["depth"], width=c["width"], batch=c["batch"],
                                    seed=c["seed"], negative_slope=c["negative_slope"] or 0.01, widths=c.get("widths"),
                                    input_scale=c.get("input_scale", 1.0))
        write_csv(row.path / "curves.csv", sv.CURVE_FIELDS, result.curves())
        summary = {"status": "finished", "row": row.name, "label": result.label, "activation": c["activation"],
                   "init": c["init"], **sv.summary_json(result), "seconds": result.seconds}
        write_json_atomic(row.path / "summary.json", summary)
        row.say(sv.describe(result))
        return summary

    def _run_train(self, row):
        """Train one combination; profile the signal at init and after training (signal.csv)."""
        from minigrad import optim
        c = row.config
        model = sv.build_study_mlp(c["activation"], c["init"], [3 * 32 * 32] + [c["width"]] * c["depth"],
                                   num_classes=10, negative_slope=c["negative_slope"] or 0.01, dtype=np.float32,
                                   generator=np.random.default_rng([c["seed"], 1]))
        optimizer = (optim.SGD(model.parameters(), lr=c["lr"], momentum=0.9) if c["optimizer"] == "sgd"
                     else optim.Adam(model.parameters(), lr=c["lr"]))
        train, val, _ = row.loaders(c["batch_size"], augment=False, flat=True, val_batch=500, test=False)
        probe_x, probe_y = (a[:256] for a in next(val.epoch()))  # the same 256 validation images before and after
        init_rows, init_ratio = sv.profile_on_batch(model, probe_x, probe_y, "init")
        with np.errstate(over="ignore", invalid="ignore"):  # an exploding row diverges: the summary reports it
            summary = row.fit(row.trainer(model, optimizer, train, val))
        trained_rows, trained_ratio = ([], None)
        if summary["status"] == "finished":
            trained_rows, trained_ratio = sv.profile_on_batch(model, probe_x, probe_y, "trained")
        write_csv(row.path / "signal.csv", sv.PROFILE_FIELDS, init_rows + trained_rows)
        summary.update({"row": row.name, "activation": c["activation"], "init": c["init"], "signal_init": init_ratio,
                        "signal_trained": trained_ratio, "steps": len(train) * c["epochs"]})
        write_json_atomic(row.path / "summary.json", summary)
        if summary["status"] == "finished" and not c["keep_checkpoints"]:
            shutil.rmtree(row.path / "checkpoints", ignore_errors=True)  # resume-only; ~50 MB per row
        return summary

    def sort_folders(self, folders):
        order = {k: i for i, k in enumerate(KINDS + sv.WIDTH_PATTERNS + sv.ACTIVATIONS + sv.INITS + sv.RULES)}
        keys = ("kind", "pattern", "activation", "init")
        return sorted(folders, key=lambda f: tuple(order.get(load_config(f).get(k), 99) for k in keys) +
                      (load_config(f).get("input_scale") or 1.0,))

    def records(self, folders):
        """One record per measured network; part 1's with its training row's figures when there is one."""
        configs = {f: load_config(f) for f in folders}
        trained = {(c["activation"], c["init"]): f for f, c in configs.items() if c.get("kind") == "train"}
        threshold = self.args.threshold if self.args is not None else sv.VERDICT_THRESHOLD
        records = []
        for folder, c in configs.items():
            summary = load_summary(folder) if (folder / "summary.json").exists() else {}
            if c.get("kind") == "train" or summary.get("status") != "finished":
                continue
            records.append({
                "row": folder.name, "folder": str(folder), "status": summary["status"], "kind": c["kind"],
                **sv.config_labels(c), "activation_key": c["activation"], "init_key": c["init"],
                "threshold": threshold, "ends": summary.get("ends") or {}, "fp_errors": summary.get("fp_errors") or {},
                **sv.direction_columns(summary, threshold)})
            if c["kind"] == "signal" and (c["activation"], c["init"]) in trained:
                records[-1].update(_train_record(trained[(c["activation"], c["init"])]))
        return records

    def table_columns(self, records):
        return self.columns + (self.train_columns if any("train_status" in r for r in records) else [])

    def format_cell(self, value, kind):
        if kind == "g3" and isinstance(value, float) and math.isfinite(value):
            return f"{value:.3g}"
        if kind == "ratio" and value == math.inf:
            return "inf (overflow)"
        return format_cell(value, KIND.get(kind, kind))

    def table_title(self, records, preset):
        c = load_config(Path(records[0]["folder"])) if records else {}
        return f"Initialisation study: {c.get('depth')}-layer MLPs at initialisation (preset {preset})"

    def findings(self, records, folders):
        return findings(records, folders)

    def figures(self, records, folders, out_dir):
        from minigrad import plots
        measured = [(load_config(f), f) for f in folders if (f / "curves.csv").exists()]
        curves = [{"kind": c["kind"], **sv.config_labels(c), "activation": c["activation"], "init": c["init"],
                   "input_scale": c.get("input_scale", 1.0), **row}
                  for c, f in measured for row in read_csv(f / "curves.csv")]
        written = [write_csv(out_dir / "curves.csv", tuple(curves[0])[:7] + sv.CURVE_FIELDS, curves)] if curves else []
        if (self.args is not None and self.args.no_figures) or not curves:
            return written
        slope = next((c["negative_slope"] for c, _ in measured if c["negative_slope"]), 0.01)
        w = measured[0][0]["width"]
        part = {k: [c for c in curves if c["kind"] == k] for k in KINDS}

        def draw(points, name, series, rows, **kwargs):
            return plots.plot_facets(
                points, out_dir / name, "layer", "activation", series, rows,
                lambda v: STYLE.get(v) or SCALES.get(v, ("C5", "-")),
                lambda v: sv.INIT_LABELS[v] if v in sv.INIT_LABELS else f"x{v:g}",
                lambda a: sv.activation_label(a, slope), **kwargs) if points else []
        line = lambda key: {"lines": [(key, None, None, "")]}  # noqa: E731
        zoom = {"ylabel": "zoom on 1e-4..1e4", "ylim": (1e-4, 1e4)}
        written += draw(part["signal"], "forward.png", "init", [
            {"ylabel": "Var(y_l), pre-activation", **line("forward_var")}, {**zoom, **line("forward_var")}],
            legend_title="init", title=f"Forward: Var(y_l) per layer at init, width {w} (flat = n Var(w) c = 1)")
        written += draw(part["signal"], "backward.png", "init", [
            {"ylabel": "Var(dL/dy_l) (travels right to left)", **line("grad_var")}, {**zoom, **line("grad_var")},
            {"ylabel": "Var(dL/dW_l)", **line("weight_grad_var")}],
            legend_title="init", title=f"Backward: Var(dL/dy_l) per layer at init, width {w} (flat = m Var(w) c = 1)")
        written += draw(part["rule"], "widths.png", "init", [
            {"where": {"pattern": p}, "title": f"{p}: ", "ylabel": "variance / where it enters",
             "lines": [("forward_var", "-", 0, ", forward"), ("grad_var", "--", -1, ", backward")]}
            for p in dict.fromkeys(c["pattern"] for c in part["rule"])], legend_title="rule (k: the gain)",
            title="Unequal widths: forward Var(y_l)/Var(y_1) (solid), backward Var(g_l)/Var(g_L) (dashed)")
        written += draw(part["scale"], "input_scale.png", "input_scale", [
            {"ylabel": "Var(y_l), pre-activation", **line("forward_var")},
            {"ylabel": "Var(dL/dy_l)", **line("grad_var")}], legend_title="input",
            title=f"Input x = s N(0, 1), Var(w) = k/n, width {w}: forward (top), gradient (bottom)")
        trained = {(r["activation"], r["init_key"]): r for r in records if "train_status" in r}
        if trained:
            inits = dict.fromkeys(i for _, i in trained)
            written += plots.plot_grouped_bars(
                list(dict.fromkeys(a for a, _ in trained)),
                [(i, sv.INIT_LABELS[i], STYLE[i][0], "//" if STYLE[i][1] == "--" else None) for i in inits],
                lambda a, i: _bar(trained.get((a, i)) or {}), out_dir / "training.png",
                "best validation accuracy (%)", title="Which combinations train at all (short SGD run on CIFAR-10)",
                reference=(10, "chance (10%)"))
        return written


def findings(records, folders):
    """Notes under the table: what the columns mean and what the measurements say, part by part."""
    if not records:
        return []
    c, t = load_config(Path(records[0]["folder"])), records[0]["threshold"]
    part = {k: [r for r in records if r["kind"] == k] for k in KINDS}
    each = lambda rs, k: dict.fromkeys(r[k] for r in rs)  # noqa: E731
    notes = [f"{c['depth']} layers of Linear + activation, Gaussian batch {c['batch']} and upstream gradient, float64, "
             f"seed {c['seed']}. The lecture: Var(y_l) = n Var(w) c Var(y_(l-1)), Var(g_(l-1)) = m Var(w) c Var(g_l) "
             "(y: pre-activation, g = dL/dy, n fan-in, m fan-out; c = 1 linear/tanh, 1/16 sigmoid, 1/2 ReLU, "
             "(1+a^2)/2 LeakyReLU).",
             "'factor': the measured per-layer factor (geometric mean of the layer-to-layer ratios) beside the "
             "theory's; "
             f"ratios: last layer reached over first; vanishing below 1/{t:g}, exploding above {t:g} or on overflow; "
             "'within x10': the directions whose ratio stays within a decade."]
    for a in each(part["signal"], "activation"):
        names = [r["init"] for r in part["signal"] if r["activation"] == a and r["fwd_verdict_key"] == "stable" ==
                 r["bwd_verdict_key"]]
        notes.append(f"{a}: stable both ways with {', '.join(names) if names else 'none of the inits tried'}.")
    if part["signal"]:
        notes.append("Var(dL/dW_l) (backward.png, bottom) is nearly flat for tanh and ReLU even where both signals "
                     "vanish or explode (it is their product; Glorot & Bengio): its level shows the problem. Not for the "
                     "sigmoid: its forward signal stays up while the gradient vanishes, so the first layers learn last.")
    notes += [f"{p}, within x10 (forward / backward ratio): " + "; ".join(f"{a}: " + ", ".join(
        f"{r['init'].split(' ')[0]} {r['kept']} ({r['fwd_ratio']:.2g} / {r['bwd_ratio']:.2g})" for r in part["rule"]
        if (r["pattern"], r["activation"]) == (p, a)) for a in each(part["rule"], "activation")) + "."
        for p in each(part["rule"], "pattern")]
    if part["rule"]:
        notes.append("k/n keeps forward, k/m backward (k = 2 for ReLU, else 1); the other direction telescopes to the "
                     "end widths' ratio; the compromise's forward x backward, 4nm/(n+m)^2 per layer, compounds with "
                     "depth.")
    sig = [r["bwd_measured"] for r in part["signal"] + part["rule"] if r["activation_key"] == "sigmoid" and
           r["init_key"] in sv.RULES + ("xavier_normal", "xavier_uniform")]
    if sig:
        notes.append(f"Sigmoid, gain 1: the gradient shrinks x{min(sig):.3g}-{max(sig):.3g} per layer (its derivative "
                     "is <= 1/4; theory n Var(w)/16); forward, its output mean 1/2 holds Var(y_l) near the fixed point "
                     "4 n Var(w)/(16 - n Var(w)) (4/15 at k/n) instead of the linear theory's decay.")
    if part["scale"]:
        e = lambda r, k: f"{r['ends'].get(k) or math.nan:.2g}"  # noqa: E731
        notes.append("Input scale, Var(y_1) -> Var(y_L), Var(dL/dy_1): " + "; ".join(
            f"{r['activation']} {r['input']}: {e(r, 'forward_first')} -> {e(r, 'forward_last')}, {e(r, 'grad_first')}"
            for r in part["scale"]) + ". ReLU is positively homogeneous (forward x s^2, gradient unchanged); tanh and "
            "sigmoid saturate at x10 (the first layer's derivative ~0, its gradient drops) and re-normalise after it.")
    noisy = [f"{r['row']} ({', '.join(f'{k} x{n}' for k, n in r['fp_errors'].items())})"
             for r in records if r["fp_errors"]]
    if noisy:
        notes.append(f"NumPy floating-point warnings were suppressed while measuring and counted: {'; '.join(noisy)}.")
    if trained := [r["train_config"] for r in records if "train_status" in r]:
        notes.append(f"Training: flattened CIFAR-10, the MLP + Linear(width, 10), {trained[0]['optimizer'].upper()} "
                     f"lr "
                     f"{trained[0]['lr']:g}, {trained[0]['epochs']} epochs over {trained[0]['train_subset']:,} images "
                     f"(batch {trained[0]['batch_size']}); 'val acc': best validation accuracy (chance 10%); last "
                     "column: the backward ratio after training, on 256 validation images (each row's signal.csv).")
    return notes


def _bar(r):
    """(best val acc in %, note) of a training record; the note says why a bar is missing."""
    status, acc = r.get("train_status") or "missing", r.get("best_val_acc")
    return (None if acc is None else 100 * acc), ("" if status.startswith("finished") else status.split(" ")[0])


def _train_record(folder):
    train, config, where = load_summary(folder), load_config(folder), load_summary(folder).get("diverged")
    where = f" (epoch {where['epoch']}, batch {where['batch']})" if where else ""
    return {"train_status": train.get("status") + where,
            "final_train_loss": train.get("final_train_loss"), "best_val_acc": train.get("best_val_acc"),
            "trained_bwd_ratio": (train.get("signal_trained") or {}).get("backward_ratio"),
            "train_config": {k: config.get(k) for k in ("optimizer", "lr", "epochs", "train_subset", "batch_size")}}


STUDY = Initialisation()


def main(argv=None):
    return study.main(STUDY, argv)


if __name__ == "__main__":
    sys.exit(main())
