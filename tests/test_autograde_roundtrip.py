"""The autograde round trip with the real nbgrader: every bundled sample submission
(reference, blank, answers written another way, plausible mistakes) scores exactly the
points it states, with the message it states, and feedback shows no hidden test."""

from __future__ import annotations

import csv
import html as html_lib
import re
import shutil

import nbformat
import pytest

from initlab_grading.checking.reveal import LEVELS, plain, render
from initlab_grading.course import build, layout
from initlab_grading.course.results import collect_results
from initlab_grading.course.samples import samples_for
from initlab_grading.grading.preprocessors import HIDDEN_NOTE


class Graded:
    """Each assignment's samples graded once, when a test first asks for it (so that
    ``-k gradient_descent`` grades that assignment only)."""

    def __init__(self, root):
        self.root, self.problems = root, {}

    def __call__(self, assignment: str) -> list[str]:
        if assignment not in self.problems:
            self.problems[assignment] = build.grade_samples(self.root, assignment)
        return self.problems[assignment]


@pytest.fixture(scope="module")
def graded(fresh_course):
    return Graded(fresh_course)


@pytest.mark.parametrize("assignment", layout.ASSIGNMENTS)
def test_every_sample_scores_what_it_states(graded, assignment):
    assert graded(assignment) == []


@pytest.mark.parametrize("assignment", layout.ASSIGNMENTS)
def test_reference_full_and_blank_zero(graded, assignment):
    """The reference scores every point; the release submitted untouched (the blank
    sample) scores none: every test cell fails on the release's stubs. That the answers
    pass nbgrader validate is the browser test's: it pastes the reference answers into
    every released notebook and clicks Validate, which runs nbgrader validate on the
    server (tests/test_student_lab.py::test_student_runs_validates_and_passes_visible_tests)."""
    graded(assignment)
    root = graded.root
    tests = layout.test_cell_ids(root, assignment)
    results = {r.student: r for r in collect_results(root, assignment, ["reference", "blank"])}
    assert results["reference"].auto_score == results["reference"].auto_max(tests) > 0
    assert all(results["blank"].cells[t].score == 0 for t in tests)


@pytest.mark.parametrize("assignment", layout.ASSIGNMENTS)
def test_feedback_shows_messages_not_hidden_tests(graded, assignment):
    graded(assignment)
    root = graded.root
    for sample in samples_for(assignment):
        html = (root / "feedback" / sample.student / assignment / f"{assignment}.html").read_text()
        assert "initlab_grading" not in html and "BEGIN HIDDEN TESTS" not in html
        # no frame or path of the grading machine's installed files
        assert str(layout.REPO_ROOT) not in html and "site-packages" not in html, sample.student
        assert HIDDEN_NOTE.lstrip("# ")[:30] in html
        shown = " ".join(html_lib.unescape(re.sub(r"<[^>]+>", " ", html)).split())
        for text in sample.lost.values():
            assert " ".join(text.split()) in shown, (sample.student, text)


def test_export_writes_every_student(graded):
    """The CSV export lists every student of every assignment graded in this run (under
    xdist, the first assignment's and whatever else its worker graded; serially, all)."""
    graded(layout.ASSIGNMENTS[0])
    root = graded.root
    layout.nbgrader(root, "export", "--to", str(root / "grades.csv"))
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


@pytest.mark.parametrize("assignment", layout.ASSIGNMENTS)
def test_class_report_counts_each_diagnosis_once_per_sample(graded, assignment):
    """The class report of the graded samples (written by the course loop): each sample
    is listed under exactly one diagnosis of each test cell it fails and under none of
    the cells it passes; every count is the number of distinct students listed."""
    graded(assignment)
    root = graded.root
    page = root / "reports" / f"{assignment}.html"
    table = root / "reports" / f"{assignment}-diagnoses.csv"
    with table.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        ids = row["student_ids"].split()
        assert len(ids) == len(set(ids)) == int(row["students"]), row
    tests = layout.test_cell_ids(root, assignment)
    for sample in samples_for(assignment):
        failed = tests if sample.blank else set(sample.lost)
        for cell in tests:
            hits = [
                r
                for r in rows
                if r["test_cell"] == cell and sample.student in r["student_ids"].split()
            ]
            assert len(hits) == (cell in failed), (sample.student, cell, hits)
            first = hits and hits[0]["student_ids"].split()[0] == sample.student
            if first and sample.lost.get(cell):  # the example shown is this sample's message
                assert sample.lost[cell] in hits[0]["example"], (sample.student, cell)
    text = page.read_text(encoding="utf-8")
    assert "data:image/png;base64," in text
    assert f"{len(samples_for(assignment))} graded submissions" in text


@pytest.mark.parametrize("assignment", ["gradient_descent"])
def test_feedback_reveals_what_its_level_allows(graded, assignment, tmp_path):
    """``nbgrader generate_feedback --HideHiddenTests.reveal=LEVEL`` on the graded samples:
    at every level no mark reaches the feedback, and each failing hidden check's message
    shows as that level renders it; at "formula" and "diagnosis" its expected values are
    gone, at "diagnosis" its formulas too, while the named mistake stays. The configured
    level ("expected") is the feedback the round trip generated; the others are generated
    in a copy of the course, so that feedback stays as it was."""
    graded(assignment)
    root = tmp_path / "course"
    shutil.copytree(graded.root, root, symlinks=True)
    raw: dict[str, list[str]] = {}  # student -> the marked messages of its hidden checks
    for sample in samples_for(assignment):
        nb = nbformat.read(
            root / "autograded" / sample.student / assignment / layout.notebook_name(assignment), 4
        )
        errors = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
        raw[sample.student] = [o.evalue for o in errors if "⟦" in o.evalue]
    marked = [m for messages in raw.values() for m in messages]
    assert any("⟦expected⟧" in m for m in marked) and any("⟦formula⟧" in m for m in marked)

    def flat(text: str) -> str:
        return " ".join(text.split())

    for level in LEVELS:
        if level != "expected":
            option = f"--HideHiddenTests.reveal={level}"
            layout.nbgrader(root, "generate_feedback", assignment, "--force", option)
        for sample in samples_for(assignment):
            page = root / "feedback" / sample.student / assignment / f"{assignment}.html"
            html = page.read_text(encoding="utf-8")
            assert "⟦" not in html, (level, sample.student)
            shown = flat(html_lib.unescape(re.sub(r"<[^>]+>", " ", html)))
            for message in raw[sample.student]:
                assert flat(render(message, level)) in shown, (level, message)
                left_out = re.findall(r"⟦expected⟧(.*?)⟦/expected⟧", message, re.S)
                if level == "diagnosis":
                    left_out += re.findall(r"⟦formula⟧(.*?)⟦/formula⟧", message, re.S)
                kept = flat(render(message, level))
                for span in left_out if level != "expected" else []:
                    text = flat(plain(span)).strip(" .,;:")
                    assert text in kept or text not in shown, (level, text)
            if level == "expected":
                for text in sample.lost.values():
                    assert flat(text) in shown, (sample.student, text)
        hand = root / "feedback" / "hand-constant-step" / assignment / f"{assignment}.html"
        shown = flat(html_lib.unescape(re.sub(r"<[^>]+>", " ", hand.read_text("utf-8"))))
        if level == "diagnosis":
            assert "Step 2 used step size 1/2." in shown and "expected 1/3" not in shown
