"""Checkpoints that run no code when read, survive a crash at any moment, and restore a run exactly.

A checkpoint ``NAME`` (e.g. ``latest``, ``best``) in a folder is a pair of files::

    NAME-<sha256 prefix>.npz   every ndarray of the state (read back with allow_pickle=False)
    NAME.json                  everything else (epoch, RNG states, scheduler and optimiser scalars, config,
                               best figures) plus the npz file's name, size and sha256

Saving writes the npz under a new name (its content hash) first, then replaces ``NAME.json`` atomically,
then deletes the npz the old JSON named. Whenever the process dies, ``NAME.json`` therefore names an npz
that exists and matches it: the old pair until the JSON is replaced, the new pair after. Loading checks
the size and sha256 and decodes the whole state before returning it; any problem is a ``CheckpointError``
naming the file, and ``restore_state`` puts the previous states back if applying a checkpoint fails, so a
bad checkpoint is never half-used.

The state is any tree of dicts, lists, tuples, ndarrays, NumPy scalars, Python numbers, strings, bools
and None. ``encode_state`` moves arrays and NumPy scalars out (to the npz, under ``a0``, ``a1``, ...) and
tags what JSON cannot say itself (tuples, dicts with non-string keys, non-finite floats), so the state
comes back with the same types and bit-identical values: Python floats and ints (also the 128-bit ints
of ``bit_generator.state``) round-trip through JSON exactly.
"""
import copy
import hashlib
import io
import json
import math
import re
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np

from .random import get_rng_state, set_rng_state
from .runs import atomic_open, remove_stale_temp_files, write_json_atomic

__all__ = [
    "CheckpointError", "save_checkpoint", "load_checkpoint", "checkpoint_exists", "checkpoint_files",
    "remove_orphans",
    "encode_state", "decode_state", "capture_state", "restore_state", "module_generators", "FORMAT",
]

FORMAT = "minigrad-checkpoint"
VERSION = 1
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt, inconsistent or does not fit the model; the message names the file."""


# --------------------------------------------------------------------------------------- state <-> JSON+arrays
def encode_state(tree):
    """Split ``tree`` into a JSON-friendly tree and a dict of arrays (``{"a0": ndarray, ...}``)."""
    arrays = {}

    def encode(value, where):
        if isinstance(value, np.ndarray):
            if value.dtype.hasobject:
                raise TypeError(f"checkpoint state {where}: object arrays cannot be saved without pickle")
            key = f"a{len(arrays)}"
            arrays[key] = value
            return {"__array__": key}
        if isinstance(value, np.generic):  # keep the NumPy type (float32 step counts, int64 ...) exactly
            key = f"a{len(arrays)}"
            arrays[key] = np.asarray(value)
            return {"__scalar__": key}
        if value is None or isinstance(value, (bool, int, str)):
            return value
        if isinstance(value, float):
            return value if math.isfinite(value) else {"__float__": repr(value)}
        if isinstance(value, tuple):
            return {"__tuple__": [encode(v, f"{where}[{i}]") for i, v in enumerate(value)]}
        if isinstance(value, list):
            return [encode(v, f"{where}[{i}]") for i, v in enumerate(value)]
        if isinstance(value, dict):
            if all(isinstance(k, str) and not k.startswith("__") for k in value):
                return {k: encode(v, f"{where}.{k}") for k, v in value.items()}
            # int keys (optimiser state by parameter index) would come back as strings from plain JSON
            return {"__items__": [[encode(k, where), encode(v, f"{where}[{k!r}]")] for k, v in value.items()]}
        raise TypeError(f"checkpoint state {where}: cannot save a {type(value).__name__}")

    return encode(tree, "state"), arrays


def decode_state(tree, arrays):
    """Inverse of ``encode_state``; KeyError if an array it names is missing, ValueError if one is unused."""
    used = set()

    def decode(value):
        if isinstance(value, list):
            return [decode(v) for v in value]
        if not isinstance(value, dict):
            return value
        if "__array__" in value or "__scalar__" in value:
            key = value.get("__array__", value.get("__scalar__"))
            if key not in arrays:
                raise KeyError(f"the JSON names array {key!r}, which the npz file does not hold")
            used.add(key)
            return arrays[key] if "__array__" in value else arrays[key][()]
        if "__float__" in value:
            return float(value["__float__"])
        if "__tuple__" in value:
            return tuple(decode(v) for v in value["__tuple__"])
        if "__items__" in value:
            return {decode(k): decode(v) for k, v in value["__items__"]}
        return {k: decode(v) for k, v in value.items()}

    state = decode(tree)
    unused = sorted(set(arrays) - used)
    if unused:
        raise ValueError(f"the npz file holds arrays the JSON does not name: {unused[:5]}")
    return state


# --------------------------------------------------------------------------------------- save / load
def _check_name(name):
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"checkpoint name must be letters, digits, '_', '-' or '.', got {name!r}")


def checkpoint_files(directory, name):
    """``(json_path, [npz paths with this name's prefix])`` as found on disk."""
    directory = Path(directory)
    return directory / f"{name}.json", sorted(directory.glob(f"{name}-*.npz"))


def checkpoint_exists(directory, name):
    return (Path(directory) / f"{name}.json").exists()


def save_checkpoint(directory, name, state):
    """Save ``state`` (a tree, see module docstring) as checkpoint ``name`` in ``directory``; returns the JSON path."""
    _check_name(name)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tree, arrays = encode_state(state)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    data = buffer.getvalue()
    sha256 = hashlib.sha256(data).hexdigest()
    npz_name = f"{name}-{sha256[:16]}.npz"
    with atomic_open(directory / npz_name, "wb") as f:
        f.write(data)
    # the JSON goes second: until it is replaced it still names the previous (intact) npz
    write_json_atomic(directory / f"{name}.json", {
        "format": FORMAT, "version": VERSION, "name": name,
        "arrays_file": npz_name, "arrays_size": len(data), "arrays_sha256": sha256,
        "state": tree,
    })
    for old in checkpoint_files(directory, name)[1]:
        if old.name != npz_name:
            old.unlink(missing_ok=True)
    return directory / f"{name}.json"


def remove_orphans(directory):
    """Delete what dead saves left in a checkpoint folder: temporary files, and npz files that no
    ``NAME.json`` names (written just before a kill). Only while no other process saves there."""
    directory = Path(directory)
    removed = remove_stale_temp_files(directory)
    for npz in directory.glob("*-*.npz"):
        index = directory / f"{npz.name.rsplit('-', 1)[0]}.json"
        try:
            named = json.loads(index.read_text(encoding="utf-8")).get("arrays_file")
        except (OSError, ValueError, AttributeError):
            named = None  # no index, or an unreadable one: loading would fail anyway, keep its npz
            if index.exists():
                continue
        if named != npz.name:
            npz.unlink(missing_ok=True)
            removed.append(npz.name)
    return removed


def load_checkpoint(directory, name):
    """Read, verify and decode checkpoint ``name`` from ``directory``; returns the state tree.

    Raises CheckpointError naming the file for a missing, unreadable, truncated, corrupt or mismatched
    checkpoint. Arrays are read with ``allow_pickle=False``: a checkpoint can never run code.
    """
    _check_name(name)
    json_path = Path(directory) / f"{name}.json"
    if not json_path.exists():
        raise CheckpointError(f"{json_path}: no such checkpoint")
    try:
        with open(json_path, encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{json_path}: unreadable checkpoint index ({error})") from None
    fields = ("format", "version", "arrays_file", "arrays_size", "arrays_sha256", "state")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or any(k not in meta for k in fields):
        raise CheckpointError(f"{json_path}: not a {FORMAT} file (expected the keys {list(fields)})")
    if meta["version"] != VERSION:
        raise CheckpointError(f"{json_path}: checkpoint format version {meta['version']}, this code reads {VERSION}")
    npz_name = meta["arrays_file"]
    if not isinstance(npz_name, str) or Path(npz_name).name != npz_name or not npz_name.endswith(".npz"):
        raise CheckpointError(f"{json_path}: invalid arrays file name {npz_name!r}")
    npz_path = json_path.parent / npz_name
    try:
        data = npz_path.read_bytes()
    except OSError as error:
        raise CheckpointError(f"{npz_path}: cannot read the arrays of checkpoint {json_path} ({error})") from None
    if len(data) != meta["arrays_size"] or hashlib.sha256(data).hexdigest() != meta["arrays_sha256"]:
        raise CheckpointError(
            f"{npz_path}: size or sha256 differs from what {json_path.name} records "
            f"({len(data)} bytes, expected {meta['arrays_size']}): the file is truncated, corrupt or from another save"
        )
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
        return decode_state(meta["state"], arrays)
    except (ValueError, KeyError, OSError, EOFError, zipfile.BadZipFile, TypeError) as error:
        raise CheckpointError(f"{npz_path} (checkpoint {json_path.name}): cannot decode ({error})") from None


# --------------------------------------------------------------------------------------- training state
def module_generators(model):
    """Every ``np.random.Generator`` held by a module of ``model`` (dropout), by ``"<module>.<attribute>"``."""
    found = OrderedDict()
    for module_name, module in model.named_modules():
        for attribute, value in vars(module).items():
            if isinstance(value, np.random.Generator):
                found[f"{module_name}.{attribute}" if module_name else attribute] = value
    return found


def capture_state(model, optimizer=None, scheduler=None, extra=None):
    """The state tree of a training run: model state_dict, optimiser and scheduler state, RNG states, ``extra``.

    RNG states: the library's global generator (``minigrad.random``) and every generator a module holds.
    """
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "rng": {
            "global": get_rng_state(),
            "modules": {name: g.bit_generator.state for name, g in module_generators(model).items()},
        },
        "extra": extra if extra is not None else {},
    }


def restore_state(state, model, optimizer=None, scheduler=None, source="checkpoint"):
    """Load a ``capture_state`` tree into the objects given; returns its ``extra``.

    All or nothing: if any part fails (missing keys, wrong shapes, another optimiser), every object is
    put back as it was and CheckpointError naming ``source`` is raised.
    """
    generators = module_generators(model)
    saved = {
        "model": model.state_dict(),
        "optimizer": copy.deepcopy(optimizer.state_dict()) if optimizer is not None else None,
        "scheduler": copy.deepcopy(scheduler.state_dict()) if scheduler is not None else None,
        "global": get_rng_state(),
        "modules": {name: g.bit_generator.state for name, g in generators.items()},
    }
    try:
        for part, obj in (("optimizer", optimizer), ("scheduler", scheduler)):
            if obj is not None and state.get(part) is None:
                raise KeyError(f"it holds no {part} state")
        missing = sorted(set(generators) - set(state["rng"]["modules"]))
        if missing:
            raise KeyError(f"it holds no state for the generators {missing}")
        model.load_state_dict(state["model"])
        if optimizer is not None:
            optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"]["global"])
        for name, generator in generators.items():
            generator.bit_generator.state = state["rng"]["modules"][name]
    except Exception as error:
        model.load_state_dict(saved["model"])
        if optimizer is not None:
            optimizer.load_state_dict(saved["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(saved["scheduler"])
        set_rng_state(saved["global"])
        for name, generator in generators.items():
            generator.bit_generator.state = saved["modules"][name]
        raise CheckpointError(f"{source}: cannot be applied to this model/optimiser/scheduler ({error})") from error
    return state.get("extra", {})
