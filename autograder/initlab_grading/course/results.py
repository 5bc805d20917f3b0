"""What the gradebook and the autograded notebooks say about graded submissions: each
test cell's score and failure message."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nbformat
from nbgrader.api import Gradebook

from initlab_grading.checking.reveal import plain
from initlab_grading.course.layout import (
    ensure_tools_on_path,
    grade_id,
    gradebook_url,
    notebook_name,
)


@dataclass
class CellResult:
    grade_id: str
    score: float | None  # None: waits for manual grading
    max_score: float
    message: str  # the failure's "ename: evalue" (without reveal marks), or ""


@dataclass
class SampleResult:
    student: str
    cells: dict[str, CellResult]

    @property
    def auto_score(self) -> float:
        return sum(c.score or 0.0 for c in self.cells.values() if c.score is not None)

    def auto_max(self, test_ids: set[str]) -> float:
        return sum(c.max_score for c in self.cells.values() if c.grade_id in test_ids)


def _error_messages(root: Path, assignment: str, student: str) -> dict[str, str]:
    path = root / "autograded" / student / assignment / notebook_name(assignment)
    if not path.is_file():  # grading failed: the gradebook has no scores either
        return {}
    nb = nbformat.read(path, as_version=4)
    messages = {}
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.output_type == "error":
                messages[grade_id(cell)] = plain(f"{out.ename}: {out.evalue}")
    return messages


def collect_results(root: Path, assignment: str, students: list[str]) -> list[SampleResult]:
    """Per-cell scores from the gradebook and failure messages from the graded notebooks
    (whole, without the marks of initlab_grading.checking.reveal)."""
    ensure_tools_on_path()
    results = []
    with Gradebook(gradebook_url(root)) as gb:
        for student in students:
            nb_sub = gb.find_submission_notebook(assignment, assignment, student)
            messages = _error_messages(root, assignment, student)
            cells = {
                g.name: CellResult(
                    g.name,
                    g.score if not g.needs_manual_grade else None,
                    g.max_score,
                    messages.get(g.name, ""),
                )
                for g in nb_sub.grades
            }
            results.append(SampleResult(student, cells))
    return results
