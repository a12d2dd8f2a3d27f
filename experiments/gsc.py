"""The gradient scale study of Philipp et al. (2018), "Gradients explode - deep networks are shallow".

    python -m experiments.gsc                      # 7 MLPs x 100 datasets x 10,000 points (full scale)
    python -m experiments.gsc --preset quick       # 7 MLPs x 10 datasets x 1,000 points (seconds)
    python -m experiments.gsc --train              # CIFAR-10 part, quick: 4 exploding MLPs, small lr grid
    python -m experiments.gsc --train --preset full --download   # the report's protocol (hours)

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

CIFAR-10 part (``--train``, the report's section 3.2): the exploding architectures as 51-layer width-100
MLPs (50 hidden layers and ``out.linear``) with softmax + log-probability error (``CrossEntropyLoss``),
plain SGD (batch 100, no augmentation) over a learning-rate grid, the lr x0.333 after 5 epochs without
improvement of the validation loss (``ReduceLROnPlateau(factor=0.333, patience=4)``: PyTorch reduces once
the bad epochs exceed ``patience``; the paper watched the training error, which the shared Trainer does
not hand to the scheduler), and per epoch the training error and GSC(L, 0) on a fixed batch of training
images (``gsc.csv`` in each row folder). Rows go to ``OUT/cifar10/<architecture>-lr<lr>/``, with the
table, figure and manifest in ``OUT/cifar10/``.
"""
import csv
import io
import math
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import minigrad
from minigrad.measure import gsc as G
from minigrad.models.mlp import ARCHITECTURES, EXPLODING_IN_PAPER, canonical_architecture, gsc_mlp
from minigrad.runs import (RunDirError, json_safe, load_config, load_metrics, load_summary, prepare_run_dir,
                           write_json_atomic, write_text_atomic)

from . import common

STUDY = "gsc"


@dataclass(frozen=True)
class Preset:
    datasets: int
    points: int
    description: str


PRESETS = {
    "full": Preset(datasets=100, points=10000,
                   description="the paper's scale: 100 datasets of 10,000 points per architecture"),
    "quick": Preset(datasets=10, points=1000,
                    description="10 datasets of 1,000 points per architecture (10x the report's, 1% of the paper's)"),
}
DEFAULT_PRESET = "full"


@dataclass(frozen=True)
class TrainPreset:
    lrs: tuple
    epochs: int
    train_subset: int
    gsc_batch: int
    description: str
    batch_size: int = 100


TRAIN_PRESETS = {
    "quick": TrainPreset(lrs=(1e-3, 1e-2, 1e-1), epochs=5, train_subset=5000, gsc_batch=500,
                         description="the 4 exploding MLPs, lr 1e-3, 1e-2, 1e-1, 5 epochs on 5,000 training images "
                                     "(about 4 minutes)"),
    "full": TrainPreset(lrs=(1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4), epochs=100, train_subset=None,
                        gsc_batch=2000,
                        description="the 4 exploding MLPs, lr 1e-1 ... 1e-4 (7 values), 100 epochs on the 47,500 "
                                    "training images (the report's 100 epochs; roughly 45 minutes per row here)"),
}

DEPTH, WIDTH = 50, 100


# ----------------------------------------------------------------------------------------- arguments
def build_parser():
    parser = common.make_parser(STUDY, __doc__)
    common.add_common_args(parser, STUDY, PRESETS, default_preset=DEFAULT_PRESET)
    parser.set_defaults(preset=None)  # the default depends on --train (full for GSC, quick for training)
    parser.add_argument("--arch", nargs="+", default=None, metavar="ARCH",
                        help=f"architectures (default: all seven; with --train the paper's exploding four). "
                             f"Choices: {', '.join(ARCHITECTURES)}")
    parser.add_argument("--datasets", type=int, default=None, help="datasets per architecture (default: the preset's)")
    parser.add_argument("--points", type=int, default=None, help="points per dataset (default: the preset's)")
    parser.add_argument("--depth", type=int, default=DEPTH, help=f"hidden layers (default {DEPTH})")
    parser.add_argument("--width", type=int, default=WIDTH, help=f"units per layer (default {WIDTH})")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                        help="compute dtype of the synthetic study (default float32, twice as fast; its rounding "
                             "moves one dataset's batch-ReLU GSC by <1%%, the 100-dataset mean by ~0.05%%, far "
                             "below the 15%% spread between datasets: see minigrad.measure.gsc; sums are float64)")
    parser.add_argument("--train", action="store_true", help="run the CIFAR-10 training part instead")
    parser.add_argument("--lr", type=float, nargs="+", default=None, help="--train: learning rates (default: the preset's grid)")
    parser.add_argument("--epochs", type=int, default=None, help="--train: epochs (default: the preset's)")
    parser.add_argument("--batch-size", type=int, default=None, help="--train: batch size (default 100)")
    parser.add_argument("--train-subset", type=int, default=None,
                        help="--train: train on a stratified subset of N images (default: the preset's)")
    parser.add_argument("--full-train", action="store_true", help="--train: use the whole training split")
    parser.add_argument("--gsc-batch", type=int, default=None,
                        help="--train: training images of the fixed batch GSC(L, 0) is measured on")
    return parser


def _positive(name, value):
    if value is not None and value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value}")
    return value


def _check_args(args, parser):
    try:
        for name in ("datasets", "points", "depth", "width", "epochs", "batch_size", "train_subset",
                     "gsc_batch", "threads"):
            _positive("--" + name.replace("_", "-"), getattr(args, name))
        if args.lr and min(args.lr) <= 0:
            raise ValueError(f"--lr must be positive, got {args.lr}")
        if args.seed < 0:
            raise ValueError(f"--seed must be >= 0, got {args.seed}")
        if args.arch:
            args.arch = [canonical_architecture(a) for a in args.arch]
    except ValueError as error:
        parser.error(str(error))
    if args.download and not args.train:
        parser.error("--download is only for --train (the synthetic study needs no data)")
    if args.preset is None:
        args.preset = "quick" if args.train else DEFAULT_PRESET
    if args.out is None:
        args.out = common.default_out(STUDY)


# ----------------------------------------------------------------------------------------- synthetic part
def row_config(args, architecture):
    """Every setting of one architecture's measurement (its config.json; a re-run must match it)."""
    preset = PRESETS[args.preset]
    return {
        "study": STUDY, "preset": args.preset, "model": architecture, "architecture": architecture,
        "datasets": args.datasets or preset.datasets, "points": args.points or preset.points,
        "depth": args.depth, "width": args.width, "input_length": 10.0, "dtype": args.dtype,
        "error": "dot product <label, output>", "seed": args.seed, "minigrad_version": minigrad.__version__,
        "threads": args.threads,
    }


def measure_one(architecture, k, config):
    """GSC sums of ``architecture`` on dataset ``k`` of the study (a worker process runs this)."""
    arch_index = list(ARCHITECTURES).index(architecture)
    return k, _timed(G.measure_architecture,
        architecture, n_points=config["points"], depth=config["depth"], width=config["width"],
        # seed words are never 0: SeedSequence pads with zeros, so [s, 2, 0] would equal [s, 2]
        seed=[config["seed"], 2, arch_index + 1, k + 1], dataset_seed=[config["seed"], 1, k + 1],
        dtype=np.dtype(config["dtype"]))


def _timed(function, *args, **kwargs):
    """``(function(...), CPU seconds it took in this process)``: on a shared machine the wall time says
    little, the CPU time says what the work costs."""
    started = time.process_time()
    result = function(*args, **kwargs)
    return result, time.process_time() - started


def _single_threaded():
    """Worker start-up: one BLAS and one Numba thread, so N workers use N cores."""
    import numba
    from threadpoolctl import threadpool_limits
    global _LIMITS
    _LIMITS = threadpool_limits(1)  # kept for the worker's lifetime
    numba.set_num_threads(1)


class _SingleThreadHere:
    """One BLAS and one Numba thread in this process for the duration of a ``with`` block."""

    def __enter__(self):
        import numba
        from threadpoolctl import threadpool_limits
        self._limits = threadpool_limits(1)
        self._numba = numba.get_num_threads()
        numba.set_num_threads(1)
        return self

    def __exit__(self, *exc):
        import numba
        self._limits.restore_original_limits()
        numba.set_num_threads(self._numba)
        return False


def _measure_all(architecture, config, pool, progress):
    """Measure every dataset (in the pool, or here); merged in dataset order, so results do not depend
    on the number of workers."""
    from tqdm.auto import tqdm

    n = config["datasets"]
    bar = tqdm(total=n, desc=f"{architecture:>10}", unit="dataset", disable=not progress, leave=True)
    results = {}
    try:
        if pool is None:
            for k in range(n):
                results[k] = measure_one(architecture, k, config)[1]
                bar.update(1)
        else:
            futures = [pool.submit(measure_one, architecture, k, config) for k in range(n)]
            for future in as_completed(futures):
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
    gsc = stats.gsc
    L = stats.n_layers
    slope, r_squared = G.log_fit(gsc)
    return {
        "architecture": architecture, "layers": L, "gsc_1": float(gsc[1]), "gsc_L": float(gsc[L]),
        "log10_slope": slope, "growth_per_layer": G.growth_per_layer(gsc), "fit_r2": r_squared,
        "explodes": G.explodes(gsc), "explodes_in_paper": architecture in EXPLODING_IN_PAPER,
        "pre_std_1": float(stats.pre_activation_std[1]), "pre_std_L": float(stats.pre_activation_std[L]),
        "sign_div_1": float(stats.sign_diversity[1]), "sign_div_L": float(stats.sign_diversity[L]),
        "datasets": stats.n_batches, "points": stats.n_points, "seconds": seconds,
    }


def run_architecture(config, out_dir, pool, resume, progress):
    """Measure one architecture into ``out_dir/<architecture>/`` (or reuse it); returns its stats."""
    architecture = config["architecture"]
    run = prepare_run_dir(out_dir, architecture, config, resume=resume)
    if run.done:
        common.say(f"[{architecture}] already {run.summary.get('status')}; reusing {run.path}")
        return G.GradientScaleStats.from_dict(_read_json(run.path / "gsc.json"))
    write_json_atomic(run.summary_path, {"status": "running"})
    started = time.perf_counter()
    try:
        stats, cpu_seconds = _measure_all(architecture, config, pool, progress)
    except BaseException as error:
        write_json_atomic(run.summary_path, {"status": "failed", "error": f"{type(error).__name__}: {error}"})
        raise
    seconds = time.perf_counter() - started
    write_json_atomic(run.path / "gsc.json", stats.to_dict())
    summary = {"status": "finished", **json_safe(summarise(architecture, stats, seconds)),
               "cpu_seconds": cpu_seconds}
    write_json_atomic(run.summary_path, summary)
    verdict = "explodes" if summary["explodes"] else "does not explode"
    common.say(f"[{architecture}] {stats.n_batches} datasets x {config['points']:,} points: "
               f"GSC({stats.n_layers}, 0) = {summary['gsc_L']:.4g}, x{summary['growth_per_layer']:.4f} per layer "
               f"({verdict}), {seconds:.1f} s ({cpu_seconds:.1f} CPU s)")
    return stats


def _read_json(path):
    import json
    with open(path, encoding="utf-8") as f:
        return json.load(f)


TABLE_COLUMNS = [
    ("architecture", "Architecture", None), ("gsc_1", "GSC(1, 0)", "g"), ("gsc_L", "GSC(L, 0)", "g"),
    ("log10_slope", "log10 GSC / layer", "f4"), ("growth_per_layer", "Growth / layer", "f4"),
    ("fit_r2", "Fit R^2", "f3"),
    ("pre_std_L", "Pre-act std (l=L)", "f3"), ("pre_std_1", "Pre-act std (l=1)", "f3"),
    ("sign_div_1", "Sign div. (l=1)", "f3"), ("explodes", "Explodes (here)", "yn"),
    ("explodes_in_paper", "Explodes (paper)", "yn"), ("seconds", "Time (s)", "s"),
    ("cpu_seconds", "CPU (s)", "s"),
]


def _cell(value, kind):
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if kind == "yn":
        return "yes" if value else "no"
    if kind == "g":
        return f"{value:.4g}"
    if kind == "f4":
        return f"{value:.4f}"
    if kind == "f3":
        return f"{value:.3f}"
    return common.format_cell(value, kind)


def write_table(out_dir, records, title, notes):
    """results.md (Markdown) and results.csv (full precision) of the synthetic study."""
    return common.write_study_table(out_dir, records, TABLE_COLUMNS, title, notes, formatter=_cell)


def write_curves(path, curves):
    """Every curve: one line per (architecture, layer l = 0..L)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["architecture", "layer", "gsc", "pre_activation_std", "sign_diversity"])
    for architecture, stats in curves.items():
        for l, g, s, d in zip(stats.layers, stats.gsc, stats.pre_activation_std, stats.sign_diversity):
            writer.writerow([architecture, int(l), repr(float(g)), repr(float(s)), repr(float(d))])
    write_text_atomic(path, buffer.getvalue())
    return path


def read_curves(path):
    """gsc_curves.csv back as {architecture: {"layer": [...], "gsc": [...], ...}} (floats, NaN kept)."""
    curves = {}
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            curve = curves.setdefault(row["architecture"], {"layer": [], "gsc": [], "pre_activation_std": [],
                                                            "sign_diversity": []})
            curve["layer"].append(int(row["layer"]))
            for key in ("gsc", "pre_activation_std", "sign_diversity"):
                curve[key].append(float(row[key]))
    return curves


_STYLES = {"ReLU": ("tab:blue", "-"), "layer-ReLU": ("tab:orange", "-"), "batch-ReLU": ("tab:green", "-"),
           "tanh": ("tab:red", "--"), "layer-tanh": ("tab:purple", "--"), "batch-tanh": ("tab:brown", "--"),
           "SeLU": ("tab:pink", "-.")}


def plot_figure1(curves, path, title):
    """Three panels like the paper's Figure 1: (A) GSC(l, 0), log scale; (B) pre-activation standard
    deviation, log scale; (C) pre-activation sign diversity; x = compositional depth l."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(15, 4.6))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3)
    panels = [("gsc", "(A) gradient scale coefficient GSC(l, 0)", "GSC(l, 0)", True),
              ("pre_activation_std", "(B) pre-activation standard deviation", "standard deviation", True),
              ("sign_diversity", "(C) pre-activation sign diversity", "sign diversity min(P, N) / (P + N)", False)]
    for ax, (key, panel_title, ylabel, log) in zip(axes, panels):
        for architecture, curve in curves.items():
            layers = np.asarray(curve["layer"])
            values = np.asarray(curve[key], dtype=float)
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
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    return path


def run_synthetic(args):
    """The synthetic study: every architecture, then the table, the curves, the figure, the manifest."""
    architectures = args.arch or list(ARCHITECTURES)
    workers = args.threads or common.cpu_count()
    configs = [row_config(args, a) for a in architectures]
    n_datasets = configs[0]["datasets"]
    workers = max(1, min(workers, n_datasets))
    common.say(f"GSC study, preset {args.preset}: {len(architectures)} architecture(s) x {n_datasets} datasets x "
               f"{configs[0]['points']:,} points, {args.depth} layers of width {args.width}, {args.dtype}, "
               f"{workers} worker(s) -> {args.out}")
    started = time.perf_counter()
    pool, here = None, _SingleThreadHere()
    if workers > 1:
        import multiprocessing
        # spawn, not fork: forking a process whose BLAS and Numba thread pools are running is unsafe
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_single_threaded)
    else:
        here.__enter__()
    curves, records, failed = {}, [], []
    try:
        for config in configs:
            try:
                stats = run_architecture(config, args.out, pool, args.resume, not args.no_progress)
            except RunDirError:
                raise  # concerns the whole --out folder: stop with its message
            except Exception as error:  # one architecture failing does not lose the others (DECISIONS 16)
                failed.append(config["architecture"])
                print(f"error: {config['architecture']} failed: {type(error).__name__}: {error}",
                      file=sys.stderr, flush=True)
                continue
            curves[config["architecture"]] = stats
            summary = load_summary(Path(args.out) / config["architecture"])
            records.append(summarise(config["architecture"], stats, summary.get("seconds")))
            records[-1]["cpu_seconds"] = summary.get("cpu_seconds")
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
        else:
            here.__exit__(None, None, None)
    wall = time.perf_counter() - started
    cpu = sum(r.get("cpu_seconds") or 0.0 for r in records)
    out = Path(args.out)
    title = (f"Gradient scale study (Philipp et al. 2018): {args.depth}-layer width-{args.width} MLPs, "
             f"{n_datasets} datasets x {configs[0]['points']:,} points")
    exploding = [r["architecture"] for r in records if r["explodes"]]
    notes = [
        f"GSC(l, 0) = sqrt(mean ||dE/df_l||^2 / d) * sqrt(mean ||f_l||^2) / sqrt(mean E^2) over all points of "
        f"all datasets (minigrad.measure.gsc); l counts layers from the error layer, L = {args.depth}.",
        "log10 GSC / layer: least-squares slope of log10 GSC(l, 0) over l = 1..L; growth / layer = 10^slope; "
        "R^2 of that log-linear fit. Explodes (exponential growth): growth >= 1.02 per layer (2.6-fold over "
        "49 layers) and R^2 >= 0.9 (minigrad.measure.gsc.explodes).",
        f"Explode here: {', '.join(exploding) or 'none'}. The paper (Figure 1A): {', '.join(EXPLODING_IN_PAPER)}.",
        f"Preset {args.preset}, seed {args.seed}, dtype {args.dtype}, {workers} worker process(es); "
        f"wall time {wall:.1f} s; the measurements took {cpu:.0f} CPU seconds "
        f"(so about {cpu / workers:.0f} s of wall time on {workers} otherwise idle core(s)). "
        f"Reused rows count their original times.",
    ]
    table = write_table(out, records, title, notes)
    curves_csv = write_curves(out / "gsc_curves.csv", curves)
    figure = plot_figure1(read_curves(curves_csv), out / "gsc_figure1.png", title)
    common.write_manifest(out, STUDY, args.preset, [
        {"row": a, "folder": str(out / a), "status": load_summary(out / a).get("status")} for a in architectures])
    common.say("")
    common.say(table.read_text())
    common.say(f"Wall time: {wall:.1f} s ({cpu:.0f} CPU seconds of measurements)")
    common.say(f"Results table: {table}")
    common.say(f"Results CSV:   {out / 'results.csv'}")
    common.say(f"Curves CSV:    {curves_csv}")
    common.say(f"Figure:        {figure}")
    common.say(f"Everything went to {out}/")
    return 1 if failed else 0


# ----------------------------------------------------------------------------------------- CIFAR-10 part
def _gsc_trainer_class():
    from minigrad.train import Trainer

    class GSCTrainer(Trainer):
        """The shared Trainer, plus GSC(l, 0) on a fixed batch before training and after every epoch
        (``gsc.csv``: epoch, gsc_L, gsc_1, and the whole curve as ``gsc_l<l>`` columns)."""

        def __init__(self, *args, gsc_inputs, gsc_targets, **kwargs):
            super().__init__(*args, **kwargs)
            self.gsc_inputs, self.gsc_targets = gsc_inputs, gsc_targets
            self.gsc_rows = []

        def measure(self, epoch):
            layers = self.model.hidden_layers + [self.model.out]
            with np.errstate(all="ignore"):  # a diverging net gives inf/nan: recorded as they are
                stats = G.measure_batch(layers, self.gsc_inputs, self.gsc_targets, error=G.log_probability_error)
            self.model.zero_grad()  # the measurement's backward must not leak into a training step
            self.gsc_rows = [r for r in self.gsc_rows if r["epoch"] < epoch]
            self.gsc_rows.append({"epoch": epoch, "gsc_L": float(stats.gsc[-1]), "gsc_1": float(stats.gsc[1]),
                                  "curve": [float(v) for v in stats.gsc]})
            _write_gsc_csv(self.run_dir / "gsc.csv", self.gsc_rows)

        def _start_fresh(self):
            start = super()._start_fresh()
            self.gsc_rows = []
            self.measure(0)
            return start

        def _resume(self):
            start = super()._resume()
            path = self.run_dir / "gsc.csv"
            self.gsc_rows = [r for r in (_read_gsc_csv(path) if path.exists() else []) if r["epoch"] < start]
            if not self.gsc_rows or self.gsc_rows[-1]["epoch"] != start - 1:
                self.measure(start - 1)  # killed between the checkpoint and gsc.csv: the weights are restored
            return start

        def _run_epoch(self, epoch):
            divergence = super()._run_epoch(epoch)
            if divergence is None:
                self.measure(epoch)
            return divergence

    return GSCTrainer


def _write_gsc_csv(path, rows):
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    n = len(rows[0]["curve"]) if rows else 0
    writer.writerow(["epoch", "gsc_L", "gsc_1"] + [f"gsc_l{l}" for l in range(n)])
    for r in rows:
        writer.writerow([r["epoch"], repr(r["gsc_L"]), repr(r["gsc_1"])] + [repr(v) for v in r["curve"]])
    write_text_atomic(path, buffer.getvalue())


def _read_gsc_csv(path):
    rows = []
    with open(path, newline="", encoding="utf-8") as f:
        for raw in csv.DictReader(f):
            curve = [float(raw[k]) for k in raw if k.startswith("gsc_l")]
            rows.append({"epoch": int(raw["epoch"]), "gsc_L": float(raw["gsc_L"]), "gsc_1": float(raw["gsc_1"]),
                         "curve": curve})
    return rows


def train_config(args, architecture, lr):
    preset = TRAIN_PRESETS[args.preset]
    subset = None if args.full_train else (args.train_subset if args.train_subset is not None else preset.train_subset)
    return {
        "study": STUDY + "-train", "preset": args.preset, "model": architecture, "architecture": architecture,
        "lr": lr, "epochs": args.epochs or preset.epochs, "batch_size": args.batch_size or preset.batch_size,
        "seed": args.seed, "dataset": "cifar10", "train_subset": subset, "n_val": 2500, "split_seed": 0,
        "depth": args.depth, "width": args.width, "linear_layers": args.depth + 1,
        "optimizer": "SGD", "momentum": 0.0, "scheduler": "ReduceLROnPlateau", "plateau_metric": "val_loss",
        "factor": 0.333, "patience": 4, "error": "softmax + log-probability (CrossEntropyLoss)",
        "augment": "none", "gsc_batch": args.gsc_batch or preset.gsc_batch,
        "minigrad_version": minigrad.__version__, "threads": args.threads,
    }


def train_row(config, out_dir, *, data_dir=None, download=False, resume=False, progress=True):
    """Train one (architecture, lr) row into ``out_dir/<row>/`` (or reuse it); returns its summary."""
    from minigrad import nn, optim
    from minigrad.data import BatchLoader, normalize, stratified_subset

    name = common.row_name(config["architecture"], config["lr"])
    run = prepare_run_dir(out_dir, name, config, resume=resume)
    if run.done:
        common.say(f"[{name}] already {run.summary.get('status')}; reusing {run.path}")
        return run.summary
    splits = common.load_splits(config, data_dir, download)
    in_features = int(np.prod(splits.train_images.shape[1:]))
    arch_index = list(ARCHITECTURES).index(config["architecture"])
    model = gsc_mlp(config["architecture"], depth=config["depth"], width=config["width"], in_features=in_features,
                    num_classes=splits.num_classes,
                    generator=np.random.default_rng([config["seed"], 3, arch_index]))
    optimizer = optim.SGD(model.parameters(), lr=config["lr"], momentum=config["momentum"])
    scheduler = optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=config["factor"],
                                                     patience=config["patience"])
    batch = config["batch_size"]
    train_loader = common.FlatLoader(BatchLoader(splits.train_images, splits.train_labels, batch, shuffle=True,
                                     mean=splits.mean, std=splits.std))
    val_loader = common.FlatLoader(BatchLoader(splits.val_images, splits.val_labels, batch, mean=splits.mean, std=splits.std))
    keep = stratified_subset(splits.train_labels, min(config["gsc_batch"], len(splits.train_labels)), seed=1)
    gsc_x = normalize(splits.train_images[keep], splits.mean, splits.std).reshape(len(keep), -1)
    gsc_y = splits.train_labels[keep]
    common.say(f"[{name}] {model.num_parameters():,} parameters, {len(train_loader)} steps/epoch, "
               f"{config['epochs']} epochs -> {run.path}")
    trainer = _gsc_trainer_class()(
        model, nn.CrossEntropyLoss(), optimizer, train_loader, val_loader, scheduler=scheduler,
        epochs=config["epochs"], run_dir=run.path, seed=config["seed"], config=config, progress=progress,
        gsc_inputs=gsc_x, gsc_targets=gsc_y)
    trainer.fit(resume=run.resume)
    return load_summary(run.path)


def train_record(folder):
    """One table row from a training row folder."""
    config, summary = load_config(folder), (load_summary(folder) if (folder / "summary.json").exists() else {})
    metrics = load_metrics(folder) if (folder / "metrics.csv").exists() else []
    gsc_rows = _read_gsc_csv(folder / "gsc.csv") if (folder / "gsc.csv").exists() else []
    errors = [1 - m["train_acc"] for m in metrics]
    return {
        "row": folder.name, "folder": str(folder), "architecture": config.get("architecture"), "lr": config.get("lr"),
        "epochs": len(metrics), "train_error": errors[-1] if errors else None,
        "best_train_error": min(errors) if errors else None,
        "val_error": 1 - metrics[-1]["val_acc"] if metrics else None,
        "gsc_init": gsc_rows[0]["gsc_L"] if gsc_rows else None,
        "gsc_final": gsc_rows[-1]["gsc_L"] if gsc_rows else None,
        "status": summary.get("status", "missing summary"), "seconds": summary.get("seconds"),
    }


TRAIN_COLUMNS = [("architecture", "Architecture", None), ("lr", "LR", "sci"), ("epochs", "Epochs", "int"),
                 ("train_error", "Train error %", "pct"), ("best_train_error", "Best train error %", "pct"),
                 ("val_error", "Val error %", "pct"), ("gsc_init", "GSC(L,0) init", "sci"),
                 ("gsc_final", "GSC(L,0) final", "sci"), ("best_lr", "Best lr", None),
                 ("seconds", "Time (s)", "s"), ("status", "Status", None)]


def plot_training(folders_by_arch, path, title):
    """(A) training error and (B) GSC(L, 0) against epoch, one curve per architecture (its best lr)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.2))
    FigureCanvasAgg(fig)
    ax_err, ax_gsc = fig.subplots(1, 2)
    for architecture, folder in folders_by_arch.items():
        color, style = _STYLES.get(architecture, (None, "-"))
        metrics = load_metrics(folder) if (folder / "metrics.csv").exists() else []
        label = f"{architecture} (lr {load_config(folder)['lr']:g})"
        if metrics:
            ax_err.plot([m["epoch"] for m in metrics], [100 * (1 - m["train_acc"]) for m in metrics], style,
                        color=color, label=label)
        if (folder / "gsc.csv").exists():
            rows = [r for r in _read_gsc_csv(folder / "gsc.csv") if math.isfinite(r["gsc_L"]) and r["gsc_L"] > 0]
            ax_gsc.plot([r["epoch"] for r in rows], [r["gsc_L"] for r in rows], style, color=color, label=label)
    ax_err.set_xlabel("epoch")
    ax_err.set_ylabel("training classification error (%)")
    ax_err.set_title("(A) training error", fontsize=10)
    ax_gsc.set_xlabel("epoch (0 = initialisation)")
    ax_gsc.set_ylabel("GSC(L, 0) on a fixed training batch")
    ax_gsc.set_yscale("log")
    ax_gsc.set_title("(B) GSC(L, 0)", fontsize=10)
    for ax in (ax_err, ax_gsc):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    return Path(path)


def run_training(args):
    preset = TRAIN_PRESETS[args.preset]
    architectures = args.arch or list(EXPLODING_IN_PAPER)
    lrs = args.lr or list(preset.lrs)
    out = Path(args.out) / "cifar10"
    threads = common.apply_threads(args.threads)
    common.say(f"GSC study, CIFAR-10 part, preset {args.preset}: {len(architectures)} architecture(s) x "
               f"{len(lrs)} learning rate(s) -> {out} ({threads} threads)")
    started = time.perf_counter()
    failed = 0
    for architecture in architectures:
        for lr in lrs:
            config = train_config(args, architecture, lr)
            try:
                train_row(config, out, data_dir=args.data_dir, download=args.download, resume=args.resume,
                          progress=not args.no_progress)
            except (FileNotFoundError, ValueError, RuntimeError, OSError) as error:
                from minigrad.data import DatasetNotFoundError
                if isinstance(error, (DatasetNotFoundError, RunDirError)):
                    print(f"error: {error}", file=sys.stderr, flush=True)
                    return 2
                failed += 1
                print(f"error: row {common.row_name(architecture, lr)} failed: {error}", file=sys.stderr, flush=True)
    names = [common.row_name(a, lr) for a in architectures for lr in lrs]
    folders = [out / n for n in names if (out / n / "config.json").exists()]
    records = [train_record(f) for f in folders]
    best = {}
    for record, folder in zip(records, folders):
        error = record["best_train_error"]
        if error is not None and record["status"] in ("finished", "diverged"):
            current = best.get(record["architecture"])
            if current is None or error < current[0]:
                best[record["architecture"]] = (error, record["lr"], folder)
    for record in records:
        record["best_lr"] = "yes" if best.get(record["architecture"], (None, None))[1] == record["lr"] else ""
    wall = time.perf_counter() - started
    notes = ["Best lr per architecture (lowest training error, as the paper chose): "
             + ", ".join(f"{a} {b[1]:g}" for a, b in best.items()) + ".",
             "GSC(L, 0): the error layer's log-probability against the first hidden layer's output, on a fixed "
             "batch of training images, epoch 0 = at initialisation (minigrad.measure.gsc).",
             f"Wall time of this command {wall:.0f} s."]
    table = common.write_study_table(out, records, TRAIN_COLUMNS,
                                     f"GSC study, CIFAR-10 part (preset {args.preset})", notes=notes)
    common.write_manifest(out, STUDY + "-train", args.preset,
                          [{"row": r["row"], "folder": r["folder"], "status": r["status"]} for r in records])
    figure = None
    if best:
        figure = plot_training({a: b[2] for a, b in best.items()}, out / "training_gsc.png",
                               "Exploding MLPs on CIFAR-10 (best lr of each)")
    common.say("")
    common.say(table.read_text())
    common.say(f"Results table: {table}")
    if figure:
        common.say(f"Figure:        {figure}")
    common.say(f"Everything went to {out}/")
    return 1 if failed else 0


# ----------------------------------------------------------------------------------------- main
def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_args(args, parser)
    if args.train:
        return run_training(args)
    try:
        return run_synthetic(args)
    except RunDirError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
