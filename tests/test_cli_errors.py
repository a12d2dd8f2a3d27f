"""The library's own command lines (coursework kit, plots) answer user errors with one line, never a traceback."""
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _cli(*argv):
    return subprocess.run([sys.executable, "-m", *argv], cwd=REPO, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("argv, words", [
    (["make", "nope", "--out", "{tmp}/h"], "argument name: invalid choice: 'nope'"),
    (["make", "conv", "--out", "/proc/minigrad-handout"], "/proc/minigrad-handout"),
    (["make", "conv", "--out", "{tmp}/a-file"], "{tmp}/a-file"),
    (["grade", "{tmp}", "--jobs", "0"], "argument --jobs"),
    (["grade", "{tmp}", "--timeout", "-1"], "argument --timeout"),
    (["grade", "{tmp}", "--memory-gb", "nan"], "argument --memory-gb"),
    (["grade", "{tmp}", "--seed", "-3"], "argument --seed"),
    (["grade", "{tmp}/nothing-here"], "holds no minigrad package"),
])
def test_coursework_cli_user_errors(argv, words, tmp_path):
    (tmp_path / "a-file").write_text("")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    result = _cli("minigrad.coursework", *argv)
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr and words.replace("{tmp}", str(tmp_path)) in result.stderr, result.stderr


def test_plots_cli_user_errors(tmp_path):
    result = _cli("minigrad.plots", str(tmp_path / "nothing"))
    assert result.returncode == 2 and "is not a run folder" in result.stderr and "Traceback" not in result.stderr
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.csv").write_text("not,a,metrics,file\n")
    result = _cli("minigrad.plots", str(run))
    assert result.returncode == 2 and "Traceback" not in result.stderr and "metrics" in result.stderr, result.stderr
    (run / "metrics.csv").write_text("epoch,train_loss,train_acc,val_loss,val_acc,lr,seconds\n1,1,0.5,1,0.5,0.1,1\n")
    result = _cli("minigrad.plots", str(run), "--out", "/proc/minigrad-figures")
    assert result.returncode == 2 and "Traceback" not in result.stderr and "/proc/minigrad-figures" in result.stderr
