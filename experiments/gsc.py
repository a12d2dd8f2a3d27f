"""The gradient scale study of Philipp et al. (2018), "Gradients explode - deep networks are shallow".

    python -m experiments.gsc                      # 7 MLPs x 100 datasets x 10,000 points (full scale)
    python -m experiments.gsc --preset quick       # 7 MLPs x 10 datasets x 1,000 points (seconds)
    python -m experiments.gsc --train              # CIFAR-10 part, quick: 4 exploding MLPs, small lr grid
    python -m experiments.gsc --train --preset report --download   # the report's protocol (hours)
    python -m experiments.gsc --train --preset full --download     # the paper's protocol (days)

Synthetic part (the report's 3.1, the paper's Figure 1): seven 50-layer width-100 MLPs, Gaussian data, error
E = <label, output>; per architecture and dataset a fresh network sees one fresh dataset as one batch, and
GSC(l, 0), pre-activation std and sign diversity are summed over the datasets (``minigrad.measure.gsc``: the
definition, and why float32 (``--dtype``) is enough; ``minigrad.measure.gsc_synthetic``: seeds, worker
processes, merging). Rows ``OUT/<architecture>/``; ``results.md``, ``gsc_curves.csv``, ``gsc_figure1.png``.

CIFAR-10 part (``--train``, the report's 3.2, the paper's Figure 3 B-E): the exploding architectures as 51-layer
MLPs, softmax + log-probability error, plain SGD (batch 100) over a learning-rate grid, lr x0.333 after 5 epochs
without improvement (``ReduceLROnPlateau(factor=0.333, patience=4)``): of the validation loss in ``quick``
(as before), of the training error (the paper's rule) in ``report`` (the report's 7 lrs, 100 epochs) and
``full`` (the paper's 21 lrs 1e5 ... 1e-5, 500 epochs). ``GSCMonitor`` (``minigrad.measure.gsc_training``)
measures GSC(L, 0) each epoch (``gsc.csv``) and, at chosen epochs, the effective depth (``effective_depth.json``;
the definition, and what of it is ours: ``minigrad.measure.effective_depth``) and ||W - W^0||_2 per layer
(``weight_change.json``). Rows ``OUT/cifar10/<architecture>-lr<lr>/``; the table, ``training_gsc.png`` and
``training_depth.png`` (Figure 3 D, E) in ``OUT/cifar10/``.
"""
import argparse
import copy
import json
import sys
from pathlib import Path

import numpy as np

import minigrad
from minigrad import optim, threads
from minigrad.measure import gsc as G
from minigrad.measure import gsc_synthetic as S
from minigrad.measure.gsc_training import GSCMonitor, TrainingErrorPlateau, fixed_batch, read_results
from minigrad.models.mlp import ARCHITECTURES, EXPLODING_IN_PAPER, canonical_architecture, gsc_mlp
from minigrad import plots
from minigrad.runs import load_config, load_metrics, load_summary, write_json_atomic

from . import study
from .study import Preset, Study, positive_float, positive_int, row_name, training_record, write_csv

DEPTH, WIDTH = 50, 100
PAPER_LRS = tuple(float(f"{m}e{e}") for e in range(5, -6, -1) for m in (3, 1))[1:]  # 1e5, 3e4, 1e4, ..., 1e-5
EPSILONS = (0.1, 0.01)
_STYLES = {"ReLU": ("tab:blue", "-"), "layer-ReLU": ("tab:orange", "-"), "batch-ReLU": ("tab:green", "-"),
           "tanh": ("tab:red", "--"), "layer-tanh": ("tab:purple", "--"), "batch-tanh": ("tab:brown", "--"),
           "SeLU": ("tab:pink", "-.")}


def _architecture(text):
    try:
        return canonical_architecture(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _common_arguments(parser):
    parser.add_argument("--train", action="store_true",
                        help="run the CIFAR-10 training part instead (python -m experiments.gsc --train --help)")
    parser.add_argument("--arch", nargs="+", type=_architecture, default=None, metavar="ARCH",
                        help=f"architectures (default: all seven; with --train the paper's exploding four). "
                             f"Choices: {', '.join(ARCHITECTURES)}")
    parser.add_argument("--depth", type=positive_int, default=DEPTH, help=f"hidden layers (default {DEPTH})")
    parser.add_argument("--width", type=positive_int, default=WIDTH, help=f"units per layer (default {WIDTH})")


def _by_architecture(folders):
    """Folders in the order of ``ARCHITECTURES``, then by learning rate, largest first."""
    order = {a: i for i, a in enumerate(ARCHITECTURES)}
    return sorted(folders, key=lambda f: (order.get(load_config(f).get("architecture"), 99),
                                          -(load_config(f).get("lr") or 0)))


# ----------------------------------------------------------------------------------------- synthetic part
class GradientScale(Study):
    name, title, description, default_preset = "gsc", "GSC study", __doc__, "full"
    presets = {
        "full": Preset("the paper's scale: 100 datasets of 10,000 points per architecture", datasets=100, points=10000),
        "quick": Preset("10 datasets of 1,000 points per architecture (10x the report's, 1% of the paper's)",
                        datasets=10, points=1000),
    }
    columns = [
        ("architecture", "Architecture", None), ("gsc_1", "GSC(1, 0)", "g"), ("gsc_L", "GSC(L, 0)", "g"),
        ("log10_slope", "log10 GSC / layer", "f4"), ("growth_per_layer", "Growth / layer", "f4"),
        ("fit_r2", "Fit R^2", "f3"), ("pre_std_L", "Pre-act std (l=L)", "f3"), ("pre_std_1", "Pre-act std (l=1)", "f3"),
        ("sign_div_1", "Sign div. (l=1)", "f3"), ("explodes", "Explodes (here)", "yn"),
        ("explodes_in_paper", "Explodes (paper)", "yn"), ("seconds", "Time (s)", "s"), ("cpu_seconds", "CPU (s)", "s"),
    ]
    row_figure_names = ()
    workers = None  # the worker processes while a command runs its rows (``running``)

    def add_arguments(self, parser):
        _common_arguments(parser)
        parser.add_argument("--datasets", type=positive_int, default=None,
                            help="datasets per architecture (default: the preset's)")
        parser.add_argument("--points", type=positive_int, default=None, help="points per dataset (default: the preset's)")
        parser.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                            help="compute dtype (default float32, twice as fast; its rounding moves one dataset's "
                                 "batch-ReLU GSC by <1%%, the 100-dataset mean by ~0.05%%, far below the 15%% "
                                 "spread between datasets: see minigrad.measure.gsc; sums are float64)")

    def uses_data(self, args):
        return False

    def check_arguments(self, args):
        if args.download:
            raise ValueError("--download is only for --train (the synthetic study needs no data)")

    def rows(self, args):
        preset = self.presets[args.preset]
        return [(row_name(a), {
            "study": self.name, "preset": args.preset, "model": a, "architecture": a,
            "datasets": args.datasets or preset.datasets, "points": args.points or preset.points,
            "depth": args.depth, "width": args.width, "input_length": 10.0, "dtype": args.dtype,
            "error": "dot product <label, output>", "seed": args.seed, "minigrad_version": minigrad.__version__,
            "threads": args.threads}) for a in args.arch or list(ARCHITECTURES)]

    def row_flags(self, name, config):
        return ["--arch", config["architecture"]]

    def running(self, args, rows):
        """One pool of ``--threads`` single-threaded worker processes for all the command's rows."""
        self.workers = S.WorkerPool(args.threads or threads.available_cores(),
                                    max((c["datasets"] for _, c in rows), default=1))
        return self.workers

    def run_row(self, row):
        """Measure every dataset of one architecture (in worker processes), keep the sums and the summary."""
        c = row.config
        write_json_atomic(row.path / "summary.json", {"status": "running"})
        stats, summary = S.measure_row(c, self.workers and self.workers.pool, row.progress)
        write_json_atomic(row.path / "gsc.json", stats.to_dict())
        write_json_atomic(row.path / "summary.json", summary)
        row.say(f"{stats.n_batches} datasets x {c['points']:,} points: GSC({stats.n_layers}, 0) = {summary['gsc_L']:.4g}, "
                f"x{summary['growth_per_layer']:.4f} per layer ({'explodes' if summary['explodes'] else 'does not explode'}), "
                f"{summary['seconds']:.1f} s ({summary['cpu_seconds']:.1f} CPU s)")
        return summary

    def record(self, folder):
        return {"row": folder.name, "folder": str(folder), **load_summary(folder),
                "architecture": load_config(folder)["architecture"]}

    def sort_folders(self, folders):
        return _by_architecture(folders)

    def records(self, folders):
        """The finished architectures (the manifest lists the others with their status)."""
        return [self.record(f) for f in folders
                if (f / "summary.json").exists() and load_summary(f).get("status") == "finished"]

    def table_title(self, records, preset):
        c = load_config(Path(records[0]["folder"])) if records else {}
        return (f"Gradient scale study (Philipp et al. 2018): {c.get('depth')}-layer width-{c.get('width')} MLPs, "
                f"{c.get('datasets')} datasets x {c.get('points', 0):,} points")

    def findings(self, records, folders):
        finished = [r for r in records if r["status"] == "finished"]
        if not finished:
            return []
        c = load_config(Path(finished[0]["folder"]))
        exploding = [r["architecture"] for r in finished if r["explodes"]]
        wall = sum(r.get("seconds") or 0.0 for r in finished)
        cpu = sum(r.get("cpu_seconds") or 0.0 for r in finished)
        return [
            f"GSC(l, 0) = sqrt(mean ||dE/df_l||^2 / d) * sqrt(mean ||f_l||^2) / sqrt(mean E^2) over all points of "
            f"all datasets (minigrad.measure.gsc); l counts layers from the error layer, L = {c['depth']}.",
            "log10 GSC / layer: least-squares slope of log10 GSC(l, 0) over l = 1..L; growth / layer = 10^slope; "
            "R^2 of that log-linear fit. Explodes (exponential growth): growth >= 1.02 per layer (2.6-fold over "
            "49 layers) and R^2 >= 0.9 (minigrad.measure.gsc.explodes).",
            f"Explode here: {', '.join(exploding) or 'none'}. The paper (Figure 1A): {', '.join(EXPLODING_IN_PAPER)}.",
            f"Preset {c['preset']}, seed {c['seed']}, dtype {c['dtype']}; the measurements took {wall:.1f} s of wall "
            f"time and {cpu:.0f} CPU seconds (CPU seconds: what the work costs, whatever else the machine did).",
        ]

    def figures(self, records, folders, out_dir):
        curves = {load_config(f)["architecture"]: G.GradientScaleStats.from_dict(json.loads((f / "gsc.json").read_text()))
                  for f in folders if (f / "gsc.json").exists() and load_summary(f).get("status") == "finished"}
        if not curves:
            return []
        rows = S.curve_rows(curves)
        path = write_csv(out_dir / "gsc_curves.csv", list(rows[0]), rows)

        def panel(key, title, ylabel, **more):
            return {"lines": [{"x": [r["layer"] for r in rows if r["architecture"] == a], "label": a,
                               "y": [r[key] for r in rows if r["architecture"] == a], "color": _STYLES.get(a, (None,))[0],
                               "style": _STYLES.get(a, (None, "-"))[1]} for a in curves],
                    "title": title, "ylabel": ylabel, "xlabel": "compositional depth l (layers from the error layer)",
                    **more}
        return [path, plots.plot_panels([
            panel("gsc", "(A) gradient scale coefficient GSC(l, 0)", "GSC(l, 0)", yscale="log"),
            panel("pre_activation_std", "(B) pre-activation standard deviation", "standard deviation", yscale="log",
                  legend=0),
            panel("sign_diversity", "(C) pre-activation sign diversity", "sign diversity min(P, N) / (P + N)",
                  ylim=(0, 0.52), legend=0)], out_dir / "gsc_figure1.png", self.table_title(records, None))]


# ----------------------------------------------------------------------------------------- CIFAR-10 part
class GradientScaleTraining(Study):
    name, command, title, description, out_subfolder = "gsc-train", "gsc", "GSC study, CIFAR-10 part", __doc__, "cifar10"
    presets = {
        "quick": Preset("the 4 exploding MLPs, lr 1e-3, 1e-2, 1e-1, 5 epochs on 5,000 training images "
                        "(about 4 minutes)", lrs=(1e-3, 1e-2, 1e-1), epochs=5, train_subset=5000, gsc_batch=500,
                        plateau_on="val_loss", depth_batch=100, depth_every=1),
        "report": Preset("the report's protocol: the 4 exploding MLPs, lr 1e-1 ... 1e-4 (7 values), 100 epochs on "
                         "the 47,500 training images, lr x0.333 after 5 epochs without a lower training error "
                         "(roughly 45 minutes per row here)", lrs=(1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4),
                         epochs=100, train_subset=None, gsc_batch=2000, plateau_on="train_error", depth_batch=500,
                         depth_every=5),
        "full": Preset("the paper's protocol: the 4 exploding MLPs, lr 1e5, 3e4, ..., 3e-5, 1e-5 (21 values), 500 "
                       "epochs on the 47,500 training images, lr x0.333 after 5 epochs without a lower training "
                       "error (days)", lrs=PAPER_LRS, epochs=500, train_subset=None, gsc_batch=2000,
                       plateau_on="train_error", depth_batch=500, depth_every=10),
    }
    columns = [("architecture", "Architecture", None), ("lr", "LR", "sci"), ("epochs", "Epochs", "int"),
               ("train_error", "Train error %", "pct"), ("best_train_error", "Best train error %", "pct"),
               ("val_error", "Val error %", "pct"), ("gsc_init", "GSC(L,0) init", "sci"),
               ("gsc_final", "GSC(L,0) final", "sci"), ("depth_final", "Eff. depth (eps 0.1)", "int"),
               ("depth_final_fine", "Eff. depth (eps 0.01)", "int"), ("change_max", "max ||dW||/||W0||", "f3"),
               ("best_lr", "Best lr", None), ("seconds", "Time (s)", "s"), ("status", "Status", None)]

    def add_arguments(self, parser):
        _common_arguments(parser)
        add = parser.add_argument
        add("--lr", type=positive_float, nargs="+", default=None, help="learning rates (default: the preset's grid)")
        add("--epochs", type=positive_int, default=None, help="epochs (default: the preset's)")
        add("--batch-size", type=positive_int, default=100, help="batch size (default 100)")
        add("--train-subset", type=positive_int, default=None,
            help="train on a stratified subset of N images (default: the preset's)")
        add("--full-train", action="store_true", help="use the whole training split")
        add("--gsc-batch", type=positive_int, default=None, help="training images of the fixed batch of GSC(L, 0)")
        add("--depth-batch", type=positive_int, default=None,
            help="training images of the fixed batch the effective depth is measured on")
        add("--depth-every", type=positive_int, default=None,
            help="measure effective depth and weight change every N epochs (and at 0 and the last)")
        add("--plateau-on", choices=("train_error", "val_loss"), default=None,
            help="what ReduceLROnPlateau watches (default: the preset's; the paper's: train_error)")

    def rows(self, args):
        p = self.presets[args.preset]
        return [(row_name(a, lr), {
            "study": self.name, "preset": args.preset, "model": a, "architecture": a,
            "lr": lr, "epochs": args.epochs or p.epochs, "batch_size": args.batch_size,
            "seed": args.seed, "dataset": "cifar10",
            "train_subset": None if args.full_train else (args.train_subset or p.train_subset),
            "n_val": 2500, "split_seed": 0, "depth": args.depth, "width": args.width,
            "linear_layers": args.depth + 1, "optimizer": "SGD", "momentum": 0.0, "scheduler": "ReduceLROnPlateau",
            "plateau_metric": args.plateau_on or p.plateau_on, "factor": 0.333, "patience": 4,
            "error": "softmax + log-probability (CrossEntropyLoss)", "augment": "none",
            "gsc_batch": args.gsc_batch or p.gsc_batch, "depth_batch": args.depth_batch or p.depth_batch,
            "depth_every": args.depth_every or p.depth_every, "epsilons": list(EPSILONS),
            "minigrad_version": minigrad.__version__, "threads": args.threads,
        }) for a in args.arch or list(EXPLODING_IN_PAPER) for lr in args.lr or list(p.lrs)]

    def row_flags(self, name, config):
        return ["--arch", config["architecture"], "--lr", study.format_lr(config["lr"])]

    def run_row(self, row):
        c, splits = row.config, row.splits()
        model = gsc_mlp(c["architecture"], depth=c["depth"], width=c["width"],
                        in_features=int(np.prod(splits.train_images.shape[1:])), num_classes=splits.num_classes,
                        generator=np.random.default_rng([c["seed"], 3, list(ARCHITECTURES).index(c["architecture"])]))
        initial_layers = copy.deepcopy(GSCMonitor.layers(model))  # the weights at initialisation
        optimizer = optim.SGD(model.parameters(), lr=c["lr"], momentum=c["momentum"])
        scheduler = optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=c["factor"],
                                                         patience=c["patience"])
        train, val, _ = row.loaders(c["batch_size"], augment=False, flat=True, test=False)
        depth_x, depth_y = fixed_batch(splits, c["depth_batch"], seed=2)
        callbacks = [GSCMonitor(row.path, *fixed_batch(splits, c["gsc_batch"], seed=1), initial_layers=initial_layers,
                                depth_inputs=depth_x, depth_targets=depth_y, depth_every=c["depth_every"],
                                epsilons=c["epsilons"])]
        if c["plateau_metric"] == "train_error":  # the paper's rule, through a callback
            callbacks, scheduler = callbacks + [TrainingErrorPlateau(scheduler)], None
        return row.fit(row.trainer(model, optimizer, train, val, scheduler=scheduler, callbacks=callbacks))

    def record(self, folder):
        record, metrics = training_record(folder), load_metrics(folder) if (folder / "metrics.csv").exists() else []
        errors = [1 - m["train_acc"] for m in metrics]
        results = read_results(folder)
        return {**record, "architecture": load_config(folder).get("architecture"),
                "train_error": errors[-1] if errors else None, "best_train_error": min(errors) if errors else None,
                "val_error": 1 - metrics[-1]["val_acc"] if metrics else None,
                **{k: results.get(k) for k in ("gsc_init", "gsc_final", "depth_final", "depth_final_fine", "change_max")}}

    def sort_folders(self, folders):
        return _by_architecture(folders)

    def records(self, folders):
        records = [self.record(f) for f in folders]
        best = _best_lr(records)
        for record in records:
            record["best_lr"] = "yes" if best.get(record["architecture"], {}).get("lr") == record["lr"] else ""
        return records

    def table_title(self, records, preset):
        return f"GSC study, CIFAR-10 part (preset {preset})"

    def findings(self, records, folders):
        return ["Best lr per architecture (lowest training error, as the paper chose): "
                + ", ".join(f"{a} {b['lr']:g}" for a, b in _best_lr(records).items()) + ".",
                "GSC(L, 0): the error layer's log-probability against the first hidden layer's output, on a fixed "
                "batch of training images, epoch 0 = at initialisation (minigrad.measure.gsc).",
                "Effective depth (eps): the smallest lambda such that the gradient terms with more than lambda "
                "residual Jacobians (J_l = I_l + R_l, I_l = the layer's Jacobian with its initial weights) add up to "
                "less than eps of the gradient's norm, on a fixed batch (minigrad.measure.effective_depth; the "
                "criterion is ours: the paper's estimator could not be checked offline). max ||dW||/||W0||: the "
                "largest ratio over layers of ||W - W0||_2 to ||W0||_2 at the last epoch."]

    def figures(self, records, folders, out_dir):
        """training_gsc.png (Figure 3 B, C) and training_depth.png (Figure 3 D, E): each architecture at its best lr."""
        best = {f"{a} (lr {r['lr']:g})": (a, r["folder"]) for a, r in _best_lr(records).items()}
        if not best:
            return []
        runs, styles = {k: f for k, (_, f) in best.items()}, {k: _STYLES.get(a, (None, "-")) for k, (a, _) in best.items()}
        return [plots.plot_gsc_training(runs, out_dir / "training_gsc.png",
                                        "Exploding MLPs on CIFAR-10 (best lr of each)", styles),
                plots.plot_effective_depth(runs, out_dir / "training_depth.png", "Effective depth and weight change "
                                           "(best lr of each), like the paper's Figure 3 D, E", styles)]


def _best_lr(records):
    """{architecture: record} of the lowest best training error among finished or diverged rows."""
    best = {}
    for record in records:
        error = record["best_train_error"]
        if error is not None and str(record["status"]).startswith(("finished", "diverged")):
            current = best.get(record["architecture"])
            if current is None or error < current["best_train_error"]:
                best[record["architecture"]] = record
    return best


SYNTHETIC, TRAINING = GradientScale(), GradientScaleTraining()


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    return study.main(TRAINING if "--train" in argv else SYNTHETIC, argv)


if __name__ == "__main__":
    sys.exit(main())
