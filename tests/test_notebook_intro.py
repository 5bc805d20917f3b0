"""The first minute of a student: the top cell of every released notebook is short and says
what it teaches, what it needs, each part's points and estimated minutes (adding up to the
notebook's points), and points to the student guide, GUIDE.md; the guide (docs/students.md,
released next to the assignment folders) says how to work, test, Validate and what the
experiment budgets are."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from initlab_grading.course import layout

MAX_WORDS = 120
"""Words are tokens with a letter or a digit: table rules, bullets and math signs do not count."""

PART_HEADING = re.compile(r"^## Part (\d+)\b", re.M)
PART_ROW = re.compile(
    r"^\|\s*(\d+)(?:\s*[–-]\s*(\d+))?\s*\|[^|\n]*\|\s*(\d+)\s*\|\s*(\d+)\s*\|", re.M
)
"""A row of the intro's parts table: | part or range | topic | points | minutes |."""
PART_LINE = re.compile(
    r"\bParts? (\d+)(?:\s*[–-]\s*(\d+))?[^\n:|]*: (\d+) points?, (?:about )?(\d+) min(?:utes)?\b"
)
"""The same in prose: Part 1: 3 points, about 10 minutes."""
TOTAL_ROW = re.compile(r"^\|\s*all\s*\|[^|\n]*\|\s*(\d+)\s*\|\s*(\d+)\s*\|", re.M)
"""The table's last row, if any: | all | | points | minutes |."""

HOW_TO_WORK = (
    "test cell",
    "Shift+Enter",
    "Visible tests passed.",
    "Replace this line with your answer.",
    "NameError",
    "Run All Above Selected Cell",
    "Restart Kernel and Run All Cells",
    "Validate",
)


def _notebook(repo: Path, assignment: str) -> nbformat.NotebookNode:
    return nbformat.read(repo / "release" / assignment / f"{assignment}.ipynb", as_version=4)


def _intro(nb: nbformat.NotebookNode, assignment: str) -> str:
    cell = nb.cells[0]
    assert cell.cell_type == "markdown", f"{assignment}: the notebook must open with its intro"
    return cell.source


def _points_per_part(nb: nbformat.NotebookNode, assignment: str) -> dict[int, float]:
    """The nbgrader points of the graded cells (test cells and written answers) under each
    '## Part N' heading."""
    points: dict[int, float] = {}
    part = None
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for number in PART_HEADING.findall(cell.source):
                part = int(number)
                points.setdefault(part, 0.0)
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("grade"):
            assert part is not None, f"{assignment}: graded cell {meta['grade_id']} before Part 1"
            points[part] += float(meta.get("points", 0))
    return points


def _stated_parts(intro: str) -> list[tuple[range, float, int]]:
    """(parts, points, minutes) for each part or range of parts the intro lists."""
    stated = []
    for first, last, points, minutes in PART_ROW.findall(intro) + PART_LINE.findall(intro):
        stated.append((range(int(first), int(last or first) + 1), float(points), int(minutes)))
    return stated


@pytest.mark.parametrize("assignment", layout.ASSIGNMENTS)
def test_intro_is_short_and_says_what_it_teaches_and_needs(repo, assignment):
    text = _intro(_notebook(repo, assignment), assignment)
    assert re.match(r"# Assignment \d+b? — \S", text), f"{assignment}: '# Assignment N — title'"
    words = [w for w in text.split() if re.search(r"\w", w)]
    assert len(words) <= MAX_WORDS, f"{assignment}: the intro has {len(words)} words"
    for heading in ("**What you learn.**", "**What you need.**"):
        assert heading in text, f"{assignment}: the intro has no {heading} paragraph"
    assert "course material" not in text.lower()
    assert len(re.findall("budget", text, re.I)) <= 1, f"{assignment}: budgets are the guide's"


@pytest.mark.parametrize("assignment", layout.ASSIGNMENTS)
def test_intro_lists_every_part_with_its_points_and_minutes(repo, assignment):
    nb = _notebook(repo, assignment)
    points = _points_per_part(nb, assignment)
    stated = _stated_parts(_intro(nb, assignment))
    listed = [part for parts, _, _ in stated for part in parts]
    assert sorted(listed) == sorted(points), (
        f"{assignment}: the intro lists parts {listed}; the notebook has {sorted(points)}"
    )
    for parts, stated_points, minutes in stated:
        actual = sum(points[p] for p in parts)
        assert stated_points == actual, (
            f"{assignment}: the intro gives Part(s) {list(parts)} {stated_points:g} points; "
            f"the notebook's cells give {actual:g}"
        )
        assert minutes > 0, f"{assignment}: Part(s) {list(parts)} need an estimated time"
    assert sum(p for _, p, _ in stated) == sum(points.values())
    for total_points, total_minutes in TOTAL_ROW.findall(_intro(nb, assignment)):
        assert float(total_points) == sum(points.values()), f"{assignment}: the total row's points"
        assert int(total_minutes) == sum(m for _, _, m in stated), f"{assignment}: its minutes"


@pytest.mark.parametrize("assignment", layout.ASSIGNMENTS)
def test_intro_points_to_the_student_guide(repo, assignment):
    assert "`GUIDE.md`" in _intro(_notebook(repo, assignment), assignment)


def test_student_guide_says_how_to_work(repo):
    guide = (repo / "docs" / "students.md").read_text(encoding="utf-8")
    for phrase in (*HOW_TO_WORK, "# YOUR CODE HERE", "is not implemented yet"):
        assert phrase in guide, f"docs/students.md does not mention {phrase!r}"
    for budget in ("`grade`", "`default`", "`full`"):
        assert budget in guide, f"docs/students.md does not explain the {budget} budget"
    relative = re.findall(r"\]\((?!https?://)[^)]*\)", guide)
    assert not relative, f"the guide is read as GUIDE.md, away from docs/: no links {relative}"


def test_student_guide_is_in_the_jupyterhub_home(repo):
    """Next to the assignment folders Fetch creates; release/GUIDE.md is test_release's."""
    dockerfile = (repo / "deploy" / "jupyterhub" / "Dockerfile").read_text()
    assert re.search(r"^COPY docs/students\.md /home/\$\{NB_USER\}/GUIDE\.md$", dockerfile, re.M)
