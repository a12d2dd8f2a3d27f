"""The VGG depth study's command line, end to end on small fake CIFAR in the official format."""
import dataclasses
import functools
import http.server
import json
import threading

import pytest

from experiments import study, vgg_depth
from minigrad.data import cifar
from minigrad.runs import load_grad_stats, load_metrics, load_summary
from fake_cifar import make_fake_cifar

TINY = ["--epochs", "1", "--train-subset", "40", "--val-size", "20", "--batch-size", "20", "--no-progress",
        "--threads", "1"]


@pytest.fixture
def isolated_data(tmp_path, monkeypatch):
    """A data folder with fake CIFAR-10 only; the repo's own data folders are out of the search."""
    monkeypatch.setattr(cifar, "repo_root", lambda: tmp_path / "no-repo")
    monkeypatch.delenv("MINIGRAD_DATA", raising=False)
    data = tmp_path / "data"
    data.mkdir()
    make_fake_cifar(data, "cifar10", n_train=120, n_test=30)
    return data


def run(args, capsys):
    code = vgg_depth.main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_one_row_end_to_end_then_reused(isolated_data, tmp_path, capsys):
    out_dir = tmp_path / "out"
    args = ["--model", "VGG08", "--data-dir", str(isolated_data), "--out", str(out_dir)] + TINY
    code, out, err = run(args, capsys)
    assert code == 0, err
    row = out_dir / "VGG08-lr1e-3"
    for name in ("config.json", "metrics.csv", "grad_stats.json", "summary.json"):
        assert (row / name).is_file(), name
    for name in ("results.md", "results.csv", "manifest.json", "training_curves.png", "grad_flow_first.png"):
        assert (out_dir / name).is_file(), name
    summary = load_summary(row)
    assert summary["status"] == "finished" and 0 <= summary["test_acc"] <= 1
    assert len(load_metrics(row)) == 1
    config = json.loads((row / "config.json").read_text())
    assert config["model"] == "VGG08" and config["preset"] == "quick" and config["n_val"] == 20
    manifest = json.loads((out_dir / "manifest.json").read_text())
    assert manifest["preset"] == "quick" and manifest["rows"][0]["status"] == "finished"
    assert "| VGG08 |" in (out_dir / "results.md").read_text()
    assert "Results table:" in out

    before = (row / "summary.json").stat().st_mtime_ns
    code, out, _ = run(args, capsys)
    assert code == 0 and "reusing" in out
    assert (row / "summary.json").stat().st_mtime_ns == before

    changed = [("2" if a == "1" and args[i - 1] == "--epochs" else a) for i, a in enumerate(args)]
    code, _, err = run(changed, capsys)
    assert code == 2 and "epochs" in err and "saved 1, given 2" in err


def test_list_and_print_commands(capsys, tmp_path):
    code, out, _ = run(["--list"], capsys)
    assert code == 0 and "VGG38_BN_RC-lr1e-3" in out and "VGG08-lr1e-3" in out
    code, out, _ = run(["--preset", "full", "--list"], capsys)
    assert code == 0 and out.count("VGG38_BN") == 4 and "VGG38_BN_RC-lr1e-2" in out
    code, out, _ = run(["--preset", "full", "--print-commands", "--out", str(tmp_path)], capsys)
    lines = out.strip().splitlines()
    assert code == 0 and len(lines) == 7
    assert all("--preset full" in line and "--model" in line and "--resume" in line for line in lines)


def test_missing_cifar100_says_what_to_do(isolated_data, tmp_path, capsys):
    code, _, err = run(["--model", "VGG08", "--dataset", "cifar100", "--data-dir", str(isolated_data),
                        "--out", str(tmp_path / "o")] + TINY, capsys)
    assert code == 2
    assert "cifar-100-python.tar.gz" in err and "--download" in err and "CIFAR-10 was found" in err


def test_download_cifar100_from_a_local_server(isolated_data, tmp_path, capsys, monkeypatch):
    served = tmp_path / "served"
    served.mkdir()
    tarball = make_fake_cifar(served, "cifar100", n_train=300, n_test=30)
    md5 = cifar.file_md5(tarball)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{tarball.name}"
        monkeypatch.setitem(cifar.OFFICIAL, "cifar100", dataclasses.replace(cifar.OFFICIAL["cifar100"], url=url, md5=md5))
        target = tmp_path / "downloads"
        code, out, err = run(["--model", "VGG08", "--dataset", "cifar100", "--download", "--data-dir", str(target),
                              "--out", str(tmp_path / "o")] + TINY, capsys)
    finally:
        server.shutdown()
    assert code == 0, err
    assert (target / "cifar-100-python.tar.gz").is_file()
    summary = load_summary(tmp_path / "o" / "VGG08-lr1e-3")
    assert summary["status"] == "finished"


def test_download_without_network_stops_the_study_once_and_says_where_to_put_the_file(
        isolated_data, tmp_path, capsys, monkeypatch):
    import socket
    with socket.socket() as sock:  # a local port nobody listens on: the download is refused at once
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/cifar-100-python.tar.gz"
    monkeypatch.setitem(cifar.OFFICIAL, "cifar100", dataclasses.replace(cifar.OFFICIAL["cifar100"], url=url))
    code, out, err = run(["--dataset", "cifar100", "--download", "--data-dir", str(tmp_path / "downloads"),
                          "--out", str(tmp_path / "o")] + TINY, capsys)
    assert code == 2 and err.count("could not download") == 1, err  # not once per row
    assert "Without a network" in err and "cifar-100-python.tar.gz" in err
    assert f"1. {tmp_path / 'downloads'}" in err  # the folders searched, in order


def test_collect_refuses_mixed_presets(isolated_data, tmp_path, capsys):
    out_dir = tmp_path / "out"
    assert run(["--model", "VGG08", "--data-dir", str(isolated_data), "--out", str(out_dir)] + TINY, capsys)[0] == 0
    config_path = out_dir / "VGG08-lr1e-3" / "config.json"
    other = out_dir / "other" / "VGG08-lr1e-3"
    other.mkdir(parents=True)
    config = json.loads(config_path.read_text())
    config["preset"] = "full"
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="mix presets"):
        study.collect(vgg_depth.STUDY, [out_dir, other], tmp_path / "table")
    code, out, _ = run(["--collect", str(out_dir), "--out", str(tmp_path / "table2")], capsys)
    assert code == 0 and (tmp_path / "table2" / "results.md").is_file()


def test_early_layer_ratio_compares_by_position():
    shallow = {"entry.conv.weight": {"mean_abs": 1e-2}, "entry.conv.bias": {"mean_abs": 5.0},
               "stage0.reduce.conv0.weight": {"mean_abs": 1e-2}}
    deep = {"entry.conv.weight": {"mean_abs": 1e-6}, "stage0.block0.conv0.weight": {"mean_abs": 1e-6}}
    assert vgg_depth.early_layer_ratio(shallow, deep, n_layers=2) == pytest.approx(1e4)


# ----------------------------------------------------------------------------------------- real data
@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::minigrad.data.CifarChecksumWarning")
def test_quick_preset_claims_hold_on_a_smaller_real_run(tmp_path, capsys):
    """DECISIONS 17 on real CIFAR-10 (about 3 minutes on 2 cores): the quick preset's three rows on 2,000
    training images, 2 epochs of batch 20. VGG38 stays within 5 points of chance, VGG38 BN+RC ends at least
    10 points above it, and VGG38's first weight layers get gradients at least 100x smaller than VGG08's."""
    if cifar.find_cifar("cifar10") is None:
        pytest.skip("real CIFAR-10 not found (--data-dir, $MINIGRAD_DATA, data/, ../shared/data/)")
    out = tmp_path / "study"
    code = vgg_depth.main(["--out", str(out), "--train-subset", "2000", "--batch-size", "20", "--epochs", "2",
                           "--val-size", "500", "--test-subset", "500", "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    val = {m: load_metrics(out / f"{m}-lr1e-3")[-1]["val_acc"] for m in ("VGG08", "VGG38", "VGG38_BN_RC")}
    assert abs(val["VGG38"] - 0.1) <= 0.05, val
    assert val["VGG38_BN_RC"] - val["VGG38"] >= 0.10, val
    first = [load_grad_stats(out / f"{m}-lr1e-3")["epochs"][0]["mean"] for m in ("VGG08", "VGG38")]
    ratio = vgg_depth.early_layer_ratio(*first)
    assert ratio >= 100, ratio
    # the table says the same, in words
    assert "(at chance: it does not learn)" in printed and "(vanishing gradients in VGG38)" in printed
