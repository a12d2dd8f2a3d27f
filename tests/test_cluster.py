"""The studies' rows as submitit jobs (experiments.launch): local executor always, a real SLURM cluster when up.

Local tests run real subprocesses through submitit's local executor. The ``slurm`` tests need the one-node
cluster of tests/slurm_cluster.sh (root: ``sudo tests/slurm_cluster.sh``); without it they skip, unless
MINIGRAD_REQUIRE_SLURM=1 (set by .ci/run after starting it) turns the skip into a failure.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from fake_cifar import make_fake_cifar

from experiments import launch, study, vgg_depth
from experiments.study import row_name
from minigrad.runs import load_metrics, load_summary

REPO = Path(__file__).resolve().parent.parent
JOB = study.job_function(vgg_depth.STUDY)  # "experiments.vgg_depth:STUDY.run_row_job"
pytest.importorskip("submitit", reason='the cluster tests need submitit: pip install -e ".[test]"')


@pytest.fixture(scope="module")
def fake_cifar(tmp_path_factory):
    """Fake CIFAR-10, and Numba's on-disk cache warmed by one tiny row in this process, so that jobs running
    side by side load the compiled kernels instead of each compiling them."""
    folder = tmp_path_factory.mktemp("data")
    make_fake_cifar(folder, "cifar10", n_train=200, n_test=30)
    args = study_args(folder, tmp_path_factory.mktemp("warm"), "none", epochs=1)
    vgg_depth.STUDY.run_row_job(vgg_depth.STUDY.row_config(args, "VGG08", 1e-3), args.out, row="VGG08-lr1e-3",
                                data_dir=folder, progress=False)
    return folder


@pytest.fixture
def data(fake_cifar, monkeypatch):
    """The fake data, in an environment in which a job imports this checkout."""
    path = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", str(REPO) + (os.pathsep + path if path else ""))
    return fake_cifar


def study_flags(data, out, launcher, *extra, epochs=2, cpus=1):
    return ["--data-dir", str(data), "--out", str(out), "--epochs", str(epochs), "--train-subset", "100",
            "--val-size", "20", "--batch-size", "20", "--no-progress", "--launcher", launcher,
            *(["--cpus-per-job", str(cpus)] if cpus else []), *extra]


def study_args(*flags, **kwargs):
    return study.parse_args(vgg_depth.STUDY, study_flags(*flags, **kwargs))[1]


def rows_of(args, *models_lrs):
    return [(row_name(m, lr), vgg_depth.STUDY.row_config(args, m, lr)) for m, lr in models_lrs]


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def epochs_done(row_dir):
    try:
        return len(load_metrics(row_dir))
    except (OSError, ValueError):
        return 0


def job_of(out, row):
    record = json.loads((out / launch.JOBS_FILE).read_text())
    return next(r for r in record["rows"] if r["row"] == row)


def own_record(out, row):
    entry = job_of(out, row)
    return json.loads((Path(entry["stderr"]).parent / f"{entry['job_id']}_row.json").read_text())


def without_seconds(rows):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def assert_resumed_exactly(interrupted, reference, before):
    """Same metrics as the reference (seconds aside); the epochs done before the signal were not redone."""
    got, want = load_metrics(interrupted), load_metrics(reference)
    assert len(got) == len(want) and without_seconds(got) == without_seconds(want)
    # resume may redo the epoch being saved when the signal came, never the ones before it
    assert got[:len(before) - 1] == before[:-1] and len(before) >= 2
    a, b = load_summary(interrupted), load_summary(reference)
    assert a["status"] == b["status"] == "finished"
    assert (a["test_acc"], a["best_val_acc"], a["best_epoch"]) == (b["test_acc"], b["best_val_acc"], b["best_epoch"])


# ----------------------------------------------------------------------------------------- local executor
def test_local_rows_run_collect_and_a_failing_row_is_reported(data, tmp_path, capsys):
    out = tmp_path / "out"
    args = study_args(data, out, "local", "--max-parallel", "3")
    # VGG09 is no VGG depth (8 + 6k): that row fails inside its job, after submission
    rows = rows_of(args, ("VGG08", 1e-3), ("VGG08", 1e-2), ("VGG09", 1e-3))
    result = launch.launch_rows(JOB, rows, args, study="vgg_depth", poll_s=0.2)
    printed = capsys.readouterr().out
    assert result.code == 1 and result.waited and [e["row"] for e in result.submitted] == [n for n, _ in rows]
    for entry in result.submitted:
        assert re.search(rf"{re.escape(entry['row'])}\s+job {entry['job_id']}\s+log ", printed)
    assert f"python -m experiments.vgg_depth --collect {out}" in printed
    assert re.search(r"\[VGG09-lr1e-3\] failed \(job \d+\): ValueError: VGG09: depth must be 8 \+ 6k.*; log ", printed)

    for name in ("VGG08-lr1e-3", "VGG08-lr1e-2"):
        assert load_summary(out / name)["status"] == "finished" and epochs_done(out / name) == 2
        assert own_record(out, name)["threads"] == 1  # --cpus-per-job 1 became the job's thread count
    bad = {s.row: s for s in launch.row_states(out)}["VGG09-lr1e-3"]
    assert bad.status == "failed" and "depth must be 8 + 6k" in bad.detail
    assert bad.log.is_file() and "depth must be 8 + 6k" in bad.log.read_text()  # the traceback is in the log

    assert vgg_depth.main(["--collect", str(out), "--out", str(tmp_path / "table")]) == 0
    printed = capsys.readouterr().out
    manifest = json.loads((tmp_path / "table" / "manifest.json").read_text())
    assert {r["row"]: r["status"] for r in manifest["rows"]} == {
        "VGG08-lr1e-3": "finished", "VGG08-lr1e-2": "finished", "VGG09-lr1e-3": "failed"}
    assert (tmp_path / "table" / "training_curves.png").is_file()
    assert "Rows: 2 finished, 1 failed, 2 missing" in printed  # missing: the quick preset's other rows
    assert re.search(rf"failed\s+VGG09-lr1e-3  job \d+: ValueError.*; log {re.escape(str(bad.log))}", printed)
    assert re.search(r"missing\s+VGG38-lr1e-3", printed)

    # a second submission reuses the finished rows: nothing is submitted
    assert launch.launch_rows(JOB, rows[:2], args, study="vgg_depth").code == 0
    assert "reusing" in capsys.readouterr().out and len(json.loads((out / "jobs.json").read_text())["rows"]) == 3


def test_resnet_bn_rows_as_local_jobs_then_collected(data, tmp_path, capsys):
    """The other long study takes the same --launcher: its rows run as jobs and its --collect says what ran."""
    from experiments import resnet_bn
    out = tmp_path / "resnet"
    tiny = ["--width", "2", "--blocks-per-scale", "1", "--batch-size", "16", "--n-val", "20", "--train-subset", "64",
            "--epochs", "1", "--no-progress", "--data-dir", str(data), "--out", str(out)]
    assert resnet_bn.main(tiny + ["--launcher", "local", "--cpus-per-job", "1", "--max-parallel", "2"]) == 0
    printed = capsys.readouterr().out
    assert f"python -m experiments.resnet_bn --collect {out.absolute()}" in printed
    assert all(f"| {m} |" in (out / "results.md").read_text() for m in ("Model-1", "Model-2", "Model-3"))
    for row in ("Model-1-lr1e-1", "Model-2-lr1e-1", "Model-3-lr1e-1"):
        assert load_summary(out / row)["status"] in ("finished", "diverged")
        assert own_record(out, row)["threads"] == 1
    assert resnet_bn.main(["--collect", str(out), "--out", str(tmp_path / "table")]) == 0
    rows_line = [line for line in capsys.readouterr().out.splitlines() if line.startswith("Rows: ")]
    assert len(rows_line) == 1 and not re.search(r"failed|missing|running|pending", rows_line[0]), rows_line


@pytest.mark.parametrize("command, flags, rows", [
    ("gsc", ["--preset", "quick", "--datasets", "2", "--points", "64", "--depth", "4", "--arch", "ReLU", "SeLU"],
     ["ReLU", "SeLU"]),
    ("init", ["--depth", "4", "--width", "16", "--batch", "16", "--activations", "relu", "--inits", "he_normal",
              "normal_1", "--patterns", "--input-scales"], ["relu-he_normal", "relu-normal_1"]),
])
def test_measurement_studies_as_local_jobs_then_collected(data, tmp_path, capsys, command, flags, rows):
    """The GSC and init studies take --launcher and --collect from the machinery too."""
    import importlib
    module = importlib.import_module(f"experiments.{command}")
    out = tmp_path / command
    assert module.main(flags + ["--out", str(out), "--no-progress", "--launcher", "local", "--cpus-per-job", "1",
                                "--max-parallel", "2"]) == 0
    for row in rows:
        assert load_summary(out / row)["status"] == "finished" and own_record(out, row)["threads"] == 1
    table = tmp_path / "table"
    assert module.main(["--collect", str(out), "--out", str(table)]) == 0
    assert (table / "results.csv").read_text().count("\n") == 1 + len(rows)
    manifest = json.loads((table / "manifest.json").read_text())
    assert sorted((r["row"], r["status"]) for r in manifest["rows"]) == sorted((row, "finished") for row in rows)


def test_local_row_interrupted_by_a_signal_is_requeued_and_ends_as_an_uninterrupted_one(data, tmp_path, capsys):
    """SIGUSR2 (what SLURM sends before a time limit or on preemption) to a running row's process."""
    outs = {which: tmp_path / which for which in ("interrupted", "reference")}
    results = {}

    def submit(which):
        flags = study_flags(data, outs[which], "local", epochs=6)
        if which == "reference":  # through the command line, as a user would
            results[which] = vgg_depth.main(flags + ["--model", "VGG08"])
        else:
            args = study.parse_args(vgg_depth.STUDY, flags)[1]
            rows = rows_of(args, ("VGG08", 1e-3))
            results[which] = launch.launch_rows(JOB, rows, args, poll_s=0.2).code

    threads = [threading.Thread(target=submit, args=(which,)) for which in outs]
    for thread in threads:
        thread.start()
    row = outs["interrupted"] / "VGG08-lr1e-3"
    try:
        wait_for(lambda: epochs_done(row) >= 2, 120, "two epochs of the row")
        before = load_metrics(row)
        assert len(before) < 6, "the row finished before it could be interrupted"
        os.kill(own_record(outs["interrupted"], "VGG08-lr1e-3")["pid"], signal.SIGUSR2)
    finally:
        for thread in threads:
            thread.join(timeout=180)
    printed = capsys.readouterr().out
    assert results == {"interrupted": 0, "reference": 0}, printed
    reference = job_of(outs["reference"], "VGG08-lr1e-3")
    assert re.search(rf"VGG08-lr1e-3\s+job {reference['job_id']}\s+log {re.escape(reference['stdout'])}", printed)
    assert f"Collect again any time: python -m experiments.vgg_depth --collect {outs['reference']}" in printed
    assert "| VGG08 |" in printed and "Rows: 1 finished" in printed  # the table, after waiting for the job
    record = own_record(outs["interrupted"], "VGG08-lr1e-3")
    assert record["state"] == "finished" and record["attempt"] == 2
    log = Path(job_of(outs["interrupted"], "VGG08-lr1e-3")["stdout"]).read_text()
    assert "interrupted: requeued" in log and re.search(r"resumed \S+ from epoch [1-5]/6", log)
    assert_resumed_exactly(row, outs["reference"] / "VGG08-lr1e-3", before)


# ----------------------------------------------------------------------------------------- refusals, states
def test_submission_refused_before_anything_is_submitted(data, tmp_path, capsys):
    out = tmp_path / "out"
    args = study_args(data, out, "local")
    name, config = rows_of(args, ("VGG08", 1e-3))[0]
    (out / name).mkdir(parents=True)
    (out / name / "config.json").write_text(json.dumps({**config, "epochs": 7}))
    assert launch.launch_rows(JOB, [(name, config)], args).code == 2
    assert "epochs: saved 7, given 2" in capsys.readouterr().err
    assert not (out / launch.JOBS_FOLDER).exists() and not (out / launch.JOBS_FILE).exists()

    args = study_args(data, tmp_path / "o2", "local", "--dataset", "cifar100")
    assert launch.launch_rows(JOB, rows_of(args, ("VGG08", 1e-3)), args).code == 2
    assert "cifar-100-python.tar.gz" in capsys.readouterr().err and not (tmp_path / "o2" / "jobs").exists()

    with pytest.raises(launch.LauncherError, match="--cpus-per-job must be a positive"):
        launch.LaunchOptions("slurm", cpus_per_job=0)
    with pytest.raises(launch.LauncherError, match="--partition is a SLURM setting"):
        launch.LaunchOptions("local", partition="gpu")


def test_without_submitit_the_launcher_says_how_to_install_it(data, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit -> ImportError
    code = vgg_depth.main(["--model", "VGG08", "--data-dir", str(data), "--out", str(tmp_path / "o"),
                           "--launcher", "slurm"])
    assert code == 2 and 'pip install -e ".[cluster]"' in capsys.readouterr().err


def test_importing_the_library_and_studies_does_not_import_submitit():
    code = ("import sys, minigrad, experiments.launch, experiments.vgg_depth; "
            "assert 'submitit' not in sys.modules, 'submitit imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_job_threads_follow_the_cpus_slurm_gave(monkeypatch):
    from minigrad.threads import available_cores
    monkeypatch.delenv("SLURM_CPUS_ON_NODE", raising=False)
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    assert launch.job_threads(1) == 1 and launch.job_threads(None) == launch.job_threads(10**6) >= 1
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    assert launch.job_threads(8) == 1
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", str(10**6))  # never more than this process may use
    assert launch.job_threads(1) == min(available_cores(), launch.job_threads(None))


def test_row_states_from_records(tmp_path):
    """Rows whose job still runs, died without a result, failed, or never got a folder."""
    out, jobs = tmp_path / "out", tmp_path / "out" / "jobs"
    jobs.mkdir(parents=True)
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "submitit"])
    dead = subprocess.Popen([sys.executable, "-c", "pass", "submitit"])
    dead.wait()
    try:
        entries = []
        for row, job_id in (("A-lr1e-3", alive.pid), ("B-lr1e-3", dead.pid), ("C-lr1e-3", dead.pid + 10**7)):
            (out / row).mkdir()
            (out / row / "config.json").write_text(json.dumps({"epochs": 3}))
            entries.append({"row": row, "job_id": str(job_id), "launcher": "local",
                            "stdout": str(jobs / f"{job_id}_0_log.out"), "stderr": str(jobs / f"{job_id}_0_log.err")})
        (out / "jobs.json").write_text(json.dumps({"preset": "quick", "rows": entries}))
        (out / "B-lr1e-3" / "metrics.csv").write_text("epoch,train_loss,train_acc,val_loss,val_acc,lr,seconds\n"
                                                      "1,2.0,0.1,2.0,0.1,0.001,1.0\n")
        (jobs / f"{dead.pid}_row.json").write_text(json.dumps({"state": "running"}))
        (jobs / f"{dead.pid + 10**7}_row.json").write_text(json.dumps({"state": "failed", "error": "KeyError: 'x'"}))
        states = {s.row: s for s in launch.row_states(out, expected=["D-lr1e-3"])}
    finally:
        alive.kill()
        alive.wait()
    assert states["A-lr1e-3"].status == "running" and "no epoch done yet" in states["A-lr1e-3"].detail
    assert states["B-lr1e-3"].status == "failed" and "1/3 epochs" in states["B-lr1e-3"].detail
    assert states["B-lr1e-3"].log == jobs / f"{dead.pid}_0_log.err"
    assert states["C-lr1e-3"].status == "failed" and states["C-lr1e-3"].detail == "KeyError: 'x'"
    assert states["D-lr1e-3"].status == "missing"
    lines = launch.describe_states(list(states.values()))
    assert lines[0] == "Rows: 1 running, 2 failed, 1 missing"


# ----------------------------------------------------------------------------------------- SLURM, faked
def fake_command(folder, name, output, code=0, stderr=""):
    """An executable ``name`` in ``folder`` that logs its arguments and prints ``output``."""
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_text(f"#!/bin/sh\necho \"$@\" >> {folder / (name + '.args')}\ncat <<'EOF'\n{output}EOF\n"
                    f"echo '{stderr}' >&2\nexit {code}\n")
    path.chmod(0o755)
    return path


SINFO = """cpu*|8|32000|1-00:00:00
cpu*|8|32000|1-00:00:00
cpu*|16|64000+|1-00:00:00
gpu|4|16000|2:00:00
gpu|N/A|N/A|2:00:00
"""


def test_partition_limits_come_from_sinfo(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    fake_command(bin_dir, "sinfo", SINFO)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    cpu = launch.partition_limits()  # the default partition (sinfo marks it with *)
    assert cpu == launch.PartitionLimits("cpu", ((8, 32000), (8, 32000), (16, 64000)), 1440)
    assert launch.partition_limits("gpu") == launch.PartitionLimits("gpu", ((4, 16000),), 120)
    assert "--all" in (bin_dir / "sinfo.args").read_text() and "--Node" in (bin_dir / "sinfo.args").read_text()
    with pytest.raises(launch.LauncherError, match=r"--partition nope: SLURM has no such partition \(sinfo lists: cpu, gpu\)"):
        launch.partition_limits("nope")
    fake_command(bin_dir, "sinfo", SINFO.replace("*", ""))
    with pytest.raises(launch.LauncherError, match="no default partition: choose one with --partition"):
        launch.partition_limits()
    fake_command(bin_dir, "sinfo", "", code=1, stderr="slurm_load_partitions: Unable to contact slurm controller")
    with pytest.raises(launch.LauncherError, match="Unable to contact slurm controller"):
        launch.partition_limits()


@pytest.mark.parametrize("text, minutes", [("infinite", None), ("45", 45), ("30:00", 30), ("10:59", 10),
                                           ("2:00:00", 120), ("1-00:00:00", 1440), ("2-12", 3600), ("1-02:03", 1563)])
def test_slurm_time_limits_in_minutes(text, minutes):
    assert launch._slurm_minutes(text) == minutes


def test_defaults_fit_the_partition_and_requests_no_node_can_run_are_refused():
    two = launch.PartitionLimits("debug", ((2, 2000),), None)
    assert two.fit() == (2, 1440)  # 4 CPUs by default, but no node has 4: the one-node test cluster
    assert two.fit(cpus=1, mem_gb=1.5, minutes=10) == (1, 10)
    with pytest.raises(launch.LauncherError, match=r"--cpus-per-job 3: no node of partition 'debug' has that many "
                                                   r"CPUs \(the largest has 2\); ask for at most 2"):
        two.fit(cpus=3)
    with pytest.raises(launch.LauncherError, match=r"--mem-gb 2: no node .*the largest has 2\.0 GB"):
        two.fit(mem_gb=2)
    big = launch.PartitionLimits("cpu", ((16, 8 * 1024), (4, 64 * 1024)), 120)
    assert big.fit() == (4, 120)  # the partition's time limit is shorter than the default 1440
    assert big.fit(mem_gb=32) == (4, 120)
    with pytest.raises(launch.LauncherError, match="--time-limit 121: partition 'cpu' allows at most 120 minutes"):
        big.fit(minutes=121)
    with pytest.raises(launch.LauncherError, match=r"--cpus-per-job 8 with --mem-gb 32: no node .* has both "
                                                   r"\(the nodes with 32 GB have at most 4 CPUs\)"):
        big.fit(cpus=8, mem_gb=32)
    assert launch.LaunchOptions("slurm").resolved(3, two).cpus_per_job == 2
    assert launch.LaunchOptions("slurm", cpus_per_job=1).resolved(3, big).time_limit == 120


def test_a_request_no_node_can_run_is_refused_before_anything_is_submitted(data, tmp_path, monkeypatch, capsys):
    bin_dir = tmp_path / "bin"
    fake_command(bin_dir, "sinfo", "debug*|2|4000|infinite\n")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    out = tmp_path / "out"
    for flags, message in ((["--cpus-per-job", "4"], "--cpus-per-job 4: no node of partition 'debug' has that many"),
                           (["--mem-gb", "8"], "--mem-gb 8: no node of partition 'debug' has that much memory"),
                           (["--partition", "gpu"], "--partition gpu: SLURM has no such partition")):
        code = vgg_depth.main(study_flags(data, out, "slurm", "--model", "VGG08", *flags, cpus=None))
        assert code == 2 and message in capsys.readouterr().err
        assert not out.exists()


def test_collect_shows_why_a_slurm_job_pends(tmp_path, monkeypatch):
    out, jobs, bin_dir = tmp_path / "out", tmp_path / "out" / "jobs", tmp_path / "bin"
    jobs.mkdir(parents=True)
    fake_command(bin_dir, "squeue", "7_0|PENDING|PartitionConfig\n7_1|PENDING|Priority\n8_0|PENDING|None\n"
                                    "9_0|RUNNING|None\n")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    rows = {"A-lr1e-3": "7_0", "B-lr1e-3": "7_1", "C-lr1e-3": "8_0", "D-lr1e-3": "9_0"}
    entries = [{"row": row, "job_id": job_id, "launcher": "slurm", "stdout": str(jobs / f"{job_id}_0_log.out"),
                "stderr": str(jobs / f"{job_id}_0_log.err")} for row, job_id in rows.items()]
    (out / "jobs.json").write_text(json.dumps({"preset": "quick", "rows": entries}))
    states = {s.row: s for s in launch.row_states(out)}
    assert [states[row].status for row in rows] == ["pending", "pending", "pending", "running"]
    assert states["A-lr1e-3"].detail.startswith("pending (reason PartitionConfig: it asks for more CPUs or memory "
                                                "than any node of its partition has, so it will never start; "
                                                "scancel 7 and submit again with a smaller --cpus-per-job")
    assert states["B-lr1e-3"].detail.startswith("pending (reason Priority); ")
    assert states["C-lr1e-3"].detail.startswith("pending; ") and states["D-lr1e-3"].detail.startswith("running; ")
    lines = launch.describe_states(list(states.values()))
    assert lines[0] == "Rows: 1 running, 3 pending"
    assert any("A-lr1e-3  job 7_0: pending (reason PartitionConfig" in line for line in lines)


# ----------------------------------------------------------------------------------------- real SLURM
def _cluster_problem():
    for exe in ("sbatch", "squeue", "scontrol", "scancel", "srun"):
        if shutil.which(exe) is None:
            return f"{exe} not found (sudo tests/slurm_cluster.sh starts a one-node cluster)"
    ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, check=False)
    if "UP" not in ping.stdout:
        return "no slurmctld answers (sudo tests/slurm_cluster.sh)"
    state = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, check=False).stdout.split()
    if not set(state) & {"idle", "mix", "alloc"}:
        return f"no usable node (sinfo: {state})"
    return None


@pytest.fixture
def slurm_cluster():
    problem = _cluster_problem()
    if problem:
        if os.environ.get("MINIGRAD_REQUIRE_SLURM") == "1":
            pytest.fail(f"MINIGRAD_REQUIRE_SLURM=1 but {problem}")
        pytest.skip(problem)


def _squeue(job_id):
    out = subprocess.run(["squeue", "-h", "-r", "-j", job_id.split("_")[0], "-o", "%i %T %r"],
                         capture_output=True, text=True, check=False).stdout
    return {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.strip()}.get(job_id)


def _queued(job_ids):
    out = subprocess.run(["squeue", "-h", "-j", job_ids], capture_output=True, text=True, check=False)
    return out.returncode != 0 and "Invalid job id" not in out.stderr or bool(out.stdout.strip())


@pytest.mark.slurm
def test_slurm_rows_preempted_requeued_and_collected(slurm_cluster, data, tmp_path, capsys):
    """Two job arrays on the real cluster; one row gets scancel --signal=USR2, is requeued and resumes."""
    outs = {which: tmp_path / which for which in ("interrupted", "reference")}
    submitted = {}
    for which, models in (("interrupted", [("VGG08", 1e-3)]), ("reference", [("VGG08", 1e-3), ("VGG09", 1e-3)])):
        args = study_args(data, outs[which], "slurm", "--time-limit", "60", "--partition", "debug", "--mem-gb", "1",
                          "--max-parallel", "1", epochs=6)
        result = launch.launch_rows(JOB, rows_of(args, *models), args)
        assert result.code == 0 and not result.waited, capsys.readouterr()
        submitted[which] = result.submitted
    printed = capsys.readouterr().out
    assert "to SLURM as job array" in printed and "Collect:     python -m experiments.vgg_depth --collect" in printed
    array = submitted["reference"][0]["job_id"].split("_")[0]
    script = (outs["reference"] / "jobs" / f"{array}_submission.sh").read_text()
    for line in ("--array=0-1%1", "--time=60", "--signal=USR2@90", "--cpus-per-task=1", "--mem=1GB",
                 "--partition=debug"):  # the options, and SIGUSR2 90 s before the time limit
        assert f"#SBATCH {line}\n" in script, line
    job_id = submitted["interrupted"][0]["job_id"]
    row = outs["interrupted"] / "VGG08-lr1e-3"
    try:
        wait_for(lambda: epochs_done(row) >= 2, 180, "two epochs of the SLURM row")
        before = load_metrics(row)
        assert len(before) < 6, "the row finished before it could be interrupted"
        assert {s.row: s.status for s in launch.row_states(outs["interrupted"])}["VGG08-lr1e-3"] == "running"
        subprocess.run(["scancel", "--signal=USR2", job_id], check=True)
        # SLURM holds a requeued job back (BeginTime, about two minutes); let it start again at once
        state = wait_for(lambda: (_squeue(job_id) or [None])[0] == "PENDING" and _squeue(job_id), 60, "the requeue")
        assert {s.row: s.status for s in launch.row_states(outs["interrupted"])}["VGG08-lr1e-3"] == "pending"
        if "BeginTime" in state:
            # not within the second of the kill: slurmd refuses a credential issued in the second it revoked
            # the old one ("Job credential revoked"), which is why SLURM delays a requeued job's start
            time.sleep(2.5)
            subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], check=True)
        arrays = ",".join(entries[0]["job_id"].split("_")[0] for entries in submitted.values())
        wait_for(lambda: not _queued(arrays), 300, "the jobs to leave the queue")
    finally:
        for entries in submitted.values():
            subprocess.run(["scancel", entries[0]["job_id"].split("_")[0]], capture_output=True, check=False)
    assert {s.row: s.status for s in launch.row_states(outs["reference"])} == {
        "VGG08-lr1e-3": "finished", "VGG09-lr1e-3": "failed"}
    record = own_record(outs["interrupted"], "VGG08-lr1e-3")
    log = Path(submitted["interrupted"][0]["stdout"]).read_text()
    assert record["state"] == "finished" and record["attempt"] == 2 and record["threads"] == 1, (record, log)
    assert "interrupted: requeued" in log and re.search(r"resumed \S+ from epoch [1-5]/6", log)
    assert_resumed_exactly(row, outs["reference"] / "VGG08-lr1e-3", before)

    assert vgg_depth.main(["--collect", str(outs["reference"]), "--out", str(tmp_path / "table")]) == 0
    printed = capsys.readouterr().out
    failed = submitted["reference"][1]
    assert re.search(rf"failed\s+VGG09-lr1e-3  job {failed['job_id']}: ValueError: VGG09: depth must be 8 \+ 6k"
                     rf".*; log {re.escape(failed['stderr'])}", printed)
    assert "depth must be 8 + 6k" in Path(failed["stderr"]).read_text()
    assert "| VGG08 |" in (tmp_path / "table" / "results.md").read_text()


def _largest_node_cpus():
    """The most CPUs a node of the default partition has, asked of sinfo here (not through launch)."""
    out = subprocess.run(["sinfo", "-h", "-N", "-o", "%P %c"], capture_output=True, text=True, check=True).stdout
    return max(int(cpus.rstrip("+")) for part, cpus in (line.split() for line in out.splitlines()) if part.endswith("*"))


@pytest.mark.slurm
def test_slurm_default_run_fits_the_node_and_completes(slurm_cluster, data, tmp_path, capsys):
    """No --cpus-per-job, --mem-gb or --partition: the job asks for what a node of the default partition has
    (the one-node test cluster has 2 CPUs: the old default of 4 pended forever with reason PartitionConfig)."""
    largest = _largest_node_cpus()
    out = tmp_path / "out"
    assert vgg_depth.main(study_flags(data, out, "slurm", "--model", "VGG08", epochs=1, cpus=None)) == 0
    printed = capsys.readouterr().out
    assert re.search(rf"SLURM partition \S+: \d+ node\(s\), the largest {largest} CPUs", printed), printed
    entry = job_of(out, "VGG08-lr1e-3")
    script = (out / "jobs" / f"{entry['job_id'].split('_')[0]}_submission.sh").read_text()
    assert f"#SBATCH --cpus-per-task={min(4, largest)}\n" in script and "--mem" not in script
    try:
        wait_for(lambda: not _queued(entry["job_id"].split("_")[0]), 300, "the default job to finish")
    finally:
        subprocess.run(["scancel", entry["job_id"].split("_")[0]], capture_output=True, check=False)
    assert load_summary(out / "VGG08-lr1e-3")["status"] == "finished", Path(entry["stderr"]).read_text()
    assert own_record(out, "VGG08-lr1e-3")["threads"] == min(4, largest, os.cpu_count())
    # and what no node has is refused at once, naming the limit and the flag
    for flags, message in ((["--cpus-per-job", str(largest + 1)], f"the largest has {largest}); ask for at most "
                                                                  f"{largest}"),
                           (["--mem-gb", "100000"], "--mem-gb 100000: no node of partition"),
                           (["--partition", "no-such-partition"], "--partition no-such-partition: SLURM has no such")):
        code = vgg_depth.main(study_flags(data, tmp_path / "refused", "slurm", "--model", "VGG08", *flags, cpus=None))
        assert code == 2 and message in capsys.readouterr().err, flags
        assert not (tmp_path / "refused").exists()


@pytest.mark.slurm
def test_slurm_collect_says_why_a_job_pends(slurm_cluster, data, tmp_path, monkeypatch, capsys):
    """A job asking for more CPUs than any node has (let through by pretending sinfo saw a larger node) pends
    with reason PartitionConfig: --collect says so, and that it will never start."""
    largest = _largest_node_cpus()
    monkeypatch.setattr(launch, "partition_limits",
                        lambda partition=None: launch.PartitionLimits("debug", ((largest + 1, 10**6),), None))
    out = tmp_path / "out"
    flags = study_flags(data, out, "slurm", "--model", "VGG08", epochs=1, cpus=largest + 1)
    assert vgg_depth.main(flags) == 0
    array = job_of(out, "VGG08-lr1e-3")["job_id"].split("_")[0]
    try:
        state = wait_for(lambda: {s.row: s for s in launch.row_states(out)}["VGG08-lr1e-3"]
                         if "PartitionConfig" in (_squeue(f"{array}_0") or _squeue(array) or [""])[-1] else None,
                         60, "SLURM to give the pending job its reason")
        assert state.status == "pending"
        assert "reason PartitionConfig: it asks for more CPUs or memory than any node" in state.detail
        assert f"never start; scancel {array} and submit again with a smaller --cpus-per-job" in state.detail
        capsys.readouterr()
        assert vgg_depth.main(["--collect", str(out), "--out", str(tmp_path / "table")]) == 0
        assert re.search(r"pending\s+VGG08-lr1e-3  job \S+: pending \(reason PartitionConfig", capsys.readouterr().out)
    finally:
        subprocess.run(["scancel", array], capture_output=True, check=False)
