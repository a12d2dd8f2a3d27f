"""The ResNet BN study: the per-block statistic by hand, the probe's hygiene, and the CLI end to end."""
import json

import numpy as np
import pytest

import minigrad
from minigrad import nn
from minigrad.grad_stats import grad_output_stats
from minigrad.measure import block_variance
from minigrad.models.resnet import ResNet, build_resnet
from minigrad.runs import load_metrics, load_summary

from experiments import resnet_bn, study
from fake_cifar import make_fake_cifar

# the fake tarball is not the official file: one warning per load (DECISIONS 3), expected here
pytestmark = pytest.mark.filterwarnings("ignore::minigrad.data.CifarChecksumWarning")


# ----------------------------------------------------------------------------------------- statistics
def test_batch_variance_by_hand():
    # two images, two features: feature 0 takes 1 and 3 (variance 1), feature 1 takes 2 and 6 (variance 4)
    g = np.array([1.0, 2.0, 3.0, 6.0]).reshape(2, 1, 1, 2)
    assert block_variance.grad_output_batch_var(g) == 2.5
    assert grad_output_stats(g)["batch_var"] == 2.5  # the library's statistic, which the probe reads


def test_beta_over_gamma_by_hand():
    model = ResNet(num_blocks_per_scale=1, num_filters=(2, 2, 2))
    bn = model.scale0.block0.bn0
    bn.weight.data[...] = [1.0, -2.0]
    bn.bias.data[...] = [0.5, 1.0]
    values = block_variance.bn_beta_over_gamma(model)
    assert values["scale0.block0.bn0"] == pytest.approx(0.5)  # (|0.5 / 1| + |1 / -2|) / 2
    assert values["head.bn"] == 0.0  # beta 0 at init
    assert list(values)[0] == "scale0.block0.bn0" and len(values) == 2 * 3 + 2 + 1


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_probe_matches_the_gradient_computed_by_hand():
    """Model-3 (no BN): d loss / d (last block output) through ReLU, global mean, linear, mean CE by hand."""
    rng = np.random.default_rng(0)
    minigrad.manual_seed(1)
    model = build_resnet("Model-3", num_filters=(2, 3, 4), num_blocks_per_scale=2, num_classes=3).double()
    x = rng.standard_normal((4, 3, 6, 6))
    labels = np.array([0, 2, 1, 2])
    h = model.scale1(model.scale0(model.stem(x)))
    y_last = model.scale2.block1(model.scale2.block0(h))
    n, _, height, width = y_last.shape
    weight, bias = model.head.linear.weight.data, model.head.linear.bias.data
    logits = np.maximum(y_last, 0).mean(axis=(2, 3)) @ weight.T + bias
    p = _softmax(logits)
    loss = -np.mean(np.log(p[np.arange(n), labels]))
    d_logits = (p - np.eye(3)[labels]) / n
    d_last = (d_logits @ weight)[:, :, None, None] / (height * width) * (y_last > 0)
    result = block_variance.probe_blocks(model, nn.CrossEntropyLoss(), x, labels)
    last = result["blocks"]["scale2.block1"]
    assert result["loss"] == pytest.approx(loss, rel=1e-12)
    assert last["batch_var"] == pytest.approx(d_last.reshape(n, -1).var(axis=0).mean(), rel=1e-12)
    assert last["l2"] == pytest.approx(np.linalg.norm(d_last), rel=1e-12)
    assert list(result["blocks"]) == [f"scale{i}.block{j}" for i in range(3) for j in range(2)]
    assert result["bn"] == {}

    # The identity skip: with the last block's branch silenced, its input gradient is its output gradient.
    model.scale2.block1.conv1.weight.data[...] = 0
    model.scale2.block1.conv1.bias.data[...] = 0
    result = block_variance.probe_blocks(model, nn.CrossEntropyLoss(), x, labels)
    assert result["blocks"]["scale2.block0"] == result["blocks"]["scale2.block1"]


def test_probe_leaves_the_model_as_it_was():
    rng = np.random.default_rng(2)
    model = ResNet(num_blocks_per_scale=1, num_filters=(2, 3, 4), num_classes=3)
    model.eval()
    for p in model.parameters():
        p.grad[...] = rng.standard_normal(p.shape)
    grads = [p.grad.copy() for p in model.parameters()]
    state = model.state_dict()
    x = rng.standard_normal((5, 3, 8, 8)).astype(np.float32)
    result = block_variance.probe_blocks(model, nn.CrossEntropyLoss(), x, np.array([0, 1, 2, 0, 1]))
    assert all(v["batch_var"] > 0 and v["l2"] > 0 and 0 <= v["sign_diversity"] <= 0.5
               for v in result["blocks"].values())
    assert not any(block.record_activations for _, block in model.blocks())
    assert all(np.array_equal(p.grad, g) for p, g in zip(model.parameters(), grads))
    after = model.state_dict()
    assert all(np.array_equal(state[k], after[k]) for k in state)  # running statistics included
    assert not model.training and not any(m.training for m in model.modules())
    assert not any(block.record_grad_output for _, block in model.blocks())


# ----------------------------------------------------------------------------------------- the CLI
TINY = ["--width", "2", "--blocks-per-scale", "1", "--batch-size", "16", "--n-val", "20", "--full-train",
        "--epochs", "2", "--threads", "1", "--no-progress"]


@pytest.fixture(scope="module")
def fake_data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cifar")
    make_fake_cifar(folder, "cifar10", n_train=80, n_test=30)
    return folder


def _run(args, capsys):
    code = resnet_bn.main(args)
    return code, capsys.readouterr()


def test_end_to_end_three_models(fake_data, tmp_path, capsys):
    out = tmp_path / "study"
    code, captured = _run(["--data-dir", str(fake_data), "--out", str(out)] + TINY, capsys)
    assert code == 0, captured.err
    rows = ["Model-1-lr1e-1", "Model-2-lr1e-1", "Model-3-lr1e-1"]
    for row in rows:
        folder = out / row
        summary = load_summary(folder)
        assert summary["status"] in ("finished", "diverged")
        points = json.loads((folder / "block_stats.json").read_text())["points"]
        done = len(load_metrics(folder))
        assert [p["epoch"] for p in points] == [0, 1, 2][: done + 1]
        assert [p["label"] for p in points][:2] == ["init", "epoch 1"][: done + 1]
        assert all(len(p["blocks"]) == 3 for p in points)
        assert (len(points[0]["bn"]) > 0) == (row != "Model-3-lr1e-1")
        assert (folder / "block_grad_var.png").read_bytes()[:4] == b"\x89PNG"
    table = (out / "results.md").read_text()
    assert all(f"| {m} |" in table for m in ("Model-1", "Model-2", "Model-3"))
    manifest = json.loads((out / "manifest.json").read_text())
    assert [r["row"] for r in manifest["rows"]] == rows
    for figure in ("train_accuracy.png", "block_grad_var.png"):
        assert (out / figure).read_bytes()[:4] == b"\x89PNG"
    assert captured.out.strip().splitlines()[-1].startswith(f"Everything is in {out}")

    # A second run over the same folder reuses every row and rebuilds the table.
    code, captured = _run(["--data-dir", str(fake_data), "--out", str(out)] + TINY, capsys)
    assert code == 0 and captured.out.count("already") == 3
    # Other settings over the same folder stop with the differing setting named.
    code = resnet_bn.main(["--data-dir", str(fake_data), "--out", str(out)] + TINY[:-5] + ["--epochs", "3"]
                          + TINY[-3:])
    assert code == 2 and "epochs" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning", "ignore:invalid value:RuntimeWarning")
def test_a_diverging_row_is_recorded_not_raised(fake_data, tmp_path, capsys):
    out = tmp_path / "study"
    code, captured = _run(["--data-dir", str(fake_data), "--out", str(out), "--model", "Model-3",
                           "--lr", "1e8"] + TINY, capsys)
    assert code == 0, captured.err
    summary = load_summary(out / "Model-3-lr1e8")
    assert summary["status"] == "diverged" and summary["diverged"]["epoch"] == 1
    batch = summary["diverged"]["batch"]
    assert f"diverged (epoch 1, train batch {batch})" in (out / "results.md").read_text()
    assert "diverged at epoch 1" in captured.out
    points = json.loads((out / "Model-3-lr1e8" / "block_stats.json").read_text())["points"]
    assert [p["label"] for p in points] == ["init"]


def test_resume_after_a_crash_gives_the_uninterrupted_result(fake_data, tmp_path, capsys, monkeypatch):
    base = ["--data-dir", str(fake_data), "--model", "Model-1"] + TINY
    code, _ = _run(base + ["--out", str(tmp_path / "straight")], capsys)
    assert code == 0

    original = block_variance.BlockProbe.on_epoch_end

    def crash_in_epoch_2(self, trainer, epoch, metrics):
        if epoch == 2:
            raise KeyboardInterrupt("simulated kill")
        return original(self, trainer, epoch, metrics)

    monkeypatch.setattr(block_variance.BlockProbe, "on_epoch_end", crash_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        resnet_bn.main(base + ["--out", str(tmp_path / "crashed")])
    monkeypatch.setattr(block_variance.BlockProbe, "on_epoch_end", original)
    code, captured = _run(base + ["--out", str(tmp_path / "crashed")], capsys)
    assert code == 2 and "--resume" in captured.err  # an unfinished row is never restarted silently
    code, _ = _run(base + ["--out", str(tmp_path / "crashed"), "--resume"], capsys)
    assert code == 0
    a, b = (tmp_path / d / "Model-1-lr1e-1" for d in ("straight", "crashed"))
    assert json.loads((a / "block_stats.json").read_text()) == json.loads((b / "block_stats.json").read_text())
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert strip(load_metrics(a)) == strip(load_metrics(b))
    assert load_summary(a)["test_acc"] == load_summary(b)["test_acc"]


def test_list_and_bad_settings(tmp_path, capsys):
    assert resnet_bn.main(["--list"]) == 0
    listed = capsys.readouterr().out
    assert "Model-1-lr1e-1" in listed and "Model-3-lr1e-1" in listed
    for flag in ("--epochs", "--width"):
        with pytest.raises(SystemExit) as info:
            resnet_bn.main([flag, "0", "--out", str(tmp_path / "o")])
        err = capsys.readouterr().err
        assert info.value.code == 2 and f"argument {flag}: expected a positive whole number, got '0'" in err
    assert not (tmp_path / "o").exists()


def test_row_config_presets():
    args = study.parse_args(resnet_bn.STUDY, [])[1]
    quick = resnet_bn.STUDY.row_config(args, "Model-2")
    assert quick["batch_norm"] and not quick["residual"]
    assert quick["probe_epochs"] == [0, 1, 3] and quick["milestones"] == [2]
    assert (quick["lr"], quick["momentum"], quick["weight_decay"], quick["batch_size"]) == (0.1, 0.9, 1e-4, 128)
    full = resnet_bn.STUDY.row_config(study.parse_args(resnet_bn.STUDY, ["--preset", "full"])[1], "Model-1")
    assert full["train_subset"] is None and full["probe_epochs"] == [0, 1, 67, 134, 200]


# ----------------------------------------------------------------------------------------- the paper's other figures
def test_presets_list_their_rows_and_count_the_papers_steps(capsys):
    expected = {"resnet99-quick": ["Model-1-lr1e-1-ResNet99"],
                "batch-quick": ["Model-1-lr1e-1-bs128", "Model-1-lr1e-1-bs256", "Model-1-lr1e-1-bs512"],
                "init-quick": ["Model-1-lr1e-1-std0.01", "Model-1-lr1e-1-std0.1"],
                "sweep-quick": ["Model-3-lr1e-1", "Model-3-lr3e-2", "Model-3-lr1e-2", "Model-3-lr3e-3"]}
    for preset, names in expected.items():
        rows = dict(resnet_bn.STUDY.rows(study.parse_args(resnet_bn.STUDY, ["--preset", preset])[1]))
        assert list(rows) == names
        assert all(c["epochs"] == 3 and c["train_subset"] == 2560 for c in rows.values())
    quick = dict(resnet_bn.STUDY.rows(study.parse_args(resnet_bn.STUDY, ["--preset", "sweep-quick"])[1]))
    assert [c["lr"] for c in quick.values()] == [0.1, 0.03, 0.01, 0.003]
    assert all(c["step_probe_every"] == 2 and not c["batch_norm"] for c in quick.values())
    init = resnet_bn.STUDY.rows(study.parse_args(resnet_bn.STUDY, ["--preset", "init-quick"])[1])
    assert [c["init_std"] for _, c in init] == [0.01, 0.1] and init[0][1]["init"].startswith("normal(0, 0.01")
    # the default rows carry no key of the new settings (their configs, hence their folders, stay valid)
    default = dict(resnet_bn.STUDY.rows(study.parse_args(resnet_bn.STUDY, [])[1]))["Model-1-lr1e-1"]
    assert "init_std" not in default and "step_probe_every" not in default
    # full presets: epochs from the paper's steps at 372 (batch 128), 186 (256) and 93 (512) steps per epoch
    deep = resnet_bn.STUDY.rows(study.parse_args(resnet_bn.STUDY, ["--preset", "resnet99"])[1])[0][1]
    assert deep["num_blocks_per_scale"] == 33 and deep["epochs"] == 202
    assert deep["probe_epochs"] == [0, 1, 67, 134, 202] and deep["milestones"] == [101, 152]
    batch = resnet_bn.STUDY.rows(study.parse_args(resnet_bn.STUDY, ["--preset", "batch"])[1])
    assert [c["epochs"] for _, c in batch] == [68, 135, 269]
    assert resnet_bn.main(["--preset", "sweep-quick", "--list"]) == 0 and "Model-3-lr3e-3" in capsys.readouterr().out


@pytest.mark.parametrize("preset", ["resnet99-quick", "batch-quick", "init-quick"])
def test_appendix_rows_run_tiny(preset, fake_data, tmp_path, capsys):
    out = tmp_path / preset
    tiny = [a if a != "2" else "1" for a in TINY]  # one epoch
    code, captured = _run(["--preset", preset, "--data-dir", str(fake_data), "--out", str(out)] + tiny, capsys)
    assert code == 0, captured.err
    manifest = json.loads((out / "manifest.json").read_text())
    assert all(r["status"] == "finished" for r in manifest["rows"])
    for row in manifest["rows"]:
        points = json.loads((out / row["row"] / "block_stats.json").read_text())["points"]
        assert [p["epoch"] for p in points] == [0, 1]
        assert len(points[0]["blocks"]) == (99 if preset == "resnet99-quick" else 3)
    assert (out / "block_grad_var.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "block_grad_var_rows.png").exists() == (preset != "resnet99-quick")  # one row: no per-row panels
    header = (out / "results.md").read_text().splitlines()[2]
    assert ("| Batch |" in header) == (preset == "batch-quick")
    assert ("| Init std |" in header) == (preset == "init-quick")


def test_step_probe_records_the_first_epoch_and_changes_nothing(fake_data, tmp_path, capsys):
    base = ["--data-dir", str(fake_data), "--model", "Model-1"] + TINY
    assert _run(base + ["--out", str(tmp_path / "plain")], capsys)[0] == 0
    assert _run(base + ["--out", str(tmp_path / "probed"), "--step-probe", "2"], capsys)[0] == 0
    plain, probed = (tmp_path / d / "Model-1-lr1e-1" for d in ("plain", "probed"))
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert strip(load_metrics(plain)) == strip(load_metrics(probed))  # the probe leaves no trace
    stats = json.loads((probed / "block_stats.json").read_text())
    assert [(s["epoch"], s["batch"], s["step"]) for s in stats["steps"]] == [(1, 1, 1), (1, 2, 2), (1, 4, 4)]
    assert all(len(s["blocks"]) == 3 and s["train_loss"] > 0 for s in stats["steps"])
    assert [p["step"] for p in stats["points"]] == [0, 4, 8]
    assert (tmp_path / "probed" / "first_epoch_steps.png").read_bytes()[:4] == b"\x89PNG"
    assert "| Verdict |" in (tmp_path / "probed" / "results.md").read_text()


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning", "ignore:invalid value:RuntimeWarning")
def test_sweep_tiny_gives_each_rate_a_verdict(fake_data, tmp_path, capsys):
    out = tmp_path / "sweep"
    tiny = [a if a != "2" else "1" for a in TINY]  # one epoch
    code, captured = _run(["--preset", "sweep-quick", "--data-dir", str(fake_data), "--out", str(out)] + tiny, capsys)
    assert code == 0, captured.err
    rows = study.read_csv(out / "results.csv")
    assert [r["lr"] for r in rows] == [0.1, 0.03, 0.01, 0.003]
    assert all(r["verdict"] in ("diverges", "explodes", "stops learning", "learns slowly", "learns") for r in rows)
    assert "Against the paper's Figure 12" in (out / "results.md").read_text()
    assert (out / "first_epoch_steps.png").read_bytes()[:4] == b"\x89PNG"


def _record(steps_var, end_var=1.0, init_var=1.0):
    point = lambda epoch, step, v, label: {  # noqa: E731
        "epoch": epoch, "step": step, "label": label,
        "blocks": {"scale0.block0": {"batch_var": v}, "scale2.block0": {"batch_var": v}}}
    return {"points": [point(0, 0, init_var, "init"), point(3, 30, end_var, "end")],
            "steps": [point(1, s, v, None) for s, v in enumerate(steps_var, start=1)]}


def test_verdict_logic():
    v = block_variance.verdict
    where = {"epoch": 1, "batch": 7}
    assert v("diverged", _record([1.0, 2.0]), None, 0.1, where)[0] == "diverges"
    assert "batch 7" in v("diverged", _record([1.0]), None, 0.1, where)[1]
    assert v("finished", _record([1.0, 2e3]), 0.5, 0.1)[0] == "explodes"  # finite loss, variance x2000
    assert v("finished", _record([1.0, None]), 0.5, 0.1)[0] == "explodes"  # non-finite statistic
    assert v("finished", _record([1.0, 9e2]), 0.12, 0.1)[0] == "learns slowly"  # below x1000, near chance
    verdict, why = v("finished", _record([1.0, 1e-3], end_var=1e-16), 0.1, 0.1)  # near chance, gradient gone
    assert verdict == "stops learning" and "x1.0e-16" in why
    assert v("finished", _record([1.0], end_var=0.011), 0.1, 0.1)[0] == "learns slowly"  # fell < x100
    assert v("finished", _record([1.0], end_var=0.01), 0.1, 0.1)[0] == "stops learning"  # fell x100
    dead = _record([1.0])
    for point, sign in zip(dead["points"], (0.2, 0.04)):  # the output side's ReLUs pass nothing any more
        point["blocks"]["scale2.block0"]["sign_diversity"] = sign
    verdict, why = v("finished", dead, 0.1, 0.1)
    assert verdict == "stops learning" and "sign diversity 0.200 at init, 0.040" in why
    assert v("finished", _record([1.0, 1.0], end_var=1e-16), 0.16, 0.1)[0] == "learns"  # above chance + 5
    assert v("finished", {"points": [], "steps": []}, None, 0.1)[0] == "stops learning"
    assert block_variance.first_epoch_growth(_record([1.0, 50.0], init_var=0.5)) == 100.0
