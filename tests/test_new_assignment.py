"""`python3 tasks.py new-assignment ID` scaffolds an assignment that the course loop finds
by itself, builds with the real nbgrader and grades: every sample it writes scores what it
states, in a copy of the course."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO
from initlab_grading.course import layout, scaffold


@pytest.fixture
def course_copy(tmp_path):
    root = tmp_path / "course"
    shutil.copytree(REPO / "source", root / "source")
    shutil.copytree(
        REPO / "autograder", root / "autograder", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(REPO / "nbgrader_config.py", root / "nbgrader_config.py")
    (root / "tests").mkdir()
    shutil.copy(REPO / "tests" / "conftest.py", root / "tests" / "conftest.py")
    return root


def test_a_scaffolded_assignment_is_found_built_and_graded(course_copy):
    root = course_copy
    done = subprocess.run(
        [sys.executable, "-m", "initlab_grading.course.scaffold", "dropout", "--title", "Dropout",
         "--root", str(root)],
        env={**os.environ, "PYTHONPATH": str(root / "autograder")},
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert layout.assignments(root) == (*layout.ASSIGNMENTS, "dropout")
    package = root / "autograder" / "initlab_grading" / "assignments" / "dropout"
    assert sorted(p.name for p in package.iterdir()) == ["__init__.py", "grader.py", "samples.py"]
    assert (root / "tests" / "test_dropout_grading.py").is_file()
    hidden = "from initlab_grading.assignments.dropout import grader as grading"
    assert hidden in (root / "source" / "dropout" / "dropout.ipynb").read_text()
    # the course loop of the copy (its own initlab_grading, which discovers the new
    # assignment): release, solution, the samples graded and compared, the class report
    loop = subprocess.run(
        [sys.executable, "-m", "initlab_grading.course", "--assignment", "dropout"],
        cwd=root, env={**os.environ, "PYTHONPATH": str(root / "autograder")},
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert loop.returncode == 0, loop.stdout[-3000:] + loop.stderr[-3000:]
    assert "Every sample scored exactly what it states." in loop.stdout
    release = (root / "release" / "dropout" / "dropout.ipynb").read_text()
    assert "BEGIN SOLUTION" not in release and "instructor-only" not in release
    assert (root / "reports" / "dropout.html").is_file()
    # the scaffolded test passes too
    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         str(root / "tests" / "test_dropout_grading.py")],
        cwd=root, env={**os.environ, "PYTHONPATH": str(root / "autograder")},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert tests.returncode == 0, tests.stdout[-3000:]


def test_an_id_in_use_or_not_an_identifier_is_refused_and_nothing_written(course_copy):
    before = sorted(p for p in course_copy.rglob("*") if p.is_file())
    for ident in ("kurtosis", "Drop-out", "2nd"):
        with pytest.raises(layout.CourseError, match="assignment"):
            scaffold.new_assignment(course_copy, ident, "x")
    assert sorted(p for p in course_copy.rglob("*") if p.is_file()) == before
