"""The gradient scale study of Philipp et al. (2018), "Gradients explode - deep networks are shallow".

    python -m experiments.gsc                      # 7 MLPs x 100 datasets x 10,000 points (full scale)
    python -m experiments.gsc --preset quick       # 7 MLPs x 10 datasets x 1,000 points (seconds)
    python -m experiments.gsc --train              # CIFAR-10 part, quick: 4 exploding MLPs, small lr grid
    python -m experiments.gsc --train --preset report --download   # the report's protocol (hours)
    python -m experiments.gsc --train --preset full --download     # the paper's protocol (days)

Synthetic part (the report's section 3.1, Figure 1): seven 50-layer width-100 MLPs (``minigrad.models.mlp``)
on Gaussian data (inputs of length 10, labels N(0, I/100)), error E = <label, output>. For each
architecture and each of the datasets, a freshly initialised network sees one fresh dataset as a single
batch (so batch norm uses that dataset's statistics); GSC(l, 0), the pre-activation standard deviation and
sign diversity are accumulated over all datasets (``minigrad.measure.gsc``: the exact definition). Dataset k is
the same for every architecture. Each architecture is a row folder ``OUT/<architecture>/`` (config.json,
gsc.json with the sums, summary.json); the study writes ``OUT/results.md`` / ``results.csv`` (GSC at layer
L and its log-slope, which explode), ``OUT/gsc_curves.csv`` (every curve), ``OUT/gsc_figure1.png`` (three
panels like the paper's Figure 1) and ``OUT/manifest.json``. ``--threads N`` runs N worker processes of
one thread each: the work is many independent datasets, and processes also parallelise NumPy's
element-wise work, which threads would not. The study computes in float32 by default (``--dtype``): twice
as fast as float64, and its rounding moves the 100-dataset GSC by about 0.05% (batch-ReLU, the worst case),
against a 15% spread of the GSC between datasets (``minigrad.measure.gsc``, "dtype").

CIFAR-10 part (``--train``, the report's section 3.2, the paper's Figure 3 B-E): the exploding architectures
as 51-layer width-100 MLPs (50 hidden layers and ``out.linear``) with softmax + log-probability error
(``CrossEntropyLoss``), plain SGD (batch 100, no augmentation) over a learning-rate grid with
``ReduceLROnPlateau(factor=0.333, patience=4)`` (PyTorch reduces once the bad epochs exceed ``patience``:
x0.333 after 5 epochs without improvement). Presets: ``quick`` (3 lrs, 5 epochs, 5,000 images; the plateau
rule watches the validation loss, as it always did); ``report`` (the report's 7 lrs 1e-1 ... 1e-4, 100
epochs) and ``full`` (the paper's 21 lrs 1e5, 3e4, ..., 1e-5 and 500 epochs), both with the paper's rule on
the training error (``TrainingErrorPlateau``). The ``GSCMonitor`` callback (``minigrad.measure.gsc_training``)
measures on fixed batches of training images GSC(L, 0) every epoch (``gsc.csv``), and at epoch 0, every
``depth_every`` epochs and the last the effective depth (``effective_depth.json``; the definition, and what of
it is ours, in ``minigrad.measure.effective_depth``) and the operator norm of each layer's weight change
W - W^0 (``weight_change.json``). Rows go to ``OUT/cifar10/<architecture>-lr<lr>/``, with the table, the
figures (``training_gsc.png``: error and GSC; ``training_depth.png``: Figure 3 D, E) and the manifest in
``OUT/cifar10/``.
"""
import copy
import math
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np

import minigrad
from minigrad.measure import gsc as G
from minigrad.measure.gsc_training import GSCMonitor, TrainingErrorPlateau
from minigrad import threads
from minigrad.models.mlp import ARCHITECTURES, EXPLODING_IN_PAPER, canonical_architecture, gsc_mlp
from minigrad.runs import json_safe, load_config, load_metrics, load_summary, write_json_atomic

from . import study
from .study import (Preset, Study, new_figure, positive_float, positive_int, read_csv, row_name, say,
                    training_record, write_csv)

DEPTH, WIDTH = 50, 100
PAPER_LRS = tuple(float(f"{m}e{e}") for e in range(5, -6, -1) for m in (3, 1))[1:]  # 1e5, 3e4, 1e4, ..., 3e-5, 1e-5
EPSILONS = (0.1, 0.01)
_STYLES = {"ReLU": ("tab:blue", "-"), "layer-ReLU": ("tab:orange", "-"), "batch-ReLU": ("tab:green", "-"),
           "tanh": ("tab:red", "--"), "layer-tanh": ("tab:purple", "--"), "batch-tanh": ("tab:brown", "--"),
           "SeLU": ("tab:pink", "-.")}


def _common_arguments(parser):
    parser.add_argument("--train", action="store_true",
                        help="run the CIFAR-10 training part instead (python -m experiments.gsc --train --help)")
    parser.add_argument("--arch", nargs="+", type=_architecture, default=None, metavar="ARCH",
                        help=f"architectures (default: all seven; with --train the paper's exploding four). "
                             f"Choices: {', '.join(ARCHITECTURES)}")
    parser.add_argument("--depth", type=positive_int, default=DEPTH, help=f"hidden layers (default {DEPTH})")
    parser.add_argument("--width", type=positive_int, default=WIDTH, help=f"units per layer (default {WIDTH})")


def _architecture(text):
    import argparse
    try:
        return canonical_architecture(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


# ----------------------------------------------------------------------------------------- synthetic part
class GradientScale(Study):
    name = "gsc"
    title = "GSC study"
    description = __doc__
    default_preset = "full"
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
    pool = None  # worker processes while a command runs its rows (``running``)

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
        return [(row_name(a), self.row_config(args, a)) for a in args.arch or list(ARCHITECTURES)]

    def row_flags(self, name, config):
        return ["--arch", config["architecture"]]

    def row_config(self, args, architecture):
        """Every setting of one architecture's measurement (its config.json; a re-run must match it)."""
        preset = self.presets[args.preset]
        return {"study": self.name, "preset": args.preset, "model": architecture, "architecture": architecture,
                "datasets": args.datasets or preset.datasets, "points": args.points or preset.points,
                "depth": args.depth, "width": args.width, "input_length": 10.0, "dtype": args.dtype,
                "error": "dot product <label, output>", "seed": args.seed, "minigrad_version": minigrad.__version__,
                "threads": args.threads}

    def run_row(self, row):
        """Measure every dataset for one architecture (in worker processes), keep the sums and the summary."""
        c = row.config
        write_json_atomic(row.path / "summary.json", {"status": "running"})
        started = time.perf_counter()
        pool = self.pool or _worker_pool(threads.get_num_threads()["numba"], c["datasets"])
        try:
            stats, cpu_seconds = _measure_all(c, pool, row.progress)
        finally:
            if pool is not self.pool and pool is not None:
                pool.shutdown()
        seconds = time.perf_counter() - started
        write_json_atomic(row.path / "gsc.json", stats.to_dict())
        summary = {"status": "finished", **json_safe(summarise(c["architecture"], stats, seconds)),
                   "cpu_seconds": cpu_seconds}
        write_json_atomic(row.path / "summary.json", summary)
        row.say(f"{stats.n_batches} datasets x {c['points']:,} points: GSC({stats.n_layers}, 0) = {summary['gsc_L']:.4g}, "
                f"x{summary['growth_per_layer']:.4f} per layer ({'explodes' if summary['explodes'] else 'does not explode'}), "
                f"{seconds:.1f} s ({cpu_seconds:.1f} CPU s)")
        return summary

    def running(self, args, rows):
        """One pool of ``--threads`` single-threaded worker processes for all the command's rows."""
        return _PoolSession(self, args.threads or threads.available_cores(),
                            max((c["datasets"] for _, c in rows), default=1))

    def record(self, folder):
        summary = load_summary(folder)
        return {"row": folder.name, "folder": str(folder), **summary,
                "architecture": load_config(folder)["architecture"]}

    def sort_folders(self, folders):
        return _by_architecture(folders)

    def records(self, folders):
        """The finished architectures (the manifest lists the others with their status)."""
        return [self.record(f) for f in folders
                if (f / "summary.json").exists() and load_summary(f).get("status") == "finished"]

    def table_title(self, records, preset):
        configs = [load_config(Path(r["folder"])) for r in records] or [{}]
        c = configs[0]
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
        curves = {}
        for f in folders:
            if (f / "gsc.json").exists() and load_summary(f).get("status") == "finished":
                curves[load_config(f)["architecture"]] = G.GradientScaleStats.from_dict(_read_json(f / "gsc.json"))
        if not curves:
            return []
        rows = [{"architecture": a, "layer": int(l), "gsc": float(g), "pre_activation_std": float(s),
                 "sign_diversity": float(d)}
                for a, stats in curves.items()
                for l, g, s, d in zip(stats.layers, stats.gsc, stats.pre_activation_std, stats.sign_diversity)]
        path = write_csv(out_dir / "gsc_curves.csv", ["architecture", "layer", "gsc", "pre_activation_std",
                                                      "sign_diversity"], rows)
        return [path, plot_figure1(rows, out_dir / "gsc_figure1.png", self.table_title(records, None))]


class _PoolSession:
    def __init__(self, study_, workers, datasets):
        self.study, self.workers = study_, max(1, min(workers, datasets))

    def __enter__(self):
        self.study.pool = _worker_pool(self.workers, self.workers)
        return self

    def __exit__(self, *exc):
        if self.study.pool is not None:
            self.study.pool.shutdown(cancel_futures=True)
        self.study.pool = None
        return False


def _worker_pool(workers, datasets):
    """``workers`` single-threaded worker processes (None for one: the work then runs here)."""
    workers = max(1, min(workers, datasets))
    if workers == 1:
        return None
    import multiprocessing
    # spawn, not fork: forking a process whose BLAS and Numba thread pools are running is unsafe
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_single_threaded)


def measure_one(architecture, k, config):
    """GSC sums of ``architecture`` on dataset ``k`` of the study (a worker process runs this)."""
    arch_index = list(ARCHITECTURES).index(architecture)
    started = time.process_time()  # CPU time: on a shared machine the wall time says little
    stats = G.measure_architecture(
        architecture, n_points=config["points"], depth=config["depth"], width=config["width"],
        # seed words are never 0: SeedSequence pads with zeros, so [s, 2, 0] would equal [s, 2]
        seed=[config["seed"], 2, arch_index + 1, k + 1], dataset_seed=[config["seed"], 1, k + 1],
        dtype=np.dtype(config["dtype"]))
    return k, (stats, time.process_time() - started)


def _single_threaded():
    """Worker start-up: one BLAS and one Numba thread, so N workers use N cores."""
    threads.set_num_threads(1)


def _measure_all(config, pool, progress):
    """Measure every dataset (in the pool, or here with one thread); merged in dataset order, so results do
    not depend on the number of workers. Returns (stats, CPU seconds)."""
    from tqdm.auto import tqdm

    architecture, n = config["architecture"], config["datasets"]
    bar = tqdm(total=n, desc=f"{architecture:>10}", unit="dataset", disable=not progress, leave=True)
    results = {}
    try:
        if pool is None:
            before = threads.get_num_threads()["numba"]
            threads.set_num_threads(1)
            try:
                for k in range(n):
                    results[k] = measure_one(architecture, k, config)[1]
                    bar.update(1)
            finally:
                threads.set_num_threads(before)
        else:
            for future in as_completed([pool.submit(measure_one, architecture, k, config) for k in range(n)]):
                k, result = future.result()
                results[k] = result
                bar.update(1)
    finally:
        bar.close()
    total = G.GradientScaleStats(config["depth"])
    for k in range(n):
        total.merge(results[k][0])
    return total, sum(cpu for _, cpu in results.values())


def summarise(architecture, stats, seconds=None):
    """The table's figures for one architecture."""
    gsc, L = stats.gsc, stats.n_layers
    slope, r_squared = G.log_fit(gsc)
    return {
        "architecture": architecture, "layers": L, "gsc_1": float(gsc[1]), "gsc_L": float(gsc[L]),
        "log10_slope": slope, "growth_per_layer": G.growth_per_layer(gsc), "fit_r2": r_squared,
        "explodes": G.explodes(gsc), "explodes_in_paper": architecture in EXPLODING_IN_PAPER,
        "pre_std_1": float(stats.pre_activation_std[1]), "pre_std_L": float(stats.pre_activation_std[L]),
        "sign_div_1": float(stats.sign_diversity[1]), "sign_div_L": float(stats.sign_diversity[L]),
        "datasets": stats.n_batches, "points": stats.n_points, "seconds": seconds,
    }


def _read_json(path):
    """The JSON file's content, or None when there is no such file."""
    import json
    if not Path(path).exists():
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def plot_figure1(rows, path, title):
    """Three panels like the paper's Figure 1: (A) GSC(l, 0), log scale; (B) pre-activation standard
    deviation, log scale; (C) pre-activation sign diversity; x = compositional depth l."""
    fig = new_figure(15, 4.6, layout="tight")
    axes = fig.subplots(1, 3)
    panels = [("gsc", "(A) gradient scale coefficient GSC(l, 0)", "GSC(l, 0)", True),
              ("pre_activation_std", "(B) pre-activation standard deviation", "standard deviation", True),
              ("sign_diversity", "(C) pre-activation sign diversity", "sign diversity min(P, N) / (P + N)", False)]
    architectures = list(dict.fromkeys(r["architecture"] for r in rows))
    for ax, (key, panel_title, ylabel, log) in zip(axes, panels):
        for architecture in architectures:
            layers = np.array([r["layer"] for r in rows if r["architecture"] == architecture])
            values = np.array([r[key] for r in rows if r["architecture"] == architecture], dtype=float)
            keep = np.isfinite(values) & ((values > 0) if log else True)
            color, style = _STYLES.get(architecture, (None, "-"))
            ax.plot(layers[keep], values[keep], style, color=color, label=architecture, linewidth=1.6)
        if log:
            ax.set_yscale("log")
        else:
            ax.set_ylim(0, 0.52)
        ax.set_xlabel("compositional depth l (layers from the error layer)")
        ax.set_ylabel(ylabel)
        ax.set_title(panel_title, fontsize=10)
        ax.grid(True, which="major", alpha=0.3)
    axes[0].legend(fontsize=8, loc="upper left")
    fig.suptitle(title, fontsize=11)
    fig.savefig(path, dpi=130)
    return Path(path)


# ----------------------------------------------------------------------------------------- CIFAR-10 part
class GradientScaleTraining(Study):
    name = "gsc-train"
    command = "gsc"
    title = "GSC study, CIFAR-10 part"
    description = __doc__
    out_subfolder = "cifar10"
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
               ("best_lr", "Best lr", None),
               ("seconds", "Time (s)", "s"), ("status", "Status", None)]

    def add_arguments(self, parser):
        _common_arguments(parser)
        parser.add_argument("--lr", type=positive_float, nargs="+", default=None,
                            help="learning rates (default: the preset's grid)")
        parser.add_argument("--epochs", type=positive_int, default=None, help="epochs (default: the preset's)")
        parser.add_argument("--batch-size", type=positive_int, default=100, help="batch size (default 100)")
        parser.add_argument("--train-subset", type=positive_int, default=None,
                            help="train on a stratified subset of N images (default: the preset's)")
        parser.add_argument("--full-train", action="store_true", help="use the whole training split")
        parser.add_argument("--gsc-batch", type=positive_int, default=None,
                            help="training images of the fixed batch GSC(L, 0) is measured on")
        parser.add_argument("--depth-batch", type=positive_int, default=None,
                            help="training images of the fixed batch the effective depth is measured on")
        parser.add_argument("--depth-every", type=positive_int, default=None,
                            help="measure effective depth and weight change every N epochs (and at 0 and the last)")
        parser.add_argument("--plateau-on", choices=("train_error", "val_loss"), default=None,
                            help="what ReduceLROnPlateau watches (default: the preset's; the paper's: train_error)")

    def rows(self, args):
        lrs = args.lr or list(self.presets[args.preset].lrs)
        return [(row_name(a, lr), self.row_config(args, a, lr))
                for a in args.arch or list(EXPLODING_IN_PAPER) for lr in lrs]

    def row_flags(self, name, config):
        return ["--arch", config["architecture"], "--lr", study.format_lr(config["lr"])]

    def row_config(self, args, architecture, lr):
        preset = self.presets[args.preset]
        return {
            "study": self.name, "preset": args.preset, "model": architecture, "architecture": architecture,
            "lr": lr, "epochs": args.epochs or preset.epochs, "batch_size": args.batch_size,
            "seed": args.seed, "dataset": "cifar10",
            "train_subset": None if args.full_train else (args.train_subset or preset.train_subset),
            "n_val": 2500, "split_seed": 0, "depth": args.depth, "width": args.width,
            "linear_layers": args.depth + 1, "optimizer": "SGD", "momentum": 0.0, "scheduler": "ReduceLROnPlateau",
            "plateau_metric": args.plateau_on or preset.plateau_on, "factor": 0.333, "patience": 4,
            "error": "softmax + log-probability (CrossEntropyLoss)", "augment": "none",
            "gsc_batch": args.gsc_batch or preset.gsc_batch, "depth_batch": args.depth_batch or preset.depth_batch,
            "depth_every": args.depth_every or preset.depth_every, "epsilons": list(EPSILONS),
            "minigrad_version": minigrad.__version__,
            "threads": args.threads,
        }

    def run_row(self, row):
        from minigrad import optim
        from minigrad.data import normalize, stratified_subset
        c = row.config
        splits = row.splits()
        arch_index = list(ARCHITECTURES).index(c["architecture"])
        model = gsc_mlp(c["architecture"], depth=c["depth"], width=c["width"],
                        in_features=int(np.prod(splits.train_images.shape[1:])), num_classes=splits.num_classes,
                        generator=np.random.default_rng([c["seed"], 3, arch_index]))
        initial_layers = copy.deepcopy(GSCMonitor.layers(model))  # the weights at initialisation
        optimizer = optim.SGD(model.parameters(), lr=c["lr"], momentum=c["momentum"])
        scheduler = optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=c["factor"],
                                                         patience=c["patience"])
        train, val, _ = row.loaders(c["batch_size"], augment=False, flat=True, test=False)

        def fixed_batch(n, seed):
            keep = stratified_subset(splits.train_labels, min(n, len(splits.train_labels)), seed=seed)
            return (normalize(splits.train_images[keep], splits.mean, splits.std).reshape(len(keep), -1),
                    splits.train_labels[keep])
        depth_x, depth_y = fixed_batch(c["depth_batch"], 2)
        monitor = GSCMonitor(row.path, *fixed_batch(c["gsc_batch"], 1), initial_layers=initial_layers,
                             depth_inputs=depth_x, depth_targets=depth_y, depth_every=c["depth_every"],
                             epsilons=c["epsilons"])
        if c["plateau_metric"] == "train_error":  # the paper's rule, through a callback
            callbacks, scheduler = [monitor, TrainingErrorPlateau(scheduler)], None
        else:
            callbacks = [monitor]
        return row.fit(row.trainer(model, optimizer, train, val, scheduler=scheduler, callbacks=callbacks))

    def record(self, folder):
        record = training_record(folder)
        metrics = load_metrics(folder) if (folder / "metrics.csv").exists() else []
        gsc_rows = read_csv(folder / "gsc.csv") if (folder / "gsc.csv").exists() else []
        errors = [1 - m["train_acc"] for m in metrics]
        record.update({
            "architecture": load_config(folder).get("architecture"), "train_error": errors[-1] if errors else None,
            "best_train_error": min(errors) if errors else None,
            "val_error": 1 - metrics[-1]["val_acc"] if metrics else None,
            "gsc_init": gsc_rows[0]["gsc_L"] if gsc_rows else None,
            "gsc_final": gsc_rows[-1]["gsc_L"] if gsc_rows else None})
        depth, change = _read_json(folder / "effective_depth.json"), _read_json(folder / "weight_change.json")
        if depth and change:
            last, eps = depth["epochs"][-1]["effective_depth"], [repr(e) for e in depth["epsilons"]]
            record.update({"depth_final": last[eps[0]], "depth_final_fine": last[eps[-1]],
                           "change_max": max((r for r in change["epochs"][-1]["relative"] if r is not None),
                                             default=None)})
        return record

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
        best = _best_lr(records)
        return ["Best lr per architecture (lowest training error, as the paper chose): "
                + ", ".join(f"{a} {b['lr']:g}" for a, b in best.items()) + ".",
                "GSC(L, 0): the error layer's log-probability against the first hidden layer's output, on a fixed "
                "batch of training images, epoch 0 = at initialisation (minigrad.measure.gsc).",
                "Effective depth (eps): the smallest lambda such that the gradient terms with more than lambda "
                "residual Jacobians (J_l = I_l + R_l, I_l = the layer's Jacobian with its initial weights) add up to "
                "less than eps of the gradient's norm, on a fixed batch (minigrad.measure.effective_depth; the "
                "criterion is ours: the paper's estimator could not be checked offline). max ||dW||/||W0||: the "
                "largest ratio over layers of ||W - W0||_2 to ||W0||_2 at the last epoch."]

    def figures(self, records, folders, out_dir):
        best = _best_lr(records)
        if not best:
            return []
        folders = {a: Path(b["folder"]) for a, b in best.items()}
        return [plot_training(folders, out_dir / "training_gsc.png", "Exploding MLPs on CIFAR-10 (best lr of each)"),
                plot_depth(folders, out_dir / "training_depth.png",
                           "Effective depth and weight change (best lr of each), like the paper's Figure 3 D, E")]


def _by_architecture(folders):
    """Folders in the order of ``ARCHITECTURES``, then by learning rate, largest first."""
    order = {a: i for i, a in enumerate(ARCHITECTURES)}

    def key(folder):
        config = load_config(folder)
        return order.get(config.get("architecture"), 99), -(config.get("lr") or 0)
    return sorted(folders, key=key)


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


def plot_training(folders_by_arch, path, title):
    """(A) training error and (B) GSC(L, 0) against epoch, one curve per architecture (its best lr)."""
    fig = new_figure(11, 4.2, layout="tight")
    ax_err, ax_gsc = fig.subplots(1, 2)
    for architecture, folder in folders_by_arch.items():
        color, style = _STYLES.get(architecture, (None, "-"))
        metrics = load_metrics(folder) if (folder / "metrics.csv").exists() else []
        label = f"{architecture} (lr {load_config(folder)['lr']:g})"
        if metrics:
            ax_err.plot([m["epoch"] for m in metrics], [100 * (1 - m["train_acc"]) for m in metrics], style,
                        color=color, label=label)
        if (folder / "gsc.csv").exists():
            rows = [r for r in read_csv(folder / "gsc.csv") if math.isfinite(r["gsc_L"]) and r["gsc_L"] > 0]
            ax_gsc.plot([r["epoch"] for r in rows], [r["gsc_L"] for r in rows], style, color=color, label=label)
    ax_err.set(xlabel="epoch", ylabel="training classification error (%)", title="(A) training error")
    ax_gsc.set(xlabel="epoch (0 = initialisation)", ylabel="GSC(L, 0) on a fixed training batch", yscale="log",
               title="(B) GSC(L, 0)")
    for ax in (ax_err, ax_gsc):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=11)
    fig.savefig(path, dpi=130)
    return Path(path)


def plot_depth(folders_by_arch, path, title):
    """(D) effective depth against epoch (solid: the first epsilon, dashed: the last); (E) ||W_l - W_l^0||_2 per
    layer at the last measured epoch and (E') the same relative to ||W_l^0||_2, l from the error layer."""
    fig = new_figure(15, 4.4, layout="tight")
    ax_depth, ax_norm, ax_rel = fig.subplots(1, 3)
    for architecture, folder in folders_by_arch.items():
        color, _ = _STYLES.get(architecture, (None, "-"))
        depth, change = _read_json(folder / "effective_depth.json"), _read_json(folder / "weight_change.json")
        if not depth or not change:
            continue
        label = f"{architecture} (lr {load_config(folder)['lr']:g})"
        epochs = [d["epoch"] for d in depth["epochs"]]
        for eps, style in ((depth["epsilons"][0], "-"), (depth["epsilons"][-1], "--")):
            values = [np.nan if d["effective_depth"][repr(eps)] is None else d["effective_depth"][repr(eps)]
                      for d in depth["epochs"]]
            ax_depth.plot(epochs, values, style, color=color, marker=".",
                          label=f"{label}, eps {eps:g}" if len(depth["epsilons"]) > 1 else label)
        last = change["epochs"][-1]
        for ax, key in ((ax_norm, "norm"), (ax_rel, "relative")):
            ax.plot(change["layers"], [np.nan if v is None else v for v in last[key]], "-", color=color,
                    label=f"{label}, epoch {last['epoch']}")
    ax_depth.set(xlabel="epoch (0 = initialisation)", ylabel="effective depth (residual Jacobians)",
                 title="(D) effective depth")
    ax_norm.set(xlabel="layer l (1 = output layer, counted from the error layer)", yscale="log",
                ylabel="||W_l - W_l^0||_2", title="(E) operator norm of the weight change")
    ax_rel.set(xlabel="layer l (1 = output layer)", ylabel="||W_l - W_l^0||_2 / ||W_l^0||_2", yscale="log",
               title="(E') relative to the initial operator norm")
    for ax in (ax_depth, ax_norm, ax_rel):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=11)
    fig.savefig(path, dpi=130)
    return Path(path)


SYNTHETIC = GradientScale()
TRAINING = GradientScaleTraining()


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    return study.main(TRAINING if "--train" in argv else SYNTHETIC, argv)


if __name__ == "__main__":
    sys.exit(main())
