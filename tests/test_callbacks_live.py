"""LivePlot: the PNG it writes outside a notebook, in-place updates of one display in a (fake) notebook, what
its gradient-flow lines hold, resume, and that it never fails a training run.

The notebook is faked by putting stand-ins for ``IPython`` and ``IPython.display`` in ``sys.modules``, so
these tests need no IPython; one more test runs the callback in a real Jupyter kernel when nbclient and
ipykernel are installed (the notebooks extra).
"""
import base64
import json
import sys
import types
import warnings
from pathlib import Path

import pytest

from _resume_worker import build_trainer
from minigrad.callbacks import LivePlot
from minigrad.callbacks.live import in_notebook
from minigrad.train import Callback

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def read_png(path_or_bytes):
    """Decode a PNG with matplotlib's reader (Pillow): an (H, W, channels) array."""
    import io
    from matplotlib import image
    source = io.BytesIO(path_or_bytes) if isinstance(path_or_bytes, bytes) else str(path_or_bytes)
    return image.imread(source, format="png")


class FakeHandle:
    def __init__(self, obj):
        self.shown = [obj]

    def update(self, obj):
        self.shown.append(obj)


class FakeImage:
    def __init__(self, data=None, format=None):
        self.data, self.format = data, format


@pytest.fixture
def notebook(monkeypatch):
    """A fake IPython kernel: ``display`` calls and their handles are recorded in ``notebook.calls``."""
    calls = []

    def display(obj, display_id=None):
        assert display_id is True
        handle = FakeHandle(obj)
        calls.append(handle)
        return handle

    ipython = types.ModuleType("IPython")
    ipython.get_ipython = lambda: types.SimpleNamespace(kernel=object())
    ipython_display = types.ModuleType("IPython.display")
    ipython_display.display, ipython_display.Image = display, FakeImage
    ipython.display = ipython_display
    monkeypatch.setitem(sys.modules, "IPython", ipython)
    monkeypatch.setitem(sys.modules, "IPython.display", ipython_display)
    return types.SimpleNamespace(calls=calls)


# --------------------------------------------------------------------------------------- outside a notebook
def test_without_a_kernel_it_writes_a_png_into_the_run_folder_at_each_redraw(tmp_path):
    assert not in_notebook()
    live = LivePlot(loss_every=3)
    trainer = build_trainer(tmp_path / "run", epochs=2, callbacks=[live])
    assert trainer.fit().status == "finished"
    assert live.frames == 2  # one per epoch
    png = tmp_path / "run" / "live.png"
    assert png.read_bytes().startswith(PNG_MAGIC)
    pixels = read_png(png)
    assert pixels.shape[:2] == (8 * 80, 12 * 80)  # figsize (12, 8) at 80 dpi
    assert pixels[..., :3].std() > 0.05  # something is drawn
    assert not list((tmp_path / "run").glob(".*.tmp"))  # written atomically, no temporary left


def test_a_given_path_and_every_n_steps(tmp_path):
    live = LivePlot(every=5, path=tmp_path / "view" / "live.png")
    build_trainer(tmp_path / "run", epochs=2, callbacks=[live]).fit()
    # steps 5, 10, 15, 20 (none is an epoch's last, 12 or 24) and the 2 epoch ends
    assert live.frames == 6
    assert read_png(tmp_path / "view" / "live.png").shape[:2] == (640, 960)
    assert not (tmp_path / "run" / "live.png").exists()


# --------------------------------------------------------------------------------------- in a notebook
def test_in_a_notebook_one_display_is_updated_in_place(notebook, tmp_path):
    assert in_notebook()
    live = LivePlot(every=4)
    build_trainer(tmp_path / "run", epochs=3, callbacks=[live]).fit()
    assert len(notebook.calls) == 1  # one output for the whole fit
    shown = notebook.calls[0].shown
    assert len(shown) == live.frames == 3 * 2 + 3  # steps 4, 8 of each epoch, and each epoch's end
    assert all(isinstance(image, FakeImage) and image.format == "png" for image in shown)
    assert all(image.data.startswith(PNG_MAGIC) for image in shown)
    assert read_png(shown[-1].data).shape[:2] == (640, 960)
    assert not (tmp_path / "run" / "live.png").exists()  # no file unless a path is given

    # a second fit (a new cell) gets its own output
    build_trainer(tmp_path / "run2", epochs=1, callbacks=[live]).fit()
    assert len(notebook.calls) == 2 and len(notebook.calls[1].shown) == 3


def test_in_a_notebook_with_a_path_it_shows_and_writes(notebook, tmp_path):
    live = LivePlot(path=tmp_path / "live.png")
    build_trainer(tmp_path / "run", epochs=2, callbacks=[live]).fit()
    assert len(notebook.calls) == 1 and len(notebook.calls[0].shown) == 2
    assert (tmp_path / "live.png").read_bytes() == notebook.calls[0].shown[-1].data


def test_show_false_never_displays(notebook, tmp_path):
    build_trainer(tmp_path / "run", epochs=1, callbacks=[LivePlot(show=False)]).fit()
    assert notebook.calls == [] and (tmp_path / "run" / "live.png").exists()


# --------------------------------------------------------------------------------------- what it draws
def test_gradient_lines_are_each_epochs_last_batch_with_biases(tmp_path):
    live = LivePlot()
    trainer = build_trainer(tmp_path / "run", epochs=3, callbacks=[live])
    trainer.fit()
    stats = json.loads((tmp_path / "run" / "grad_stats.json").read_text())
    names = [name for name, _ in trainer.model.named_parameters()]
    assert any(name.endswith(".bias") for name in names)
    assert sorted(live.grad_lines) == [1, 2, 3]
    for entry in stats["epochs"]:
        line = live.grad_lines[entry["epoch"]]
        assert list(line) == names  # every parameter, in forward order
        assert line == {name: entry["last_batch"][name]["mean_abs"] for name in names}
    # the running loss: one point per 10 steps, each the mean over its block
    assert [step for step, _, _ in live.running] == [10, 20, 30]


def test_resume_redraws_the_finished_epochs(tmp_path):
    class Crash(Callback):
        def on_batch_end(self, trainer, epoch, batch, logs):
            if (epoch, batch) == (2, 5):
                raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        build_trainer(tmp_path / "run", epochs=3, callbacks=[Crash()]).fit()
    live = LivePlot()
    build_trainer(tmp_path / "run", epochs=3, callbacks=[live]).fit(resume=True)
    assert sorted(live.grad_lines) == [1, 2, 3]  # epoch 1 from the saved statistics
    assert live.frames == 3  # the resumed view at the start, then epochs 2 and 3
    reference = LivePlot()
    build_trainer(tmp_path / "ref", epochs=3, callbacks=[reference]).fit()
    assert live.grad_lines == reference.grad_lines


def test_a_drawing_error_warns_once_and_training_goes_on(tmp_path, monkeypatch):
    def broken(self, *args, **kwargs):
        raise ValueError("no fonts today")

    monkeypatch.setattr(LivePlot, "_render", broken)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = build_trainer(tmp_path / "run", epochs=2, callbacks=[LivePlot(every=3)]).fit()
    assert result.status == "finished"
    mine = [w for w in caught if "LivePlot" in str(w.message)]
    assert len(mine) == 1 and "no fonts today" in str(mine[0].message)


def test_a_display_error_does_not_stop_training(notebook, tmp_path, monkeypatch):
    def failing(obj, display_id=None):
        raise OSError("the front end went away")

    monkeypatch.setattr(sys.modules["IPython.display"], "display", failing)
    with pytest.warns(RuntimeWarning, match="the front end went away"):
        assert build_trainer(tmp_path / "run", epochs=1, callbacks=[LivePlot()]).fit().status == "finished"


def test_the_view_does_not_change_the_run(tmp_path):
    build_trainer(tmp_path / "plain", epochs=2).fit()
    build_trainer(tmp_path / "live", epochs=2, callbacks=[LivePlot(every=5)]).fit()
    for name in ("metrics.csv", "grad_stats.json"):
        plain, live = ((tmp_path / run / name).read_text() for run in ("plain", "live"))
        if name == "metrics.csv":  # the seconds column differs
            plain, live = ([line.rsplit(",", 1)[0] for line in text.splitlines()] for text in (plain, live))
        assert plain == live


@pytest.mark.parametrize("bad", [{"every": 0}, {"every": 2.5}, {"loss_every": None}, {"loss_every": True}])
def test_bad_arguments(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        LivePlot(**bad)


# --------------------------------------------------------------------------------------- a real kernel
def test_in_a_real_jupyter_kernel_the_cell_keeps_one_updated_image(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    tests = str(Path(__file__).resolve().parent)
    source = (f"import sys; sys.path.insert(0, {tests!r})\n"
              "from _resume_worker import build_trainer\n"
              "from minigrad.callbacks import LivePlot\n"
              f"live = LivePlot(every=5, path={str(tmp_path / 'live.png')!r})\n"
              f"result = build_trainer({str(tmp_path / 'run')!r}, epochs=2, callbacks=[live]).fit()\n"
              "print(result.status, live.frames)\n")
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source)])
    nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3").execute()
    outputs = notebook.cells[0].outputs
    images = [o for o in outputs if o.output_type == "display_data"]
    assert len(images) == 1  # the updates replaced the first image rather than adding outputs
    printed = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "finished 6" in printed  # steps 5, 10, 15, 20 and 2 epoch ends
    shown = base64.b64decode(images[0].data["image/png"])
    assert shown == (tmp_path / "live.png").read_bytes()  # the cell shows the last frame
    assert read_png(shown).shape[:2] == (640, 960)
