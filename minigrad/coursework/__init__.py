r"""The coursework kit: handouts made from the library itself, graded against it.

    python -m minigrad.coursework list                         # the assignments and their items
    python -m minigrad.coursework make mlp --out handout-mlp   # the student package (and handout-mlp/mlp.ipynb)
    python -m minigrad.coursework grade SUBMISSION --json results.json --report report.md

On Gradescope, ``run_autograder`` is one line (``results.json`` in Gradescope's format)::

    python -m minigrad.coursework grade /autograder/submission --assignment mlp \
        --json /autograder/results/results.json --report /autograder/results/report.md

To check the kit against the library after changing the library, grade a copy of the library itself
(``--assignment all``): every item must score full marks.

``make`` copies the installed library's source with the assignment's function bodies replaced by
``raise NotImplementedError`` (``handout.py``) and writes the handout as a notebook with a local check per
item (``notebook.py``); ``grade`` runs every item of a submission in its own
limited subprocess on hidden random cases and judges it against the installed library (``grader.py``,
``checks.py``). The assignments are defined in ``assignments.py``.
"""
from .assignments import ASSIGNMENTS, Assignment, Item, get_assignment
from .grader import GradeResult, ItemResult, grade, report_markdown, write_gradescope, write_report
from .handout import HandoutError, make_handout

__all__ = ["ASSIGNMENTS", "Assignment", "Item", "get_assignment", "make_handout", "HandoutError", "grade",
           "GradeResult", "ItemResult", "report_markdown", "write_report", "write_gradescope"]
