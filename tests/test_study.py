"""The study machinery (experiments/study.py): a toy study declared in a few lines gets the shared flags,
run folders and re-run rules, setup vs row errors, the table, manifest, figures and the report; and every
study's command line answers bad input with one line, never a traceback."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from experiments import study
from experiments.study import Preset, Study, row_name
from minigrad.runs import load_summary, write_json_atomic

REPO = Path(__file__).resolve().parent.parent


class Squares(Study):
    """A measurement study: row k writes k^2 (row ``boom`` fails, row ``nodata`` is a setup error)."""

    name = "squares"
    title = "Squares"
    presets = {"quick": Preset("k = 1, 2, 3", ks=(1, 2, 3)), "full": Preset("k = 1..5", ks=(1, 2, 3, 4, 5))}
    columns = [("k", "k", "int"), ("square", "k^2", "int"), ("status", "Status", None)]
    row_figure_names = ("square.txt",)
    row_figure_sources = ("summary.json",)

    def __init__(self):
        self.drawn = []

    def add_arguments(self, parser):
        parser.add_argument("--k", type=int, nargs="+", default=None)

    def uses_data(self, args):
        return False

    def rows(self, args):
        ks = args.k or self.presets[args.preset].ks
        return [(row_name(f"k{k}"), {"study": self.name, "preset": args.preset, "k": k, "seed": args.seed})
                for k in ks]

    def run_row(self, row):
        k = row.config["k"]
        if k < 0:
            raise ArithmeticError(f"negative k {k}")
        if k == 0:
            raise study.SetupError("no data for k = 0")
        summary = {"status": "finished", "k": k, "square": k * k}
        write_json_atomic(row.path / "summary.json", summary)
        return summary

    def record(self, folder):
        summary = load_summary(folder)
        return {"row": folder.name, "folder": str(folder), "k": summary.get("k"), "square": summary.get("square"),
                "status": summary["status"]}

    def findings(self, records, folders):
        return [f"sum of squares {sum(r['square'] or 0 for r in records)}"]

    def draw_row_figures(self, folder):
        self.drawn.append(folder.name)
        (folder / "square.txt").write_text(str(load_summary(folder).get("square")))
        return [folder / "square.txt"]


def test_a_toy_study_runs_reuses_and_reports(tmp_path, capsys):
    toy = Squares()
    out = tmp_path / "out"
    assert study.main(toy, ["--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "Squares, preset quick: 3 row(s)" in printed and "Everything is in" in printed
    table = (out / "results.md").read_text()
    assert "| 2 | 4 | finished |" in table and "- sum of squares 14" in table
    assert (out / "results.csv").read_text().splitlines() == ["k,square,status", "1,1,finished", "2,4,finished",
                                                               "3,9,finished"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["study"] == "squares" and [r["row"] for r in manifest["rows"]] == ["k1", "k2", "k3"]
    assert sorted(toy.drawn) == ["k1", "k2", "k3"]  # drawn once, after each row
    # a re-run reuses every row and redraws nothing (the figures are newer than their sources)
    toy.drawn.clear()
    assert study.main(toy, ["--out", str(out), "--no-progress"]) == 0
    assert capsys.readouterr().out.count("already finished; reusing") == 3 and toy.drawn == []
    # a row whose data changed has a stale figure: --collect redraws it, and only it
    write_json_atomic(out / "k2" / "summary.json", {**load_summary(out / "k2"), "square": 4})
    assert study.main(toy, ["--collect", str(out), "--out", str(tmp_path / "table")]) == 0
    assert toy.drawn == ["k2"]


def test_only_list_print_commands_and_config_changes(tmp_path, capsys):
    toy = Squares()
    out = tmp_path / "out"
    assert study.main(toy, ["--list", "--preset", "full"]) == 0
    assert capsys.readouterr().out.splitlines() == ["preset full: k = 1..5", "  k1", "  k2", "  k3", "  k4", "  k5"]
    assert study.main(toy, ["--print-commands", "--out", str(out), "--k", "4", "5"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[1].endswith(f"--out {out} --k 4 5 --only k5 --resume")
    assert study.main(toy, ["--out", str(out), "--only", "k2", "--no-progress"]) == 0
    assert [p.name for p in out.iterdir() if p.is_dir()] == ["k2"]
    with pytest.raises(SystemExit) as info:
        study.main(toy, ["--out", str(out), "--only", "k9"])
    assert info.value.code == 2 and "no row named k9" in capsys.readouterr().err
    # another seed over the same folder: the differing setting is named, nothing is overwritten
    assert study.main(toy, ["--out", str(out), "--only", "k2", "--seed", "3"]) == 2
    assert "seed: saved 0, given 3" in capsys.readouterr().err


def test_row_errors_are_recorded_and_setup_errors_stop_the_study(tmp_path, capsys):
    toy = Squares()
    out = tmp_path / "out"
    assert study.main(toy, ["--out", str(out), "--k", "1", "-1", "2", "--no-progress"]) == 1
    captured = capsys.readouterr()
    assert "error: row k-1 failed: ArithmeticError: negative k -1" in captured.err
    assert load_summary(out / "k-1")["status"] == "failed" and load_summary(out / "k2")["status"] == "finished"
    manifest = json.loads((out / "manifest.json").read_text())
    assert [(r["row"], r["status"]) for r in manifest["rows"]] == [("k1", "finished"), ("k-1", "failed"),
                                                                    ("k2", "finished")]
    # a failed row is unfinished: re-running asks for --resume
    assert study.main(toy, ["--out", str(out), "--k", "-1"]) == 2 and "--resume" in capsys.readouterr().err
    # a setup error stops at once: one line, exit 2, the rows after it never start
    assert study.main(toy, ["--out", str(tmp_path / "b"), "--k", "0", "3", "--no-progress"]) == 2
    assert "error: no data for k = 0" in capsys.readouterr().err and not (tmp_path / "b" / "k3").exists()


def _cli(*argv):
    return subprocess.run([sys.executable, "-m", *argv], cwd=REPO, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("command", ["experiments.vgg_depth", "experiments.resnet_bn", "experiments.gsc",
                                     "experiments.init", "experiments.normalization",
                                     "experiments.degradation"])
def test_every_study_answers_bad_input_in_one_line(command, tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    for argv, words in ((["--out", str(a_file)], "is an existing file"),
                        (["--out", str(a_file / "below")], "is a file"),
                        (["--threads", "0"], "argument --threads"),
                        (["--seed", "-1"], "argument --seed"),
                        (["--preset", "huge"], "argument --preset"),
                        (["--only", "nothing"], "no row named nothing")):
        result = _cli(command, *argv, "--no-progress")
        assert result.returncode == 2, (argv, result.stderr)
        assert "Traceback" not in result.stderr and words in result.stderr, (argv, result.stderr)
    # a folder nothing can be written to (a pseudo file system: root cannot either)
    result = _cli(command, "--out", "/proc/minigrad-results", "--no-progress", "--data-dir", str(tmp_path))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().count("\n") == 0 and "/proc/minigrad-results" in result.stderr, result.stderr


@pytest.mark.parametrize("argv, words", [
    (["experiments.vgg_depth", "--model", "VGG99"], "argument --model: VGG99"),
    (["experiments.vgg_depth", "--epochs", "-1"], "argument --epochs"),
    (["experiments.vgg_depth", "--batch-size", "0"], "argument --batch-size"),
    (["experiments.vgg_depth", "--lr", "0"], "argument --lr"),
    (["experiments.resnet_bn", "--width", "0"], "argument --width"),
    (["experiments.gsc", "--arch", "sigmoid"], "argument --arch"),
    (["experiments.gsc", "--train", "--lr", "-1"], "argument --lr"),
    (["experiments.init", "--train-batch", "0"], "argument --train-batch"),
    (["experiments.init", "--depth", "1"], "--depth must be >= 2"),
    (["experiments.vgg_depth", "--launcher", "slurm", "--cpus-per-job", "0"], "--cpus-per-job"),
])
def test_bad_flags_are_argparse_errors(argv, words):
    result = _cli(*argv)
    assert result.returncode == 2 and "Traceback" not in result.stderr and words in result.stderr, result.stderr


def test_vgg_full_preset_normalises_with_the_course_constants_and_quick_with_the_split():
    """Issue 17.12: the course normalises CIFAR-100 with fixed constants; the full preset follows it."""
    from experiments.vgg_depth import STUDY
    assert STUDY.presets["full"].normalization == "course" and STUDY.presets["quick"].normalization == "split"
    assert "course" in STUDY.presets["full"].description and "constants" in STUDY.presets["full"].description


def test_resnet_bn_says_the_training_recipe_is_ours():
    """Issue 17.13: the paper gives no recipe; the README, the full preset and the docstring say so."""
    import pathlib

    import experiments.resnet_bn as resnet_bn
    assert "recipe" in resnet_bn.__doc__ and "our" in resnet_bn.__doc__
    assert "our recipe" in resnet_bn.STUDY.presets["full"].description
    readme = (pathlib.Path(__file__).parent.parent / "README.md").read_text()
    row = next(line for line in readme.splitlines() if line.startswith("| `python -m experiments.resnet_bn`"))
    assert "paper's 200 epochs" not in row and "recipe" in row
