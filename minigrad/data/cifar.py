r"""CIFAR-10 and CIFAR-100 in the official "python version" format: find, verify, read, download.

Format (Krizhevsky 2009). Every member is a protocol-2 pickle of a dict (Python-2 ``str`` keys, so
``encoding="bytes"`` gives ``b"data"``; ``"data"`` is accepted too)::

    cifar-10-batches-py/   data_batch_1..5, test_batch   {data: uint8 (N, 3072), labels: list[int]}
                           batches.meta                  {label_names: 10 names}
    cifar-100-python/      train, test                   {data: uint8 (N, 3072), fine_labels: list[int]}
                           meta                          {fine_label_names: 100 names}

A row of ``data`` holds 1024 red, then 1024 green, then 1024 blue values, each plane row-major, so
``data.reshape(N, 3, 32, 32)`` is NCHW with no copy.

Where data is found (first hit wins): ``data_dir``, ``$MINIGRAD_DATA``, ``<repo>/data/``,
``<repo>/../shared/data/``. In each folder: the extracted folder, the official tarball, or any other
``*.tar.gz`` whose members sit under the official folder name. Tarballs are read in place.

Checks. Structural checks always apply: every member present, ``data`` uint8 of shape (N, 3072) with
N > 0, one integer label per row, labels in [0, num_classes), the right number of class names. The
official counts (50,000 / 10,000) are *not* required, so small fakes in the same format load; a
:class:`CifarData` says how many images it holds. The official md5 (torchvision's list) makes a
tarball ``official``; a valid tarball with another md5 gives one :class:`CifarChecksumWarning`.
An extracted folder has no md5 and gives no warning.

Pickles run no code: :class:`SafeUnpickler` resolves only the numpy globals an ndarray needs.
"""
from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile
import tempfile
import urllib.error
import urllib.request
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import numpy as np

try:  # NumPy 2 keeps the real module in numpy._core; numpy.core is a deprecated alias there.
    from numpy._core import multiarray as _multiarray
except ImportError:  # NumPy 1
    from numpy.core import multiarray as _multiarray

__all__ = [
    "CifarData", "load_cifar", "find_cifar", "download_cifar", "search_dirs", "repo_root", "file_md5",
    "SafeUnpickler", "CifarFormatError", "UnsafePickleError", "CifarChecksumWarning",
    "DatasetNotFoundError", "DownloadError", "ChecksumMismatchError", "OFFICIAL",
]

PathLike = Union[str, os.PathLike]


# ----------------------------------------------------------------------------------------------
# Errors and warnings
class CifarFormatError(ValueError):
    """A CIFAR file is structurally wrong: missing member, bad shape/dtype/count/label, truncated."""


class UnsafePickleError(CifarFormatError):
    """A CIFAR pickle asked for a global outside the numpy-array allowlist."""


class CifarChecksumWarning(UserWarning):
    """A structurally valid CIFAR tarball whose md5 is not the official one."""


class DatasetNotFoundError(FileNotFoundError):
    """No CIFAR data in any searched folder and ``download`` was not requested."""


class DownloadError(OSError):
    """A download failed; the partial file has been deleted."""


class ChecksumMismatchError(DownloadError):
    """A downloaded file had the wrong md5; it has been deleted."""


# ----------------------------------------------------------------------------------------------
# What the official releases look like
@dataclass(frozen=True)
class _Spec:
    name: str
    title: str
    folder: str
    tarball: str
    md5: str
    url: str
    train_members: tuple
    test_member: str
    meta_member: str
    label_key: str
    names_key: str
    num_classes: int

    @property
    def members(self):
        return (self.meta_member, *self.train_members, self.test_member)


OFFICIAL = {
    "cifar10": _Spec(
        name="cifar10", title="CIFAR-10", folder="cifar-10-batches-py",
        tarball="cifar-10-python.tar.gz", md5="c58f30108f718f92721af3b95e74349a",
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        train_members=tuple(f"data_batch_{i}" for i in range(1, 6)), test_member="test_batch",
        meta_member="batches.meta", label_key="labels", names_key="label_names", num_classes=10),
    "cifar100": _Spec(
        name="cifar100", title="CIFAR-100", folder="cifar-100-python",
        tarball="cifar-100-python.tar.gz", md5="eb9058c3a382ffc7106e4002c42a8d85",
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        train_members=("train",), test_member="test", meta_member="meta",
        label_key="fine_labels", names_key="fine_label_names", num_classes=100),
}


def _spec(name) -> _Spec:
    if not isinstance(name, str):
        raise TypeError(f"dataset name must be a str ('cifar10' or 'cifar100'), got {type(name).__name__}")
    key = name.lower().replace("-", "").replace("_", "")
    if key not in OFFICIAL:
        raise ValueError(f"unknown dataset {name!r}; expected 'cifar10' or 'cifar100'")
    return OFFICIAL[key]


@dataclass
class CifarData:
    """Decoded CIFAR arrays. Images are uint8 NCHW (N, 3, 32, 32); labels int64 in [0, num_classes)."""

    name: str
    train_images: np.ndarray = field(repr=False)
    train_labels: np.ndarray = field(repr=False)
    test_images: np.ndarray = field(repr=False)
    test_labels: np.ndarray = field(repr=False)
    classes: list = field(repr=False)
    num_classes: int
    source: Path
    official: bool           # True only for a tarball with the official md5
    md5: Optional[str] = None  # of the tarball; None for an extracted folder

    @property
    def n_train(self) -> int:
        return len(self.train_labels)

    @property
    def n_test(self) -> int:
        return len(self.test_labels)


# ----------------------------------------------------------------------------------------------
# Finding the data
def repo_root() -> Path:
    """``<repo>``: the folder holding the ``minigrad`` package (``minigrad.__file__``'s grandparent).

    Found from this file rather than the current directory, so scripts run from anywhere find
    the same ``data/``. (minigrad/data/cifar.py -> parents[2] is the same folder.)
    """
    return Path(__file__).resolve().parents[2]


def search_dirs(data_dir: Optional[PathLike] = None) -> list:
    """Folders searched for data, in order, as ``(path, where_it_came_from)``; duplicates dropped."""
    dirs = []
    if data_dir is not None:
        dirs.append((Path(data_dir).expanduser(), "data_dir / --data-dir"))
    env = os.environ.get("MINIGRAD_DATA")
    if env:
        dirs.append((Path(env).expanduser(), "$MINIGRAD_DATA"))
    root = repo_root()
    dirs.append((root / "data", "<repo>/data"))
    dirs.append((root.parent / "shared" / "data", "<repo>/../shared/data"))
    seen, unique = set(), []
    for path, why in dirs:
        key = os.path.abspath(path)
        if key not in seen:
            seen.add(key)
            unique.append((path, why))
    return unique


def _member_name(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return name.rstrip("/")


def _tar_holds(path: Path, folder: str) -> bool:
    """Cheap test: do the first members of ``path`` sit under ``folder``? Reads a few headers only."""
    try:
        with tarfile.open(path, "r:gz") as tf:
            for _ in range(3):
                member = tf.next()
                if member is None:
                    return False
                name = _member_name(member.name)
                if name in ("", "."):
                    continue
                return name == folder or name.startswith(folder + "/")
    except (tarfile.TarError, OSError, EOFError, zlib.error):
        return False
    return False


def _find_in(folder: Path, spec: _Spec) -> Optional[Path]:
    if folder.is_file():  # data_dir may name the tarball itself
        return folder if folder.name.endswith(".tar.gz") and _tar_holds(folder, spec.folder) else None
    if not folder.is_dir():
        return None
    if folder.name == spec.folder and (folder / spec.meta_member).is_file():
        return folder  # data_dir may name the extracted folder itself
    if (folder / spec.folder).is_dir():
        return folder / spec.folder
    if (folder / spec.tarball).is_file():
        return folder / spec.tarball
    others = sorted(p for p in folder.glob("*.tar.gz")
                    if p.is_file() and p.name not in {s.tarball for s in OFFICIAL.values()})
    for path in others:
        if _tar_holds(path, spec.folder):
            return path
    return None


def find_cifar(name: str, data_dir: Optional[PathLike] = None) -> Optional[Path]:
    """Path of the first CIFAR source found in :func:`search_dirs` order, or None."""
    spec = _spec(name)
    for folder, _ in search_dirs(data_dir):
        hit = _find_in(folder, spec)
        if hit is not None:
            return hit
    return None


def _not_found_message(spec: _Spec, data_dir) -> str:
    lines = [
        f"{spec.title} not found. Expected {spec.tarball} (or the extracted folder {spec.folder}/, "
        f"or any *.tar.gz whose members sit under {spec.folder}/) in one of these folders, "
        "searched in order:"]
    for i, (folder, why) in enumerate(search_dirs(data_dir), 1):
        lines.append(f"  {i}. {folder}  ({why}{'' if folder.exists() else ', does not exist'})")
    if not os.environ.get("MINIGRAD_DATA"):
        lines.append("  ($MINIGRAD_DATA is not set)")
    target = Path(data_dir) if data_dir is not None else repo_root() / "data"
    lines.append(f"Pass --download (CLI) or download=True (API) to fetch {spec.url} into {target}.")
    other = OFFICIAL["cifar100" if spec.name == "cifar10" else "cifar10"]
    found = find_cifar(other.name, data_dir)
    if found is not None:
        lines.append(f"{other.title} was found at {found}; use --dataset {other.name} to train on it.")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Checksums (cached per file state: hashing 170 MB costs ~0.3 s)
_MD5_CACHE: dict = {}


def _stat_key(path: Path) -> tuple:
    st = path.stat()
    return (os.path.abspath(path), st.st_size, st.st_mtime_ns)


def file_md5(path: PathLike) -> str:
    """md5 hex digest of a file, cached in-process per (path, size, mtime)."""
    path = Path(path)
    key = _stat_key(path)
    if key not in _MD5_CACHE:
        h = hashlib.md5(usedforsecurity=False)
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _MD5_CACHE[key] = h.hexdigest()
    return _MD5_CACHE[key]


# ----------------------------------------------------------------------------------------------
# Safe unpickling
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _multiarray._reconstruct,   # written by NumPy 1
    ("numpy._core.multiarray", "_reconstruct"): _multiarray._reconstruct,  # written by NumPy 2
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class SafeUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the four globals a pickled ndarray needs.

    Anything else (``os.system``, ``builtins.eval``, ...) raises :class:`UnsafePickleError` naming
    ``source`` and the refused global, before it could be called.
    """

    def __init__(self, file, source: str = "<pickle>"):
        super().__init__(file, encoding="bytes")
        self.source = source

    def find_class(self, module, name):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"{self.source}: refused to unpickle the global {module}.{name}; CIFAR pickles may "
                "only reference numpy.ndarray, numpy.dtype and numpy's _reconstruct") from None

    def persistent_load(self, pid):
        raise UnsafePickleError(f"{self.source}: refused a persistent id in the pickle")


def _unpickle(file, source: str):
    try:
        obj = SafeUnpickler(file, source).load()
    except UnsafePickleError:
        raise
    except CifarFormatError:
        raise
    except Exception as exc:  # truncated stream, bad opcode, gzip CRC error, ...
        raise CifarFormatError(
            f"{source}: truncated or undecodable pickle ({type(exc).__name__}: {exc})") from exc
    if not isinstance(obj, dict):
        raise CifarFormatError(f"{source}: expected a pickled dict, got {type(obj).__name__}")
    return obj


def _get(d: dict, key: str, source: str):
    for k in (key.encode(), key):
        if k in d:
            return d[k]
    raise CifarFormatError(f"{source}: the dict has no {key!r} entry (keys: {sorted(map(repr, d))})")


# ----------------------------------------------------------------------------------------------
# Validation
def _decode_batch(d: dict, spec: _Spec, source: str):
    data = _get(d, "data", source)
    labels = _get(d, spec.label_key, source)
    if not isinstance(data, np.ndarray):
        raise CifarFormatError(f"{source}: 'data' is a {type(data).__name__}, expected a numpy array")
    if data.dtype != np.uint8:
        raise CifarFormatError(f"{source}: 'data' has dtype {data.dtype}, expected uint8")
    if data.ndim != 2 or data.shape[1] != 3072 or data.shape[0] == 0:
        raise CifarFormatError(f"{source}: 'data' has shape {data.shape}, expected (N, 3072) with N > 0")
    try:
        labels = np.asarray(labels)
    except Exception as exc:
        raise CifarFormatError(f"{source}: {spec.label_key!r} is not a list of integers ({exc})") from exc
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise CifarFormatError(
            f"{source}: {spec.label_key!r} must be a flat list of integers, got dtype {labels.dtype} "
            f"shape {labels.shape}")
    if len(labels) != len(data):
        raise CifarFormatError(
            f"{source}: {len(labels)} labels for {len(data)} images in 'data' (counts must match)")
    bad = np.flatnonzero((labels < 0) | (labels >= spec.num_classes))
    if bad.size:
        raise CifarFormatError(
            f"{source}: label {labels[bad[0]]} at index {bad[0]} is out of range "
            f"[0, {spec.num_classes}) ({bad.size} bad labels)")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def _decode_meta(d: dict, spec: _Spec, source: str) -> list:
    names = _get(d, spec.names_key, source)
    if not isinstance(names, (list, tuple)) or len(names) != spec.num_classes:
        n = len(names) if hasattr(names, "__len__") else "?"
        raise CifarFormatError(
            f"{source}: {spec.names_key!r} must list {spec.num_classes} class names, got {n}")
    out = []
    for name in names:
        if isinstance(name, bytes):
            try:
                name = name.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise CifarFormatError(f"{source}: class name {name!r} is not UTF-8") from exc
        if not isinstance(name, str):
            raise CifarFormatError(f"{source}: class name {name!r} is not a string")
        out.append(name)
    return out


def _assemble(decoded: dict, spec: _Spec) -> dict:
    train = [decoded[m] for m in spec.train_members]
    # np.concatenate also gives owned, writeable, contiguous arrays (unpickled ones may be views of bytes).
    return dict(
        train_images=np.concatenate([b[0] for b in train]),
        train_labels=np.concatenate([b[1] for b in train]),
        test_images=np.array(decoded[spec.test_member][0], order="C", copy=True),
        test_labels=np.array(decoded[spec.test_member][1], copy=True),
        classes=decoded[spec.meta_member],
    )


def _decode_member(member: str, d: dict, spec: _Spec, where: str):
    if member == spec.meta_member:
        return _decode_meta(d, spec, where)
    return _decode_batch(d, spec, where)


def _read_folder(folder: Path, spec: _Spec) -> dict:
    decoded = {}
    for member in spec.members:
        path = folder / member
        if not path.is_file():
            raise CifarFormatError(f"{folder}: member {member!r} is missing (expected {path})")
        raw = io.BytesIO(path.read_bytes())
        decoded[member] = _decode_member(member, _unpickle(raw, str(path)), spec, str(path))
    return _assemble(decoded, spec)


def _read_tarball(path: Path, spec: _Spec) -> dict:
    wanted = {f"{spec.folder}/{m}": m for m in spec.members}
    decoded = {}
    try:
        with tarfile.open(path, "r:gz") as tf:
            # Walk members in stream order: a gzip stream cannot seek backwards cheaply.
            for info in tf:
                name = _member_name(info.name)
                if name not in wanted or not info.isfile():
                    continue
                where = f"{path} (member {name})"
                # read() then unpickle from memory: ~2x faster than unpickling from the gzip stream
                raw = io.BytesIO(tf.extractfile(info).read())
                decoded[wanted[name]] = _decode_member(wanted[name], _unpickle(raw, where), spec, where)
                if len(decoded) == len(wanted):
                    break
    except CifarFormatError:
        raise
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise CifarFormatError(
            f"{path}: cannot read the tarball ({type(exc).__name__}: {exc}); it may be truncated "
            "or not a gzip-compressed tar") from exc
    missing = [n for n in wanted if wanted[n] not in decoded]
    if missing:
        raise CifarFormatError(f"{path}: member(s) missing from the tarball: {', '.join(missing)}")
    return _assemble(decoded, spec)


# ----------------------------------------------------------------------------------------------
# Decoded-array cache: <cache_dir>/<name>-<hash of path>-<hash of file state>.npz
_CACHE_VERSION = 1
_ARRAY_KEYS = ("train_images", "train_labels", "test_images", "test_labels")


def _default_cache_dir() -> Path:
    env = os.environ.get("MINIGRAD_CACHE")
    return Path(env).expanduser() if env else repo_root() / "data" / ".cache"


def _source_state(source: Path, spec: _Spec) -> str:
    if source.is_file():
        return repr(_stat_key(source))
    parts = [repr(_stat_key(source / m)) for m in spec.members if (source / m).is_file()]
    return "|".join(parts)


def _cache_path(cache_dir: Path, source: Path, spec: _Spec) -> tuple:
    path_hash = hashlib.sha1(os.path.abspath(source).encode()).hexdigest()[:12]
    state = f"v{_CACHE_VERSION}|{_source_state(source, spec)}"
    state_hash = hashlib.sha1(state.encode()).hexdigest()[:12]
    return cache_dir / f"{spec.name}-{path_hash}-{state_hash}.npz", f"{spec.name}-{path_hash}-"


def _cache_load(path: Path, source: Path, spec: _Spec):
    """Arrays and md5 from a cache file, or None if absent or unusable (then it is rebuilt)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["source"]) != os.path.abspath(source):
                return None
            out = {k: z[k] for k in _ARRAY_KEYS}
            out["classes"] = [str(c) for c in z["classes"]]
            md5 = str(z["md5"]) or None
    except Exception:  # a damaged cache is only a cache
        return None
    ok = (out["train_images"].dtype == np.uint8 and out["train_images"].shape[1:] == (3, 32, 32)
          and out["test_images"].dtype == np.uint8 and out["test_images"].shape[1:] == (3, 32, 32)
          and out["train_labels"].shape == (len(out["train_images"]),)
          and out["test_labels"].shape == (len(out["test_images"]),)
          and len(out["classes"]) == spec.num_classes)
    return (out, md5) if ok else None


def _cache_save(path: Path, prefix: str, arrays: dict, source: Path, md5: Optional[str]) -> None:
    """Write atomically (temp file in the same folder, flush, fsync, os.replace); drop stale entries."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".npz")
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **{k: arrays[k] for k in _ARRAY_KEYS},
                     classes=np.array(arrays["classes"], dtype=str),
                     source=np.array(os.path.abspath(source)), md5=np.array(md5 or ""))
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; the cache is as readable as the data
        os.replace(tmp, path)
        tmp = None
        for old in path.parent.glob(prefix + "*.npz"):  # same source, older file state
            if old != path:
                old.unlink(missing_ok=True)
    except OSError as exc:
        warnings.warn(f"could not write the CIFAR cache {path}: {exc}", RuntimeWarning, stacklevel=3)
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


# ----------------------------------------------------------------------------------------------
# Download
def download_cifar(name: str, target_dir: PathLike, url: Optional[str] = None, md5: Optional[str] = None,
                   timeout: float = 60.0) -> Path:
    """Download the tarball to ``target_dir/<official name>`` and return its path.

    Streams to a temp name in ``target_dir`` with a tqdm bar, checks the md5 (``md5`` overrides the
    official one, for tests), then ``os.replace``s it to the official name; a partial or wrong file
    is deleted. This is the only function here that opens a network connection.
    """
    from tqdm import tqdm  # only needed here

    spec = _spec(name)
    url = url or spec.url
    expected = (md5 or spec.md5).lower()
    target_dir = Path(target_dir).expanduser()
    target_dir.mkdir(parents=True, exist_ok=True)
    dest = target_dir / spec.tarball
    fd, tmp = tempfile.mkstemp(dir=target_dir, prefix=f".{spec.tarball}.", suffix=".part")
    try:
        h = hashlib.md5(usedforsecurity=False)
        written = 0
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=timeout) as resp:
                    total = int(resp.headers.get("Content-Length") or 0) or None
                    with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                              desc=f"download {spec.tarball}") as bar:
                        for chunk in iter(lambda: resp.read(1 << 20), b""):
                            out.write(chunk)
                            h.update(chunk)
                            written += len(chunk)
                            bar.update(len(chunk))
            except (urllib.error.URLError, OSError) as exc:
                raise DownloadError(f"could not download {url} to {dest}: {exc}") from exc
            out.flush()
            os.fsync(out.fileno())
        if total is not None and written != total:
            raise DownloadError(f"download of {url} to {dest} stopped at {written} of {total} bytes")
        got = h.hexdigest()
        if got != expected:
            raise ChecksumMismatchError(
                f"downloaded {url} to {dest}: md5 {got}, expected {expected}; the file was deleted")
        os.replace(tmp, dest)
        tmp = None
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
    _MD5_CACHE[_stat_key(dest)] = got  # spare load_cifar a second pass over the file
    return dest


# ----------------------------------------------------------------------------------------------
def load_cifar(name: str = "cifar10", data_dir: Optional[PathLike] = None, download: bool = False, *,
               cache: bool = True, cache_dir: Optional[PathLike] = None, url: Optional[str] = None,
               md5: Optional[str] = None) -> CifarData:
    """Find, verify and decode CIFAR-10 (``"cifar10"``) or CIFAR-100 (``"cifar100"``, fine labels).

    ``data_dir`` is searched first (see :func:`search_dirs`). With ``download=True`` and nothing found,
    the tarball is fetched from ``url`` (default: the official one) into ``data_dir`` or
    ``<repo>/data/`` and checked against ``md5`` (default: the official one); data found locally is
    never downloaded again. ``cache`` keeps the decoded arrays in ``cache_dir`` (default
    ``$MINIGRAD_CACHE`` or ``<repo>/data/.cache/``) keyed by the source's path, size and mtime.

    Raises :class:`DatasetNotFoundError` (no data, no download), :class:`CifarFormatError` (bad
    data, naming the file), :class:`DownloadError`. Warns :class:`CifarChecksumWarning` once for a
    valid tarball that is not the official one.
    """
    spec = _spec(name)
    source = find_cifar(spec.name, data_dir)
    if source is None:
        if not download:
            raise DatasetNotFoundError(_not_found_message(spec, data_dir))
        target = Path(data_dir).expanduser() if data_dir is not None else repo_root() / "data"
        try:
            source = download_cifar(spec.name, target, url=url, md5=md5)
        except ChecksumMismatchError:
            raise
        except DownloadError as error:  # no network, most likely: say how to do without it
            raise DownloadError(f"{error}\nWithout a network: {_not_found_message(spec, data_dir)}") from error

    hit = None
    if cache:
        cpath, prefix = _cache_path(Path(cache_dir).expanduser() if cache_dir else _default_cache_dir(),
                                    source, spec)
        hit = _cache_load(cpath, source, spec)
    if hit is not None:
        arrays, md5sum = hit
    else:
        arrays = _read_folder(source, spec) if source.is_dir() else _read_tarball(source, spec)
        md5sum = file_md5(source) if source.is_file() else None
        if cache:
            _cache_save(cpath, prefix, arrays, source, md5sum)
    if md5sum is not None:
        _MD5_CACHE.setdefault(_stat_key(source), md5sum)

    official = md5sum == spec.md5
    if md5sum is not None and not official:
        warnings.warn(
            f"{source} is not the official {spec.tarball} (md5 {md5sum}, official {spec.md5}); it is "
            "structurally valid and will be used, but results may differ from published ones.",
            CifarChecksumWarning, stacklevel=2)
    return CifarData(name=spec.name, classes=arrays["classes"], num_classes=spec.num_classes,
                     source=source, official=official, md5=md5sum,
                     **{k: arrays[k] for k in _ARRAY_KEYS})
