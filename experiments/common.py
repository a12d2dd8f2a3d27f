"""What every study's command line shares: common flags, row names, the study table and manifest.

A study is a list of rows; each row is one run folder ``DIR/<row>/`` (``minigrad.runs``). At the end a
study writes ``DIR/results.md`` (Markdown table), ``DIR/results.csv`` and ``DIR/manifest.json`` (preset,
rows, folder and status of each), all atomically, and prints where they went.
"""
import argparse
import csv
import io
import math
import os
import re
import sys
import time
from pathlib import Path

import minigrad
from minigrad.runs import write_json_atomic, write_text_atomic

__all__ = ["add_common_args", "format_lr", "row_name", "apply_threads", "write_study_table",
           "write_manifest", "format_cell", "say"]


def add_common_args(parser, study, presets, default_preset="quick"):
    """Flags shared by the studies: --out, --seed, --preset, --data-dir, --download, --threads, --resume."""
    parser.add_argument("--preset", choices=sorted(presets), default=default_preset,
                        help=f"which set of rows and settings to run (default {default_preset})")
    parser.add_argument("--out", type=Path, default=None, help=f"results folder (default results/{study}/)")
    parser.add_argument("--seed", type=int, default=0, help="training seed (model init, shuffling, augmentation)")
    parser.add_argument("--data-dir", type=Path, default=None, help="folder holding the dataset (searched first)")
    parser.add_argument("--download", action="store_true",
                        help="download the dataset if it is not found locally (never otherwise)")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for Numba and the BLAS together (default: all cores)")
    parser.add_argument("--resume", action="store_true", help="continue unfinished rows from their checkpoints")
    parser.add_argument("--no-progress", action="store_true", help="no tqdm bars (plain epoch lines only)")
    return parser


def format_lr(lr):
    """1e-3 -> "1e-3", 0.02 -> "2e-2", 3e-4 -> "3e-4" (compact, for folder names)."""
    text = f"{lr:.0e}" if float(f"{lr:.0e}") == lr else f"{lr:.2e}"
    mantissa, exponent = text.split("e")
    return f"{mantissa.rstrip('0').rstrip('.') if '.' in mantissa else mantissa}e{int(exponent)}"


def row_name(model, lr, suffix=""):
    """Folder name of a row: ``VGG38_BN_RC-lr1e-2``."""
    name = f"{model}-lr{format_lr(lr)}{suffix}"
    if not re.fullmatch(r"[A-Za-z0-9_.+-]+", name):
        raise ValueError(f"row name {name!r} has characters unfit for a folder name")
    return name


def apply_threads(threads):
    """Set Numba's and the BLAS's thread counts together; returns the count in force."""
    from minigrad.threads import set_num_threads
    return set_num_threads(threads)


def format_cell(value, kind=None):
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
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def write_study_table(out_dir, rows, columns, title, notes=(), formatter=format_cell):
    """Write ``results.md`` and ``results.csv``: ``columns`` = [(key, header, kind)], rows = dicts.

    The Markdown shows ``formatter(value, kind)`` (a study with number formats of its own passes its
    function); the CSV keeps every value at full precision.
    """
    out_dir = Path(out_dir)
    header = [h for _, h, _ in columns]
    lines = [f"# {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        lines.append("| " + " | ".join(formatter(row.get(k), kind) for k, _, kind in columns) + " |")
    if notes:
        lines += [""] + list(notes)
    write_text_atomic(out_dir / "results.md", "\n".join(lines) + "\n")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([k for k, _, _ in columns])
    for row in rows:
        writer.writerow(["" if row.get(k) is None else row.get(k) for k, _, _ in columns])
    write_text_atomic(out_dir / "results.csv", buffer.getvalue())
    return out_dir / "results.md"


def write_manifest(out_dir, study, preset, rows):
    """``manifest.json``: the preset and, per row, its folder and status."""
    write_json_atomic(Path(out_dir) / "manifest.json", {
        "study": study, "preset": preset, "minigrad_version": minigrad.__version__,
        "written": time.strftime("%Y-%m-%dT%H:%M:%S"), "rows": rows,
    })


def plain_warnings():
    """Show warnings as one ``warning: ...`` line (a CLI user needs the message, not our source line)."""
    import warnings
    warnings.formatwarning = lambda message, category, *args, **kwargs: f"warning: {message}\n"


def say(*parts):
    """Print a plain line (flushed, so cluster logs and pipes read in order)."""
    print(*parts, flush=True)


def default_out(study):
    return Path("results") / study


def cpu_count():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def parse(parser, argv):
    args = parser.parse_args(argv)
    if getattr(args, "out", None) is None and hasattr(args, "out"):
        args.out = default_out(parser.prog.split(".")[-1] if parser.prog else "study")
    return args


def fail(message, code=2):
    print(f"error: {message}", file=sys.stderr, flush=True)
    return code


def make_parser(study, description):
    return argparse.ArgumentParser(prog=f"python -m experiments.{study}", description=description,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


# ----------------------------------------------------------------------------------------- shared by the studies
_SPLITS = {}


def load_splits(config, data_dir, download):
    """CIFAR splits of a row's config (``dataset``, ``n_val``, ``split_seed``, ``train_subset``), loaded once
    per process and shared by every row and study that asks for the same ones."""
    from minigrad.data import load_cifar, prepare_cifar
    key = (config["dataset"], config["train_subset"], config["n_val"], config["split_seed"], str(data_dir))
    if key not in _SPLITS:
        data = load_cifar(config["dataset"], data_dir=data_dir, download=download)
        _SPLITS[key] = prepare_cifar(data, n_val=config["n_val"], split_seed=config["split_seed"],
                                     train_subset=config["train_subset"])
    return _SPLITS[key]


class FlatLoader:
    """A BatchLoader whose images come out flattened for an MLP: (N, 3, 32, 32) -> (N, 3072)."""

    def __init__(self, loader):
        self.loader = loader

    def __len__(self):
        return len(self.loader)

    def epoch(self, rng=None):
        for x, y in self.loader.epoch(rng):
            yield x.reshape(len(x), -1), y


def find_row_dirs(paths):
    """Row folders under the given paths (a path may be a row folder or a study folder)."""
    rows = []
    for path in map(Path, paths):
        if (path / "config.json").exists():
            rows.append(path)
        elif path.is_dir():
            rows += sorted(p for p in path.iterdir() if (p / "config.json").exists())
    return rows


def is_setup_error(error):
    """Errors that concern the whole study (no data, a failed download, a run folder refusing) rather than
    one row: the study stops instead of going on to its next row."""
    from minigrad.data import DatasetNotFoundError, DownloadError
    from minigrad.runs import RunDirError
    return isinstance(error, (DatasetNotFoundError, DownloadError, RunDirError))
