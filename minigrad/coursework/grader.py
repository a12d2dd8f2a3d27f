"""Grade a submission: one subprocess per item with limits, judged against the installed library.

For each item the grader draws hidden cases (``checks.draw_cases``, seeded at grading time), computes the
reference results with the installed minigrad, and writes the cases to a work folder as ``.npz`` + JSON.
A subprocess (``python -I -B checks.py``: isolated, so neither the current directory nor PYTHONPATH can
put another minigrad first) puts the submission first on ``sys.path``, applies ``resource`` limits
(CPU seconds, address space) before importing it, runs the cases and writes raw results as ``.npz``
(read with ``allow_pickle=False``) + JSON. The grader enforces a wall-clock timeout, captures and
truncates the student's output, and judges every case itself: the student's process never reports a
verdict. By default the subprocess runs with ``NUMBA_DISABLE_JIT=1``: the hidden cases are tiny, and
compiling the library's kernels afresh for every submission would cost far more than running them.

A case passes when nothing raised, every array has the reference's shape and is finite, the forward
output matches, every gradient matches the library's to ``REF_TOL`` and the finite differences agree with
the student's gradients to ``FD_TOL``. An item scores ``points * passed / cases``.

A direction along which the finite differences disagree with the library's gradient too is skipped: it
crossed a kink (inputs are kept away from the layers' own kinks, but a block's inner activations are not),
or the library itself is wrong there. The grader cannot tell which, so it counts these directions per item
(``ItemResult.fd_skipped`` of ``fd_directions``) and the report names them: a library bug would otherwise
give full marks to an untouched copy of the library, since it agrees with itself everywhere.
"""
import json
import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import minigrad

from . import checks
from .assignments import ASSIGNMENTS, get_assignment
from .handout import MARKER

__all__ = ["grade", "GradeResult", "ItemResult", "write_report", "write_gradescope", "REF_TOL", "FD_TOL"]

REF_TOL = 1e-6   # float64 against float64: any real bug is off by far more
FD_TOL = 1e-5    # central differences, eps 1e-6, through several layers
FD_NOISE = 1e-4  # derivatives below FD_NOISE * |f| are compared on that absolute scale (rounding noise)
OUTPUT_LIMIT = 2000  # characters of a student's stdout/stderr kept per item


@dataclass
class ItemResult:
    name: str
    points: float
    score: float = 0.0
    cases: int = 0
    passed: int = 0
    status: str = "passed"       # passed | failed | error | time-out
    first_failure: str = ""      # "case 2 of 6 (label): reason"
    worst_ref_error: float = 0.0
    worst_fd_error: float = 0.0
    compared: int = 0            # cases whose results could be compared (ran without raising)
    fd_directions: int = 0       # finite-difference directions judged
    fd_skipped: int = 0          # of those, skipped: the library's own gradient disagreed with them
    output: str = ""             # the student's captured output, truncated
    seconds: float = 0.0


@dataclass
class GradeResult:
    assignment: str
    submission: str
    seed: int
    items: list = field(default_factory=list)

    @property
    def score(self):
        return round(sum(i.score for i in self.items), 2)

    @property
    def max_score(self):
        return sum(i.points for i in self.items)

    @property
    def library_disagreements(self):
        """``{item name: directions skipped}`` where the library's gradient disagreed with finite differences."""
        return {i.name: i.fd_skipped for i in self.items if i.fd_skipped}


# ----------------------------------------------------------------------------- judging
def _max_abs(array):
    return float(np.max(np.abs(array))) if array.size else 0.0


def _rel_error(got, want, floor=0.0):
    """max |got - want| / max(max |want|, floor): norm-wise, so near-zero entries do not blow it up.

    ``floor`` keeps a gradient that is zero by structure (a conv bias followed by BN) from turning
    rounding noise into a large relative error: it is a millionth of the case's largest gradient.
    """
    return _max_abs(got - want) / max(_max_abs(want), floor, 1e-300) if want.size else 0.0


def _describe(key):
    if key == "y":
        return "the forward output"
    if key == "y_eval":
        return "the eval-mode output"
    if key == "grad.input":
        return "the input gradient (backward's return value)"
    if key.startswith("grad."):
        return f"{key[5:]}.grad"
    step, param = key.split(".")
    return f"parameter {param[5:]} after step {int(step[4:]) + 1}"


def _structure_problem(info, arrays):
    """The constructor's state_dict names and shapes against the library's, or None."""
    want = [[k[len("state."):], list(np.shape(v))] for k, v in arrays.items() if k.startswith("state.")]
    got = info.get("state_keys")
    if got != want:
        return f"state_dict names/shapes differ from the library's:\n    expected {want}\n    got      {got}"
    return None


def _array_problem(ref, stu):
    """A missing, misshapen or non-finite result, or None."""
    for key, want in ref.items():
        got = stu.get(key)
        if got is None:
            return f"{_describe(key)} is missing"
        if got.shape != want.shape:
            return f"{_describe(key)} has shape {got.shape}, expected {want.shape}"
        if not np.all(np.isfinite(got)):
            return f"{_describe(key)} contains NaN or Inf"
    return None


def _finite_difference_check(spec, ref, stu, arrays, counts=None):
    """``(problem or None, worst error, key)``: central differences of f against <gradient, direction>.

    A direction along which the differences disagree with the library's gradient too crossed a kink, or the
    library is wrong there: it says nothing about the student and is skipped, and counted in ``counts``
    (``"directions"`` judged, ``"skipped"``) so that the report can say so.
    """
    counts = {} if counts is None else counts
    targets, worst = spec.get("targets", []), 0.0
    fd = stu.get("fd")
    if targets and (fd is None or fd.shape != (len(targets), checks.DIRECTIONS, 2) or not np.all(np.isfinite(fd))):
        return "the finite-difference evaluations failed (a forward output was not finite?)", 1.0, None
    for i, target in enumerate(targets):
        key = f"grad.{target}"
        for k in range(checks.DIRECTIONS):
            v = arrays[f"dir.{target}.{k}"]
            numeric = (fd[i, k, 0] - fd[i, k, 1]) / (2 * checks.FD_EPS)
            mine, lib = float(np.sum(stu[key] * v)), float(np.sum(ref[key] * v))
            # The differences carry rounding noise of about 1e-16 |f| / eps (times the rounding of the
            # forward): a derivative smaller than FD_NOISE |f| is compared on that absolute scale.
            floor = FD_NOISE * max(abs(fd[i, k, 0]), abs(fd[i, k, 1]), 1e-300)
            counts["directions"] = counts.get("directions", 0) + 1
            if abs(numeric - lib) / max(abs(numeric), abs(lib), floor) > FD_TOL:
                counts["skipped"] = counts.get("skipped", 0) + 1
                continue
            error = abs(numeric - mine) / max(abs(numeric), abs(mine), floor)
            worst = max(worst, error)
            if error > FD_TOL:
                return (f"finite differences disagree with {_describe(key)}: relative error {error:.1e} "
                        "along a random direction"), worst, key
    return None, worst, None


def judge_case(spec, ref, stu, info, arrays, counts=None):
    """``(reason or "", worst error against the library, worst finite-difference error)`` of one case.

    ``ref``: the library's results; ``stu``: the submission's (with ``"fd"``, the objective at
    ``p +- eps v``); ``info``: the submission's JSON notes; ``arrays``: the case's inputs. ``counts`` (a dict)
    receives the finite-difference directions judged and skipped (see ``_finite_difference_check``).
    """
    if spec["kind"] == "structure":
        problem = _structure_problem(info, arrays)
        if problem:
            return problem, 1.0, 0.0
    notes = [note for note in info.get("notes", []) if isinstance(note, str)]
    if notes:
        return notes[0], 0.0, 0.0
    problem = _array_problem(ref, stu)
    if problem:
        return problem, 1.0, 0.0
    grad_scale = max([_max_abs(v) for k, v in ref.items() if k.startswith("grad.")] + [0.0])
    errors = {key: _rel_error(stu[key], want, floor=1e-6 * grad_scale if key.startswith("grad.") else 0.0)
              for key, want in ref.items()}
    worst_ref = max(errors.values(), default=0.0)
    problem, worst_fd, key = _finite_difference_check(spec, ref, stu, arrays, counts)
    if problem:
        return problem + _assigned_hint(key, ref, stu, arrays), worst_ref, worst_fd
    for key, error in errors.items():
        if error > REF_TOL:
            reason = f"{_describe(key)} differs from the library's: relative error {error:.1e}"
            return reason + _assigned_hint(key, ref, stu, arrays), worst_ref, worst_fd
    return "", worst_ref, worst_fd


def _assigned_hint(key, ref, stu, arrays):
    """A hint when a parameter's gradient was assigned (``=``) where it must be added to (``+=``)."""
    before = arrays.get(f"grad0.{key[len('grad.'):]}") if key and key.startswith("grad.") else None
    if before is not None and _rel_error(stu[key] + before, ref[key]) < REF_TOL:
        return " (it was assigned, not added to: use +=, gradients accumulate)"
    return ""


# ----------------------------------------------------------------------------- the subprocess
def _child_env(work, jit):
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(work), "LC_ALL": "C.UTF-8",
           "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "NUMBA_NUM_THREADS": "1", "NUMBA_CACHE_DIR": str(work / "numba-cache"), "MPLBACKEND": "Agg"}
    if not jit:
        env["NUMBA_DISABLE_JIT"] = "1"
    return env


class _ItemServer:
    """``python -I -B checks.py``: a process with numpy and numba loaded that forks one process per item.

    ``-I`` (isolated): neither the current directory nor PYTHONPATH can put another minigrad first.
    """

    def __init__(self, work_root, jit):
        self.log = open(work_root / "server.log", "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-I", "-B", str(Path(checks.__file__).resolve())], cwd=work_root,
            env=_child_env(work_root, jit), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
            start_new_session=True)
        self.buffer = b""
        self._wait_ready()

    def _wait_ready(self, limit=300.0):
        """Wait until numpy and numba are loaded, so an item's clock starts at its own fork."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            events = self.events(0.1)
            if events is None:
                break
            if any(event.get("ready") for event in events):
                return
        self.close()
        log = Path(self.log.name).read_text(errors="replace")[-2000:]
        raise RuntimeError(f"the grading process (python -I -B checks.py) did not start:\n{log}")

    def start(self, key, submission, work, cpu_seconds, memory_bytes):
        request = {"id": key, "submission": str(submission), "work": str(work),
                   "cpu_seconds": int(cpu_seconds), "memory_bytes": int(memory_bytes)}
        self.process.stdin.write((json.dumps(request) + "\n").encode())
        self.process.stdin.flush()

    def events(self, wait):
        """Events reported within ``wait`` seconds; None once the server has gone."""
        if not select.select([self.process.stdout], [], [], wait)[0]:
            return []
        chunk = os.read(self.process.stdout.fileno(), 65536)
        if not chunk:
            return None
        self.buffer += chunk
        *lines, self.buffer = self.buffer.split(b"\n")
        return [json.loads(line) for line in lines if line.strip()]

    def close(self):
        try:
            self.process.stdin.close()
            self.process.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            _kill_group(self.process.pid)
            self.process.wait()
        self.process.stdout.close()
        self.log.close()


def _kill_group(pid):
    """SIGKILL an item's process group (the item process leads it: it called setsid)."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _captured_output(work):
    """The student's stdout and stderr, truncated, as text (never interpreted)."""
    parts = []
    for name in ("stdout", "stderr"):
        data = (work / f"{name}.txt").read_bytes()
        if data.strip():
            text = data.decode("utf-8", errors="replace")
            if len(text) > OUTPUT_LIMIT:
                text = text[:OUTPUT_LIMIT // 2] + "\n[... truncated ...]\n" + text[-OUTPUT_LIMIT // 2:]
            parts.append(f"[{name}]\n{text.rstrip()}")
    return "\n".join(parts)


def _exit_reason(returncode):
    if returncode < 0:
        sig = -returncode
        if sig == signal.SIGXCPU:
            return "the CPU-time limit was exceeded"
        if sig == signal.SIGXFSZ:
            return "the file-size limit was exceeded (too much output?)"
        return f"the process was killed by signal {signal.Signals(sig).name} (a crash, or out of memory)"
    return f"the process exited with code {returncode} before writing its results"


# ----------------------------------------------------------------------------- grading
def _prepare(item, index, work_root, seed):
    """Draw the item's hidden cases, run the reference, write the cases for the subprocess."""
    rng = np.random.default_rng([seed, zlib.crc32(item.name.encode())])
    cases = checks.draw_cases(item.check, rng, minigrad)
    refs = []
    for spec, arrays in cases:
        out, _ = checks.run_case(minigrad, spec, arrays, with_fd=False)
        refs.append({k: np.asarray(v, np.float64) for k, v in out.items()})
    work = work_root / f"item{index}"
    work.mkdir()
    (work / "cases.json").write_text(json.dumps({"item": item.name, "cases": [spec for spec, _ in cases]}))
    np.savez(work / "cases.npz", **{f"c{i}.{k}": v for i, (_, arrays) in enumerate(cases) for k, v in arrays.items()})
    return work, cases, refs


def _load_results(work, n_cases):
    """The subprocess's raw results, or None when it wrote none; malformed results are an error string."""
    if not (work / "results.json").exists():
        return None
    try:
        meta = json.loads((work / "results.json").read_text())
        with np.load(work / "results.npz", allow_pickle=False) as stored:
            arrays = {key: np.array(stored[key]) for key in stored.files}
    except (OSError, ValueError) as error:
        return f"unreadable results ({type(error).__name__}: {error})"
    if not isinstance(meta, dict) or (meta.get("import_error") is None and
                                      (not isinstance(meta.get("cases"), list) or len(meta["cases"]) != n_cases)):
        return "malformed results"
    return meta, arrays


def _score(item, result, cases, refs, loaded):
    """Fill ``result`` from the judged cases."""
    meta, arrays = loaded
    result.cases = len(cases)
    if meta.get("import_error"):
        result.status = "error"
        result.first_failure = f"the submission failed to import: {meta['import_error']}"
        return
    for i, ((spec, case_arrays), ref, info) in enumerate(zip(cases, refs, meta["cases"])):
        if not isinstance(info, dict) or info.get("status") != "ok":
            error = info.get("error", "?") if isinstance(info, dict) else "?"
            reason = f"raised {error}"
        else:
            prefix = f"c{i}."
            stu = {k[len(prefix):]: v.astype(np.float64) if v.dtype != np.float64 else v
                   for k, v in arrays.items() if k.startswith(prefix)}
            counts = {}
            reason, ref_err, fd_err = judge_case(spec, ref, stu, info, case_arrays, counts)
            result.fd_directions += counts.get("directions", 0)
            result.fd_skipped += counts.get("skipped", 0)
            result.compared += 1
            result.worst_ref_error = max(result.worst_ref_error, ref_err)
            result.worst_fd_error = max(result.worst_fd_error, fd_err)
        if reason and not result.first_failure:
            result.first_failure = f"case {i + 1} of {len(cases)}, {spec['label']}: {reason}"
        result.passed += not reason
    result.score = round(item.points * result.passed / max(result.cases, 1), 2)
    result.status = "passed" if result.passed == result.cases else "failed"


def grade(submission, assignment=None, items=None, seed=None, timeout=60.0, cpu_seconds=None,
          memory_bytes=4 << 30, jobs=2, jit=False):
    """Grade the package in ``submission``; returns a ``GradeResult``.

    ``assignment``: a name (default: read from the folder's ``COURSEWORK.json``), or ``"all"`` for every
    item of every assignment (on a copy of the library itself: a check that the kit agrees with it,
    worth running after changing the library). ``items``: grade only
    these item names (default all of the assignment's, or a list of ``Item``). ``seed``: the hidden
    cases' seed (default: fresh, recorded in the result). ``timeout``: wall-clock seconds per item;
    ``cpu_seconds`` (default ``timeout``) and ``memory_bytes`` are ``resource`` limits per item.
    """
    submission = Path(submission).resolve()
    if not (submission / "minigrad" / "__init__.py").is_file():
        raise FileNotFoundError(f"{submission} holds no minigrad package (expected {submission}/minigrad/__init__.py)")
    if assignment is None:
        marker = submission / MARKER
        if not marker.is_file():
            raise ValueError(f"{submission} has no {MARKER}; pass the assignment name (--assignment)")
        assignment = json.loads(marker.read_text())["assignment"]
    available = all_items() if assignment == "all" else list(get_assignment(assignment).items)
    chosen = available
    if items is not None:
        known = {i.name: i for i in available}
        chosen = [i if not isinstance(i, str) else known.get(i) or _unknown_item(i, known) for i in items]
    seed = secrets.randbits(32) if seed is None else int(seed)
    cpu_seconds = timeout if cpu_seconds is None else cpu_seconds
    result = GradeResult(assignment=assignment, submission=str(submission), seed=seed)
    work_root = Path(tempfile.mkdtemp(prefix="minigrad-grade-"))
    try:
        pending = []
        for index, item in enumerate(chosen):
            work, cases, refs = _prepare(item, index, work_root, seed)
            pending.append((item, work, cases, refs, ItemResult(item.name, item.points)))
        result.items = [p[-1] for p in pending]
        _run_all(pending, work_root, submission, timeout, cpu_seconds, memory_bytes, max(1, int(jobs)), jit)
    finally:
        shutil.rmtree(work_root, ignore_errors=True)
    return result


def all_items():
    """Every item of every assignment, in order."""
    return [item for assignment in ASSIGNMENTS.values() for item in assignment.items]


def _unknown_item(name, known):
    raise ValueError(f"unknown item {name!r}; the assignment has {', '.join(known)}")


def _run_all(pending, work_root, submission, timeout, cpu_seconds, memory_bytes, jobs, jit):
    """Run the items ``jobs`` at a time, each in its own process with its own wall-clock deadline."""
    server = _ItemServer(work_root, jit)
    queue, running, by_pid = list(enumerate(pending)), {}, {}
    try:
        while queue or running:
            while queue and len(running) < jobs:
                key, entry = queue.pop(0)
                server.start(key, submission, entry[1], cpu_seconds, memory_bytes)
                running[key] = {"entry": entry, "started": time.monotonic(), "pid": None, "killed": False}
            events = server.events(0.05)
            if events is None:  # the server died: nothing more will be reported
                for key, run in running.items():
                    _finish(run["entry"], 1, False, time.monotonic() - run["started"], timeout)
                for _, entry in queue:
                    _finish(entry, 1, False, 0.0, timeout)
                return
            for event in events:
                if "id" in event:
                    running[event["id"]]["pid"] = event["pid"]
                    by_pid[event["pid"]] = event["id"]
                elif "exit" in event:
                    run = running.pop(by_pid.pop(event["pid"]))
                    _kill_group(event["pid"])  # anything the student's code left running in its group
                    _finish(run["entry"], event["exit"], run["killed"], time.monotonic() - run["started"], timeout)
            for run in running.values():
                if run["pid"] and not run["killed"] and time.monotonic() - run["started"] > timeout:
                    _kill_group(run["pid"])
                    run["killed"] = True
    finally:
        for run in running.values():
            if run["pid"]:
                _kill_group(run["pid"])
        server.close()


def _finish(entry, returncode, timed_out, elapsed, timeout):
    item, work, cases, refs, result = entry
    result.seconds = elapsed
    result.output = _captured_output(work)
    result.cases = len(cases)
    if timed_out:
        result.status, result.first_failure = "time-out", f"did not finish within {timeout:g} s (an endless loop?)"
        return
    loaded = _load_results(work, len(cases))
    if loaded is None or isinstance(loaded, str):
        result.status = "error"
        result.first_failure = loaded if isinstance(loaded, str) else _exit_reason(returncode)
        return
    _score(item, result, cases, refs, loaded)


# ----------------------------------------------------------------------------- reports
def _fence(text):
    return "```text\n" + text.replace("```", "'''") + "\n```"


def item_summary(item):
    """One item's text for a report or Gradescope: score, cases, first failure, worst errors."""
    lines = [(f"Score {item.score:g} / {item.points:g}: {item.passed} of {item.cases} hidden cases passed "
              f"({item.status}, {item.seconds:.1f} s).")]
    if item.first_failure:
        lines.append(f"First failing case: {item.first_failure}")
    if item.compared:
        lines.append(f"Worst relative error: {item.worst_ref_error:.1e} against the library, "
                     f"{item.worst_fd_error:.1e} against finite differences.")
    if item.fd_skipped:
        lines.append(_skipped_note(item))
    return "\n".join(lines)


def _skipped_note(item):
    return (f"Finite differences: {item.fd_skipped} of {item.fd_directions} directions skipped, because the "
            "library's own gradient disagrees with them there (a kink crossed, or a bug in the library: check "
            "it with minigrad.gradcheck before trusting this item's score).")


def _worst(item):
    return f"{item.worst_ref_error:.1e} / {item.worst_fd_error:.1e}" if item.compared else "-"


def report_markdown(result):
    seed = (f"Submission `{result.submission}`, minigrad {minigrad.__version__}, hidden cases drawn with "
            f"seed {result.seed} (re-grade with `--seed {result.seed}` to reproduce).")
    lines = [f"# Grading report: {result.assignment}", "", seed, "",
             f"**Total: {result.score:g} / {result.max_score:g}**", ""]
    if result.library_disagreements:
        lines += [f"**Warning**: the library's own gradient disagreed with finite differences in "
                  f"{sum(result.library_disagreements.values())} direction(s) of "
                  f"{', '.join(result.library_disagreements)}; those directions were skipped (see the items).", ""]
    lines += ["| Item | Score | Cases passed | Worst rel. error (library / finite diff.) | Status |",
              "|---|---|---|---|---|"]
    for item in result.items:
        lines.append(f"| {item.name} | {item.score:g} / {item.points:g} | {item.passed}/{item.cases} | "
                     f"{_worst(item)} | {item.status} |")
    for item in result.items:
        lines += ["", f"## {item.name}: {item.score:g} / {item.points:g}", "", item_summary(item)]
        if item.output:
            lines += ["", "Your program's output (truncated):", "", _fence(item.output)]
    return "\n".join(lines) + "\n"


def write_report(result, path):
    Path(path).write_text(report_markdown(result), encoding="utf-8")
    return Path(path)


def gradescope_json(result):
    """Gradescope's autograder format: top-level ``score`` and ``tests`` with name/score/max_score/output."""
    tests = []
    for item in result.items:
        output = item_summary(item) + (f"\n\nYour program's output (truncated):\n{item.output}" if item.output else "")
        tests.append({"name": item.name, "score": item.score, "max_score": item.points, "output": output,
                      "visibility": "visible"})
    return {"score": result.score, "output": f"{result.assignment}: {result.score:g} / {result.max_score:g} "
                                             f"(hidden cases seed {result.seed})",
            "tests": tests}


def write_gradescope(result, path):
    Path(path).write_text(json.dumps(gradescope_json(result), indent=2) + "\n", encoding="utf-8")
    return Path(path)
