"""The autograde round trip with the real nbgrader: every bundled sample submission
(reference, blank, answers written another way, plausible mistakes) scores exactly the
points it states, with the message it states, and feedback shows no hidden test."""

from __future__ import annotations

import csv
import html as html_lib
import re

import pytest

from initlab_grading import course
from initlab_grading.preprocessors import HIDDEN_NOTE
from initlab_grading.samples import samples_for


class Graded:
    """Each assignment's samples graded once, when a test first asks for it (so that
    ``-k gradient_descent`` grades that assignment only)."""

    def __init__(self, root):
        self.root, self.problems = root, {}

    def __call__(self, assignment: str) -> list[str]:
        if assignment not in self.problems:
            self.problems[assignment] = course.grade_samples(self.root, assignment)
        return self.problems[assignment]


@pytest.fixture(scope="module")
def graded(fresh_course):
    return Graded(fresh_course)


@pytest.mark.parametrize("assignment", course.ASSIGNMENTS)
def test_every_sample_scores_what_it_states(graded, assignment):
    assert graded(assignment) == []


@pytest.mark.parametrize("assignment", course.ASSIGNMENTS)
def test_reference_full_and_blank_zero(graded, assignment):
    graded(assignment)
    root = graded.root
    tests = course.test_cell_ids(root, assignment)
    results = {
        r.student: r for r in course.collect_results(root, assignment, ["reference", "blank"])
    }
    assert results["reference"].auto_score == results["reference"].auto_max(tests) > 0
    assert all(results["blank"].cells[t].score == 0 for t in tests)


@pytest.mark.parametrize("assignment", course.ASSIGNMENTS)
def test_feedback_shows_messages_not_hidden_tests(graded, assignment):
    graded(assignment)
    root = graded.root
    for sample in samples_for(assignment):
        html = (root / "feedback" / sample.student / assignment / f"{assignment}.html").read_text()
        assert "initlab_grading" not in html and "BEGIN HIDDEN TESTS" not in html
        assert HIDDEN_NOTE.lstrip("# ")[:30] in html
        shown = " ".join(html_lib.unescape(re.sub(r"<[^>]+>", " ", html)).split())
        for text in sample.lost.values():
            assert " ".join(text.split()) in shown, (sample.student, text)


@pytest.mark.parametrize("assignment", course.ASSIGNMENTS)
def test_release_stubs_fail_every_test_and_solution_validates(repo, fresh_course, assignment):
    nb = f"{assignment}.ipynb"
    log = course.nbgrader(
        fresh_course, "validate", "--invert", str(fresh_course / "release" / assignment / nb)
    )
    assert "Success! The notebook does not pass any tests." in log, log
    log = course.nbgrader(fresh_course, "validate", str(repo / "solutions" / assignment / nb))
    assert "Success! Your notebook passes all the tests." in log, log


def test_export_writes_every_student(graded):
    """The CSV export lists every student of every assignment graded in this run (under
    xdist, the first assignment's and whatever else its worker graded; serially, all)."""
    graded(course.ASSIGNMENTS[0])
    root = graded.root
    course.nbgrader(root, "export", "--to", str(root / "grades.csv"))
    with open(root / "grades.csv") as fh:
        rows = list(csv.DictReader(fh))
    for assignment in graded.problems:
        students = {s.student for s in samples_for(assignment)}
        exported = {r["student_id"] for r in rows if r["assignment"] == assignment}
        assert exported >= students, (assignment, students - exported)
    reference = [
        r for r in rows if r["student_id"] == "reference" and r["assignment"] in graded.problems
    ]
    assert len(reference) == len(graded.problems)
    assert all(float(r["raw_score"]) > 0 for r in reference), reference
