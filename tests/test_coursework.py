"""The coursework kit: handouts made from the library hold no solution, and the grader's verdicts are right.

Grading spawns one subprocess per item, so the expensive tests share handouts (module-scoped fixtures)
and plant several bugs in one submission, each in a different item.
"""
import ast
import difflib
import fnmatch
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

import minigrad
from minigrad.coursework import ASSIGNMENTS, HandoutError, checks, grade, make_handout, report_markdown
from minigrad.coursework.__main__ import main as cli_main
from minigrad.coursework.grader import FD_TOL, gradescope_json, judge_case
from minigrad.coursework.handout import library_root, split_target, stub_source

ROOT = library_root()
SEED = 20240611


# ----------------------------------------------------------------------------- helpers (independent of handout.py)
def _function(tree, qualname):
    node = tree
    for part in qualname.split("."):
        node = [n for n in node.body if getattr(n, "name", None) == part][-1]
    return node


def _body_range(node):
    """First code line after the docstring and the last line of ``node`` (1-based)."""
    has_doc = ast.get_docstring(node) is not None
    return node.body[1 if has_doc else 0].lineno, node.end_lineno


def _targets(assignment):
    """(path, qualified name) of every removed body, globs expanded over top-level functions and methods."""
    found = []
    for item in assignment.items:
        for target in item.removes:
            rel, pattern = split_target(target)
            tree = ast.parse((ROOT / rel).read_text())
            names = [n.name for n in tree.body if isinstance(n, ast.FunctionDef)]
            names += [f"{c.name}.{m.name}" for c in tree.body if isinstance(c, ast.ClassDef)
                      for m in c.body if isinstance(m, ast.FunctionDef)]
            matches = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
            assert matches, target
            found += [(rel, n) for n in matches if (rel, n) not in found]
    return found


def _solution_lines(assignment):
    """Stripped lines of the removed bodies that occur nowhere else in the library."""
    spans, removed = {}, set()
    for rel, qualname in _targets(assignment):
        source = (ROOT / rel).read_text()
        first, last = _body_range(_function(ast.parse(source), qualname))
        spans.setdefault(rel, []).append((first, last))
        removed.update(line.strip() for line in source.splitlines()[first - 1:last] if line.strip())
    elsewhere = set()
    for package in ("minigrad", "experiments"):
        for path in (ROOT / package).rglob("*.py"):
            rel = path.relative_to(ROOT)
            if "coursework" in rel.parts:
                continue
            lines = path.read_text().splitlines()
            for first, last in spans.get(rel, []):
                lines[first - 1:last] = [""] * (last - first + 1)
            elsewhere.update(line.strip() for line in lines)
    return removed - elsewhere


def _plant(folder, rel, old, new):
    """Replace ``old`` (which must occur exactly once) by ``new`` in a submission's file."""
    path = Path(folder) / rel
    text = path.read_text()
    assert text.count(old) == 1, f"{rel}: the text to plant a bug in changed: {old!r}"
    path.write_text(text.replace(old, new))


def _restore_library(handout, assignment):
    """Turn a handout back into an untouched copy of the library (the marker file stays)."""
    for rel, _ in _targets(assignment):
        shutil.copyfile(ROOT / rel, handout / rel)


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def dirty_root(tmp_path_factory):
    """A copy of the library with the clutter a real checkout has: caches, compiled files, git."""
    root = tmp_path_factory.mktemp("library")
    ignore = shutil.ignore_patterns("results", "*.npz")
    for name in ("minigrad", "experiments"):
        shutil.copytree(ROOT / name, root / name, ignore=ignore)
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        if (ROOT / name).exists():
            shutil.copyfile(ROOT / name, root / name)
    (root / ".git").mkdir()
    (root / ".git" / "config").write_text("[core]\n")
    for folder in (root / "minigrad" / "__pycache__", root / "minigrad" / "kernels" / "__pycache__",
                   root / "experiments" / ".git"):
        folder.mkdir(exist_ok=True)
    (root / "minigrad" / "__pycache__" / "gradcheck.cpython-311.pyc").write_bytes(b"\0compiled")
    (root / "minigrad" / "nn" / "stale.pyc").write_bytes(b"\0compiled")
    (root / "minigrad" / "kernels" / "__pycache__" / "im2col.im2col-40.py311.nbi").write_bytes(b"\0numba")
    (root / "minigrad" / "kernels" / "__pycache__" / "im2col.im2col-40.py311.1.nbc").write_bytes(b"\0numba")
    return root


@pytest.fixture(scope="module")
def handouts(tmp_path_factory, dirty_root):
    out = tmp_path_factory.mktemp("handouts")
    return {name: make_handout(a, out / name, root=dirty_root) for name, a in ASSIGNMENTS.items()}


# ----------------------------------------------------------------------------- making handouts
def test_list_names_every_assignment_and_item(capsys):
    assert cli_main(["list"]) == 0
    text = capsys.readouterr().out
    assert len(ASSIGNMENTS) >= 3
    for assignment in ASSIGNMENTS.values():
        assert assignment.name in text
        for item in assignment.items:
            assert item.name in text and item.files()[0] in text


def test_stub_source_splices_only_the_body():
    source = '''import numba


class Layer:
    """A layer."""

    def forward(self, x):  # kept
        return x * 2

    @numba.njit(cache=True)
    def backward(self, g,
                 scale=1.0):
        """dx = 2 g."""
        # the secret formula
        out = g * 2  # solution comment
        return out * scale
        # trailing solution comment

    # a comment about the next method, kept
    def other(self):
        # comment before the first statement
        return 1
'''
    new, removed = stub_source(source, ["Layer.backward", "Layer.other"], lambda q: f"implement {q}")
    old_lines, new_lines = source.splitlines(), new.splitlines()
    assert "# the secret formula" not in new and "solution comment" not in new
    assert "out = g * 2" not in new and "comment before the first statement" not in new
    for kept in ("    def forward(self, x):  # kept", "    @numba.njit(cache=True)", "                 scale=1.0):",
                 '        """dx = 2 g."""', "    # a comment about the next method, kept"):
        assert kept in new_lines
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, old_lines, new_lines).get_opcodes():
        if tag != "equal":
            assert tag == "replace" and j2 - j1 == 1 and "raise NotImplementedError" in new_lines[j1]
    tree = ast.parse(new)
    backward = _function(tree, "Layer.backward")
    assert ast.get_docstring(backward) == "dx = 2 g."
    assert [a.arg for a in backward.args.args] == ["self", "g", "scale"]
    assert isinstance(backward.body[1], ast.Raise) and len(backward.body) == 2
    assert "out = g * 2  # solution comment" in [line.strip() for line in removed["Layer.backward"]]


@pytest.mark.parametrize("name", sorted(ASSIGNMENTS))
def test_handout_keeps_signatures_and_holds_no_solution(handouts, dirty_root, name):
    assignment, handout = ASSIGNMENTS[name], handouts[name]
    # Nothing compiled, cached or versioned came along from the cluttered library.
    for path in handout.rglob("*"):
        assert path.name not in ("__pycache__", ".git") and path.suffix not in (".pyc", ".nbi", ".nbc"), path
    assert not (handout / "minigrad" / "coursework").exists()  # the kit (grader) is not handed out
    # No line of a removed body, code or comment, is anywhere in the folder.
    solution = _solution_lines(assignment)
    assert len(solution) >= 2 * len(assignment.items)
    for path in handout.rglob("*"):
        if path.is_file():
            lines = {line.strip() for line in path.read_text(errors="replace").splitlines()}
            assert not (lines & solution), f"{path}: {sorted(lines & solution)[:3]}"
    # Stubbed functions keep signature and docstring; every other line of every file is unchanged.
    stubbed = {rel for rel, _ in _targets(assignment)}
    for rel, qualname in _targets(assignment):
        old = _function(ast.parse((ROOT / rel).read_text()), qualname)
        new = _function(ast.parse((handout / rel).read_text()), qualname)
        assert ast.dump(old.args) == ast.dump(new.args)
        assert [ast.dump(d) for d in old.decorator_list] == [ast.dump(d) for d in new.decorator_list]
        assert ast.get_docstring(old) == ast.get_docstring(new)
        raise_node = new.body[-1]
        assert isinstance(raise_node, ast.Raise) and raise_node.exc.func.id == "NotImplementedError"
        assert len(new.body) == 1 + (ast.get_docstring(new) is not None)
    for rel in stubbed:
        old_lines, new_lines = (ROOT / rel).read_text().splitlines(), (handout / rel).read_text().splitlines()
        for tag, _, _, j1, j2 in difflib.SequenceMatcher(None, old_lines, new_lines, autojunk=False).get_opcodes():
            assert tag == "equal" or (tag == "replace" and j2 - j1 == 1 and "NotImplementedError" in new_lines[j1])
    for path in (handout / "minigrad").rglob("*.py"):
        rel = path.relative_to(handout)
        if rel not in stubbed:
            assert path.read_bytes() == (ROOT / rel).read_bytes(), rel
    text = (handout / "HANDOUT.md").read_text()
    assert "gradcheck" in text and all(item.name in text for item in assignment.items)
    assert json.loads((handout / "COURSEWORK.json").read_text())["assignment"] == name


def test_make_refuses_a_non_empty_folder_and_unknown_names(tmp_path, capsys):
    (tmp_path / "old.txt").write_text("x")
    with pytest.raises(HandoutError, match="not an empty folder"):
        make_handout(ASSIGNMENTS["mlp"], tmp_path)
    with pytest.raises(SystemExit) as refused:  # argparse: exit 2, one line naming the allowed values
        cli_main(["make", "nonsense", "--out", str(tmp_path / "new")])
    assert refused.value.code == 2
    assert "invalid choice: 'nonsense' (choose from 'mlp', 'conv', 'depth')" in capsys.readouterr().err
    assert cli_main(["make", "depth", "--out", str(tmp_path / "new")]) == 0
    assert "written to" in capsys.readouterr().out and (tmp_path / "new" / "HANDOUT.md").is_file()


# ----------------------------------------------------------------------------- grading
def test_grade_refuses_a_folder_without_minigrad(tmp_path):
    with pytest.raises(FileNotFoundError, match="holds no minigrad package"):
        grade(tmp_path, assignment="mlp")
    (tmp_path / "minigrad").mkdir()
    (tmp_path / "minigrad" / "__init__.py").write_text("")
    with pytest.raises(ValueError, match="COURSEWORK.json"):
        grade(tmp_path)


def assert_full_marks_with_every_direction_judged(report, gradescope, items):
    """What an untouched copy of the library must get: full marks on ``items``, and no finite-difference
    direction skipped. The grader skips a direction where the library's own gradient disagrees with the
    finite differences (a kink), so a bug in the library itself gives its copy full marks: only the skipped
    directions show it."""
    total = sum(item.points for item in items)
    assert f"**Total: {total} / {total}**" in report and "First failing case" not in report
    assert gradescope["score"] == total
    assert [t["name"] for t in gradescope["tests"]] == [item.name for item in items]
    for test in gradescope["tests"]:
        assert set(test) >= {"name", "score", "max_score", "output"}
        assert test["score"] == test["max_score"] and "hidden cases passed" in test["output"]
        worst = re.search(r"Worst relative error: (\S+) against the library, (\S+) against finite", test["output"])
        assert float(worst.group(1)) < 1e-8 and float(worst.group(2)) < FD_TOL, test["output"]
        assert "directions skipped" not in test["output"], test["output"]
    assert "Warning" not in report, report


def test_untouched_library_scores_full_marks(handouts, tmp_path, capsys):
    """make, put the library's own bodies back, grade every item of every assignment: full marks."""
    copy = tmp_path / "mlp"
    shutil.copytree(handouts["mlp"], copy)
    _restore_library(copy, ASSIGNMENTS["mlp"])
    report, results = tmp_path / "report.md", tmp_path / "results.json"
    assert cli_main(["grade", str(copy), "--assignment", "all", "--seed", str(SEED), "--timeout", "120",
                     "--json", str(results), "--report", str(report)]) == 0
    everything = [item for a in ASSIGNMENTS.values() for item in a.items]
    total = sum(item.points for item in everything)
    assert f"all: {total} / {total}" in capsys.readouterr().out
    assert_full_marks_with_every_direction_judged(report.read_text(), json.loads(results.read_text()), everything)


LINEAR_WITHOUT_BIAS_GRADIENT = """

_library_backward = Linear.backward


def _backward_without_bias(self, grad_output):
    saved = None if self.bias is None else self.bias.grad.copy()
    grad_input = _library_backward(self, grad_output)
    if saved is not None:
        self.bias.grad[...] = saved  # the bug: the bias gradient is dropped
    return grad_input


Linear.backward = _backward_without_bias
"""


def test_a_bug_in_the_library_itself_fails_the_untouched_library_check(tmp_path, monkeypatch):
    """The same bug in the grader's reference (this process's minigrad) and in the graded copy: the copy agrees
    with the reference everywhere, so it scores full marks; the check above still fails, on the directions
    the grader had to skip."""
    from minigrad.nn import linear
    holder = type("Linear", (), {"backward": linear.Linear.backward})  # the planted code's last line rebinds it
    namespace = {"Linear": holder}
    exec(compile(LINEAR_WITHOUT_BIAS_GRADIENT, "planted", "exec"), namespace)
    monkeypatch.setattr(linear.Linear, "backward", namespace["_backward_without_bias"])  # undone after the test
    folder = tmp_path / "library"
    shutil.copytree(ROOT / "minigrad", folder / "minigrad", ignore=shutil.ignore_patterns("__pycache__", "coursework"))
    path = folder / "minigrad" / "nn" / "linear.py"
    path.write_text(path.read_text() + LINEAR_WITHOUT_BIAS_GRADIENT)
    items = [item for item in ASSIGNMENTS["mlp"].items if item.name == "Linear.backward"]
    result = grade(folder, assignment="all", items=[item.name for item in items], seed=SEED, timeout=120)
    item = result.items[0]
    assert item.score == item.points  # agreeing with a wrong reference: full marks
    assert 0 < item.fd_skipped < item.fd_directions and result.library_disagreements == {"Linear.backward": item.fd_skipped}
    report = report_markdown(result)
    assert "Warning" in report and f"{item.fd_skipped} of {item.fd_directions} directions skipped" in report
    with pytest.raises(AssertionError, match="directions skipped"):
        assert_full_marks_with_every_direction_judged(report, gradescope_json(result), items)


def test_fresh_handout_scores_zero_exactly_for_the_removed_items(handouts):
    # The mlp handout graded with the conv items too: zero for its own, full marks for those (not removed;
    # the depth items are not, they use LeakyReLU).
    names = [item.name for a in ("mlp", "conv") for item in ASSIGNMENTS[a].items]
    result = grade(handouts["mlp"], assignment="all", items=names, seed=SEED, timeout=120)
    assert [item.name for item in result.items] == names
    removed = {item.name for item in ASSIGNMENTS["mlp"].items}
    for item in result.items:
        if item.name in removed:
            assert item.score == 0 and item.status == "failed" and item.passed == 0
            assert "NotImplementedError" in item.first_failure
        else:
            assert item.score == item.points, report_markdown(result)
    for name in ("conv", "depth"):
        result = grade(handouts[name], seed=SEED, timeout=120)
        assert [item.name for item in result.items] == [item.name for item in ASSIGNMENTS[name].items]
        for item in result.items:
            assert item.score == 0 and item.passed == 0 and "NotImplementedError" in item.first_failure, \
                report_markdown(result)


def _replace_body(folder, target, body):
    """Write ``body`` (source at 8 spaces) in place of ``target``'s body in a submission, as a student would."""
    rel, qualname = split_target(target)
    path = Path(folder) / rel
    lines = path.read_text().splitlines()
    first, last = _body_range(_function(ast.parse("\n".join(lines)), qualname))
    lines[first - 1:last] = body.strip("\n").splitlines()
    path.write_text("\n".join(lines) + "\n")


# Students' bodies, written from the handouts' maths, each with one classic bug (or none).
LINEAR_TRANSPOSED = """
        x2 = self.saved.x.reshape(-1, self.in_features)
        g2 = grad_output.reshape(-1, self.out_features)
        self.weight.grad += (x2.T @ g2).reshape(self.weight.shape)  # transposed: should be g2.T @ x2
        if self.bias is not None:
            self.bias.grad += g2.sum(axis=0)
        return grad_output @ self.weight.data
"""
RELU_CHATTY = """
        print("debug " * 400 + "score: 100")  # output is captured and truncated, never trusted
        return grad_output * (self.saved.y > 0)
"""
LEAKY_RELU_ENDLESS = """
        while True:
            pass
"""
ADAM_GREEDY = """
        np.empty(10**9).sum()  # 8 GB of address space: a MemoryError under the grader's limit
"""
BN_WRONG_SIGN = """
        saved = self.saved
        x3 = saved.x3
        g = np.asarray(grad_output).reshape(x3.shape)
        xhat = (x3 - saved.mean[None, :, None]) * saved.invstd[None, :, None]
        gamma = self.weight.data if self.affine else np.ones(self.num_features)
        if self.affine:
            self.weight.grad += (g * xhat).sum(axis=(0, 2))
            self.bias.grad += g.sum(axis=(0, 2))
        k = (gamma * saved.invstd)[None, :, None]
        if not saved.used_batch_stats:
            return (k * g).reshape(grad_output.shape)
        mean_g, mean_gx = g.mean(axis=(0, 2), keepdims=True), (g * xhat).mean(axis=(0, 2), keepdims=True)
        return (k * (g - mean_g + xhat * mean_gx)).reshape(grad_output.shape)  # sign: should be - xhat
"""
# Conv2d without its bias gradient: the library's backward, then the bias gradient undone.
CONV_NO_BIAS = """

_library_backward = Conv2d.backward


def _backward_without_bias(self, grad_output):
    saved = None if self.bias is None else self.bias.grad.copy()
    grad_input = _library_backward(self, grad_output)
    if saved is not None:
        self.bias.grad[...] = saved  # forgot: self.bias.grad += grad_output.sum(axis=(0, 2, 3))
    return grad_input


Conv2d.backward = _backward_without_bias
"""


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """A copy of the library with one planted bug per item, in different items of two assignments."""
    folder = tmp_path_factory.mktemp("planted")
    for name in ("minigrad", "experiments"):
        shutil.copytree(ROOT / name, folder / name, ignore=shutil.ignore_patterns("__pycache__", "coursework"))
    _replace_body(folder, "minigrad.nn.linear:Linear.backward", LINEAR_TRANSPOSED)
    _replace_body(folder, "minigrad.nn.activation:ReLU.backward", RELU_CHATTY)
    _replace_body(folder, "minigrad.nn.activation:LeakyReLU.backward", LEAKY_RELU_ENDLESS)
    _replace_body(folder, "minigrad.optim.adam:Adam._step_group", ADAM_GREEDY)
    _replace_body(folder, "minigrad.nn.batchnorm:_BatchNorm.backward", BN_WRONG_SIGN)
    conv = folder / "minigrad" / "nn" / "conv.py"
    conv.write_text(conv.read_text() + CONV_NO_BIAS)
    return folder


def test_planted_bugs_are_caught_named_and_cost_only_their_item(planted):
    names = [item.name for a in ("mlp", "conv") for item in ASSIGNMENTS[a].items]
    result = grade(planted, assignment="all", items=names, seed=SEED, timeout=10)
    items = {item.name: item for item in result.items}
    linear = items["Linear.backward"]
    assert linear.score < linear.points and "finite differences disagree with weight.grad" in linear.first_failure
    leaky = items["LeakyReLU.backward"]
    assert leaky.score == 0 and leaky.status in ("time-out", "error")
    assert "within 10 s" in leaky.first_failure or "CPU-time" in leaky.first_failure
    adam = items["Adam.step"]
    assert adam.score == 0 and "MemoryError" in adam.first_failure
    relu = items["ReLU.backward"]
    assert relu.score == relu.points and "[... truncated ...]" in relu.output and "score: 100" in relu.output
    bias = items["Conv2d.backward"]
    assert 0 < bias.passed < bias.cases and "bias.grad" in bias.first_failure  # cases without a bias pass
    bn = items["BatchNorm2d.backward"]
    assert 0 < bn.passed < bn.cases  # eval mode (running statistics) has no such term: it passes
    assert all(text in bn.first_failure for text in ("BatchNorm2d", "in train mode", "input gradient"))
    for name in ("CrossEntropyLoss.backward", "AvgPool2d.backward"):
        assert items[name].score == items[name].points, report_markdown(result)
    text = report_markdown(result)
    assert "| Conv2d.backward |" in text and "bias.grad" in text and "First failing case" in text
    gradescope = gradescope_json(result)
    assert gradescope["score"] == result.score < result.max_score and len(gradescope["tests"]) == len(names)


# ----------------------------------------------------------------------------- the judge, in process
def _module_case(grad_input, fd):
    spec = {"kind": "module", "targets": ["input"]}
    arrays = {"dir.input.0": np.array([1.0, 0.0]), "dir.input.1": np.array([0.0, 1.0])}
    ref = {"y": np.array([1.0, 2.0]), "grad.input": np.array([2.0, -3.0])}
    stu = {"y": np.array([1.0, 2.0]), "grad.input": grad_input, "fd": fd}
    return spec, ref, stu, {"notes": []}, arrays


def test_judge_names_shapes_nans_and_wrong_values_and_skips_kinks():
    eps = checks.FD_EPS
    good_fd = np.array([[[2 * eps, -2 * eps], [-3 * eps, 3 * eps]]])  # (f+ - f-) / (2 eps) = 2 and -3
    reason, ref_err, fd_err = judge_case(*_module_case(np.array([2.0, -3.0]), good_fd))
    assert reason == "" and ref_err == 0 and fd_err < 1e-9
    reason, *_ = judge_case(*_module_case(np.array([2.0, -3.0, 0.0]), good_fd))
    assert "input gradient" in reason and "shape (3,)" in reason
    reason, *_ = judge_case(*_module_case(np.array([2.0, np.nan]), good_fd))
    assert "NaN" in reason
    reason, ref_err, _ = judge_case(*_module_case(np.array([2.0, 3.0]), good_fd))
    assert "finite differences disagree" in reason and ref_err == pytest.approx(2.0)
    # A direction whose finite difference disagrees with the library too crossed a kink: skipped.
    kinked = good_fd.copy()
    kinked[0, 0] = [5 * eps, -5 * eps]
    counts = {}
    reason, _, fd_err = judge_case(*_module_case(np.array([2.0, -3.0]), kinked), counts=counts)
    assert reason == "" and fd_err < 1e-9 and counts == {"directions": 2, "skipped": 1}  # counted, for the report
    spec, ref, stu, _, arrays = _module_case(np.array([2.0, -3.0]), good_fd)
    reason, *_ = judge_case(spec, ref, stu, {"notes": ["backward modified grad_output in place"]}, arrays)
    assert reason == "backward modified grad_output in place"


def test_judge_on_real_cases_passes_the_library_and_hints_an_assigned_gradient():
    for spec, arrays in checks.draw_cases("linear", np.random.default_rng(3), minigrad):
        ref, _ = checks.run_case(minigrad, spec, arrays, with_fd=False)
        out, info = checks.run_case(minigrad, spec, arrays, with_fd=True)
        assert judge_case(spec, ref, out, info, arrays)[0] == ""
        assigned = dict(out, **{"grad.weight": out["grad.weight"] - arrays["grad0.weight"]})
        reason = judge_case(spec, ref, assigned, info, arrays)[0]
        assert "weight.grad" in reason and "assigned, not added to" in reason
