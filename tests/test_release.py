"""release/ is what nbgrader generates from source/ today, and leaks nothing; solutions/
carries the source's cells; source/ is stored without outputs; instructor material is
out of a student's reach."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from initlab_grading.course import build, layout
from initlab_grading.course.numerics import REFERENCE_NUMERICS
from initlab_grading.grading import sandbox
from initlab_grading.grading.preprocessors import INSTRUCTOR_TAG, DropInstructorCells

ASSIGNMENTS = layout.ASSIGNMENTS
REGION = re.compile(r"### BEGIN (SOLUTION|HIDDEN TESTS)(.*?)### END \1", flags=re.DOTALL)


def _nb(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def _secret_lines(source_nb) -> set[str]:
    """Lines that only exist inside solutions, hidden tests and model answers."""
    secret, public = set(), set()
    for cell in source_nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if cell.cell_type == "markdown" and meta.get("solution"):
            secret |= {ln.strip() for ln in cell.source.splitlines()}
            continue
        hidden = "\n".join(m.group(2) for m in REGION.finditer(cell.source))
        secret |= {ln.strip() for ln in hidden.splitlines()}
        public |= {ln.strip() for ln in REGION.sub("", cell.source).splitlines()}
    return {ln for ln in secret - public if len(ln) > 3}


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_release_is_what_nbgrader_generates_now(repo, fresh_course, assignment):
    committed = repo / "release" / assignment
    fresh = fresh_course / "release" / assignment
    assert sorted(p.name for p in committed.iterdir()) == sorted(p.name for p in fresh.iterdir())
    for path in fresh.iterdir():
        assert json.loads(path.read_text()) == json.loads((committed / path.name).read_text()), (
            f"release/{assignment}/{path.name} is stale: run `python3 tasks.py release` "
            "and commit release/ and solutions/."
        )


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_release_leaks_no_solution_or_hidden_test(repo, assignment):
    source = _nb(repo / "source" / assignment / f"{assignment}.ipynb")
    release_text = (repo / "release" / assignment / f"{assignment}.ipynb").read_text()
    release = _nb(repo / "release" / assignment / f"{assignment}.ipynb")
    released_lines = {ln.strip() for cell in release.cells for ln in cell.source.splitlines()}
    leaked = _secret_lines(source) & released_lines
    assert not leaked, f"release/{assignment} contains answer or hidden-test lines: {leaked}"
    for marker in ("BEGIN SOLUTION", "HIDDEN TESTS", "initlab_grading", "Model answer"):
        assert marker not in release_text
    assert [p.name for p in (repo / "release" / assignment).iterdir()] == [f"{assignment}.ipynb"]


def _instructor_checks(nb: nbformat.NotebookNode) -> list[str]:
    return [c.source for c in nb.cells if INSTRUCTOR_TAG in c.metadata.get("tags", [])]


def test_instructor_cells_are_dropped_and_nothing_else():
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("The gradient explodes."),
        nbformat.v4.new_code_cell("assert g > 1e6", metadata={"tags": [INSTRUCTOR_TAG]}),
        nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["nbval-ignore-output"]}),
    ]
    dropper = DropInstructorCells()
    assert dropper.enabled  # nbgrader runs a preprocessor only if it is enabled
    out, _ = dropper(nb, {})
    assert [c.source for c in out.cells] == ["The gradient explodes.", "x = 1"]


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_claims_are_checked_in_solutions_and_absent_from_the_release(repo, assignment):
    """Each notebook backs what its text says about its outputs with instructor checks:
    solutions/ carries them (nbval runs them in CI), the release has none of them."""
    source = _nb(repo / "source" / assignment / f"{assignment}.ipynb")
    checks = _instructor_checks(source)
    assert checks, f"source/{assignment} has no cell tagged {INSTRUCTOR_TAG!r}"
    for cell in source.cells:
        if INSTRUCTOR_TAG in cell.metadata.get("tags", []):
            assert cell.cell_type == "code" and "nbgrader" not in cell.metadata, cell.id
            assert "assert" in cell.source, f"{cell.id} asserts nothing"
    solution = _nb(repo / "solutions" / assignment / f"{assignment}.ipynb")
    assert _instructor_checks(solution) == checks
    release = _nb(repo / "release" / assignment / f"{assignment}.ipynb")
    assert not _instructor_checks(release)
    released = {c.source for c in release.cells}
    assert not released & set(checks)


STUDENT_INTERNALS = re.compile(
    r"nbval|numba|chebyshev|kolmogorov|false.failure|course material|instructor check",
    flags=re.IGNORECASE,
)
"""What a student cannot use or does not have: the test machinery, the hidden tests'
statistics, the kernels' implementation, the seeds the course is built from."""


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_release_shows_students_no_internals(repo, assignment):
    release = _nb(repo / "release" / assignment / f"{assignment}.ipynb")
    found = [
        (c.id, m.group(0)) for c in release.cells for m in STUDENT_INTERNALS.finditer(c.source)
    ]
    assert not found, f"release/{assignment} speaks of internals students cannot use: {found}"


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_source_is_stored_without_outputs(repo, assignment):
    folder = repo / "source" / assignment
    # nbgrader copies every file of source/<assignment>/ into the release
    assert [p.name for p in folder.iterdir()] == [f"{assignment}.ipynb"]
    for cell in _nb(folder / f"{assignment}.ipynb").cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, cell.id


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_solutions_carry_the_source_cells(repo, assignment):
    source = _nb(repo / "source" / assignment / f"{assignment}.ipynb")
    solution = _nb(repo / "solutions" / assignment / f"{assignment}.ipynb")
    assert [c.source for c in solution.cells] == [c.source for c in source.cells], (
        f"solutions/{assignment} is stale: run `python3 tasks.py release` and commit it."
    )
    assert all(
        not any(o.output_type == "error" for o in c.get("outputs", [])) for c in solution.cells
    )


def test_a_solution_that_ran_with_errors_stops_the_build(tmp_path, monkeypatch):
    nb = nbformat.v4.new_notebook()
    fine = nbformat.v4.new_code_cell("x = 1")
    check = nbformat.v4.new_code_cell("assert x == 2, 'the text says x is 2'")
    check.outputs = [
        nbformat.v4.new_output("error", ename="AssertionError", evalue="the text says x is 2")
    ]
    graded = nbformat.v4.new_code_cell("1 / 0", metadata={"nbgrader": {"grade_id": "ratio"}})
    graded.outputs = [
        nbformat.v4.new_output("error", ename="ZeroDivisionError", evalue="division by zero")
    ]
    nb.cells = [fine, check, graded]
    path = tmp_path / "solutions" / "demo" / "demo.ipynb"
    path.parent.mkdir(parents=True)
    nbformat.write(nb, path)
    assert build.execution_errors(path) == [
        "cell 1 (assert x == 2, 'the text says x is 2'): AssertionError: the text says x is 2",
        "cell 2 (ratio): ZeroDivisionError: division by zero",
    ]
    # build() runs nbgrader (not here), then refuses the solution, naming the cells
    monkeypatch.setattr(build, "nbgrader", lambda *args, **kwargs: "")
    monkeypatch.setattr(build, "forget_samples", lambda *args: None)
    with pytest.raises(layout.CourseError, match=r"ran with errors(.|\n)*cell 2 \(ratio\)"):
        build.build(tmp_path, "demo")


def test_solutions_are_executed_on_fixed_numerical_paths(monkeypatch):
    seen = {}

    def record(root, cmd, what, **env):
        seen[cmd[1]] = env
        return ""

    monkeypatch.setattr(layout, "_run_in_course", record)
    layout.nbgrader(Path("."), "generate_solution", "demo", budget=layout.SOLUTION_BUDGET)
    layout.nbgrader(Path("."), "autograde", "demo")
    want = {"INITLAB_BUDGET": "default", "INITLAB_PROGRESS": "0", **REFERENCE_NUMERICS}
    assert seen["generate_solution"] == want  # no progress bar: the same output, cached or not
    assert not set(REFERENCE_NUMERICS) & set(seen["autograde"])
    # nbgrader starts that kernel through the sandbox, whose reduced environment keeps them
    for isolated in (False, True):
        kept = sandbox.kernel_environment({**REFERENCE_NUMERICS, "PGPASSWORD": "x"}, isolated)
        assert kept == {**REFERENCE_NUMERICS, "PYTHONSAFEPATH": "1"}
    # nbval re-executes them on the same paths (tasks.py reads the same module)
    spec = importlib.util.spec_from_file_location("tasks", Path(__file__).parents[1] / "tasks.py")
    tasks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tasks)
    assert tasks.reference_numerics() == REFERENCE_NUMERICS


def test_the_student_guide_ships_with_the_release(repo):
    shipped = (repo / "release" / "GUIDE.md").read_text()
    assert shipped == (repo / build.STUDENT_GUIDE).read_text(), (
        "release/GUIDE.md is stale: run `python3 tasks.py release` and commit release/."
    )


def test_student_environment_cannot_import_the_grading_package(repo, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    probe = "import initlab, importlib.util as u; print(u.find_spec('initlab_grading'))"
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "None"
    lib_text = "".join(p.read_text() for p in (repo / "lib").rglob("*.py"))
    assert "initlab_grading" not in lib_text
