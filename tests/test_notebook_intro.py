"""The first five minutes of a student: the top cell of every released notebook says what
it teaches, how long it runs (at which experiment budget), how to run the visible tests,
and what their failure messages mean before any answer is written."""

from __future__ import annotations

import re

import nbformat
import pytest

from initlab_grading import course


def _first_cell(repo, assignment: str) -> str:
    nb = nbformat.read(repo / "release" / assignment / f"{assignment}.ipynb", as_version=4)
    cell = nb.cells[0]
    assert cell.cell_type == "markdown", f"{assignment}: the notebook must open with its intro"
    return cell.source


def _section(text: str, title: str) -> str:
    """The paragraph(s) after **title.** up to the next bold heading or header."""
    match = re.search(rf"\*\*{title}\.\*\*(.*?)(?=\n\*\*[A-Z][^*]*\.\*\*|\n#|\Z)", text, re.S)
    assert match, f"no **{title}.** paragraph"
    return match.group(1)


@pytest.mark.parametrize("assignment", course.ASSIGNMENTS)
def test_first_cell_says_what_it_teaches(repo, assignment):
    text = _first_cell(repo, assignment)
    assert text.startswith("# Assignment ")
    assert len(_section(text, "What you learn").split()) >= 20


@pytest.mark.parametrize("assignment", course.ASSIGNMENTS)
def test_first_cell_says_how_long_it_runs_and_at_which_budget(repo, assignment):
    how_long = _section(_first_cell(repo, assignment), "How long")
    assert re.search(r"\bruns?\b", how_long), how_long
    assert re.search(r"\d+\s*(s|seconds?|min|minutes?)\b", how_long), (
        f"{assignment}: say how long the notebook runs, in seconds or minutes"
    )
    assert "`default`" in how_long, f"{assignment}: name the budget the time holds for"


@pytest.mark.parametrize("assignment", course.ASSIGNMENTS)
def test_first_cell_says_how_to_run_the_visible_tests(repo, assignment):
    how_to = _section(_first_cell(repo, assignment), "How to work")
    for phrase in (
        "test cell",
        "Shift+Enter",
        "Visible tests passed.",
        "Replace this line with your answer.",
        "NameError",
        "Run All Above Selected Cell",
        "Restart Kernel and Run All Cells",
        "Validate",
    ):
        assert phrase in how_to, f"{assignment}: the intro does not mention {phrase!r}"
