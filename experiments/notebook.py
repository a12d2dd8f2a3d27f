"""What the notebooks in ``notebooks/`` share: run a study's command line small, show what it wrote.

    from experiments import vgg_depth
    from experiments.notebook import run_study, show_results, show_data

    show_data()                                     # which CIFAR-10 the search order finds (or why none)
    out = run_study(vgg_depth, "--epochs", "1", "--train-subset", "300")   # python -m experiments.vgg_depth ...
    show_results(out)                               # results.md as a table, then every figure it wrote

A notebook calls a study only through its command line (``module.main(argv)``) and reads only the files
the command writes (``results.md``, ``results.csv``, the PNGs), exactly as a user of the CLI would: the
studies' internals may change without breaking a notebook. ``run_study`` writes to a fresh temporary
folder unless ``out=`` is given, passes ``--no-progress`` (plain lines read better in a notebook than
tqdm bars) and raises if the command fails, so a notebook executed by the tests stops there.
"""
import os
import shlex
import sys
import tempfile
import warnings
from pathlib import Path

__all__ = ["run_study", "show_results", "show_figures", "show_data", "cli_command", "read_results"]


def cli_command(module, *flags):
    """The shell command that runs ``module`` with ``flags``: ``python -m experiments.vgg_depth --epochs 1``."""
    return " ".join(["python", "-m", module.__name__, *map(shlex.quote, map(str, flags))])


def run_study(module, *flags, out=None):
    """Run ``module.main([*flags, "--no-progress", "--out", out])`` and return the output folder.

    ``module``: a study module of ``experiments`` (it has ``main(argv)``); ``flags``: its command-line
    flags as strings. The command line is printed first, so a reader can run the same thing in a terminal.
    Raises RuntimeError when the command exits with an error (a row that *diverged* is a result, not an
    error: the study still exits 0).
    """
    out = Path(tempfile.mkdtemp(prefix=f"minigrad-{module.__name__.rsplit('.', 1)[-1]}-")) if out is None else Path(out)
    argv = [str(f) for f in flags]
    if "--no-progress" not in argv:
        argv.append("--no-progress")
    argv += ["--out", str(out)]
    print(f"$ {cli_command(module, *argv)}", flush=True)
    code = module.main(argv)
    if code:
        raise RuntimeError(f"{module.__name__} exited with code {code} (see the lines above)")
    return out


def read_results(out):
    """The rows of ``out/results.csv`` as dicts (numbers as floats where they parse)."""
    import csv

    def value(text):
        try:
            return float(text)
        except ValueError:
            return text
    with open(Path(out) / "results.csv", newline="", encoding="utf-8") as f:
        return [{k: value(v) for k, v in row.items()} for row in csv.DictReader(f)]


def show_results(out, figures=None, width=None):
    """Show ``out/results.md`` (the table and the study's findings) and the study's figures.

    ``figures``: the PNG names to show, in this order (names the study did not write are reported and
    skipped); default: every PNG in ``out``, sorted by name.
    """
    from IPython.display import Markdown, display
    out = Path(out)
    table = out / "results.md"
    if table.exists():
        display(Markdown(table.read_text(encoding="utf-8")))
    show_figures(out, figures, width=width)


def show_figures(out, figures=None, width=None):
    """Display the PNGs of ``out`` (or ``figures``, names inside ``out``), each under its name."""
    from IPython.display import Image, Markdown, display
    out = Path(out)
    paths = sorted(out.glob("*.png")) if figures is None else [out / name for name in figures]
    for path in paths:
        if not path.exists():
            print(f"(no {path.name} in {out})")
            continue
        display(Markdown(f"**{path.name}**"))
        display(Image(filename=str(path), width=width))


def show_data(name="cifar10"):
    """Print which copy of ``name`` the search order finds (``--data-dir``, ``$MINIGRAD_DATA``, ``data/``,
    ``../shared/data/``) and how many images it holds; returns the path, or None (with the reason) when
    there is none. Nothing is ever downloaded here."""
    from minigrad.data import find_cifar, load_cifar, search_dirs
    from minigrad.data.cifar import CifarChecksumWarning
    path = find_cifar(name)
    if path is None:
        print(f"No {name} found; searched: " + ", ".join(str(d) for d, _ in search_dirs()))
        print("Put the dataset in one of those folders, or download it once (from a terminal) with: "
              f"python -c \"from minigrad.data import load_cifar; load_cifar('{name}', download=True)\"")
        return None
    with warnings.catch_warnings(record=True) as caught:  # said once here, in one line, then not again
        warnings.simplefilter("always", CifarChecksumWarning)
        data = load_cifar(name)
    warnings.filterwarnings("ignore", category=CifarChecksumWarning)
    fake = data.n_train < 50000
    print(f"{name}: {path}" + (f" ($MINIGRAD_DATA={os.environ['MINIGRAD_DATA']})" if os.environ.get("MINIGRAD_DATA") else ""))
    print(f"  {data.n_train:,} training and {data.n_test:,} test images"
          + ("  <- not the real dataset (a small stand-in, e.g. the tests' fake CIFAR): the figures below show "
             "the machinery, not the findings" if fake else ""))
    if caught:
        print(f"  not the official tarball (its md5 differs): results may differ a little from published ones")
    sys.stdout.flush()
    return path
