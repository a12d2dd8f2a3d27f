"""Build small fake CIFAR-10 / CIFAR-100 data in the official "python version" format, for tests.

The pickles are written the way the official (Python 2) files were: protocol 2, ``str`` keys and
byte strings as BINSTRING opcodes (Python 3's protocol 2 would write bytes as ``_codecs.encode``
calls, which the safe unpickler rightly refuses), arrays through ``numpy.core.multiarray._reconstruct``.

    path = make_fake_cifar(tmp_path, "cifar10", n_train=50, n_test=20)   # tmp_path/cifar-10-python.tar.gz
    data = load_cifar("cifar10", data_dir=tmp_path)

Arrays are a deterministic function of (name, n_train, n_test, seed): see :func:`fake_cifar_arrays`.
"""
from __future__ import annotations

import io
import pickle
import shutil
import struct
import tarfile
import tempfile
from pathlib import Path

import numpy as np

try:
    from numpy._core.multiarray import _reconstruct
except ImportError:  # NumPy 1
    from numpy.core.multiarray import _reconstruct

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

LAYOUT = {
    "cifar10": dict(folder="cifar-10-batches-py", tarball="cifar-10-python.tar.gz", meta="batches.meta",
                    train=[f"data_batch_{i}" for i in range(1, 6)], test="test_batch", num_classes=10,
                    label_key=b"labels", names_key=b"label_names"),
    "cifar100": dict(folder="cifar-100-python", tarball="cifar-100-python.tar.gz", meta="meta",
                     train=["train"], test="test", num_classes=100,
                     label_key=b"fine_labels", names_key=b"fine_label_names"),
}


class Py2Pickler(pickle._Pickler):
    """Protocol-2 pickler that writes ``bytes`` as Python 2 ``str`` (SHORT_BINSTRING / BINSTRING)."""

    dispatch = pickle._Pickler.dispatch.copy()

    def __init__(self, file, reconstruct_module: str = "numpy.core.multiarray"):
        super().__init__(file, protocol=2)
        self.reconstruct_module = reconstruct_module

    def save_py2_str(self, obj):
        n = len(obj)
        if n < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", n) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str

    def save_global(self, obj, name=None):
        if obj is _reconstruct:  # as NumPy 1 (and the official files) named it
            self.write(pickle.GLOBAL + f"{self.reconstruct_module}\n_reconstruct\n".encode())
            self.memoize(obj)
        else:
            super().save_global(obj, name)


def py2_pickle_bytes(obj, reconstruct_module: str = "numpy.core.multiarray") -> bytes:
    buf = io.BytesIO()
    Py2Pickler(buf, reconstruct_module).dump(obj)
    return buf.getvalue()


def fake_cifar_arrays(name: str = "cifar10", n_train: int = 50, n_test: int = 20, seed: int = 0) -> dict:
    """Images uint8 (N, 3, 32, 32), labels int64 (every class as evenly as possible), class names."""
    k = LAYOUT[name]["num_classes"]
    rng = np.random.default_rng(seed)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        out[f"{split}_images"] = rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)
        out[f"{split}_labels"] = rng.permutation(np.arange(n) % k).astype(np.int64)
    out["classes"] = CIFAR10_CLASSES if name == "cifar10" else [f"class_{i:02d}" for i in range(k)]
    return out


def fake_cifar_members(name: str = "cifar10", n_train: int = 50, n_test: int = 20, seed: int = 0) -> dict:
    """``{member file name: dict}`` as in the official release (bytes keys, labels as a list)."""
    lay = LAYOUT[name]
    arr = fake_cifar_arrays(name, n_train, n_test, seed)
    if n_train < len(lay["train"]) or n_test < 1:
        raise ValueError(f"{name} needs n_train >= {len(lay['train'])} and n_test >= 1")
    members = {}

    def batch(images, labels, label):
        d = {b"batch_label": label, lay["label_key"]: [int(v) for v in labels],
             b"data": np.ascontiguousarray(images.reshape(len(images), 3072)),
             b"filenames": [f"img_{i:05d}.png".encode() for i in range(len(images))]}
        if name == "cifar100":
            d[b"coarse_labels"] = [int(v) // 5 for v in labels]
        return d

    parts = np.array_split(np.arange(n_train), len(lay["train"]))
    for i, (member, idx) in enumerate(zip(lay["train"], parts)):
        members[member] = batch(arr["train_images"][idx], arr["train_labels"][idx],
                                f"training batch {i + 1} of {len(parts)} (fake)".encode())
    members[lay["test"]] = batch(arr["test_images"], arr["test_labels"], b"testing batch 1 of 1 (fake)")
    meta = {lay["names_key"]: [c.encode() for c in arr["classes"]]}
    if name == "cifar10":
        meta.update({b"num_cases_per_batch": len(parts[0]), b"num_vis": 3072})
    else:
        meta[b"coarse_label_names"] = [f"super_{i:02d}".encode() for i in range(20)]
    members[lay["meta"]] = meta
    return members


def write_cifar_folder(members: dict, root, name: str = "cifar10") -> Path:
    """Write ``members`` (dicts are Py2-pickled, bytes written as they are) to root/<official folder>."""
    folder = Path(root) / LAYOUT[name]["folder"]
    folder.mkdir(parents=True, exist_ok=True)
    for member, content in members.items():
        raw = content if isinstance(content, bytes) else py2_pickle_bytes(content)
        (folder / member).write_bytes(raw)
    return folder


def write_cifar_tarball(folder, tar_path) -> Path:
    """tar.gz ``folder`` with its own name as the top-level member (as the official tarballs)."""
    folder, tar_path = Path(folder), Path(tar_path)
    with tarfile.open(tar_path, "w:gz") as tf:
        tf.add(folder, arcname=folder.name)
    return tar_path


def make_fake_cifar(tmp_path, name: str = "cifar10", n_train: int = 50, n_test: int = 20,
                    as_tarball: bool = True, tar_name=None, seed: int = 0, members: dict | None = None) -> Path:
    """Fake CIFAR in ``tmp_path``: the tarball (official name unless ``tar_name``) or the extracted folder.

    ``members`` replaces the generated member dicts (e.g. a corrupted copy of :func:`fake_cifar_members`).
    Returns the path of the tarball or folder.
    """
    tmp_path = Path(tmp_path)
    tmp_path.mkdir(parents=True, exist_ok=True)
    if members is None:
        members = fake_cifar_members(name, n_train, n_test, seed)
    if not as_tarball:
        return write_cifar_folder(members, tmp_path, name)
    stage = Path(tempfile.mkdtemp(dir=tmp_path, prefix=".stage-"))
    try:
        folder = write_cifar_folder(members, stage, name)
        return write_cifar_tarball(folder, tmp_path / (tar_name or LAYOUT[name]["tarball"]))
    finally:
        shutil.rmtree(stage)
