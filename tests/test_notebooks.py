"""Every notebook in ``notebooks/`` runs top to bottom in a fresh kernel, and is stored without outputs.

The notebooks find CIFAR-10 by the library's search order (``$MINIGRAD_DATA``, ``data/``,
``../shared/data/``). This test builds a small fake CIFAR-10 (``tests/fake_cifar.py``) and points
``$MINIGRAD_DATA`` at it, so the notebooks run the same way, in the same time, on every machine, with or
without the real dataset (the notebooks say when they run on a stand-in). Set
``MINIGRAD_NOTEBOOK_DATA=search`` to leave ``$MINIGRAD_DATA`` alone and run them on whatever the search
order finds (the real data here). The kernel imports this checkout (``PYTHONPATH``) and writes its
decoded-data cache to a temporary folder. Needs the ``test`` extra (nbclient, nbformat, ipykernel).
"""
import json
import os
import re
import time
from pathlib import Path

import pytest

from fake_cifar import make_fake_cifar

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT = 600  # seconds; a notebook is meant to take well under 5 minutes in all


def test_there_is_a_tour_and_a_notebook_per_study():
    names = {path.stem for path in NOTEBOOKS}
    assert {"tour", "vgg_depth", "init", "gsc", "resnet_bn", "normalization"} <= names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_stored_without_outputs(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    dirty = [i for i, cell in enumerate(nb["cells"]) if cell["cell_type"] == "code"
             and (cell.get("outputs") or cell.get("execution_count") is not None)]
    assert not dirty, f"{path.name}: cells {dirty} hold outputs; clear them before committing (DECISIONS 26)"


def test_readme_links_every_notebook():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    linked = set(re.findall(r"\(notebooks/([\w.-]+\.ipynb)\)", readme))
    missing = [p.name for p in NOTEBOOKS if p.name not in linked]
    assert not missing, f"README.md does not link {missing}"


@pytest.fixture(scope="module")
def notebook_env(tmp_path_factory):
    """Environment of the kernels: this checkout on the path, fake CIFAR-10 (unless told otherwise)."""
    env = {"PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]),
           "MINIGRAD_CACHE": str(tmp_path_factory.mktemp("cache")), "PYTHONDONTWRITEBYTECODE": "1"}
    if os.environ.get("MINIGRAD_NOTEBOOK_DATA", "fake") != "search":
        data = tmp_path_factory.mktemp("cifar")
        # gsc --train holds out the default 2,500 validation images, then takes a 500-image subset
        make_fake_cifar(data, "cifar10", n_train=3200, n_test=300)
        env["MINIGRAD_DATA"] = str(data)
    return env


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, notebook_env, monkeypatch, tmp_path):
    try:  # part of the test extra: missing is a failure, not a skip
        import nbformat
        from nbclient import NotebookClient
    except ImportError as error:
        pytest.fail(f"{error}: executing the notebooks needs pip install -e '.[test]' (nbclient, nbformat, ipykernel)")

    for key, value in notebook_env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the notebooks' run folders go here, and go away
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    client.execute()  # raises CellExecutionError, with the cell and its traceback, on any error
    seconds = time.perf_counter() - start
    errors = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs if o.output_type == "error"]
    assert not errors
    print(f"{path.name}: {seconds:.1f} s")
