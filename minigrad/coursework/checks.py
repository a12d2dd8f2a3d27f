"""The grading checks: hidden random cases, and the script that runs them inside the grading subprocess.

Both sides use this file. The grader draws cases with ``draw_cases(check, rng, lib)`` and runs them with
``run_case(lib, spec, arrays)`` through the installed library (the reference); a grading process
(forked per item by ``python -I -B checks.py``, see ``serve``) runs the same cases through the student's
package with ``grade_item`` and writes raw results (arrays and finite-difference values) for the grader
to judge. Hence this module imports nothing of minigrad: ``lib`` is the ``minigrad`` package of whichever
side runs it.

A case is ``(spec, arrays)``: ``spec`` is JSON (factory, constructor arguments, mode, label), ``arrays``
are float64 inputs, the module's random state (``state.<key>``), gradients already in ``param.grad``
(``grad0.<name>``: backward must add to them), a random upstream gradient (never all ones) and random
unit directions (``dir.<target>.<k>``) for the central differences
``(f(p + eps v) - f(p - eps v)) / (2 eps)`` of ``f = <upstream, m(x)>`` (for a loss, ``f`` = the loss).
"""
import importlib
import json
import os
import sys
import time
import traceback
from pathlib import Path

import numpy as np

__all__ = ["CHECKS", "draw_cases", "run_case", "grade_item", "serve", "FD_EPS", "DIRECTIONS"]

FD_EPS = 1e-5  # central differences: truncation O(eps^2), rounding O(1e-16 |f| / eps)
DIRECTIONS = 2  # random directions per checked array (input and every parameter)


# ----------------------------------------------------------------------------- building modules
def _tuples(kwargs):
    """JSON turns tuples into lists; constructors get them back as tuples."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}


def _vgg(lib):
    return importlib.import_module(lib.__name__ + ".models.vgg")


def _vgg_block(lib, kind, channels, batch_norm, shortcut):
    """A VGG processing or reduction block with a connection, assembled by hand from ``nn`` layers: an
    ``nn.Residual`` with LeakyReLU after the sum.

    Independent of ``processing_block`` / ``reduction_block``, so the residual sum's backward is graded
    even when a student's block constructor is wrong (that is another item).
    """
    nn, c = lib.nn, channels
    reduction = kind == "reduction"
    layers = [("conv0", nn.Conv2d(c, c, 3, padding=1, bias=reduction))]
    if batch_norm:
        layers.append(("bn0", nn.BatchNorm2d(c)))
    layers.append(("act0", nn.LeakyReLU(0.01)))
    if reduction:
        layers.append(("pool", nn.AvgPool2d(2)))
    layers.append(("conv1", nn.Conv2d(c, c, 3, padding=1, bias=reduction)))
    if batch_norm:
        layers.append(("bn1", nn.BatchNorm2d(c)))
    branch = dict(layers)
    skip = {"identity": lambda: None, "avgpool": lambda: nn.AvgPool2d(2),
            "conv1x1": lambda: nn.ConvShortcut(c, c, 2, bias=not batch_norm, batch_norm=batch_norm)}[shortcut]()
    return nn.Residual(branch, shortcut=skip, activation=nn.LeakyReLU(0.01))


def _residual(lib, in_channels, out_channels, stride, shortcut, activation=False):
    """``nn.Residual`` of conv (stride) -> BN -> LeakyReLU -> conv, with one of the library's shortcuts and,
    optionally, a LeakyReLU after the sum."""
    nn, c, d = lib.nn, in_channels, out_channels
    branch = [nn.Conv2d(c, d, 3, stride=stride, padding=1), nn.BatchNorm2d(d), nn.LeakyReLU(0.1),
              nn.Conv2d(d, d, (1, 3), padding=(0, 1))]
    shortcuts = {"identity": lambda: None, "conv": lambda: nn.ConvShortcut(c, d, stride),
                 "conv_bn": lambda: nn.ConvShortcut(c, d, stride, batch_norm=True),
                 "avgpool": lambda: nn.AvgPoolShortcut(c, d, stride)}
    return nn.Residual(*branch, shortcut=shortcuts[shortcut](), activation=nn.LeakyReLU(0.2) if activation else None)


def _resnet(lib):
    return importlib.import_module(lib.__name__ + ".models.resnet")


FACTORIES = {
    "Linear": lambda lib, kw: lib.nn.Linear(**kw),
    "ReLU": lambda lib, kw: lib.nn.ReLU(**kw),
    "LeakyReLU": lambda lib, kw: lib.nn.LeakyReLU(**kw),
    "CrossEntropyLoss": lambda lib, kw: lib.nn.CrossEntropyLoss(**kw),
    "Conv2d": lambda lib, kw: lib.nn.Conv2d(**_tuples(kw)),
    "BatchNorm2d": lambda lib, kw: lib.nn.BatchNorm2d(**kw),
    "AvgPool2d": lambda lib, kw: lib.nn.AvgPool2d(**_tuples(kw)),
    "Residual": lambda lib, kw: _residual(lib, **kw),
    "VGG block": lambda lib, kw: _vgg_block(lib, **kw),
    "resnet_block": lambda lib, kw: _resnet(lib).resnet_block(**kw),
    "processing_block": lambda lib, kw: _vgg(lib).processing_block(**kw),
    "reduction_block": lambda lib, kw: _vgg(lib).reduction_block(**kw),
    "Adam": lambda lib, params, kw: lib.optim.Adam(params, **_tuples(kw)),
    "AdamW": lambda lib, params, kw: lib.optim.AdamW(params, **_tuples(kw)),
}


# Layers whose backward differs between train() and eval(): their cases say which mode they ran in.
MODE_MATTERS = ("BatchNorm2d", "Residual", "VGG block", "resnet_block")


def _label(factory, kwargs, **extra):
    args = ", ".join(f"{k}={tuple(v) if isinstance(v, list) else v!r}" for k, v in kwargs.items())
    more = "".join(f", {k} {tuple(v) if isinstance(v, list) else v}" for k, v in extra.items())
    return f"{factory}({args}){more}"


# ----------------------------------------------------------------------------- drawing hidden cases
def _random_state(module, rng):
    """Random values for every parameter and buffer (running_var > 0), so nothing is 0 or 1 by luck."""
    state = {}
    for key, value in module.to(np.float64).state_dict().items():
        value = np.asarray(value)
        if not np.issubdtype(value.dtype, np.floating):
            state[key] = value
        elif key.endswith("running_var"):
            state[key] = rng.uniform(0.5, 2.0, value.shape)
        else:
            state[key] = rng.normal(0.0, 0.5, value.shape)
    return state


def _away_from_zero(x, gap=0.05):
    """Keep inputs of piecewise-linear layers off their kink at 0 (finite differences would cross it)."""
    return np.where(x >= 0, x + gap, x - gap)


def _module_case(lib, rng, factory, kwargs, x, train=True, kind="module", target=None, fd_params=None):
    """A case for a layer (or loss): random state, upstream gradient and directions for the input and
    the parameters (``fd_params``: these only; default all; every gradient is compared with the library)."""
    module = FACTORIES[factory](lib, kwargs)
    module.train(train)
    state = _random_state(module, rng)
    arrays = {"x": np.asarray(x, np.float64)}
    arrays.update({f"state.{k}": v for k, v in state.items()})
    targets = ["input"] + [name for name, _ in module.named_parameters() if fd_params is None or name in fd_params]
    if kind == "loss":
        arrays["target"] = np.asarray(target, np.int64)
    else:
        module.load_state_dict(state)
        y = module(arrays["x"])
        arrays["upstream"] = rng.standard_normal(np.shape(y)) + 0.5  # never all ones
    shapes = {"input": arrays["x"].shape, **{n: p.shape for n, p in module.named_parameters()}}
    for name, p in module.named_parameters():  # gradients already there: backward must add to them
        arrays[f"grad0.{name}"] = rng.standard_normal(p.shape)
    for t in targets:
        for k in range(DIRECTIONS):
            v = rng.standard_normal(shapes[t])
            arrays[f"dir.{t}.{k}"] = v / max(np.linalg.norm(v), 1e-300)
    mode = (" in train mode" if train else " in eval mode") if factory in MODE_MATTERS else ""
    spec = {"kind": kind, "factory": factory, "kwargs": kwargs, "train": bool(train), "targets": targets,
            "label": _label(factory, kwargs, input=list(arrays["x"].shape)) + mode}
    return spec, arrays


def _pick(rng, options):
    return options[int(rng.integers(len(options)))]


def _draw_linear(lib, rng):
    cases = []
    for i in range(6):
        fin, fout = int(rng.integers(2, 8)), int(rng.integers(2, 8))  # 1 would hide a transpose
        if i == 0:
            fin, fout = 5, 3  # non-square weight
        lead = [int(rng.integers(1, 6))] + ([int(rng.integers(1, 4))] if i in (2, 4) else [])
        kwargs = {"in_features": fin, "out_features": fout, "bias": i not in (1, 5)}
        cases.append(_module_case(lib, rng, "Linear", kwargs, rng.standard_normal(lead + [fin])))
    return cases


def _random_shape(rng):
    return [int(rng.integers(1, 6)) for _ in range(int(rng.integers(1, 5)))]


def _draw_relu(lib, rng):
    return [_module_case(lib, rng, "ReLU", {}, _away_from_zero(rng.standard_normal(_random_shape(rng))))
            for _ in range(5)]


def _draw_leaky_relu(lib, rng):
    slopes = [0.01, 0.2, float(rng.uniform(0, 1)), float(rng.uniform(0, 0.5)), 0.0]
    return [_module_case(lib, rng, "LeakyReLU", {"negative_slope": s},
                         _away_from_zero(rng.standard_normal(_random_shape(rng)))) for s in slopes]


def _draw_cross_entropy(lib, rng):
    cases = []
    for i in range(6):
        n, c = int(rng.integers(1, 7)), int(rng.integers(2, 8))
        kwargs = {"reduction": "sum" if i % 3 == 2 else "mean"}
        logits = 2 * rng.standard_normal((n, c))
        cases.append(_module_case(lib, rng, "CrossEntropyLoss", kwargs, logits, kind="loss",
                                  target=rng.integers(0, c, n)))
    return cases


def _draw_conv2d(lib, rng):
    cases = []
    for i in range(6):
        kh, kw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        stride = [int(rng.integers(1, 3)), int(rng.integers(1, 3))]
        padding = [int(rng.integers(0, kh)), int(rng.integers(0, kw))]
        if i == 0:
            kh, kw, stride, padding = 2, 3, [2, 1], [1, 0]  # non-square everything
        elif i == 1:
            stride = [1, 1]
        h, w = kh + int(rng.integers(0, 5)), kw + int(rng.integers(0, 5))
        kwargs = {"in_channels": int(rng.integers(1, 4)), "out_channels": int(rng.integers(1, 5)),
                  "kernel_size": [kh, kw], "stride": stride, "padding": padding, "bias": i != 2}
        x = rng.standard_normal((int(rng.integers(1, 4)), kwargs["in_channels"], h, w))
        cases.append(_module_case(lib, rng, "Conv2d", kwargs, x))
    return cases


def _draw_batchnorm2d(lib, rng):
    cases = []
    for i in range(6):
        c = int(rng.integers(1, 5))
        shape = [int(rng.integers(1, 4)), c, int(rng.integers(1, 5)), int(rng.integers(2, 5))]
        kwargs = {"num_features": c, "eps": _pick(rng, [1e-5, 1e-3]), "affine": i != 3,
                  "track_running_stats": i != 4}
        x = 1.5 * rng.standard_normal(shape) + rng.normal(0, 1, (1, c, 1, 1))
        cases.append(_module_case(lib, rng, "BatchNorm2d", kwargs, x, train=i not in (2, 5)))
    return cases


def _draw_avgpool2d(lib, rng):
    fixed = [{"kernel_size": [2, 3], "stride": [1, 2]}, {"kernel_size": 2},
             {"kernel_size": [3, 2], "stride": [2, 1], "padding": [1, 1], "count_include_pad": False},
             {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True}]
    cases = []
    for i in range(6):
        if i < len(fixed):
            kwargs = fixed[i]
        else:
            k = [int(rng.integers(1, 4)), int(rng.integers(1, 4))]
            kwargs = {"kernel_size": k, "stride": [int(rng.integers(1, 3)), int(rng.integers(1, 3))],
                      "padding": [int(rng.integers(0, k[0] // 2 + 1)), int(rng.integers(0, k[1] // 2 + 1))],
                      "ceil_mode": bool(rng.integers(2)), "count_include_pad": bool(rng.integers(2))}
        k = kwargs["kernel_size"] if isinstance(kwargs["kernel_size"], list) else [kwargs["kernel_size"]] * 2
        x = rng.standard_normal((int(rng.integers(1, 4)), int(rng.integers(1, 4)),
                                 k[0] + int(rng.integers(0, 5)), k[1] + int(rng.integers(0, 5))))
        cases.append(_module_case(lib, rng, "AvgPool2d", kwargs, x))
    return cases


# (kind, batch_norm, shortcut, train): the VGG blocks with a connection
BLOCK_VARIANTS = [("processing", True, "identity", True), ("processing", False, "identity", True),
                  ("processing", True, "identity", False), ("reduction", True, "conv1x1", True),
                  ("reduction", False, "avgpool", True), ("reduction", True, "conv1x1", False)]


def _draw_residual(lib, rng):
    """``nn.Residual.backward`` through everything built on it: plain residuals with each shortcut, the
    VGG blocks (LeakyReLU after the sum) and the ResNet study's pre-activation blocks."""
    cases = []
    for shortcut, stride, widen, activation, train in [
            ("identity", 1, 0, False, True), ("conv", 2, 1, True, True), ("conv_bn", 1, 2, False, True),
            ("avgpool", 2, 1, True, True), ("avgpool", 1, 0, False, False), ("conv", 1, 0, True, True)]:
        c = int(rng.integers(1, 4))
        kwargs = {"in_channels": c, "out_channels": c + widen, "stride": stride, "shortcut": shortcut,
                  "activation": activation}
        x = rng.standard_normal((int(rng.integers(2, 4)), c, int(rng.integers(3, 7)), int(rng.integers(3, 7))))
        cases.append(_module_case(lib, rng, "Residual", kwargs, x, train=train))
    for kind, bn, shortcut, train in BLOCK_VARIANTS:
        c = int(rng.integers(2, 4))
        h, w = 2 * int(rng.integers(1, 4)), 2 * int(rng.integers(1, 4))  # even: both paths halve alike
        kwargs = {"kind": kind, "channels": c, "batch_norm": bn, "shortcut": shortcut}
        x = rng.standard_normal((int(rng.integers(2, 4)), c, h, w))
        # Finite differences for the input and the first and last convolutions (fewer forwards);
        # every parameter's gradient is still compared with the library's.
        cases.append(_module_case(lib, rng, "VGG block", kwargs, x, train=train,
                                  fd_params=("conv0.weight", "conv1.weight", "shortcut.conv.weight")))
    for stride, widen, bn, train in [(1, 0, True, True), (2, 1, True, True), (1, 0, False, True),
                                     (2, 2, False, True), (2, 1, True, False)]:
        c = int(rng.integers(1, 4))
        kwargs = {"in_channels": c, "out_channels": c + widen, "stride": stride, "batch_norm": bn}
        x = rng.standard_normal((int(rng.integers(2, 4)), c, int(rng.integers(3, 7)), int(rng.integers(3, 7))))
        cases.append(_module_case(lib, rng, "resnet_block", kwargs, x, train=train,
                                  fd_params=("conv0.weight", "conv1.weight", "shortcut.conv.weight")))
    return cases


def _structure_case(lib, rng, factory, kwargs, x):
    spec, arrays = _module_case(lib, rng, factory, kwargs, x)
    spec.update(kind="structure", targets=[])
    return spec, {k: v for k, v in arrays.items() if not k.startswith("dir.") and k != "upstream"}


def _draw_processing_block(lib, rng):
    cases = []
    for bn, residual in [(True, True), (False, False), (True, False), (False, True)]:
        c = int(rng.integers(2, 4))
        x = rng.standard_normal((2, c, int(rng.integers(2, 6)), int(rng.integers(2, 6))))
        cases.append(_structure_case(lib, rng, "processing_block",
                                     {"channels": c, "batch_norm": bn, "residual": residual}, x))
    return cases


def _draw_reduction_block(lib, rng):
    cases = []
    for bn, shortcut in [(True, "none"), (False, "none"), (True, "conv1x1"), (False, "avgpool"),
                         (False, "conv1x1")]:
        c = int(rng.integers(2, 4))
        x = rng.standard_normal((2, c, 2 * int(rng.integers(1, 4)), 2 * int(rng.integers(1, 4))))
        cases.append(_structure_case(lib, rng, "reduction_block",
                                     {"channels": c, "batch_norm": bn, "shortcut": shortcut}, x))
    return cases


def _draw_adam(lib, rng):
    configs = [("Adam", {}), ("Adam", {"lr": 0.05, "betas": [0.8, 0.99]}),
               ("Adam", {"lr": 1e-2, "weight_decay": 0.1}), ("Adam", {"lr": 1e-2, "amsgrad": True}),
               ("AdamW", {"lr": 1e-2, "weight_decay": 0.1}), ("Adam", {"lr": 1e-2, "eps": 1e-8})]
    cases = []
    for i, (factory, kwargs) in enumerate(configs):
        shapes = [[int(rng.integers(1, 5)), int(rng.integers(1, 4))], [int(rng.integers(1, 6))]]
        steps = 4
        # The last case has tiny gradients: there eps before or after the bias correction differs.
        scale = 1e-7 if i == len(configs) - 1 else 1.0
        arrays = {f"param.{j}": rng.standard_normal(s) for j, s in enumerate(shapes)}
        arrays.update({f"grad.{t}.{j}": scale * rng.standard_normal(s)
                       for t in range(steps) for j, s in enumerate(shapes)})
        spec = {"kind": "optimizer", "factory": factory, "kwargs": kwargs, "steps": steps,
                "params": len(shapes), "targets": [],
                "label": _label(factory, kwargs, params=[tuple(s) for s in shapes]) + f", {steps} steps"
                         + (f", gradients ~{scale:g}" if scale != 1 else "")}
        cases.append((spec, arrays))
    return cases


CHECKS = {
    "linear": _draw_linear, "relu": _draw_relu, "leaky_relu": _draw_leaky_relu,
    "cross_entropy": _draw_cross_entropy, "adam": _draw_adam, "conv2d": _draw_conv2d,
    "batchnorm2d": _draw_batchnorm2d, "avgpool2d": _draw_avgpool2d, "residual": _draw_residual,
    "processing_block": _draw_processing_block, "reduction_block": _draw_reduction_block,
}


def draw_cases(check, rng, lib):
    """The hidden cases of ``check``: a list of ``(spec, arrays)`` drawn from ``rng``."""
    return CHECKS[check](lib, rng)


# ----------------------------------------------------------------------------- running a case
def _numeric(name, value):
    """``value`` as a numeric ndarray, or a TypeError naming what the student's code returned."""
    array = np.asarray(value)
    if array.dtype == object or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise TypeError(f"{name} is {type(value).__name__} {value!r:.80}, expected a numeric array")
    return array


def _run_module(lib, spec, arrays, with_fd):
    """Forward, backward and (optionally) central differences of one layer, loss or block."""
    is_loss = spec["kind"] == "loss"
    module = FACTORIES[spec["factory"]](lib, spec["kwargs"]).to(np.float64)
    state = {k[len("state."):]: v for k, v in arrays.items() if k.startswith("state.")}
    module.load_state_dict(state)
    module.train(spec["train"])
    x = arrays["x"].copy()
    upstream = None if is_loss else arrays["upstream"].copy()
    y = module(x, arrays["target"]) if is_loss else module(x)
    params = dict(module.named_parameters())
    for name, p in params.items():
        p.grad[...] = arrays[f"grad0.{name}"]
    grad_input = module.backward() if is_loss else module.backward(upstream)
    out = {"y": _numeric("the forward output", y), "grad.input": _numeric("backward's return value", grad_input)}
    # What backward added to each gradient (it must add, not assign: gradients accumulate).
    out.update({f"grad.{name}": _numeric(f"{name}.grad", p.grad) - arrays[f"grad0.{name}"]
                for name, p in params.items()})
    notes = []
    if not np.array_equal(x, arrays["x"]):
        notes.append("the input was modified in place")
    if upstream is not None and not np.array_equal(upstream, arrays["upstream"]):
        notes.append("backward modified grad_output in place")
    if with_fd:
        fd = np.full((len(spec["targets"]), DIRECTIONS, 2), np.nan)
        for i, target in enumerate(spec["targets"]):
            for k in range(DIRECTIONS):
                v = arrays[f"dir.{target}.{k}"]
                for j, sign in enumerate((1.0, -1.0)):
                    module.load_state_dict(state)  # parameters and running statistics as at the start
                    xp = arrays["x"].copy()
                    if target == "input":
                        xp += sign * FD_EPS * v
                    else:
                        params[target].data += sign * FD_EPS * v
                    f = module(xp, arrays["target"]) if is_loss else module(xp)
                    fd[i, k, j] = float(f) if is_loss else float(np.sum(arrays["upstream"] * f))
        out["fd"] = fd
    return out, {"notes": notes}


def _run_optimizer(lib, spec, arrays, with_fd):
    """A few optimiser steps from given parameters and gradients; the parameters after every step."""
    params = [lib.nn.Parameter(arrays[f"param.{j}"].copy()) for j in range(spec["params"])]
    opt = FACTORIES[spec["factory"]](lib, params, spec["kwargs"])
    out, notes = {}, []
    for t in range(spec["steps"]):
        opt.zero_grad()
        for j, p in enumerate(params):
            p.grad[...] = arrays[f"grad.{t}.{j}"]
        opt.step()
        for j, p in enumerate(params):
            out[f"step{t}.param{j}"] = _numeric(f"parameter {j}", p.data).copy()
            if not np.array_equal(p.grad, arrays[f"grad.{t}.{j}"]) and "step() modified p.grad" not in notes:
                notes.append("step() modified p.grad")
    return out, {"notes": notes}


def _run_structure(lib, spec, arrays, with_fd):
    """Build with the student's constructor: state_dict names and shapes, forward in train and eval mode."""
    module = FACTORIES[spec["factory"]](lib, spec["kwargs"])
    keys = [[str(k), [int(d) for d in np.shape(v)]] for k, v in module.state_dict().items()]
    module.to(np.float64)
    state = {k[len("state."):]: v for k, v in arrays.items() if k.startswith("state.")}
    info = {"state_keys": keys, "notes": []}
    if [k for k, _ in keys] != list(state):
        return {}, info  # the grader reports the difference in names
    module.load_state_dict(state)
    module.train(True)
    out = {"y": _numeric("the train-mode output", module(arrays["x"].copy()))}
    module.eval()
    out["y_eval"] = _numeric("the eval-mode output", module(arrays["x"].copy()))
    return out, info


RUNNERS = {"module": _run_module, "loss": _run_module, "optimizer": _run_optimizer, "structure": _run_structure}


def run_case(lib, spec, arrays, with_fd=True):
    """Run one case through ``lib``; returns ``(arrays, info)`` (info: JSON notes)."""
    return RUNNERS[spec["kind"]](lib, spec, arrays, with_fd)


# ----------------------------------------------------------------------------- the grading processes
def _apply_limits(cpu_seconds, memory_bytes):
    """CPU seconds and address space for this process, set before any student code is imported."""
    import resource
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 5))
    if memory_bytes > 0:
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_FSIZE, (256 << 20, 256 << 20))


def _error_text(error):
    """The exception and the last frames of its traceback (where the student's code failed)."""
    frames = traceback.extract_tb(error.__traceback__)[-3:]
    where = "".join(f"  {Path(f.filename).name}:{f.lineno} in {f.name}: {f.line}\n" for f in frames)
    return f"{type(error).__name__}: {error}"[:600] + ("\n" + where if where else "")


def _write_results(work, results, arrays):
    np.savez(work / "results.npz", **arrays)
    (work / "results.json").write_text(json.dumps(results))  # written last: it marks completion


def grade_item(submission, work):
    """Import the submission's minigrad, run the cases in ``work``, write the raw results there."""
    submission, work = Path(submission).resolve(), Path(work).resolve()
    results, out_arrays = {"import_error": None, "cases": []}, {}
    meta = json.loads((work / "cases.json").read_text())
    with np.load(work / "cases.npz", allow_pickle=False) as stored:
        arrays = {key: stored[key] for key in stored.files}
    sys.path.insert(0, str(submission))
    try:
        lib = importlib.import_module("minigrad")
        if not Path(lib.__file__).resolve().is_relative_to(submission):
            raise ImportError(f"minigrad was imported from {lib.__file__}, not from the submission")
    except BaseException as error:  # noqa: BLE001 - anything the submission does on import
        results["import_error"] = _error_text(error)
        _write_results(work, results, out_arrays)
        return
    for i, spec in enumerate(meta["cases"]):
        prefix = f"c{i}."
        case_arrays = {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
        try:
            out, info = run_case(lib, spec, case_arrays, with_fd=True)
            out_arrays.update({prefix + k: np.asarray(v) for k, v in out.items()})
            results["cases"].append({"status": "ok", **info})
        except BaseException as error:  # noqa: BLE001 - SystemExit or MemoryError from the student's code too
            results["cases"].append({"status": "error", "error": _error_text(error)})
    _write_results(work, results, out_arrays)


def _forked_item(request):
    """In the forked process: own session, output to files, limits, then grade; never returns."""
    code = 70
    try:
        os.setsid()  # its own process group: a time-out kills whatever the student's code started
        work = Path(request["work"])
        for fd, name, flags in ((0, os.devnull, os.O_RDONLY), (1, work / "stdout.txt", os.O_WRONLY | os.O_CREAT),
                                (2, work / "stderr.txt", os.O_WRONLY | os.O_CREAT)):
            os.dup2(os.open(name, flags, 0o600), fd)
        (work / "scratch").mkdir()
        os.chdir(work / "scratch")
        _apply_limits(int(request["cpu_seconds"]), int(request["memory_bytes"]))
        grade_item(request["submission"], work)
        code = 0
    except BaseException:  # noqa: BLE001 - reported through the exit code and stderr
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def serve():
    """``checks.py --serve``: fork one grading process per request line; report pids and exit codes.

    numpy and numba are imported once here, so each item's process starts with them loaded (about a
    second saved per item). Requests (stdin) and events (stdout) are JSON lines:
    ``{"id", "submission", "work", "cpu_seconds", "memory_bytes"}`` -> ``{"id", "pid"}``, later
    ``{"pid", "exit": code}`` (negative: killed by that signal). Stdin closed: wait for all, exit.
    """
    import select

    import numba  # noqa: F401 - preloaded for the forked processes

    def emit(event):
        os.write(1, (json.dumps(event) + "\n").encode())

    pending, children, open_stdin = b"", set(), True
    emit({"ready": True})
    while open_stdin or children:
        if open_stdin:
            readable = select.select([0], [], [], 0.02)[0]
        else:
            time.sleep(0.02)
            readable = []
        if readable:
            chunk = os.read(0, 65536)
            open_stdin = bool(chunk)
            pending += chunk
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                request = json.loads(line)
                sys.stdout.flush()
                sys.stderr.flush()
                pid = os.fork()
                if pid == 0:
                    _forked_item(request)
                children.add(pid)
                emit({"id": request["id"], "pid": pid})
        for pid in list(children):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                children.discard(pid)
                emit({"pid": pid, "exit": os.waitstatus_to_exitcode(status)})


if __name__ == "__main__":
    serve()
