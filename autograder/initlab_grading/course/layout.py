"""Where a course's files are and how to reach them: the assignments found in source/,
their notebooks and test cells, the course's nbgrader configuration and gradebook, and
nbgrader run as a command. The grading command, the instructor's loop and the class
report build on this module; it imports none of them."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import nbformat
from nbformat.notebooknode import NotebookNode
from nbgrader.utils import is_grade, is_solution

from initlab_grading.course.numerics import REFERENCE_NUMERICS

_TITLE = re.compile(r"^# Assignment (\d+)([a-z]?)\b")


def assignments(root: Path) -> tuple[str, ...]:
    """The course's assignments in teaching order, found in ``root``: each folder
    source/<id>/ with the notebook <id>.ipynb and a grader
    autograder/initlab_grading/assignments/<id>/grader.py, ordered by the number in the
    notebook's title (``# Assignment N — ...``; an optional deep dive that follows
    assignment N is ``Nb``).
    Adding an assignment touches no list."""
    found = []
    for folder in sorted((root / "source").glob("*/")):
        name = folder.name
        notebook = folder / f"{name}.ipynb"
        grader = root / "autograder" / "initlab_grading" / "assignments" / name / "grader.py"
        if not (notebook.is_file() and grader.is_file()):
            continue
        cells = json.loads(notebook.read_text(encoding="utf-8")).get("cells", [])
        title = "".join(cells[0].get("source", "")) if cells else ""
        match = _TITLE.match(title)
        if not match:
            raise CourseError(
                f"{notebook} must open with a markdown cell titled '# Assignment N — ...' "
                "(N orders the assignments; a deep dive after assignment N is numbered Nb)."
            )
        found.append((int(match.group(1)), match.group(2), name))
    return tuple(name for _, _, name in sorted(found))


SOLUTION_BUDGET = "default"
"""The experiment budget solutions/ is executed at (and nbval re-executes it at in CI)."""

REPO_ROOT = Path(__file__).resolve().parents[3]


class CourseError(RuntimeError):
    """A step of the loop failed; the message says which and why."""


ASSIGNMENTS: tuple[str, ...] = assignments(REPO_ROOT)
"""The course's assignments in teaching order (see :func:`assignments`)."""


def is_test_cell(cell: NotebookNode) -> bool:
    """An autograder test: a graded code cell that is not a student's answer."""
    return cell.cell_type == "code" and bool(is_grade(cell)) and not is_solution(cell)


def grade_id(cell: NotebookNode) -> str:
    """The cell's nbgrader id ("" for a cell nbgrader does not track)."""
    return cell.metadata.get("nbgrader", {}).get("grade_id", "")


def notebook_name(assignment: str) -> str:
    """Each assignment has one notebook, named after it (its nbgrader notebook id)."""
    return f"{assignment}.ipynb"


def ensure_tools_on_path() -> None:
    """Put this interpreter's scripts folder first on PATH. nbgrader's gradebook runs the
    `alembic` command by name, which fails in a virtual environment that is not
    activated (as when tasks.py or a test calls its python directly)."""
    scripts = str(Path(sys.executable).parent)
    if os.environ.get("PATH", "").split(os.pathsep)[0] != scripts:
        os.environ["PATH"] = os.pathsep.join([scripts, os.environ.get("PATH", "")])


def _run_in_course(root: Path, cmd: list[str], what: str, **env: str) -> str:
    """Run an nbgrader process in the course root, with ``env`` added to this process's
    environment; return its log, raise on failure."""
    ensure_tools_on_path()
    env = {**os.environ, **env}
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)
    log = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise CourseError(f"{what} failed in {root}:\n{log[-4000:]}")
    return log


def nbgrader(root: Path, *args: str, budget: str | None = None) -> str:
    """Run one nbgrader command in the course root; return its log, raise on failure."""
    env = {"INITLAB_BUDGET": budget} if budget else {}
    if args[:1] == ("generate_solution",):
        env.update(REFERENCE_NUMERICS)  # the same paths on every CPU (course.numerics)
        env["INITLAB_PROGRESS"] = "0"  # the same output whether training was cached or not
        # the instructor's own notebook, not a submission: outside the sandbox, whose
        # hidden course root holds the results/ its instructor checks read
        args = (*args, "--SandboxedKernelManager.bubblewrap=False")
    cmd = [str(Path(sys.executable).with_name("nbgrader")), *args]
    return _run_in_course(root, cmd, f"`nbgrader {' '.join(args)}`", **env)


_GENERATE = """\
import sys
from nbgrader.apps.generateassignmentapp import GenerateAssignmentApp
for assignment in sys.argv[1:]:
    app = GenerateAssignmentApp()
    app.initialize([assignment, "--force"])
    app.start()
"""


def generate_assignments(root: Path, assignments: Sequence[str]) -> str:
    """``nbgrader generate_assignment ID --force`` for each assignment, in one process:
    nbgrader's own application, so the release and the gradebook are what the command
    writes, without paying nbgrader's start-up (seconds) once per assignment."""
    cmd = [sys.executable, "-c", _GENERATE, *assignments]
    what = f"`nbgrader generate_assignment` of {', '.join(assignments)}"
    return _run_in_course(root, cmd, what)


def course_config(root: Path):
    """The traitlets config of the course's nbgrader_config.py (empty if it has none),
    loaded without keeping the changes the file makes to sys.path and PYTHONPATH."""
    from traitlets.config import Config
    from traitlets.config.loader import PyFileConfigLoader

    config_file = root / "nbgrader_config.py"
    if not config_file.exists():
        return Config()
    saved_path, saved_env = list(sys.path), os.environ.get("PYTHONPATH")
    try:  # the config file edits sys.path and PYTHONPATH for nbgrader's kernels
        return PyFileConfigLoader(config_file.name, path=str(root)).load_config()
    finally:
        sys.path[:] = saved_path
        if saved_env is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved_env


def gradebook_url(root: Path) -> str:
    """The gradebook nbgrader uses for this course: ``CourseDirectory.db_url`` from the
    course's nbgrader_config.py (a PostgreSQL URL when several graders write at once),
    else nbgrader's default, the sqlite file gradebook.db in the course root."""
    from nbgrader.coursedir import CourseDirectory

    coursedir = CourseDirectory(config=course_config(root))
    if not coursedir.root:
        coursedir.root = str(root)
    return coursedir.db_url


# --------------------------------------------------------------------------------------
# Submissions


def test_cell_ids(root: Path, assignment: str) -> set[str]:
    nb = nbformat.read(root / "source" / assignment / notebook_name(assignment), as_version=4)
    return {grade_id(c) for c in nb.cells if is_test_cell(c)}
