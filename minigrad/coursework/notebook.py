"""The handout as a notebook: ``make NAME --out DIR`` also writes ``DIR/NAME.ipynb``.

The notebook holds the handout's text (``HANDOUT.md``, section by section), a cell that imports the
student's package (the ``minigrad/`` beside the notebook, never an installed copy), one cell per graded item
that runs its local checks and prints ``pass``, ``FAIL`` (with what failed) or ``not implemented yet``, a
summary table, and a closing cell that trains something small with the student's layers once every item
passes. No exception escapes a cell: on a fresh handout every item says "not implemented yet" and the
closing cell says what it waits for.

The local checks are not the grader's: the grader draws hidden random cases and compares with the library
in a limited subprocess (``grader.py``); these are fixed, small cases a student can read and rerun:

- backward items: ``minigrad.gradcheck`` (central differences in float64, random upstream gradient) on
  small non-square shapes, in train and eval mode where that matters, plus the contract (backward returns
  the input's shape, *adds* into ``p.grad``, leaves its arguments unmodified);
- items with no finite difference to take (Adam's step, the VGG block constructors): the same small
  computation run with the library when the handout is made, its result stored in the notebook as numbers
  (never code), compared with the student's (``REFERENCE``): parameters after a few Adam steps; a block's
  type, ``state_dict`` names and shapes, and its output in train and eval mode for fixed weights.

The notebook is plain nbformat-4 JSON (no Jupyter package is needed to write it); executing it needs
a kernel (``pip install -e ".[notebooks]"`` in the library, or ``pip install ipykernel`` for a student).
"""
import hashlib
import json
import textwrap
from pathlib import Path

import numpy as np

__all__ = ["handout_notebook", "write_handout_notebook", "CHECK_CODE", "REFERENCE_CODE"]

# --------------------------------------------------------------------------------------------- the cells
SETUP = r'''
import copy
import sys
import traceback
from pathlib import Path

import numpy as np

HANDOUT = Path.cwd().resolve()  # Jupyter starts the kernel in the notebook's folder
if not (HANDOUT / "COURSEWORK.json").exists():
    raise RuntimeError(f"run this notebook from the handout folder (the one holding COURSEWORK.json and "
                       f"minigrad/); the kernel runs in {HANDOUT}")
sys.path.insert(0, str(HANDOUT))
import minigrad
from minigrad import gradcheck, nn, optim

if not Path(minigrad.__file__).resolve().is_relative_to(HANDOUT):
    raise RuntimeError(f"minigrad was imported from {minigrad.__file__}, not from this handout: restart the "
                       "kernel (Kernel > Restart) so that your own package is the one imported")
print(f"your package: {Path(minigrad.__file__).parent}")

RESULTS = {}


def check(item, run):
    """Run one item's checks: pass, FAIL (what failed, and where) or not implemented yet. Never raises."""
    try:
        run()
    except NotImplementedError as error:
        status, detail = "not implemented yet", str(error)
    except AssertionError as error:  # a failed check (gradcheck's own error is one too)
        status, detail = "FAIL", str(error)
    except Exception as error:  # noqa: BLE001 - any error in the student's code is that item's failure
        frames = traceback.extract_tb(error.__traceback__)[-2:]
        where = "".join(f"\n    {Path(f.filename).name}:{f.lineno} in {f.name}: {f.line}" for f in frames)
        status, detail = "FAIL", f"{type(error).__name__}: {error}{where}"
    else:
        status, detail = "pass", ""
    RESULTS[item] = status
    print(f"{item}: {status}" + ("" if not detail else "\n  " + detail.replace("\n", "\n  ")))


def passes_gradcheck(module, x, **kwargs):
    """module.backward agrees with central differences (input and every parameter)."""
    result = gradcheck(module, x, **kwargs)
    shape = x if isinstance(x, tuple) else np.shape(x)
    assert result.ok, f"gradcheck of {module!r} on input {shape}:\n{result}"


def follows_the_contract(module, x):
    """backward returns d loss / d input of the input's shape, ADDS into p.grad, modifies neither argument."""
    m = copy.deepcopy(module).to(np.float64)
    x = np.asarray(x, dtype=np.float64)
    x_before = x.copy()
    upstream = np.random.default_rng(1).standard_normal(np.shape(m(x))) + 0.5
    upstream_before = upstream.copy()
    m.zero_grad()
    grad_input = m.backward(upstream)
    assert np.shape(grad_input) == x.shape, \
        f"backward returned shape {np.shape(grad_input)}; it must be the input's shape {x.shape}"
    assert np.array_equal(x, x_before), "the forward or backward modified its input in place"
    assert np.array_equal(upstream, upstream_before), "backward modified grad_output in place"
    fresh = {name: p.grad.copy() for name, p in m.named_parameters()}
    for p in m.parameters():
        p.grad[...] = 1.0
    m(x)
    m.backward(upstream)
    for name, p in m.named_parameters():
        assert np.allclose(p.grad, fresh[name] + 1.0), \
            f"{name}.grad: backward must add its gradient into .grad (+=), not replace it"


def away_from_zero(shape, seed=0, gap=0.1):
    """Inputs away from a kink at 0 (finite differences must not cross it)."""
    x = np.random.default_rng(seed).standard_normal(shape)
    return np.where(x >= 0, x + gap, x - gap)


def random_state(module, seed=0):
    """Fixed random values for every floating parameter and buffer (running_var > 0), by name."""
    rng = np.random.default_rng(seed)
    state = {}
    for key, value in module.state_dict().items():
        value = np.asarray(value)
        if not np.issubdtype(value.dtype, np.floating):
            state[key] = value
        elif key.endswith("running_var"):
            state[key] = rng.uniform(0.5, 2.0, value.shape)
        else:
            state[key] = rng.normal(0.0, 0.5, value.shape)
    return state


def same_numbers(got, expected, what, rtol=1e-6, atol=1e-9):
    got, expected = np.asarray(got, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    assert got.shape == expected.shape, f"{what}: shape {got.shape}, expected {expected.shape}"
    if not np.allclose(got, expected, rtol=rtol, atol=atol):
        worst = np.unravel_index(np.argmax(np.abs(got - expected)), got.shape)
        raise AssertionError(f"{what}: got {got[worst]!r} at {tuple(int(i) for i in worst)}, expected "
                             f"{expected[worst]!r} (max |difference| {np.max(np.abs(got - expected)):.2e})")
'''

# Functions run twice: by ``make`` with the library (their results are stored in the notebook as
# REFERENCE[name]) and by the notebook with the student's package. They see ``np`` and ``minigrad``.
REFERENCE_CODE = {
    "adam": r'''
ADAM_CASES = [("Adam", {}), ("Adam", {"lr": 0.05, "betas": (0.8, 0.99)}), ("Adam", {"lr": 0.01, "weight_decay": 0.1}),
              ("Adam", {"lr": 0.01, "amsgrad": True}), ("AdamW", {"lr": 0.01, "weight_decay": 0.1}),
              ("Adam", {"lr": 0.01, "gradient scale": 1e-7})]


def run_adam(minigrad):
    """Each case: two float64 parameters, 4 steps with fixed random gradients; the parameters after each."""
    out = []
    for factory, kwargs in ADAM_CASES:
        kwargs = dict(kwargs)
        scale = kwargs.pop("gradient scale", 1.0)  # tiny gradients: where eps goes matters
        rng = np.random.default_rng(len(out))
        params = [minigrad.nn.Parameter(rng.standard_normal((3, 2))), minigrad.nn.Parameter(rng.standard_normal(4))]
        opt = getattr(minigrad.optim, factory)(params, **kwargs)
        steps = []
        for _ in range(4):
            opt.zero_grad()
            for p in params:
                p.grad[...] = scale * rng.standard_normal(p.data.shape)
            opt.step()
            steps.append([p.data.tolist() for p in params])
        out.append(steps)
    return out
''',
    "blocks": r'''
BLOCK_CASES = {
    "processing_block": [{"channels": 3, "batch_norm": True, "residual": True}, {"channels": 2},
                         {"channels": 3, "batch_norm": True}, {"channels": 2, "residual": True}],
    "reduction_block": [{"channels": 3, "batch_norm": True}, {"channels": 2},
                        {"channels": 3, "batch_norm": True, "shortcut": "conv1x1"},
                        {"channels": 2, "shortcut": "avgpool"}, {"channels": 2, "shortcut": "conv1x1"}],
}


def run_block(minigrad, name, kwargs):
    """One VGG block: its type, state_dict names and shapes, and its outputs (train, eval) for fixed weights."""
    from minigrad.models import vgg
    block = getattr(vgg, name)(**kwargs)
    names = [[key, list(np.shape(value))] for key, value in block.state_dict().items()]
    block.to(np.float64)
    out = {"type": type(block).__name__, "state": names}
    rng_state = random_state(block, seed=1)
    try:
        block.load_state_dict(rng_state)
    except Exception:  # noqa: BLE001 - names that differ are reported from "state"
        return out
    x = np.random.default_rng(2).standard_normal((2, kwargs["channels"], 4, 6))
    out["train"] = block.train()(x).tolist()
    out["eval"] = block.eval()(x).tolist()
    return out
''',
}

# One check per graded item (keys of checks.CHECKS): the body of a function called by check().
CHECK_CODE = {
    "linear": '''
passes_gradcheck(nn.Linear(5, 3), (4, 5))                     # non-square weight
passes_gradcheck(nn.Linear(4, 6, bias=False), (2, 3, 4))      # leading axes, no bias
follows_the_contract(nn.Linear(5, 3), np.random.default_rng(0).standard_normal((4, 5)))
''',
    "relu": '''
passes_gradcheck(nn.ReLU(), away_from_zero((3, 4, 5)))
follows_the_contract(nn.ReLU(), away_from_zero((2, 7)))
''',
    "leaky_relu": '''
for slope in (0.01, 0.2, 0.0):
    passes_gradcheck(nn.LeakyReLU(slope), away_from_zero((3, 4, 5)))
follows_the_contract(nn.LeakyReLU(0.2), away_from_zero((2, 7)))
''',
    "cross_entropy": '''
target = np.array([0, 6, 2, 2])
passes_gradcheck(nn.CrossEntropyLoss(), (4, 7), target=target)
passes_gradcheck(nn.CrossEntropyLoss(reduction="sum"), (4, 7), target=target)
crit = nn.CrossEntropyLoss()
logits = np.random.default_rng(0).standard_normal((4, 7))
loss = crit(logits, target)
grad = crit.backward()
assert np.shape(grad) == logits.shape, f"backward() returned shape {np.shape(grad)}, expected {logits.shape}"
''',
    "adam": '''
got = run_adam(minigrad)
for (factory, kwargs), steps, expected in zip(ADAM_CASES, got, REFERENCE["adam"]):
    for t, (params, want) in enumerate(zip(steps, expected), start=1):
        for j, (p, w) in enumerate(zip(params, want)):
            same_numbers(p, w, f"{factory}({kwargs}): parameter {j} after step {t}")
''',
    "conv2d": '''
passes_gradcheck(nn.Conv2d(3, 4, (2, 3), stride=(2, 1), padding=(1, 0)), (2, 3, 7, 5))   # non-square everything
passes_gradcheck(nn.Conv2d(2, 3, 3, padding=1, bias=False), (1, 2, 4, 6))
passes_gradcheck(nn.Conv2d(1, 2, (3, 1), stride=(1, 2)), (3, 1, 5, 4))
follows_the_contract(nn.Conv2d(3, 4, (2, 3), stride=(2, 1), padding=(1, 0)),
                     np.random.default_rng(0).standard_normal((2, 3, 7, 5)))
''',
    "batchnorm2d": '''
x = 1.5 * np.random.default_rng(0).standard_normal((4, 3, 5, 2)) + 0.7
passes_gradcheck(nn.BatchNorm2d(3), x)                                   # training: batch statistics
bn = nn.BatchNorm2d(3)
bn.load_state_dict(random_state(bn.to(np.float64)))                      # non-trivial running statistics
passes_gradcheck(bn.eval(), x)                                           # eval: running statistics
passes_gradcheck(nn.BatchNorm2d(3, affine=False), x)
passes_gradcheck(nn.BatchNorm2d(3, track_running_stats=False).eval(), x)  # batch statistics in eval too
follows_the_contract(nn.BatchNorm2d(3), x)
''',
    "avgpool2d": '''
passes_gradcheck(nn.AvgPool2d((2, 3), stride=1), (2, 3, 6, 5))                  # overlapping windows
passes_gradcheck(nn.AvgPool2d(2), (1, 2, 4, 6))
passes_gradcheck(nn.AvgPool2d((3, 2), stride=(2, 1), padding=(1, 1), count_include_pad=False), (2, 2, 5, 4))
passes_gradcheck(nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True), (1, 2, 6, 7))
follows_the_contract(nn.AvgPool2d((2, 3), stride=1), np.random.default_rng(0).standard_normal((2, 3, 6, 5)))
''',
    "residual": '''
def conv_bn_residual(shortcut, activation):
    return nn.Residual(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.BatchNorm2d(4), nn.LeakyReLU(0.1),
                       nn.Conv2d(4, 4, (1, 3), padding=(0, 1)), shortcut=shortcut, activation=activation)

passes_gradcheck(conv_bn_residual(nn.ConvShortcut(3, 4, stride=2), nn.Tanh()), (2, 3, 6, 5))
passes_gradcheck(conv_bn_residual(nn.ConvShortcut(3, 4, stride=2, batch_norm=True), None).eval(), (2, 3, 6, 5))
identity = nn.Residual(nn.Conv2d(3, 3, 3, padding=1), nn.LeakyReLU(0.2), activation=nn.LeakyReLU(0.01))
passes_gradcheck(identity, (2, 3, 4, 5))                                   # identity shortcut: + x
follows_the_contract(identity, np.random.default_rng(0).standard_normal((2, 3, 4, 5)))
''',
    "processing_block": '''
for kwargs, expected in zip(BLOCK_CASES["processing_block"], REFERENCE["processing_block"]):
    compare_block("processing_block", kwargs, expected)
''',
    "reduction_block": '''
for kwargs, expected in zip(BLOCK_CASES["reduction_block"], REFERENCE["reduction_block"]):
    compare_block("reduction_block", kwargs, expected)
''',
}

COMPARE_BLOCK = r'''
def compare_block(name, kwargs, expected):
    """Type, state_dict names and shapes, then the outputs for fixed weights (train and eval mode)."""
    got = run_block(minigrad, name, kwargs)
    call = f"{name}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())})"
    assert got["type"] == expected["type"], f"{call} returned a {got['type']}, expected a {expected['type']}"
    if got["state"] != expected["state"]:
        raise AssertionError(f"{call}: state_dict names and shapes differ:\n  got      {got['state']}\n"
                             f"  expected {expected['state']}")
    same_numbers(got["train"], expected["train"], f"{call}, output in train mode")
    same_numbers(got["eval"], expected["eval"], f"{call}, output in eval mode")
'''

# What each assignment trains once every item passes (numbers from the student's own layers).
EXPERIMENT = {
    "mlp": '''
# Three classes in 20 dimensions; an MLP with your Linear, ReLU, LeakyReLU, cross-entropy and Adam.
rng = np.random.default_rng(0)
x = rng.standard_normal((512, 20))
y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 1)
minigrad.manual_seed(0)
model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 64), nn.LeakyReLU(0.01), nn.Linear(64, 3))
crit, opt = nn.CrossEntropyLoss(), optim.Adam(model.parameters(), lr=1e-2)
losses = []
for step in range(300):
    batch = rng.choice(len(x), 64, replace=False)
    opt.zero_grad()
    losses.append(crit(model(x[batch]), y[batch]))
    model.backward(crit.backward())
    opt.step()
accuracy = float((model(x).argmax(1) == y).mean())
''',
    "conv": '''
# Tiny images (3 x 12 x 12): the class is the quadrant holding a bright square. A CNN with your Conv2d,
# BatchNorm2d and AvgPool2d.
rng = np.random.default_rng(0)
def images(n):
    x = 0.3 * rng.standard_normal((n, 3, 12, 12))
    y = rng.integers(0, 4, n)
    for i, q in enumerate(y):
        r, c = 6 * (q // 2), 6 * (q % 2)
        x[i, :, r + 1:r + 5, c + 1:c + 5] += 1.0
    return x, y
x, y = images(512)
minigrad.manual_seed(0)
model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AvgPool2d(2),
                      nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.AvgPool2d(2),
                      nn.Flatten(), nn.Linear(16 * 3 * 3, 4))
crit, opt = nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
losses = []
model.train()
for step in range(100):
    batch = rng.choice(len(x), 32, replace=False)
    opt.zero_grad()
    losses.append(crit(model(x[batch]), y[batch]))
    model.backward(crit.backward())
    opt.step()
model.eval()
accuracy = float((model(x).argmax(1) == y).mean())
''',
    "depth": '''
# A deep, narrow VGG-style CNN from your blocks: 6 processing blocks with BN and residual connections
# around a reduction block, on the tiny quadrant images (the class is the quadrant holding a bright square).
rng = np.random.default_rng(0)
from collections import OrderedDict
from minigrad.models.vgg import processing_block, reduction_block
def images(n):
    x = 0.3 * rng.standard_normal((n, 3, 12, 12))
    y = rng.integers(0, 4, n)
    for i, q in enumerate(y):
        r, c = 6 * (q // 2), 6 * (q % 2)
        x[i, :, r + 1:r + 5, c + 1:c + 5] += 1.0
    return x, y
x, y = images(512)
minigrad.manual_seed(0)
layers = [("entry", nn.Conv2d(3, 8, 3, padding=1))]
layers += [(f"block{i}", processing_block(8, batch_norm=True, residual=True)) for i in range(3)]
layers += [("reduce", reduction_block(8, batch_norm=True, shortcut="conv1x1"))]
layers += [(f"block{i}", processing_block(8, batch_norm=True, residual=True)) for i in range(3, 6)]
layers += [("pool", nn.AdaptiveAvgPool2d(1)), ("flatten", nn.Flatten()), ("head", nn.Linear(8, 4))]
model = nn.Sequential(OrderedDict(layers))
crit, opt = nn.CrossEntropyLoss(), optim.Adam(model.parameters(), lr=3e-3)
losses = []
model.train()
for step in range(80):
    batch = rng.choice(len(x), 32, replace=False)
    opt.zero_grad()
    losses.append(crit(model(x[batch]), y[batch]))
    model.backward(crit.backward())
    opt.step()
flow = {name: s["mean_abs"] for name, s in model.grad_stats.items() if name.endswith("conv0.weight")}
print("mean |grad| of each block's first conv, input side first:",
      ", ".join(f"{value:.1e}" for value in flow.values()))
model.eval()
accuracy = float((model(x).argmax(1) == y).mean())
''',
}

CLOSING = '''
waiting = [item for item, status in RESULTS.items() if status != "pass"]
if waiting:
    print("The experiment trains with your layers once every item passes; still to do: " + ", ".join(waiting))
else:
{body}
    print(f"loss: first 10 steps {np.mean(losses[:10]):.3f}, last 10 steps {np.mean(losses[-10:]):.3f}; "
          f"training accuracy {accuracy:.1%}")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.plot(losses)
    ax.set(xlabel="step", ylabel="cross-entropy loss", title="Training with your layers")
    ax.grid(True, alpha=0.3)
    plt.show()
'''

SUMMARY = '''
width = max(map(len, RESULTS))
for item, status in RESULTS.items():
    print(f"{item:{width}s}  {status}")
done = sum(status == "pass" for status in RESULTS.values())
print(f"\\n{done} of {len(RESULTS)} items pass the local checks. The grader runs more cases, hidden and random: "
      "passing here is necessary, not sufficient.")
'''


# --------------------------------------------------------------------------------------------- building
def _cell(kind, text):
    text = textwrap.dedent(text).strip("\n")
    lines = text.split("\n")
    source = [line + "\n" for line in lines[:-1]] + [lines[-1]]
    cell = {"cell_type": kind, "id": None, "metadata": {}, "source": source}
    if kind == "code":
        cell.update(execution_count=None, outputs=[])
    return cell


def _sections(markdown):
    """Split Markdown at its ``## `` headings (outside code fences): one cell per section."""
    sections, current, fenced = [], [], False
    for line in markdown.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        if line.startswith("## ") and not fenced and current:
            sections.append("\n".join(current))
            current = []
        current.append(line)
    if current:
        sections.append("\n".join(current))
    return [s.strip("\n") for s in sections if s.strip()]


def _references(assignment):
    """REFERENCE: the reference functions' results, computed now with the installed library."""
    import minigrad
    checks = {item.check for item in assignment.items}
    namespace = {"np": np, "minigrad": minigrad}
    exec(SETUP_HELPERS_FOR_REFERENCE, namespace)  # random_state, used by run_block
    reference = {}
    if "adam" in checks:
        exec(REFERENCE_CODE["adam"], namespace)
        reference["adam"] = namespace["run_adam"](minigrad)
    for name in ("processing_block", "reduction_block"):
        if name in checks:
            exec(REFERENCE_CODE["blocks"], namespace)
            reference[name] = [namespace["run_block"](minigrad, name, kwargs)
                               for kwargs in namespace["BLOCK_CASES"][name]]
    return reference


def _helper_source(name):
    """The source of one top-level function of SETUP (so make and the notebook share it)."""
    start = SETUP.index(f"def {name}(")
    end = SETUP.find("\n\n\ndef ", start)
    return SETUP[start:] if end < 0 else SETUP[start:end]


SETUP_HELPERS_FOR_REFERENCE = _helper_source("random_state")


def handout_notebook(assignment):
    """The notebook of ``assignment`` as a dict (nbformat 4.5)."""
    items = assignment.items
    checks = {item.check for item in items}
    cells = [_cell("markdown", section) for section in _sections(assignment.handout_markdown())]
    cells.append(_cell("markdown", f"""
        ## Your package, checked here

        The next cell imports **your** `minigrad` (the folder beside this notebook). After changing your
        code, restart the kernel (*Kernel > Restart*) and run the cells again: Python does not reload a
        module that is already imported. Each item's cell prints `pass`, `FAIL` with what failed and
        where, or `not implemented yet`; the last cells summarise and, once everything passes, train
        something small with your layers."""))
    setup = SETUP
    needs_reference = checks & {"adam", "processing_block", "reduction_block"}
    if "adam" in checks:
        setup += "\n" + REFERENCE_CODE["adam"]
    if checks & {"processing_block", "reduction_block"}:
        setup += "\n" + REFERENCE_CODE["blocks"] + "\n" + COMPARE_BLOCK
    if needs_reference:
        reference = json.dumps(_references(assignment), separators=(",", ":"))
        setup += ("\n# What the library computes for the same cases (numbers, not code), made with the handout\n"
                  f"REFERENCE = {reference}\n")
    cells.append(_cell("code", setup))
    for item in items:
        files = ", ".join(f"`{f}`" for f in item.files())
        cells.append(_cell("markdown", f"### {item.name} ({item.points} points)\n\nYour code: {files}."))
        body = textwrap.indent(textwrap.dedent(CHECK_CODE[item.check]).strip("\n"), "    ")
        function = "check_" + "".join(c if c.isalnum() else "_" for c in item.name.lower())
        cells.append(_cell("code", f"def {function}():\n{body}\n\n\ncheck({item.name!r}, {function})"))
    cells.append(_cell("markdown", "## Summary"))
    cells.append(_cell("code", SUMMARY))
    cells.append(_cell("markdown", "## Train something small with your layers"))
    body = textwrap.indent(textwrap.dedent(EXPERIMENT[assignment.name]).strip("\n"), "    ")
    cells.append(_cell("code", CLOSING.replace("{body}", body)))
    for index, cell in enumerate(cells):
        digest = hashlib.sha1("".join(cell["source"]).encode()).hexdigest()[:8]
        cell["id"] = f"{assignment.name}-{index:02d}-{digest}"
    return {"cells": cells,
            "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                         "language_info": {"name": "python"}, "coursework": assignment.name},
            "nbformat": 4, "nbformat_minor": 5}


def write_handout_notebook(assignment, out_dir):
    """Write ``out_dir/<assignment>.ipynb``; returns its path."""
    path = Path(out_dir) / f"{assignment.name}.ipynb"
    path.write_text(json.dumps(handout_notebook(assignment), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return path
