"""A new assignment, ready to build and grade: ``python3 tasks.py new-assignment ID``.

    python -m initlab_grading.course.scaffold ID [--title TITLE] [--root DIR]

Writes, for an assignment ``ID`` (a Python identifier not yet used):

- ``source/ID/ID.ipynb``: the master, numbered after the last assignment, with the kit's
  cell kinds: intro, locked setup, a part heading, an answer cell, a test cell with
  visible and hidden tests, a written question with its model answer and marking guide,
  a demo and an instructor check of what the text says about the demo's output;
- ``autograder/initlab_grading/assignments/ID/``: the assignment's subpackage, with
  ``grader.py`` (the reference and the hidden check) and ``samples.py`` (the reference,
  the blank release and a plausible mistake, each stating what it scores);
- ``tests/test_ID_grading.py``: the check against the samples' answers.

The assignment is found by discovery (``layout.assignments``): no list to edit. Replace the
example function ``double`` by the assignment's own, then ``python3 tasks.py course``
builds and grades it (docs/instructors/authoring.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from initlab_grading.course.layout import REPO_ROOT, CourseError, assignments

_CELL_META = {"schema_version": 3, "task": False}


def _cell(kind: str, cell_id: str, source: str, **nbgrader) -> dict:
    meta = {"grade": False, "grade_id": cell_id.replace("-", "_"), "locked": True}
    meta |= {"solution": False, **_CELL_META, **nbgrader}
    cell = {"cell_type": kind, "id": cell_id, "metadata": {"nbgrader": meta}, "source": source}
    if kind == "code":
        cell |= {"execution_count": None, "outputs": []}
    return cell


def notebook(ident: str, number: int, title: str) -> dict:
    """The master notebook of a new assignment."""
    cells = [
        _cell(
            "markdown",
            "intro",
            f"# Assignment {number} — {title}\n\n"
            "**What you learn.** Replace this with what the assignment teaches, in a sentence or "
            "two (the whole intro stays under 120 words).\n\n"
            "**What you need.** Python with numpy, and what the earlier assignments taught.\n\n"
            "| Part | topic | points | minutes (estimate) |\n|---|---|---:|---:|\n"
            "| 1 | a first function | 3 | 10 |\n| all | | 3 | 10 |\n\n"
            "How to work, run tests and Validate, and the experiment budgets: see `GUIDE.md`, "
            "next to the assignment folders.",
        ),
        _cell(
            "code",
            "setup",
            "import numpy as np\n\nfrom initlab import budget, checks\n\nprint(budget.describe())",
        ),
        _cell(
            "markdown",
            "part1",
            "## Part 1 — A first function\n\n"
            "Write `double(x)`, which returns twice its argument (a number or a numpy array).",
        ),
        _cell(
            "code",
            "double",
            'def double(x):\n    """Twice x."""\n    ### BEGIN SOLUTION\n    return 2 * x\n'
            "    ### END SOLUTION",
            locked=False,
            solution=True,
        ),
        _cell(
            "code",
            "test-double",
            "# Visible tests: double at a small integer, where the result is exact.\n"
            'got = checks.call_answer(double, 3.0, what="double(3.0)")\n'
            'checks.check_close(got, 6.0, 0.0, "double(3.0)", "Multiply the argument by 2.")\n'
            'print("Visible tests passed.")\n'
            "### BEGIN HIDDEN TESTS\n"
            f"from initlab_grading.assignments.{ident} import grader as grading\n\n"
            "grading.check_double(double)\n"
            "### END HIDDEN TESTS",
            grade=True,
            points=2,
        ),
        _cell(
            "markdown",
            "why-question",
            "**Question.** Why is `double(x)` exact in floating point for every finite `x` "
            "that does not overflow?",
        ),
        _cell(
            "markdown",
            "why",
            "*Model answer and marking guide.* Multiplying by 2 only adds one to the binary "
            "exponent; the significand is unchanged, so no rounding happens (unless the result "
            "overflows). Full marks: the exponent argument.",
            grade=True,
            locked=False,
            points=1,
            solution=True,
        ),
        _cell(
            "code",
            "demo",
            "values = [double(k) for k in range(4)]\nprint(values)",
        ),
        {
            "cell_type": "code",
            "execution_count": None,
            "id": "check-demo",
            "metadata": {"tags": ["instructor-only"]},
            "outputs": [],
            "source": "# Instructor check: the demo prints 0, 2, 4, 6.\n"
            'assert values == [0, 2, 4, 6], f"the demo should print 0, 2, 4, 6; got {values}"',
        },
    ]
    for cell in cells:  # stored as lists of lines, as Jupyter writes them
        lines = cell["source"].split("\n")
        cell["source"] = [line + "\n" for line in lines[:-1]] + [lines[-1]]
    kernel = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
    metadata = {"kernelspec": kernel, "language_info": {"name": "python"}}
    return {"cells": cells, "metadata": metadata, "nbformat": 4, "nbformat_minor": 5}


PACKAGE = '''"""Assignment {number} ({title}): grader and samples."""
'''

GRADER = '''"""References and hidden checks of assignment {number} ({title})."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from initlab.checks import CheckFailed, as_array, call_answer
from initlab_grading.checking.reveal import expected

CHECKS_OUTSIDE_KERNEL = True
"""The test cells run in the grading worker; the kernel answers for the notebook's names
(docs/security.md): a check gets values and calls the student's functions, nothing more."""

EVIDENCE: dict[str, list[str]] = {{}}
"""Written answers and the code cells (grade_ids) whose submitted outputs they discuss."""

POINTS = np.array([-3.0, -0.5, 0.0, 1.0, 1e300])
"""Where double is checked: signs, a fraction, zero, and a value near the float64 limit."""


def double_ref(x):
    """Twice x."""
    return 2 * np.asarray(x, dtype=float)


def check_double(student_double: Callable) -> None:
    """Hidden check: doubling is exact, so the student's result must equal the reference
    exactly at every point, as one array call and elementwise."""
    got = as_array(call_answer(student_double, POINTS.copy(), what="double(array)"),
                   "double(array)", shape=POINTS.shape)  # fmt: skip
    want = double_ref(POINTS)
    for x, g, w in zip(POINTS, got, want, strict=True):
        if g != w:
            hint = " You added 2 instead of multiplying by 2." if g == x + 2 else ""
            # expected(...): what feedback leaves out at the level "formula" or "diagnosis"
            raise CheckFailed(
                f"double({{x:g}}) is {{g:g}}" + expected(f"; expected {{w:g}}") + f".{{hint}}"
            )
'''

SAMPLES = '''"""Sample submissions for assignment {number} ({title})."""

from initlab_grading.course.samples import Sample

SAMPLES = [
    Sample("reference", "the reference answers: full marks on every test cell"),
    Sample("blank", "the release as handed out: zero on every test cell", blank=True),
    Sample(
        "adds-two",
        "adds 2 instead of doubling",
        answers={{"double": "def double(x):\\n    return x + 2"}},
        lost={{"test_double": "Multiply the argument by 2."}},
    ),
]
'''

TEST = '''"""The hidden check of assignment {number} ({title}) on the samples' answers."""

from __future__ import annotations

import pytest

from conftest import sample_answers
from initlab.checks import CheckFailed
from initlab_grading.assignments.{ident} import grader as grading


def test_reference_passes():
    grading.check_double(grading.double_ref)


def test_adding_two_is_named():
    with pytest.raises(CheckFailed, match="You added 2 instead of multiplying by 2."):
        grading.check_double(sample_answers("{ident}", "adds-two")["double"])
'''


def new_assignment(root: Path, ident: str, title: str) -> list[Path]:
    """Write the new assignment's files under ``root``; return their paths."""
    if not ident.isidentifier() or ident.startswith("_") or not ident.islower():
        raise CourseError(
            f"{ident!r} cannot name an assignment: use a lower-case Python identifier such "
            "as 'dropout' or 'batch_norm' (it names the folder, the notebook and the module)."
        )
    existing = assignments(root)
    package = root / "autograder" / "initlab_grading" / "assignments" / ident
    paths = {
        "notebook": root / "source" / ident / f"{ident}.ipynb",
        "package": package / "__init__.py",
        "grader": package / "grader.py",
        "samples": package / "samples.py",
        "test": root / "tests" / f"test_{ident}_grading.py",
    }
    taken = [str(p.relative_to(root)) for p in paths.values() if p.exists()]
    if ident in existing or taken:
        raise CourseError(
            f"An assignment {ident!r} exists already ({', '.join(taken) or 'source/'}); "
            "choose another id. Nothing was written."
        )
    number = len(existing) + 1
    fields = {"ident": ident, "number": number, "title": title}
    paths["notebook"].parent.mkdir(parents=True)
    text = json.dumps(notebook(ident, number, title), indent=1, ensure_ascii=False)
    paths["notebook"].write_text(text + "\n", encoding="utf-8")
    package.mkdir(parents=True, exist_ok=True)
    paths["package"].write_text(PACKAGE.format(**fields), encoding="utf-8")
    paths["grader"].write_text(GRADER.format(**fields), encoding="utf-8")
    paths["samples"].write_text(SAMPLES.format(**fields), encoding="utf-8")
    paths["test"].parent.mkdir(parents=True, exist_ok=True)
    paths["test"].write_text(TEST.format(**fields), encoding="utf-8")
    return list(paths.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ident", metavar="ID")
    parser.add_argument("--title", default="Title of the assignment")
    parser.add_argument("--root", type=Path, default=REPO_ROOT)
    args = parser.parse_args(argv)
    try:
        written = new_assignment(args.root.resolve(), args.ident, args.title)
    except CourseError as err:
        print(err, file=sys.stderr)
        return 2
    for path in written:
        print(f"wrote {path}")
    print("Next: edit them, then `python3 tasks.py course` builds and grades the assignment.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
