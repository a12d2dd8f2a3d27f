"""minigrad.data.cifar: finding, verifying, safely reading, caching and downloading CIFAR.

Every test runs against a fake repository root in tmp_path (``repo_root`` is monkeypatched), with
$MINIGRAD_DATA unset and the cache in tmp_path, so the suite never reads the real repo's data/ or
writes into it. ``urlopen`` fails loudly unless a test starts the local HTTP server.
"""
import dataclasses
import functools
import http.server
import os
import threading
import time
import urllib.request
import warnings
from pathlib import Path

import numpy as np
import pytest

import minigrad
from minigrad.data import cifar
from minigrad.data import (CifarChecksumWarning, CifarFormatError, ChecksumMismatchError, DatasetNotFoundError,
                           DownloadError, SafeUnpickler, UnsafePickleError, file_md5, find_cifar, load_cifar)
from fake_cifar import LAYOUT, fake_cifar_arrays, fake_cifar_members, make_fake_cifar, py2_pickle_bytes

_real_repo_root = cifar.repo_root
_real_urlopen = urllib.request.urlopen
SHARED_TARBALL = _real_repo_root().parent / "shared" / "data" / "cifar-10-python-from-jpeg-q75.tar.gz"

# Fakes are not the official files, so most loads warn; tests that care use pytest.warns / recwarn.
pytestmark = pytest.mark.filterwarnings("ignore::minigrad.data.cifar.CifarChecksumWarning")


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """A fake ``<repo>`` with empty ``data/`` and ``../shared/data/``; env and network isolated."""
    root = tmp_path / "work" / "main"
    (root / "data").mkdir(parents=True)
    (root.parent / "shared" / "data").mkdir(parents=True)
    monkeypatch.setattr(cifar, "repo_root", lambda: root)
    monkeypatch.delenv("MINIGRAD_DATA", raising=False)
    monkeypatch.setenv("MINIGRAD_CACHE", str(tmp_path / "cache"))

    def no_network(*args, **kwargs):
        raise AssertionError("a test opened a network connection without download=True")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    return root


@pytest.fixture(autouse=True)
def _isolated(repo):
    yield


def expected(name, n_train=50, n_test=20, seed=0):
    return fake_cifar_arrays(name, n_train, n_test, seed)


def check_equal(data, exp):
    for key in ("train_images", "train_labels", "test_images", "test_labels"):
        np.testing.assert_array_equal(getattr(data, key), exp[key])
    assert data.classes == exp["classes"]


def no_checksum_warnings(record):
    return [w for w in record if issubclass(w.category, CifarChecksumWarning)] == []


# ---------------------------------------------------------------------------------------------- reading
@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
@pytest.mark.parametrize("as_tarball", [True, False])
def test_reads_official_layout(tmp_path, name, as_tarball):
    src = make_fake_cifar(tmp_path / "d", name, n_train=120, n_test=30, as_tarball=as_tarball, seed=3)
    data = load_cifar(name, data_dir=tmp_path / "d", cache=False)
    check_equal(data, expected(name, 120, 30, seed=3))
    k = LAYOUT[name]["num_classes"]
    assert data.num_classes == k and len(data.classes) == k
    assert data.train_images.dtype == np.uint8 and data.train_images.shape == (120, 3, 32, 32)
    assert data.test_images.shape == (30, 3, 32, 32)
    assert data.train_labels.dtype == np.int64 and data.test_labels.dtype == np.int64
    assert data.train_images.flags.c_contiguous and data.train_images.flags.writeable
    assert data.source == src and data.official is False
    assert (data.md5 is None) == (not as_tarball)


def test_nchw_layout_matches_the_format(tmp_path):
    """Row = 1024 R, 1024 G, 1024 B, each plane row-major -> [c, y, x] = row[1024 c + 32 y + x]."""
    members = fake_cifar_members("cifar10", 10, 5)
    row = np.arange(3072) % 251
    members["test_batch"][b"data"][2] = row
    make_fake_cifar(tmp_path / "d", "cifar10", members=members)
    img = load_cifar("cifar10", data_dir=tmp_path / "d", cache=False).test_images[2]
    for c, y, x in [(0, 0, 0), (1, 5, 7), (2, 31, 30)]:
        assert img[c, y, x] == row[1024 * c + 32 * y + x]


def test_accepts_str_keys_and_numpy2_reconstruct(tmp_path):
    members = fake_cifar_members("cifar10", 10, 5)
    members["data_batch_2"] = {k.decode(): v for k, v in members["data_batch_2"].items()}
    members["test_batch"] = py2_pickle_bytes(members["test_batch"], "numpy._core.multiarray")
    make_fake_cifar(tmp_path / "d", "cifar10", members=members)
    check_equal(load_cifar("cifar10", data_dir=tmp_path / "d", cache=False), expected("cifar10", 10, 5))


def test_folder_does_not_warn_and_other_tarball_warns_once(tmp_path):
    make_fake_cifar(tmp_path / "a", "cifar10", as_tarball=False)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        load_cifar("cifar10", data_dir=tmp_path / "a", cache=False)
    assert no_checksum_warnings(record)

    tar = make_fake_cifar(tmp_path / "b", "cifar10", tar_name="my-copy-q75.tar.gz")
    for cache in (True, True, False):  # cold, from cache, uncached: one warning each time
        with pytest.warns(CifarChecksumWarning) as record:
            data = load_cifar("cifar10", data_dir=tmp_path / "b", cache=cache)
        assert len(record) == 1
        msg = str(record[0].message)
        assert str(tar) in msg and "results may differ from published ones" in msg
        assert data.source == tar and data.official is False and data.md5 == file_md5(tar)


def test_official_md5_is_silent(tmp_path, monkeypatch):
    tar = make_fake_cifar(tmp_path / "d", "cifar100")
    patched = dataclasses.replace(cifar.OFFICIAL["cifar100"], md5=file_md5(tar))
    monkeypatch.setitem(cifar.OFFICIAL, "cifar100", patched)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        data = load_cifar("cifar100", data_dir=tmp_path / "d")
    assert no_checksum_warnings(record) and data.official is True


def test_md5_is_cached_per_file_state(tmp_path, monkeypatch):
    tar = make_fake_cifar(tmp_path, "cifar10")
    first = file_md5(tar)
    calls = []
    real_md5 = cifar.hashlib.md5
    monkeypatch.setattr(cifar.hashlib, "md5", lambda *a, **k: calls.append(1) or real_md5(*a, **k))
    assert file_md5(tar) == first and calls == []
    make_fake_cifar(tmp_path, "cifar10", seed=1)  # new content, size/mtime change
    os.utime(tar, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert file_md5(tar) != first and len(calls) == 1


# ---------------------------------------------------------------------------------------------- finding
def test_repo_root_is_the_package_parent():
    assert _real_repo_root() == Path(minigrad.__file__).resolve().parent.parent


def test_search_order(tmp_path, repo, monkeypatch):
    places = {"arg": tmp_path / "arg", "env": tmp_path / "env", "repo": repo / "data",
              "shared": repo.parent / "shared" / "data"}
    srcs = {k: make_fake_cifar(p, "cifar10", n_train=10, n_test=5, seed=i)
            for i, (k, p) in enumerate(places.items())}
    monkeypatch.setenv("MINIGRAD_DATA", str(places["env"]))
    assert [p for p, _ in cifar.search_dirs(places["arg"])] == list(places.values())
    for key in ["arg", "env", "repo", "shared"]:
        data = load_cifar("cifar10", data_dir=places["arg"], cache=False)
        assert data.source == srcs[key]
        check_equal(data, expected("cifar10", 10, 5, seed=list(places).index(key)))
        srcs[key].unlink()
    with pytest.raises(DatasetNotFoundError):
        load_cifar("cifar10", data_dir=places["arg"])


def test_in_folder_order_and_matching(tmp_path):
    d = tmp_path / "d"
    # a CIFAR-100 tarball under another name is not CIFAR-10, nor is a random tar.gz
    make_fake_cifar(d, "cifar100", tar_name="aaa.tar.gz")
    (d / "junk.tar.gz").write_bytes(b"not a tarball")
    assert find_cifar("cifar10", d) is None
    assert find_cifar("cifar100", d) == d / "aaa.tar.gz"
    other = make_fake_cifar(d, "cifar10", tar_name="zzz.tar.gz")
    assert find_cifar("cifar10", d) == other
    official = make_fake_cifar(d, "cifar10")
    assert find_cifar("cifar10", d) == official
    folder = make_fake_cifar(d, "cifar10", as_tarball=False)
    assert find_cifar("cifar10", d) == folder
    # data_dir may also name the tarball or the extracted folder itself
    assert find_cifar("cifar10", other) == other
    assert find_cifar("cifar10", folder) == folder


def test_not_found_message(tmp_path, repo, monkeypatch):
    monkeypatch.setenv("MINIGRAD_DATA", str(tmp_path / "env"))
    with pytest.raises(FileNotFoundError) as info:
        load_cifar("cifar100", data_dir=tmp_path / "mine")
    msg = str(info.value)
    assert isinstance(info.value, DatasetNotFoundError)
    assert "cifar-100-python.tar.gz" in msg and "cifar-100-python/" in msg
    folders = [tmp_path / "mine", tmp_path / "env", repo / "data", repo.parent / "shared" / "data"]
    positions = [msg.index(str(f)) for f in folders]
    assert positions == sorted(positions)
    assert "--download" in msg and "download=True" in msg
    assert "CIFAR-10 was found" not in msg

    shared10 = make_fake_cifar(repo.parent / "shared" / "data", "cifar10", tar_name="cifar-10-q75.tar.gz")
    with pytest.raises(DatasetNotFoundError) as info:
        load_cifar("cifar100", data_dir=tmp_path / "mine")
    assert f"CIFAR-10 was found at {shared10}" in str(info.value)
    assert "--dataset cifar10" in str(info.value)


# ---------------------------------------------------------------------------------------------- corrupt data
def corrupt(name, mutate):
    members = fake_cifar_members(name, 20, 10)
    mutate(members)
    return members


@pytest.mark.parametrize("as_tarball", [True, False])
@pytest.mark.parametrize("case, name, mutate, words", [
    ("missing member", "cifar10", lambda m: m.pop("data_batch_3"), ["data_batch_3", "missing"]),
    ("missing meta", "cifar100", lambda m: m.pop("meta"), ["meta", "missing"]),
    ("wrong shape", "cifar10", lambda m: m["data_batch_1"].__setitem__(
        b"data", np.zeros((4, 3000), np.uint8)), ["data_batch_1", "shape", "(4, 3000)"]),
    ("wrong dtype", "cifar10", lambda m: m["test_batch"].__setitem__(
        b"data", m["test_batch"][b"data"].astype(np.float32)), ["test_batch", "dtype", "float32"]),
    ("label out of range", "cifar10", lambda m: m["data_batch_2"][b"labels"].__setitem__(1, 10),
     ["data_batch_2", "label 10", "out of range"]),
    ("fine label out of range", "cifar100", lambda m: m["test"][b"fine_labels"].__setitem__(0, -1),
     ["test", "label -1", "out of range"]),
    ("wrong count", "cifar10", lambda m: m["data_batch_5"][b"labels"].append(0),
     ["data_batch_5", "labels for"]),
    ("missing key", "cifar100", lambda m: m["train"].pop(b"fine_labels"), ["train", "fine_labels"]),
    ("float labels", "cifar10", lambda m: m["test_batch"].__setitem__(b"labels", [0.5] * 10),
     ["test_batch", "integers"]),
    ("class names", "cifar10", lambda m: m["batches.meta"][b"label_names"].pop(),
     ["batches.meta", "10 class names"]),
    ("not a dict", "cifar10", lambda m: m.__setitem__("data_batch_4", [1, 2]), ["data_batch_4", "dict"]),
    ("truncated pickle", "cifar100", lambda m: m.__setitem__("train", py2_pickle_bytes(m["train"])[:5000]),
     ["train", "truncated"]),
])
def test_structural_errors_name_the_file(tmp_path, case, name, mutate, words, as_tarball):
    src = make_fake_cifar(tmp_path / "d", name, members=corrupt(name, mutate), as_tarball=as_tarball)
    with pytest.raises(CifarFormatError) as info:
        load_cifar(name, data_dir=tmp_path / "d", cache=False)
    msg = str(info.value)
    assert str(src) in msg, case
    for word in words:
        assert word in msg, (case, word, msg)


def test_truncated_tarball(tmp_path):
    tar = make_fake_cifar(tmp_path / "d", "cifar10", n_train=200, n_test=50)
    raw = tar.read_bytes()
    tar.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CifarFormatError) as info:
        load_cifar("cifar10", data_dir=tmp_path / "d", cache=False)
    assert str(tar) in str(info.value)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("as_tarball", [True, False])
def test_forbidden_global_is_refused_and_never_runs(tmp_path, as_tarball):
    marker = tmp_path / "pwned"
    payload = py2_pickle_bytes({b"data": _Evil(marker), b"labels": [0]})
    members = fake_cifar_members("cifar10", 10, 5)
    members["data_batch_1"] = payload
    src = make_fake_cifar(tmp_path / "d", "cifar10", members=members, as_tarball=as_tarball)
    with pytest.raises(UnsafePickleError) as info:
        load_cifar("cifar10", data_dir=tmp_path / "d", cache=False)
    msg = str(info.value)
    assert str(src) in msg and "data_batch_1" in msg
    assert f"{os.system.__module__}.system" in msg  # "posix.system" on Linux
    assert not marker.exists()


@pytest.mark.parametrize("module, name", [("builtins", "eval"), ("_codecs", "encode"), ("numpy", "load"),
                                          ("numpy.core.numeric", "_frombuffer"), ("copyreg", "_reconstructor")])
def test_safe_unpickler_allowlist(module, name):
    import io
    raw = b"\x80\x02c" + f"{module}\n{name}\n".encode() + b"."
    with pytest.raises(UnsafePickleError, match=f"somefile.*{module}.{name}"):
        SafeUnpickler(io.BytesIO(raw), "somefile").load()
    arr = np.arange(12, dtype=np.uint8).reshape(3, 4)
    out = SafeUnpickler(io.BytesIO(py2_pickle_bytes({b"a": arr})), "x").load()
    np.testing.assert_array_equal(out[b"a"], arr)


# ---------------------------------------------------------------------------------------------- cache
def test_cache_roundtrip_and_invalidation(tmp_path, repo, monkeypatch):
    cache_dir = tmp_path / "mycache"
    tar = make_fake_cifar(tmp_path / "d", "cifar10")
    first = load_cifar("cifar10", data_dir=tmp_path / "d", cache_dir=cache_dir)
    files = list(cache_dir.glob("*.npz"))
    assert len(files) == 1 and not list(cache_dir.glob(".tmp-*"))

    def fail(*a, **k):
        raise AssertionError("decoded the tarball although the cache was valid")

    with monkeypatch.context() as m:
        m.setattr(cifar, "_read_tarball", fail)
        second = load_cifar("cifar10", data_dir=tmp_path / "d", cache_dir=cache_dir)
    check_equal(second, expected("cifar10"))
    assert second.md5 == first.md5 and second.source == first.source

    # a changed source is decoded again and replaces its stale entry
    make_fake_cifar(tmp_path / "d", "cifar10", seed=7)
    os.utime(tar, ns=(time.time_ns(), time.time_ns() + 10**9))
    check_equal(load_cifar("cifar10", data_dir=tmp_path / "d", cache_dir=cache_dir),
                expected("cifar10", seed=7))
    assert len(list(cache_dir.glob("*.npz"))) == 1

    # a damaged cache file is only a cache: rebuilt silently
    (cached,) = cache_dir.glob("*.npz")
    cached.write_bytes(b"garbage")
    check_equal(load_cifar("cifar10", data_dir=tmp_path / "d", cache_dir=cache_dir),
                expected("cifar10", seed=7))
    with np.load(cached, allow_pickle=False) as z:
        assert z["train_images"].shape == (50, 3, 32, 32)

    # $MINIGRAD_CACHE is the default; cache=False writes nothing; the repo is never written
    load_cifar("cifar10", data_dir=tmp_path / "d")
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1
    load_cifar("cifar10", data_dir=tmp_path / "d", cache=False, cache_dir=tmp_path / "none")
    assert not (tmp_path / "none").exists()
    assert not (repo / "data" / ".cache").exists()


def test_cache_of_extracted_folder_tracks_member_files(tmp_path):
    folder = make_fake_cifar(tmp_path / "d", "cifar100", as_tarball=False)
    load_cifar("cifar100", data_dir=tmp_path / "d")
    members = fake_cifar_members("cifar100", 50, 20, seed=5)
    (folder / "test").write_bytes(py2_pickle_bytes(members["test"]))
    os.utime(folder / "test", ns=(time.time_ns(), time.time_ns() + 10**9))
    data = load_cifar("cifar100", data_dir=tmp_path / "d")
    np.testing.assert_array_equal(data.test_images, expected("cifar100", seed=5)["test_images"])


# ---------------------------------------------------------------------------------------------- download
class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep the test output clean
        pass


@pytest.fixture
def server(tmp_path, monkeypatch):
    """Serve tmp_path/www on 127.0.0.1 in a thread; yields (base_url, folder, request paths)."""
    monkeypatch.setattr(urllib.request, "urlopen", _real_urlopen)
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    www = tmp_path / "www"
    www.mkdir()
    requests = []

    class Handler(_Handler):
        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(www)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", www, requests
    httpd.shutdown()
    httpd.server_close()


def test_download_success_and_never_again(tmp_path, server):
    base, www, requests = server
    served = make_fake_cifar(www, "cifar10", tar_name="served.tar.gz")
    target = tmp_path / "target"
    with pytest.warns(CifarChecksumWarning):  # the test's own tarball is not the official one
        data = load_cifar("cifar10", data_dir=target, download=True, url=f"{base}/served.tar.gz",
                          md5=file_md5(served))
    dest = target / "cifar-10-python.tar.gz"
    assert data.source == dest and dest.read_bytes() == served.read_bytes()
    assert sorted(p.name for p in target.iterdir()) == ["cifar-10-python.tar.gz"]  # no temp file left
    check_equal(data, expected("cifar10"))
    assert requests == ["/served.tar.gz"]
    load_cifar("cifar10", data_dir=target, download=True, url=f"{base}/served.tar.gz", md5=file_md5(served))
    assert requests == ["/served.tar.gz"]  # found locally: not downloaded again


def test_download_defaults_to_repo_data(repo, server):
    base, www, _ = server
    served = make_fake_cifar(www, "cifar100", tar_name="c100.tar.gz")
    data = load_cifar("cifar100", download=True, url=f"{base}/c100.tar.gz", md5=file_md5(served))
    assert data.source == repo / "data" / "cifar-100-python.tar.gz"


def test_download_wrong_md5_deletes_the_file(tmp_path, server):
    base, www, _ = server
    served = make_fake_cifar(www, "cifar10", tar_name="served.tar.gz")
    target = tmp_path / "target"
    with pytest.raises(ChecksumMismatchError) as info:
        load_cifar("cifar10", data_dir=target, download=True, url=f"{base}/served.tar.gz", md5="0" * 32)
    msg = str(info.value)
    assert str(target / "cifar-10-python.tar.gz") in msg and "0" * 32 in msg and file_md5(served) in msg
    assert list(target.iterdir()) == []


def test_download_http_error_leaves_nothing(tmp_path, server):
    base, _, _ = server
    target = tmp_path / "target"
    with pytest.raises(DownloadError, match="missing.tar.gz"):
        load_cifar("cifar10", data_dir=target, download=True, url=f"{base}/missing.tar.gz")
    assert list(target.iterdir()) == []


# ---------------------------------------------------------------------------------------------- real data
@pytest.mark.skipif(not SHARED_TARBALL.is_file(), reason=f"{SHARED_TARBALL} is absent")
def test_real_shared_cifar10(tmp_path, monkeypatch):
    with pytest.warns(CifarChecksumWarning) as record:
        data = load_cifar("cifar10", data_dir=SHARED_TARBALL.parent, cache_dir=tmp_path / "c")
    assert len(record) == 1 and SHARED_TARBALL.name in str(record[0].message)
    assert data.source == SHARED_TARBALL and data.official is False
    assert data.train_images.shape == (50000, 3, 32, 32) and data.test_images.shape == (10000, 3, 32, 32)
    assert data.num_classes == 10 and data.classes[0] == "airplane" and data.classes[9] == "truck"
    assert np.bincount(data.train_labels).tolist() == [5000] * 10
    assert np.bincount(data.test_labels).tolist() == [1000] * 10
    # the second load comes from the cache (timed in benchmarks, not here: CI machines are shared)
    monkeypatch.setattr(cifar, "_read_tarball", lambda *a: pytest.fail("decoded again instead of the cache"))
    with pytest.warns(CifarChecksumWarning):
        again = load_cifar("cifar10", data_dir=SHARED_TARBALL.parent, cache_dir=tmp_path / "c")
    np.testing.assert_array_equal(again.train_images[::997], data.train_images[::997])
