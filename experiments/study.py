"""The machinery every study runs on: a study declares its rows, this module does the rest.

A study (``experiments/vgg_depth.py`` and the others) is a ``Study`` subclass that declares only what is
its own, top to bottom::

    presets          {"quick": Preset(...), "full": ...}: named sets of rows and settings
    add_arguments    its own flags (the shared ones below come for free)
    rows(args)       [(row name, config)]: one run folder per row, config = every setting of the row
    run_row(row)     train or measure one row into ``row.path`` (model, data, optimiser, callbacks)
    record(folder)   a finished row folder -> one table record (a dict); ``columns`` say which keys the
                     table shows, with their headers and number formats (``format_cell``)
    findings(...)    the study's claims measured on its records (lines under the table)
    figures(...)     the study's figures (and any other study-level file)

and ``main(STUDY, argv)`` gives it, once for every study:

- the shared flags: ``--preset``, ``--out`` (default ``results/<study>/``), ``--seed``, ``--threads``,
  ``--data-dir``, ``--download``, ``--resume``, ``--no-progress``, ``--list``, ``--print-commands``,
  ``--only ROW...``, ``--collect DIR...``, ``--tensorboard DIR`` (each training row's TensorBoard events in
  ``DIR/<row>/``, through ``Row.trainer``; not part of the row's config) and ``--launcher none|local|slurm``
  with its options (``experiments.launch``), all validated up front (an argparse error: one line, exit 2);
- the run folders and their re-run rules (DECISIONS 14-15, ``minigrad.runs.prepare_run_dir``): a finished
  or diverged row is reused, an unfinished one continues only with ``--resume``, a changed config stops;
- setup errors (no data, a failed download, a run folder that refuses, an output folder that cannot be
  written) stop the study at once with one line (exit 2); an error inside a row is recorded in its
  summary, the study goes on to the next row and still writes its table, and exits 1 (DECISIONS 16);
- ``results.md`` / ``results.csv`` / ``manifest.json``, row figures redrawn only when older than their
  data, the study's figures, and a final report of where everything went.
"""
import argparse
import contextlib
import csv
import io
import math
import os
import re
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import minigrad
from minigrad.runs import (RunDirError, load_config, load_summary, prepare_run_dir, read_csv, write_csv,
                           write_json_atomic, write_text_atomic)

from . import launch

__all__ = ["Study", "Row", "main", "row_name", "format_lr", "format_cell", "say", "new_figure", "write_csv",
           "read_csv", "SetupError"]


# ----------------------------------------------------------------------------------------- small helpers
def say(*parts):
    """Print a plain line (flushed, so cluster logs and pipes read in order)."""
    print(*parts, flush=True)


def format_lr(lr):
    """1e-3 -> "1e-3", 0.02 -> "2e-2", 3e-4 -> "3e-4" (compact, for folder names)."""
    text = f"{lr:.0e}" if float(f"{lr:.0e}") == lr else f"{lr:.2e}"
    mantissa, exponent = text.split("e")
    return f"{mantissa.rstrip('0').rstrip('.') if '.' in mantissa else mantissa}e{int(exponent)}"


def row_name(model, lr=None, suffix=""):
    """Folder name of a row: ``VGG38_BN_RC-lr1e-2`` (``model`` alone when ``lr`` is None)."""
    name = f"{model}{'' if lr is None else '-lr' + format_lr(lr)}{suffix}"
    if not re.fullmatch(r"[A-Za-z0-9_.+-]+", name):
        raise ValueError(f"row name {name!r} has characters unfit for a folder name")
    return name


def format_cell(value, kind=None):
    """A table cell: ``pct`` (fraction as %), ``int``, ``sci``, ``s`` (seconds), ``g`` / ``f3`` / ``f4``,
    ``yn``; None and non-finite numbers as ``-``."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if kind == "pct":
        return f"{100 * value:.2f}"
    if kind == "int":
        return f"{int(value):,}"
    if kind == "sci":
        return f"{value:.2e}"
    if kind == "s":
        return f"{value:.0f}"
    if kind == "g":
        return f"{value:.4g}"
    if kind in ("f3", "f4"):
        return f"{value:.{kind[1]}f}"
    if kind == "yn":
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def new_figure(width, height, **kwargs):
    """A matplotlib Figure drawn with the Agg backend (no display, no pyplot state shared between figures)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width, height), **kwargs)
    FigureCanvasAgg(fig)
    return fig


class SetupError(RuntimeError):
    """A problem of the whole study, not of one row (the study stops at once)."""


def is_setup_error(error):
    """Errors that concern the whole study: no data, a failed download, a run folder that refuses."""
    from minigrad.data import DatasetNotFoundError, DownloadError
    return isinstance(error, (SetupError, DatasetNotFoundError, DownloadError, RunDirError))


# ----------------------------------------------------------------------------------------- declarations
class Preset:
    """A named set of rows and settings: ``Preset("what it runs", epochs=4, rows=(...), ...)``; the settings
    read as attributes (``preset.epochs``)."""

    def __init__(self, description, **settings):
        self.description = description
        self.__dict__.update(settings)

    def __repr__(self):
        return f"Preset({', '.join(f'{k}={v!r}' for k, v in self.__dict__.items())})"


_SPLITS = {}


class Row:
    """One row being run: its ``name``, ``config``, folder ``path``, and the run's flags, with the steps
    every training row shares (data, loaders, the Trainer and the line that introduces the run).
    ``tensorboard``: this row's TensorBoard folder (``--tensorboard DIR`` -> ``DIR/<row>``), or None."""

    def __init__(self, name, config, path, resume, data_dir=None, download=False, progress=True, tensorboard=None):
        self.name, self.config, self.path = name, config, Path(path)
        self.resume, self.data_dir, self.download, self.progress = resume, data_dir, download, progress
        self.tensorboard = tensorboard

    def say(self, text):
        say(f"[{self.name}] {text}")

    def splits(self):
        """The CIFAR splits of this row's config (``dataset``, ``n_val``, ``split_seed``, ``train_subset``),
        loaded once per process and shared by every row that asks for the same ones."""
        from minigrad.data import load_cifar, prepare_cifar
        c = self.config
        normalization = c.get("normalization", "split")
        key = (c["dataset"], c["train_subset"], c["n_val"], c["split_seed"], normalization, str(self.data_dir))
        if key not in _SPLITS:
            data = load_cifar(c["dataset"], data_dir=self.data_dir, download=self.download)
            _SPLITS[key] = prepare_cifar(data, n_val=c["n_val"], split_seed=c["split_seed"],
                                         train_subset=c["train_subset"], normalization=normalization)
        return _SPLITS[key]

    def loaders(self, batch_size, augment=True, flat=False, val_subset=None, test_subset=None, val_batch=None,
                test=True):
        """(train, val, test) BatchLoaders of ``splits()``: training shuffled (and crop+flip augmented unless
        ``augment=False``), validation and test in order, each normalised by the training split's mean
        and std; stratified ``*_subset`` for quicker evaluation; ``flat`` yields (N, 3072) rows for an MLP."""
        from minigrad.data import BatchLoader, stratified_subset
        s = self.splits()
        norm = dict(mean=s.mean, std=s.std)

        def subset(images, labels, n):
            if n is None or n >= len(labels):
                return images, labels
            keep = stratified_subset(labels, n, seed=0)
            return images[keep], labels[keep]

        loaders = [BatchLoader(s.train_images, s.train_labels, batch_size, shuffle=True, augment=augment, **norm),
                   BatchLoader(*subset(s.val_images, s.val_labels, val_subset), val_batch or batch_size, **norm),
                   BatchLoader(*subset(s.test_images, s.test_labels, test_subset), batch_size, **norm) if test else None]
        return tuple(FlatLoader(l) if flat and l is not None else l for l in loaders)

    def trainer(self, model, optimizer, train_loader, val_loader, *, criterion=None, **kwargs):
        """A ``minigrad.train.Trainer`` for this row (run folder, seed, config, epochs, progress), after the
        line that introduces it: parameters, steps per epoch, epochs, folder. With ``--tensorboard`` its
        callbacks end with a ``minigrad.callbacks.TensorBoard`` writing to ``self.tensorboard``."""
        from minigrad import nn
        from minigrad.train import Trainer
        kwargs.setdefault("epochs", self.config["epochs"])
        kwargs.setdefault("plots", False)  # the study draws each row's figures (Study.draw_row_figures)
        if self.tensorboard is not None:
            from minigrad.callbacks.tensorboard import TensorBoard
            kwargs["callbacks"] = [*kwargs.get("callbacks", ()), TensorBoard(self.tensorboard)]
        self.say(f"{model.num_parameters():,} parameters, {len(train_loader)} steps/epoch, {kwargs['epochs']} "
                 f"epochs -> {self.path}")
        return Trainer(model, criterion or nn.CrossEntropyLoss(), optimizer, train_loader, val_loader,
                       run_dir=self.path, seed=self.config["seed"], config=self.config, progress=self.progress,
                       **kwargs)

    def fit(self, trainer):
        """Train (or continue, on ``--resume``); say where a divergence happened; returns the summary."""
        result = trainer.fit(resume=self.resume)
        if result.status == "diverged":
            where = result.summary["diverged"]
            self.say(f"diverged at epoch {where['epoch']}, {where['phase']} batch {where['batch']} (loss "
                     f"{where['loss']}); recorded in {self.path / 'summary.json'}")
        return result.summary


class FlatLoader:
    """A loader whose images come out flattened for an MLP: (N, 3, 32, 32) -> (N, 3072)."""

    def __init__(self, loader):
        self.loader = loader

    def __len__(self):
        return len(self.loader)

    def epoch(self, rng=None):
        for x, y in self.loader.epoch(rng):
            yield x.reshape(len(x), -1), y


class Study:
    """What a study declares (see the module docstring); every method here has a default."""

    name = None                 # results/<name>/, config["study"]; also the table's manifest name
    command = None              # python -m experiments.<command> (default: name)
    title = None                # the table's title
    description = ""            # the --help text (the study module's docstring)
    presets = {}
    default_preset = "quick"
    columns = []                # [(record key, header, format kind)]
    row_figure_names = ()       # files draw_row_figures writes in a row folder (redrawn when stale)
    row_figure_sources = ("metrics.csv",)  # the row files those figures are drawn from
    out_subfolder = None        # results go to OUT/<subfolder> (the GSC study's CIFAR part: "cifar10")
    args = None                 # the parsed command line, once main() has it (hooks may read their flags)

    # -- the study's own part
    def add_arguments(self, parser):
        pass

    def check_arguments(self, args):
        """Raise ValueError naming the flag for settings that cannot work (the shared flags are checked)."""

    def rows(self, args):
        raise NotImplementedError

    def run_row(self, row):
        raise NotImplementedError

    def record(self, folder):
        """The table record of one row folder (default: the shared training figures)."""
        return training_record(folder)

    def records(self, folders):
        return [self.record(f) for f in folders]

    def sort_folders(self, folders):
        """The order of the table's rows (default: by folder name)."""
        return folders

    def table_columns(self, records):
        """The table's columns for these records (default: ``columns``)."""
        return self.columns

    def format_cell(self, value, kind):
        return format_cell(value, kind)

    def table_title(self, records, preset):
        return f"{self.title} (preset {preset})"

    def findings(self, records, folders):
        return []

    def figures(self, records, folders, out_dir):
        return []

    def draw_row_figures(self, folder):
        return []

    def uses_data(self, args):
        return True

    def running(self, args, rows):
        """A context manager around the command's rows in this process (e.g. a pool of workers they share)."""
        return contextlib.nullcontext()

    def row_flags(self, name, config):
        """The flags that make this command run only row ``name`` (``--print-commands``)."""
        return ["--only", name]

    # -- the machinery's entry points for one row (also what a cluster job calls)
    def run_row_job(self, config, out_dir, *, row, data_dir=None, download=False, resume=False, progress=True,
                    tensorboard=None):
        """Run row ``row`` into ``out_dir/<row>/`` by the re-run rules (or reuse it); returns its summary.
        ``tensorboard``: a folder for TensorBoard events (this row's go to ``tensorboard/<row>/``), or None."""
        name = row
        run = prepare_run_dir(out_dir, name, config, resume=resume)
        if run.done:
            say(f"[{name}] already {run.summary.get('status')}; reusing {run.path}")
            return run.summary
        row = Row(name, config, run.path, run.resume, data_dir=data_dir, download=download, progress=progress,
                  tensorboard=None if tensorboard is None else Path(tensorboard) / name)
        try:
            summary = self.run_row(row)
        except Exception as error:
            if not is_setup_error(error):
                _mark_failed(run.path, error)
            raise
        try:
            self.draw_row_figures(run.path)
        except Exception as error:  # noqa: BLE001 - a figure is never worth losing a finished row over
            import warnings
            warnings.warn(f"{run.path}: could not draw the row's figures ({type(error).__name__}: {error})")
        return summary if summary is not None else load_summary(run.path)


def training_record(folder):
    """The figures every Trainer row has: final metrics, best/test accuracy, parameters, time, status."""
    from minigrad.runs import load_metrics
    config = load_config(folder)
    summary = load_summary(folder) if (folder / "summary.json").exists() else {}
    metrics = load_metrics(folder) if (folder / "metrics.csv").exists() else []
    last = metrics[-1] if metrics else {}
    status = summary.get("status", "missing summary")
    if status == "diverged" and summary.get("diverged"):
        where = summary["diverged"]
        status = f"diverged (epoch {where['epoch']}, {where['phase']} batch {where['batch']})"
    return {"row": folder.name, "folder": str(folder), "model": config.get("model"), "lr": config.get("lr"),
            "preset": config.get("preset"), "dataset": config.get("dataset"),
            "params": summary.get("num_parameters"), "epochs": len(metrics),
            "train_loss": last.get("train_loss"), "train_acc": last.get("train_acc"),
            "val_loss": last.get("val_loss"), "val_acc": last.get("val_acc"),
            "best_val_acc": summary.get("best_val_acc"), "test_acc": summary.get("test_acc"),
            "seconds": summary.get("seconds"), "status": status}


def _mark_failed(folder, error):
    """summary.json says "failed" with the error (the Trainer writes its own; a measurement row may not)."""
    path = Path(folder) / "summary.json"
    try:
        summary = load_summary(folder) if path.exists() else {}
    except (OSError, ValueError):
        summary = {}
    if summary.get("status") != "failed":
        write_json_atomic(path, {**summary, "status": "failed", "error": f"{type(error).__name__}: {error}"})


# ----------------------------------------------------------------------------------------- the command line
def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return value


def _seed(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return value


positive_int = _positive_int


def positive_float(text):
    """argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


class StudyParser(argparse.ArgumentParser):
    """argparse, with a user error as two short lines (no wall of usage): what is wrong, and where to look."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n(python {' '.join(self.prog.split()[1:])} --help lists "
                     "every flag)\n")


def build_parser(study):
    parser = StudyParser(prog=f"python -m experiments.{study.command or study.name}",
                                     description=study.description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(study.presets), default=study.default_preset,
                        help=f"which set of rows and settings to run (default {study.default_preset})")
    parser.add_argument("--out", type=Path, default=None, help=f"results folder (default results/{study.name}/)")
    parser.add_argument("--seed", type=_seed, default=0, help="training seed (model init, shuffling, augmentation)")
    parser.add_argument("--threads", type=_positive_int, default=None,
                        help="threads for Numba and the BLAS together (default: all cores)")
    parser.add_argument("--data-dir", type=Path, default=None, help="folder holding the dataset (searched first)")
    parser.add_argument("--download", action="store_true",
                        help="download the dataset if it is not found locally (never otherwise)")
    parser.add_argument("--resume", action="store_true", help="continue unfinished rows from their checkpoints")
    parser.add_argument("--no-progress", action="store_true", help="no tqdm bars (plain lines only)")
    parser.add_argument("--tensorboard", type=Path, metavar="DIR", default=None,
                        help="also write TensorBoard events of each training row to DIR/<row>/ (needs tensorboardX: "
                             "pip install -e '.[tensorboard]'); not part of a row's settings")
    parser.add_argument("--list", action="store_true", help="list the rows this command would run, and exit")
    parser.add_argument("--print-commands", action="store_true",
                        help="print one command per row (to run rows anywhere by hand), and exit")
    parser.add_argument("--only", nargs="+", metavar="ROW", default=None,
                        help="run only these rows of the command (names as --list prints them)")
    parser.add_argument("--collect", nargs="+", type=Path, metavar="DIR",
                        help="build the table and figures from the row folders under DIR (row or study "
                             "folders), and say which rows are missing, running, pending or failed")
    study.add_arguments(parser)
    launch.add_launcher_args(parser)
    return parser


def _check_out(parser, out):
    """--out must be a folder we can write (created only when a row starts): one line naming it otherwise."""
    if out.exists() and not out.is_dir():
        parser.error(f"--out {out}: is an existing file, not a folder")
    existing = out
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        parser.error(f"--out {out}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        parser.error(f"--out {out}: cannot write there (permission denied on {existing})")


def _make_out(out):
    """Create --out and check a file can be written in it (a read-only disk, a full one): SetupError if not."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise SetupError(f"--out {out}: cannot write there ({error.strerror or error})") from None


def parse_args(study, argv=None):
    """Parse and validate the command line (an argparse error, exit 2, for anything wrong)."""
    parser = build_parser(study)
    args = parser.parse_args(argv)
    if args.out is None:
        args.out = Path("results") / study.name
    if study.out_subfolder:
        args.out = Path(args.out) / study.out_subfolder
    if args.tensorboard is not None:
        from minigrad.callbacks.tensorboard import require_tensorboardx
        try:
            require_tensorboardx()
        except ImportError as error:
            parser.error(f"--tensorboard: {error}")
    try:
        study.check_arguments(args)
        launch.LaunchOptions.from_args(args) if args.launcher != "none" else None
        rows = study.rows(args)
    except (ValueError, launch.LauncherError) as error:
        parser.error(str(error))
    names = [name for name, _ in rows]
    if args.only:
        unknown = [n for n in args.only if n not in names]
        if unknown:
            parser.error(f"--only: no row named {', '.join(unknown)}; this command's rows are {', '.join(names)}")
        rows = [(n, c) for n, c in rows if n in args.only]
    if len(set(names)) != len(names):
        parser.error(f"two rows share a name: {names}")
    return parser, args, rows


def main(study, argv=None):
    """Run a study's command line; returns the exit code (0 ok, 1 a row failed, 2 bad input or setup)."""
    _plain_warnings()
    argv = sys.argv[1:] if argv is None else list(argv)
    parser, args, rows = parse_args(study, argv)
    study.args = args
    if args.list:
        say(f"preset {args.preset}: {study.presets[args.preset].description}")
        for name, _ in rows:
            say(f"  {name}")
        return 0
    if args.print_commands:
        for name, config in rows:
            flags = study.row_flags(name, config)
            base = [a for a in argv if a not in ("--print-commands", "--resume")]
            for option in ["--only"] + [f for f in flags if f.startswith("--")]:
                base = _drop_option(base, option)
            say(" ".join(shlex.quote(str(p)) for p in [sys.executable, "-m", parser.prog.split()[-1], *base,
                                                        *flags, "--resume"]))
        return 0
    if args.collect:
        try:
            report(study, collect(study, args.collect, args.out), args.out)
        except (ValueError, OSError) as error:
            return _fail(error)
        return 0
    _check_out(parser, Path(args.out))
    try:
        if args.launcher != "none":
            result = launch.launch_rows(job_function(study), rows, args, study=study.name)
            if result.code == 2 or not result.waited:
                return result.code
            failed = result.code
        else:
            failed = run_here(study, rows, args)
        names = [name for name, _ in rows]
        report(study, collect(study, [args.out], args.out, preset=args.preset, names=names), args.out)
    except SetupError as error:
        return _fail(error)
    except OSError as error:  # the output folder, a disk full: one line naming the path
        return _fail(error)
    return 1 if failed else 0


def run_here(study, rows, args):
    """The rows one after the other in this process; returns how many failed (SetupError stops all)."""
    from minigrad.threads import set_num_threads
    threads = set_num_threads(args.threads)
    say(f"{study.title}, preset {args.preset}: {len(rows)} row(s) -> {args.out} ({threads} threads)")
    if args.tensorboard is not None:
        say(f"TensorBoard events of each training row -> {args.tensorboard}/<row>/ "
            f"(to watch: tensorboard --logdir {args.tensorboard})")
    if any(c.get("dataset") for _, c in rows):
        try:  # find the data before the first row: without it, stop before doing anything (DECISIONS 1)
            launch.check_data([c for _, c in rows], args.data_dir, args.download)
        except Exception as error:  # noqa: BLE001 - the data's own error types, each a setup problem
            if is_setup_error(error):
                raise SetupError(str(error)) from None
            raise
    _make_out(Path(args.out))
    failed = 0
    with study.running(args, rows):
        failed = _run_rows(study, rows, args)
    return failed


def _run_rows(study, rows, args):
    failed = 0
    for name, config in rows:
        try:
            study.run_row_job(config, args.out, row=name, data_dir=args.data_dir, download=args.download,
                              resume=args.resume, progress=not args.no_progress, tensorboard=args.tensorboard)
        except Exception as error:  # noqa: BLE001 - one row failing must not lose the others' table
            if is_setup_error(error):
                raise SetupError(str(error)) from None
            failed += 1
            print(f"error: row {name} failed: {type(error).__name__}: {error}", file=sys.stderr, flush=True)
    return failed


def job_function(study):
    """``"module:NAME.run_row_job"``: how a cluster job finds this study's row function (it is imported,
    never unpickled)."""
    module = sys.modules[type(study).__module__]
    for attr, value in vars(module).items():
        if value is study:
            return f"{_module_name(module)}:{attr}.run_row_job"
    raise SetupError(f"--launcher: the study object must be a module-level name of {module.__name__}")


def _module_name(module):
    if module.__name__ == "__main__":
        spec = getattr(module, "__spec__", None)
        if spec is None:
            raise SetupError("run the study as a module (python -m experiments.<study>) to use --launcher")
        return spec.name
    return module.__name__


# ----------------------------------------------------------------------------------------- collecting
@dataclass
class Collected:
    table: Path
    records: list
    figures: list
    states: list


def find_row_dirs(paths):
    """Row folders under the given paths (a path may be a row folder or a study folder)."""
    rows = []
    for path in map(Path, paths):
        if (path / "config.json").exists():
            rows.append(path)
        elif path.is_dir():
            rows += sorted(p for p in path.iterdir() if (p / "config.json").exists())
        else:
            raise ValueError(f"--collect {path}: no such folder")
    return rows


def collect(study, paths, out_dir, preset=None, names=None):
    """Table, manifest and figures from the row folders of this study under ``paths``."""
    folders = [f for f in find_row_dirs(paths) if load_config(f).get("study") == study.name]
    if names is not None:
        folders = [f for f in folders if f.name in names]
    if preset is not None:
        folders = [f for f in folders if load_config(f).get("preset") == preset]
    if names is not None:  # the command's own rows, in its order
        order = {name: i for i, name in enumerate(names)}
        folders = sorted(folders, key=lambda f: order[f.name])
    else:
        folders = study.sort_folders(folders)
    presets = sorted({str(load_config(f).get("preset")) for f in folders})
    if len(presets) > 1:
        raise ValueError(f"the folders mix presets {presets}; collect one preset at a time")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    records = study.records(folders)
    expected = list(names) if names is not None else _preset_rows(study, presets[0] if presets else preset)
    states = _row_states(paths, folders, expected)
    for record in records:  # a dead job's row says "running" in its summary: the job's state knows better
        state = states.get(record["row"])
        if state is not None and state.status in ("running", "pending", "failed") and \
                not str(record.get("status", "")).startswith(("finished", "diverged")):
            record["status"] = state.status
    statuses = {r["row"]: r.get("status") for r in records}
    preset_name = presets[0] if presets else (preset or "?")
    table = write_table(out_dir, records, study.table_columns(records), study.table_title(records, preset_name),
                        study.findings(records, folders), study.format_cell)
    write_json_atomic(out_dir / "manifest.json", {
        "study": study.name, "preset": preset_name, "minigrad_version": minigrad.__version__,
        "written": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "rows": [{"row": f.name, "folder": str(f), "status": statuses.get(f.name) or _folder_status(f)}
                 for f in folders]})
    figures = []
    for folder in folders:
        if _row_figures_stale(study, folder):
            study.draw_row_figures(folder)
    figures += [Path(f) for f in study.figures(records, folders, out_dir)]
    return Collected(table, records, figures, list(states.values()))


def _folder_status(folder):
    try:
        return load_summary(folder).get("status", "missing summary")
    except (OSError, ValueError):
        return "missing summary"


def _preset_rows(study, preset):
    """The row names a preset runs with default flags (to tell which rows are missing)."""
    if preset not in study.presets:
        return []
    try:
        args = build_parser(study).parse_args(["--preset", preset])
        return [name for name, _ in study.rows(args)]
    except (SystemExit, ValueError):
        return []


def _row_states(paths, folders, expected):
    """launch.RowState of each expected row and of each row with a folder or a job record under ``paths``."""
    states = {}
    for path in map(Path, paths):
        if (path / "config.json").exists():  # a row folder: its study folder knows its job
            states.update({s.row: s for s in launch.row_states(path.parent) if s.row == path.name})
        elif path.is_dir():
            states.update({s.row: s for s in launch.row_states(path, expected)})
    for name in expected:
        states.setdefault(name, launch.RowState(name, "missing", None, detail="no run folder found"))
    keep = {f.name for f in folders} | set(expected)
    return {name: s for name, s in states.items() if name in keep or s.job_id}


def _row_figures_stale(study, folder):
    """True if a row figure is missing or older than the newest of the files it is drawn from."""
    if not study.row_figure_names:
        return False
    sources = [folder / s for s in study.row_figure_sources if (folder / s).exists()]
    if not sources:
        return False
    newest = max(s.stat().st_mtime for s in sources)
    return any(not (folder / f).exists() or (folder / f).stat().st_mtime < newest for f in study.row_figure_names)


def write_table(out_dir, records, columns, title, notes=(), formatter=format_cell):
    """``results.md`` (Markdown: ``formatter(value, kind)`` per cell, notes as a list under the table) and
    ``results.csv`` (every value at full precision)."""
    out_dir = Path(out_dir)
    header = [h for _, h, _ in columns]
    lines = [f"# {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for record in records:
        lines.append("| " + " | ".join(formatter(record.get(k), kind) for k, _, kind in columns) + " |")
    if notes:
        lines += [""] + [f"- {note}" for note in notes]
    write_text_atomic(out_dir / "results.md", "\n".join(lines) + "\n")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([k for k, _, _ in columns])
    for record in records:
        writer.writerow(["" if record.get(k) is None else record.get(k) for k, _, _ in columns])
    write_text_atomic(out_dir / "results.csv", buffer.getvalue())
    return out_dir / "results.md"


def report(study, collected, out_dir):
    """Print the table, the rows' states (cluster jobs) and where every file went."""
    say("")
    say(Path(collected.table).read_text())
    if collected.states and any(s.job_id or s.status not in ("finished", "diverged") for s in collected.states):
        say("\n".join(launch.describe_states(collected.states)))
    say(f"Results table: {collected.table}")
    say(f"Results CSV:   {Path(collected.table).with_suffix('.csv')}")
    for path in collected.figures:
        say(f"{'Figure:' if path.suffix == '.png' else 'File:':<14} {path}")
    row_files = ", ".join(study.row_figure_names)
    say(f"Everything is in {out_dir}/ (manifest.json, one folder per row"
        f"{': config, metrics, checkpoints, summary, ' + row_files if row_files else ''}).")


# ----------------------------------------------------------------------------------------- plumbing
def _drop_option(argv, option):
    """argv without ``option`` and the values that follow it (up to the next flag)."""
    out, skipping = [], False
    for part in argv:
        if part == option:
            skipping = True
            continue
        if skipping and part.startswith("-"):
            skipping = False
        if not skipping:
            out.append(part)
    return out


def _fail(error):
    print(f"error: {error}", file=sys.stderr, flush=True)
    return 2


def _plain_warnings():
    """Show warnings as one ``warning: ...`` line (a CLI user needs the message, not our source line)."""
    import warnings
    warnings.formatwarning = lambda message, category, *args, **kwargs: f"warning: {message}\n"
