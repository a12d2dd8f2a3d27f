"""A handout's notebook (``make NAME --out DIR`` writes ``DIR/NAME.ipynb``) runs top to bottom in a fresh kernel.

On a fresh handout every item says "not implemented yet" and nothing raises; on a completed one (the handout
with the library's own files copied back over the stubs) every item passes and the closing cell trains;
a planted bug is reported as that item's FAIL while the others still pass. The kernel starts in the
handout folder and imports the student's ``minigrad`` from there (no ``PYTHONPATH``), as Jupyter would.
"""
import json

import pytest

from minigrad.coursework import ASSIGNMENTS, make_handout
from minigrad.coursework.__main__ import main as cli_main
from minigrad.coursework.handout import copy_library

CELL_TIMEOUT = 300


def execute(folder, monkeypatch):
    """Run ``folder/<name>.ipynb`` in a fresh kernel started in ``folder``; (notebook, all printed text)."""
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.delenv("PYTHONPATH", raising=False)
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    (path,) = folder.glob("*.ipynb")
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                   resources={"metadata": {"path": str(folder)}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    return nb, text


def test_make_writes_the_notebook(tmp_path, capsys):
    assert cli_main(["make", "mlp", "--out", str(tmp_path / "h")]) == 0
    nb = json.loads((tmp_path / "h" / "mlp.ipynb").read_text())
    assert nb["nbformat"] == 4 and nb["metadata"]["kernelspec"]["name"] == "python3"
    markdown = "".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    code = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
    handout = (tmp_path / "h" / "HANDOUT.md").read_text()
    for heading in [line for line in handout.splitlines() if line.startswith("## ")]:
        assert heading in markdown  # the handout's text, section by section
    for item in ASSIGNMENTS["mlp"].items:
        assert sum(f"check({item.name!r}," in c for c in code) == 1  # one check cell per item
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in nb["cells"] if c["cell_type"] == "code")
    assert len({c["id"] for c in nb["cells"]}) == len(nb["cells"])


@pytest.mark.parametrize("name", sorted(ASSIGNMENTS))
def test_handout_notebook_runs_fresh_then_completed(name, tmp_path, monkeypatch):
    """Fresh: every item "not implemented yet", nothing raises. Then the library's own files are copied back
    over the stubs (the handout completed) and the same notebook passes every check and trains. One folder
    for both, so the second run reuses the Numba kernels the first one compiled."""
    folder = make_handout(ASSIGNMENTS[name], tmp_path / "handout")
    items = ASSIGNMENTS[name].items
    _, text = execute(folder, monkeypatch)
    for item in items:
        assert f"{item.name}: not implemented yet" in text
    assert not [line for line in text.splitlines() if line.endswith(": pass")]
    assert f"0 of {len(items)} items pass" in text and "still to do" in text

    copy_library(folder)
    nb, text = execute(folder, monkeypatch)
    for item in items:
        assert f"{item.name}: pass" in text
    assert f"{len(items)} of {len(items)} items pass" in text
    assert "training accuracy" in text  # the closing cell trained with the student's layers
    assert any("image/png" in o.get("data", {}) for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs)


def test_a_planted_bug_fails_its_item_only(tmp_path, monkeypatch):
    folder = copy_library(make_handout(ASSIGNMENTS["mlp"], tmp_path / "handout"))
    linear = folder / "minigrad" / "nn" / "linear.py"
    correct = "return np.matmul(grad_output, self.weight.data, dtype=dtype)"
    assert linear.read_text().count(correct) == 1
    linear.write_text(linear.read_text().replace(correct, correct + " * 1.5"))  # dL/dx 1.5 times too large
    _, text = execute(folder, monkeypatch)
    assert "Linear.backward: FAIL" in text and "gradcheck FAILED" in text
    for item in ASSIGNMENTS["mlp"].items[1:]:
        assert f"{item.name}: pass" in text
    assert "still to do: Linear.backward" in text
