"""Make a student package from the library's own source: chosen function bodies become a stub.

A target is ``"package.module:Qualified.name"`` (``"minigrad.nn.linear:Linear.backward"``); the name may
be a glob (``"minigrad.kernels.batchnorm:*backward*"``: every top-level function or ``Class.method`` it
matches, at least one), so a kernel module's helpers are covered whatever they are renamed to. Its body is
found with ``ast`` and replaced, line range by line range, by ``raise NotImplementedError("...")``: the
``def`` line(s), decorators and docstring stay, every other line of the file stays byte-identical (so
comments elsewhere survive), and no line of the removed body (code or comment) is left behind.

The handout folder holds ``minigrad/`` (without this kit), ``experiments/``, the packaging files, a
``HANDOUT.md``, the same handout as a notebook ``<name>.ipynb`` (``notebook.py``: the text, the local checks
of each item, a small training run) and ``COURSEWORK.json``; never ``__pycache__``, ``*.pyc``, Numba caches or ``.git``.
"""
import ast
import fnmatch
import json
import shutil
from pathlib import Path

import minigrad

from .notebook import write_handout_notebook

__all__ = ["library_root", "expand_target", "stub_source", "removed_body_lines", "find_leaks", "copy_library",
           "make_handout", "HandoutError"]

# What a handout copies from the library root; anything else (data, results, tests, git) stays out.
PACKAGES = ("minigrad", "experiments")
ROOT_FILES = ("pyproject.toml", "setup.cfg", "README.md")
SOURCE_SUFFIXES = (".py", ".md", ".txt", ".json", ".cfg", ".toml")
EXCLUDED_DIRS = ("__pycache__", ".git", ".hypothesis", ".pytest_cache")
MARKER = "COURSEWORK.json"


class HandoutError(RuntimeError):
    """A handout could not be made safely (missing target, leaked solution line, bad output folder)."""


def library_root():
    """The folder that holds the installed ``minigrad`` package (and ``experiments`` next to it)."""
    return Path(minigrad.__file__).resolve().parent.parent


def split_target(target):
    """``"minigrad.nn.linear:Linear.backward"`` -> (``Path("minigrad/nn/linear.py")``, ``"Linear.backward"``)."""
    module, _, qualname = target.partition(":")
    if not module or not qualname:
        raise HandoutError(f"target {target!r} must look like 'package.module:Class.method'")
    return Path(*module.split(".")).with_suffix(".py"), qualname


def expand_target(tree, name, where):
    """The qualified names ``name`` stands for: itself, or the functions and methods a glob matches."""
    if not any(c in name for c in "*?["):
        return [name]
    functions = (ast.FunctionDef, ast.AsyncFunctionDef)
    names = []
    for node in tree.body:
        if isinstance(node, functions):
            names.append(node.name)
        elif isinstance(node, ast.ClassDef):
            names += [f"{node.name}.{n.name}" for n in node.body if isinstance(n, functions)]
    matches = [n for n in names if fnmatch.fnmatchcase(n, name)]
    if not matches:
        raise HandoutError(f"{where}: no function matches {name!r}")
    return matches


def _find_function(tree, qualname, where):
    """The ``FunctionDef`` at ``qualname`` (classes and functions nested by dots)."""
    scope = tree.body
    node = None
    for part in qualname.split("."):
        matches = [n for n in scope if isinstance(n, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                   and n.name == part]
        if not matches:
            raise HandoutError(f"{where}: no {part!r} in {qualname!r}")
        node = matches[-1]  # the last definition wins, as at import time
        scope = node.body
    if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        raise HandoutError(f"{where}: {qualname!r} is not a function")
    return node


def _body_span(lines, node, where):
    """1-based inclusive (first, last) lines of ``node``'s body after its docstring, and the body's indent.

    ``first`` is the line after the docstring, or after the signature when there is none (comments
    between the signature and the first statement belong to the body). ``last`` extends over comment
    lines indented inside the function that follow its last statement.
    """
    body = node.body
    has_doc = isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
        and isinstance(body[0].value.value, str)
    code = body[1:] if has_doc else body
    if not code:
        raise HandoutError(f"{where}: {node.name} has no body to remove (only a docstring)")
    if code[0].lineno == node.lineno:
        raise HandoutError(f"{where}: {node.name} is a one-line function; write it on several lines")
    if has_doc:
        first = body[0].end_lineno + 1
    else:
        first = code[0].lineno
        while first - 1 > node.lineno and (not lines[first - 2].strip() or lines[first - 2].strip().startswith("#")):
            first -= 1
    indent = code[0].col_offset
    last = j = node.end_lineno  # ``j``: 0-based index of the line after ``last``
    while j < len(lines):
        stripped = lines[j].strip()
        if stripped.startswith("#") and len(lines[j]) - len(lines[j].lstrip()) >= indent:
            last = j + 1
        elif stripped:
            break
        j += 1
    return first, last, indent


def stub_source(source, qualnames, message, where="<source>"):
    """``source`` with the bodies of ``qualnames`` replaced by ``raise NotImplementedError(message(q))``.

    Returns ``(new_source, removed)`` where ``removed[q]`` is the list of removed lines of ``q``.
    """
    lines = source.splitlines(keepends=True)
    tree = ast.parse(source, filename=where)
    spans = []
    for qualname in qualnames:
        node = _find_function(tree, qualname, where)
        first, last, indent = _body_span(lines, node, where)
        spans.append((first, last, indent, qualname))
    spans.sort()
    for (_, last_a, _, a), (first_b, _, _, b) in zip(spans, spans[1:]):
        if first_b <= last_a:
            raise HandoutError(f"{where}: {a} and {b} overlap (a function inside a removed function?)")
    removed = {}
    for first, last, indent, qualname in reversed(spans):  # from the bottom up, so line numbers hold
        removed[qualname] = [line.rstrip("\n") for line in lines[first - 1:last]]
        stub = " " * indent + f"raise NotImplementedError({message(qualname)!r})\n"
        lines[first - 1:last] = [stub]
    new_source = "".join(lines)
    new_tree = ast.parse(new_source, filename=where)  # the stubbed file must still be valid Python
    for qualname in qualnames:
        node = _find_function(new_tree, qualname, where)
        if not isinstance(node.body[-1], ast.Raise):
            raise HandoutError(f"{where}: stubbing {qualname} did not leave a single raise")
    return new_source, removed


def _source_files(root):
    """Every library file a handout copies, relative to ``root`` (caches and this kit excluded)."""
    files = []
    for package in PACKAGES:
        base = root / package
        if not base.is_dir():
            raise HandoutError(f"the library root {root} has no {package}/ folder")
        for path in sorted(base.rglob("*")):
            rel = path.relative_to(root)
            if any(part in EXCLUDED_DIRS or part.startswith(".") for part in rel.parts[1:-1]) \
                    or (rel.parts[:2] == ("minigrad", "coursework")):
                continue
            if path.is_file() and path.suffix in SOURCE_SUFFIXES and not path.name.startswith("."):
                files.append(rel)
    files += [Path(name) for name in ROOT_FILES if (root / name).is_file()]
    return files


def copy_library(out_dir, root=None, replacements=None):
    """Copy the library's source files into ``out_dir``; ``replacements[rel_path]`` overrides a file's text."""
    root = library_root() if root is None else Path(root)
    replacements = replacements or {}
    for rel in _source_files(root):
        target = out_dir / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if rel in replacements:
            target.write_text(replacements[rel], encoding="utf-8")
        else:
            shutil.copyfile(root / rel, target)
    return out_dir


def removed_body_lines(assignment, root=None):
    """The removed bodies' lines that occur nowhere else in the library: the "solution text".

    A line such as ``return grad_input`` that also appears outside the removed bodies is not solution
    text; every other non-blank line is, and must not appear in a handout (compared stripped).
    """
    root = library_root() if root is None else Path(root)
    removed, stubbed = set(), {}
    for rel, qualnames in _targets_by_file(assignment, root).items():
        source = (root / rel).read_text(encoding="utf-8")
        new_source, lines = stub_source(source, qualnames, lambda q: "", where=str(rel))
        stubbed[rel] = new_source
        for body in lines.values():
            removed.update(line.strip() for line in body if line.strip())
    elsewhere = set()
    for rel in _source_files(root):
        text = stubbed.get(rel) or (root / rel).read_text(encoding="utf-8", errors="replace")
        elsewhere.update(line.strip() for line in text.splitlines())
    return removed - elsewhere


def find_leaks(out_dir, solution_lines):
    """Problems in a handout folder: solution lines found (file, line number) and forbidden files."""
    problems = []
    for path in sorted(Path(out_dir).rglob("*")):
        rel = path.relative_to(out_dir)
        if path.is_dir() and (path.name in ("__pycache__", ".git") or path.name.startswith(".")):
            problems.append(f"{rel}: folder {path.name} must not be in a handout")
            continue
        if path.suffix in (".pyc", ".nbi", ".nbc") or path.name.startswith("."):
            problems.append(f"{rel}: compiled or hidden file must not be in a handout")
            continue
        if not path.is_file():
            continue
        text = path.read_bytes().decode("utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip() in solution_lines:
                problems.append(f"{rel}:{number}: solution line {line.strip()!r}")
    return problems


def _targets_by_file(assignment, root):
    """``{relative path: [qualified names]}`` of every body the assignment removes, globs expanded."""
    grouped = {}
    for item in assignment.items:
        for target in item.removes:
            rel, name = split_target(target)
            if not (root / rel).is_file():
                raise HandoutError(f"{target}: the library has no {rel}")
            tree = ast.parse((root / rel).read_text(encoding="utf-8"), filename=str(rel))
            names = grouped.setdefault(rel, [])
            names += [q for q in expand_target(tree, name, str(rel)) if q not in names]
    return grouped


def make_handout(assignment, out_dir, root=None):
    """Write the student package of ``assignment`` into ``out_dir`` (new or empty); returns the folder.

    After writing, the whole folder is searched for the removed bodies' lines and forbidden files; any
    find is a ``HandoutError`` (the folder is left for inspection).
    """
    root = library_root() if root is None else Path(root)
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise HandoutError(f"{out_dir} exists and is not an empty folder; choose a new --out")
    replacements = {}
    for rel, qualnames in _targets_by_file(assignment, root).items():
        source = (root / rel).read_text(encoding="utf-8")
        replacements[rel], _ = stub_source(source, qualnames, assignment.stub_message, where=str(rel))
    out_dir.mkdir(parents=True, exist_ok=True)
    copy_library(out_dir, root, replacements)
    (out_dir / "HANDOUT.md").write_text(assignment.handout_markdown(), encoding="utf-8")
    write_handout_notebook(assignment, out_dir)  # the same text, with cells that check each item
    marker = {"assignment": assignment.name, "minigrad_version": minigrad.__version__,
              "items": [item.name for item in assignment.items]}
    (out_dir / MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
    leaks = find_leaks(out_dir, removed_body_lines(assignment, root))
    if leaks:
        raise HandoutError(f"the handout in {out_dir} leaks the solution:\n  " + "\n  ".join(leaks[:20]))
    return out_dir
