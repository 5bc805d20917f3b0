"""The whole nbgrader loop through a local exchange, as a class would run it: the
instructor releases, three students (each with a home folder of their own) fetch, edit and
submit, one resubmits, one submits late; the instructor collects, autogrades, generates and
releases feedback; the students fetch their feedback; grades are exported to CSV."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from conftest import make_course
from initlab_grading.course import build, layout
from initlab_grading.course.results import collect_results
from initlab_grading.course.samples import samples_for

ASSIGNMENT = "gradient_descent"
NOTEBOOK = f"{ASSIGNMENT}.ipynb"


def run(cwd: Path, *args: str, home: Path | None = None) -> str:
    """Run an nbgrader command as the instructor (cwd = course root) or as a student
    (cwd = their home, HOME set to it, so no instructor configuration is seen)."""
    layout.ensure_tools_on_path()
    env = dict(os.environ)
    if home is not None:
        env["HOME"] = str(home)
        env.pop("PYTHONPATH", None)  # a student's kernel has no grading package
    exe = str(Path(sys.executable).with_name("nbgrader"))
    proc = subprocess.run([exe, *args], cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"nbgrader {' '.join(args)} failed:\n{proc.stdout}{proc.stderr}"
    return proc.stdout + proc.stderr


def _answered(fetched: Path, root: Path, student: str) -> None:
    """Write a sample's answers into the notebook the student fetched."""
    (sample,) = [s for s in samples_for(ASSIGNMENT) if s.student == student]
    nb = build.build_submission(root, ASSIGNMENT, sample)
    nbformat.write(nb, fetched / NOTEBOOK)


@pytest.fixture(scope="module")
def loop(tmp_path_factory):
    root = make_course(tmp_path_factory.mktemp("exchange-course"), [ASSIGNMENT])
    exchange = tmp_path_factory.mktemp("exchange")
    exchange.chmod(0o777)
    ex = f"--Exchange.root={exchange}"
    homes = {s: tmp_path_factory.mktemp(f"home-{s}") for s in ("alice", "bob", "carol")}

    run(root, "release_assignment", ASSIGNMENT, "--force", ex)
    for home in homes.values():
        run(home, "fetch_assignment", ASSIGNMENT, "--course=initlab", ex, home=home)
        assert (home / ASSIGNMENT / NOTEBOOK).exists()

    def submit(student: str, sample: str) -> None:
        home = homes[student]
        _answered(home / ASSIGNMENT, root, sample)
        run(home, "submit", ASSIGNMENT, "--course=initlab", f"--student={student}", ex, home=home)
        time.sleep(1.1)  # submissions are told apart by their timestamps (seconds)

    submit("alice", "reference")
    submit("bob", "gradient-sign")
    submit("bob", "reference")  # bob fixes his gradient and resubmits
    # the due date passes here; carol submits after it
    due = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()) + " UTC"
    run(root, "db", "assignment", "add", ASSIGNMENT, f"--duedate={due}")
    time.sleep(1.1)
    submit("carol", "hessian-halved")

    run(root, "collect", ASSIGNMENT, "--update", ex)
    run(root, "autograde", ASSIGNMENT, "--force")
    run(root, "generate_feedback", ASSIGNMENT, "--force")
    run(root, "release_feedback", ASSIGNMENT, ex)
    for student, home in homes.items():
        run(
            home,
            "fetch_feedback",
            ASSIGNMENT,
            "--course=initlab",
            f"--student={student}",
            ex,
            home=home,
        )
    run(root, "export", "--to", str(root / "exchange-grades.csv"))
    yield root, homes
    shutil.rmtree(exchange, ignore_errors=True)


def test_collect_takes_the_latest_submission_and_grades_it(loop):
    root, _ = loop
    tests = layout.test_cell_ids(root, ASSIGNMENT)
    results = {r.student: r for r in collect_results(root, ASSIGNMENT, ["alice", "bob"])}
    full = results["alice"].auto_max(tests)
    assert results["alice"].auto_score == full
    assert results["bob"].auto_score == full  # the resubmission, not the first try


def test_late_submission_is_recorded_and_graded(loop):
    root, _ = loop
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gb:
        carol = gb.find_submission(ASSIGNMENT, "carol")
        alice = gb.find_submission(ASSIGNMENT, "alice")
        assert carol.total_seconds_late > 0 and alice.total_seconds_late == 0
        lost = {g.name for g in carol.notebooks[0].grades if g.score == 0 and g.auto_score == 0}
        assert "test_minimum" in lost


def test_every_student_fetched_their_own_feedback(loop):
    _, homes = loop
    for student, home in homes.items():
        pages = list((home / ASSIGNMENT / "feedback").glob(f"*/{ASSIGNMENT}.html"))
        assert len(pages) == 1, f"{student} has feedback pages {pages}"
        html = pages[0].read_text()
        assert "initlab_grading" not in html
    carol_html = next((homes["carol"] / ASSIGNMENT / "feedback").glob("*/*.html")).read_text()
    assert "half the true Hessian" in carol_html


def test_export_has_a_row_per_student(loop):
    root, _ = loop
    with open(root / "exchange-grades.csv") as fh:
        rows = {r["student_id"]: r for r in csv.DictReader(fh) if r["assignment"] == ASSIGNMENT}
    assert {"alice", "bob", "carol"} <= set(rows)
    assert float(rows["alice"]["raw_score"]) > float(rows["carol"]["raw_score"])
