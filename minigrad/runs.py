"""Run folders: one training run (a study's "row") = one folder, and the rules for re-running it.

A row folder ``DIR/<row>/`` holds (DECISIONS 14)::

    config.json       every setting of the run (written once, when the row starts)
    metrics.csv       one line per epoch: epoch, train_loss, train_acc, val_loss, val_acc, lr, seconds
    grad_stats.json   gradient statistics per parameter (first batch of the run; per epoch: mean, last batch)
    summary.json      status (running | finished | diverged | failed), best and final figures, test figures
    checkpoints/      latest and best checkpoints (see ``minigrad.checkpoint``)

Re-running over an existing folder (DECISIONS 15, ``prepare_run_dir``): a finished (or diverged) row is
kept and reused; an unfinished row continues only with ``resume=True``; a row whose saved config differs
from the given one stops with an error naming the settings that differ. Nothing is overwritten silently.

Every file here is written atomically (``atomic_open``): to a temporary name in the same folder, flushed,
fsynced, then ``os.replace``d over the target, so a crash at any moment leaves either the old file or the
new one, never a mix. ``minigrad.checkpoint`` uses the same writer.
"""
import contextlib
import csv
import io
import json
import math
import numbers
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "write_csv", "read_csv",
    "atomic_open", "remove_stale_temp_files", "write_text_atomic", "write_json_atomic", "write_metrics", "load_metrics",
    "load_summary", "load_grad_stats", "load_config", "compare_configs", "ensure_config", "prepare_run_dir",
    "RunDir", "finite_or_none", "json_safe",
    "RunDirError", "ConfigMismatchError", "UnfinishedRunError", "METRICS_FIELDS", "STATUSES",
    "DONE_STATUSES", "VOLATILE_CONFIG_KEYS",
]

METRICS_FIELDS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds")
STATUSES = ("running", "finished", "diverged", "failed")
# A diverged row is a result (DECISIONS 16, 21), so re-running reuses it like a finished one.
DONE_STATUSES = ("finished", "diverged")
# Settings that may change between a run and its re-run without changing its results: where things are
# read from or written to, how many threads compute them, and the re-run flags themselves.
VOLATILE_CONFIG_KEYS = frozenset({"threads", "data_dir", "out", "out_dir", "run_dir", "resume", "download",
                                  "progress", "verbose", "keep_checkpoints"})


_UMASK = os.umask(0)  # read the process umask once (the only way is to set it) and put it back
os.umask(_UMASK)


class RunDirError(RuntimeError):
    """A run folder cannot be used as asked (the message says why and what to do)."""


class ConfigMismatchError(RunDirError, ValueError):
    """The saved config.json of a row differs from the config given now."""


class UnfinishedRunError(RunDirError):
    """A row was started before and did not finish, and ``resume`` was not asked for."""


# --------------------------------------------------------------------------------------- atomic writes
@contextlib.contextmanager
def atomic_open(path, mode="w"):
    """Open a temporary file next to ``path``; on a clean exit make it ``path`` atomically.

    The temporary file (``.<name>.<random>.tmp`` in the same folder, so ``os.replace`` never crosses a
    file system) is flushed and fsynced before the replace, and the folder is fsynced after it, so the
    new content survives a power cut too. If the block raises, the temporary file is removed and
    ``path`` keeps its old content. ``mode`` is ``"w"`` (text, UTF-8, ``\\n`` line ends) or ``"wb"``.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open: mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp_name, 0o666 & ~_UMASK)  # mkstemp makes it private (0600); results are ordinary files
        with os.fdopen(fd, mode, **({"encoding": "utf-8", "newline": "\n"} if mode == "w" else {})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder):
    """Make a rename in ``folder`` durable (not possible on every OS: then skip)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_stale_temp_files(folder):
    """Delete the temporary files ``atomic_open`` left in ``folder`` when a process died mid-write.

    Only for a folder no other process is writing to (a run being resumed); returns the names removed.
    """
    removed = []
    for path in Path(folder).glob(".*.tmp"):
        path.unlink(missing_ok=True)
        removed.append(path.name)
    return removed


def write_text_atomic(path, text):
    """Write ``text`` to ``path`` atomically (see ``atomic_open``)."""
    with atomic_open(path, "w") as f:
        f.write(text)


def write_json_atomic(path, obj, indent=2):
    """Write ``obj`` as JSON to ``path`` atomically. NaN/Inf are refused: write None for them."""
    # dumps first: an object JSON cannot encode fails before anything is written
    write_text_atomic(path, json.dumps(obj, indent=indent, allow_nan=False) + "\n")


# --------------------------------------------------------------------------------------- metrics.csv
def _format_number(value):
    # repr is the shortest text that parses back to the same float: metrics.csv round-trips exactly
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"metrics values must be numbers, got {value!r}")
    if isinstance(value, numbers.Integral):
        return str(int(value))
    return repr(float(value))


def write_metrics(path, rows):
    """Rewrite metrics.csv atomically from ``rows`` (dicts with ``METRICS_FIELDS`` keys, one per epoch).

    Keys beyond ``METRICS_FIELDS`` (values a Trainer callback added) follow as more columns, in the order
    they first appear; a row without one, or with None, leaves its cell empty.
    """
    extra = list(dict.fromkeys(key for row in rows for key in row if key not in METRICS_FIELDS))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(METRICS_FIELDS + tuple(extra))
    for row in rows:
        missing = [key for key in METRICS_FIELDS if key not in row]
        if missing:
            raise KeyError(f"metrics row for epoch {row.get('epoch')} lacks {missing}")
        writer.writerow([str(int(row["epoch"]))] + [_format_number(row[key]) for key in METRICS_FIELDS[1:]]
                        + ["" if row.get(key) is None else _format_number(row[key]) for key in extra])
    write_text_atomic(path, buffer.getvalue())


def _metrics_path(run_dir_or_file):
    path = Path(run_dir_or_file)
    return path / "metrics.csv" if path.is_dir() else path


def load_metrics(run_dir_or_file):
    """metrics.csv as a list of dicts: ``epoch`` an int, every other column a float (an empty cell of a
    callback's column: None)."""
    path = _metrics_path(run_dir_or_file)
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or "epoch" not in reader.fieldnames:
            raise ValueError(f"{path}: not a metrics file (no 'epoch' column in the header)")
        rows = []
        for line_number, raw in enumerate(reader, start=2):
            try:
                rows.append({key: int(value) if key == "epoch" else None if value == "" and key not in METRICS_FIELDS
                             else float(value) for key, value in raw.items()})
            except (TypeError, ValueError) as error:
                raise ValueError(f"{path}, line {line_number}: cannot read {raw}: {error}") from None
    return rows


# --------------------------------------------------------------------------------------- other CSV tables
def write_csv(path, fields, rows):
    """Write ``rows`` (dicts) as CSV with the columns ``fields``, atomically; floats as ``repr`` (they read back exactly), None as ''."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(fields)
    for row in rows:
        writer.writerow(["" if row.get(k) is None else repr(row[k]) if isinstance(row[k], float) else row[k]
                         for k in fields])
    write_text_atomic(path, buffer.getvalue())
    return Path(path)


def read_csv(path):
    """Rows of a CSV written by ``write_csv``: numbers back as int/float ('inf'/'nan' included), '' as None."""
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


# --------------------------------------------------------------------------------------- JSON files
def _read_json(path, what):
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: the {what} is not valid JSON ({error})") from None


def load_summary(run_dir):
    """summary.json of a run folder as a dict (FileNotFoundError naming the file if there is none)."""
    return _read_json(Path(run_dir) / "summary.json", "run summary")


def load_grad_stats(run_dir_or_file):
    """grad_stats.json of a run folder (or the file itself) as a dict."""
    path = Path(run_dir_or_file)
    return _read_json(path / "grad_stats.json" if path.is_dir() else path, "gradient statistics")


def load_config(run_dir):
    """config.json of a run folder as a dict."""
    return _read_json(Path(run_dir) / "config.json", "run config")


# --------------------------------------------------------------------------------------- configs
def _normalise(config):
    """The config as JSON would give it back (tuples -> lists, keys -> str), so saved == given compares well."""
    try:
        return json.loads(json.dumps(config, allow_nan=False))
    except (TypeError, ValueError) as error:
        raise TypeError(f"the run config must be JSON-serialisable (plain numbers, strings, lists, dicts): {error}") from None


def _flatten(config, prefix=""):
    flat = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def compare_configs(saved, given, ignore=VOLATILE_CONFIG_KEYS):
    """Differing settings as ``[(dotted_key, saved_value, given_value)]`` (missing values are ``"<unset>"``).

    Nested dicts compare key by key (``optimizer.lr``). Top-level keys in ``ignore`` are skipped (by default
    ``VOLATILE_CONFIG_KEYS``: paths, thread count, re-run flags). ``1`` and ``1.0`` are equal, as in JSON.
    """
    saved = {k: v for k, v in _flatten(_normalise(saved)).items() if k.split(".")[0] not in ignore}
    given = {k: v for k, v in _flatten(_normalise(given)).items() if k.split(".")[0] not in ignore}
    differences = []
    for key in list(saved) + [k for k in given if k not in saved]:
        old, new = saved.get(key, "<unset>"), given.get(key, "<unset>")
        # JSON has 1 == 1.0 (fine) but also True == 1 (not fine: a flag is not a count)
        if old != new or (type(old) is bool) != (type(new) is bool):
            differences.append((key, old, new))
    return differences


def _check_config(folder, config, ignore):
    saved = load_config(folder)
    differences = compare_configs(saved, config, ignore)
    if differences:
        listed = "; ".join(f"{key}: saved {old!r}, given {new!r}" for key, old, new in differences)
        raise ConfigMismatchError(
            f"{folder}: this row was run with other settings ({listed}). Results are never overwritten: "
            "use the saved settings, or choose another --out."
        )


def ensure_config(folder, config, ignore=VOLATILE_CONFIG_KEYS):
    """Write config.json if the folder has none, else check it equals ``config`` (ConfigMismatchError)."""
    folder = Path(folder)
    if (folder / "config.json").exists():
        _check_config(folder, config, ignore)
    else:
        write_json_atomic(folder / "config.json", _normalise(config))


# --------------------------------------------------------------------------------------- run folders
@dataclass
class RunDir:
    """A prepared row folder.

    ``path`` the folder; ``state`` what ``prepare_run_dir`` found: ``"new"`` (start training),
    ``"resume"`` (continue from the latest checkpoint) or ``"done"`` (finished or diverged: reuse
    ``summary``, do not train); ``summary`` the saved summary.json (None for a new row).
    """

    path: Path
    state: str
    summary: dict = None

    @property
    def done(self):
        return self.state == "done"

    @property
    def resume(self):
        return self.state == "resume"

    @property
    def config_path(self):
        return self.path / "config.json"

    @property
    def metrics_path(self):
        return self.path / "metrics.csv"

    @property
    def summary_path(self):
        return self.path / "summary.json"

    @property
    def grad_stats_path(self):
        return self.path / "grad_stats.json"

    @property
    def checkpoint_dir(self):
        return self.path / "checkpoints"


def _has_results(folder):
    """True if the folder holds anything a run writes besides config.json (temporary files excepted)."""
    return any(not entry.name.startswith(".") and entry.name != "config.json" for entry in folder.iterdir())


def prepare_run_dir(out_dir, row_name, config, resume=False, ignore=VOLATILE_CONFIG_KEYS):
    """Create or re-open the row folder ``out_dir/row_name`` following DECISIONS 15; returns a ``RunDir``.

    - No folder (or an empty one): create it, write config.json; state ``"new"``. A folder holding only
      its (matching) config.json is ``"new"`` too: nothing was trained in it.
    - A saved config.json that differs from ``config`` (keys in ``ignore`` aside): ConfigMismatchError
      naming every differing setting, saved and given values. Checked first, also for finished rows, so
      a table never mixes results of other settings.
    - summary.json says finished or diverged: state ``"done"`` (reuse it; train nothing).
    - Otherwise the row is unfinished (running when killed, failed, or never got to write a summary):
      with ``resume=True`` state ``"resume"``; without, UnfinishedRunError saying to pass ``--resume`` or
      choose another ``--out``.
    """
    if not isinstance(row_name, str) or not row_name or Path(row_name).name != row_name or row_name in (".", ".."):
        raise ValueError(f"row_name must be a plain folder name, got {row_name!r}")
    folder = Path(out_dir) / row_name
    config = _normalise(config)
    if not (folder / "config.json").exists():
        if folder.exists() and _has_results(folder):
            raise RunDirError(
                f"{folder} holds files but no config.json, so it is not a run folder this code wrote; "
                "move it away or choose another --out."
            )
        folder.mkdir(parents=True, exist_ok=True)
        write_json_atomic(folder / "config.json", config)
        return RunDir(folder, "new")
    _check_config(folder, config, ignore)
    if not _has_results(folder):
        return RunDir(folder, "new")  # only its config.json: nothing was trained, nothing to overwrite
    summary = load_summary(folder) if (folder / "summary.json").exists() else None
    status = summary.get("status") if summary else None
    if status in DONE_STATUSES:
        return RunDir(folder, "done", summary)
    if not resume:
        found = f"status {status!r}" if status else "no summary"
        raise UnfinishedRunError(
            f"{folder}: this row was started before and did not finish ({found}). Pass --resume "
            "(resume=True) to continue it from its latest checkpoint, or choose another --out."
        )
    return RunDir(folder, "resume", summary)


def finite_or_none(value):
    """``float(value)`` if finite, else None (JSON has no NaN/Inf)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def json_safe(tree):
    """``tree`` (nested dicts and lists) with non-finite floats replaced by None, which JSON can hold."""
    if isinstance(tree, dict):
        return {key: json_safe(value) for key, value in tree.items()}
    if isinstance(tree, list):
        return [json_safe(value) for value in tree]
    return finite_or_none(tree) if isinstance(tree, float) else tree
