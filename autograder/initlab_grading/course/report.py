"""The class report of one assignment, from the gradebook and the autograded notebooks.

    python -m initlab_grading.course.report ASSIGNMENT [--root DIR] [--out DIR]

Writes ``reports/<assignment>.html`` and ``reports/<assignment>-diagnoses.csv`` in the
course root (the grading command and ``python3 tasks.py course`` write them too):

- the distribution of the autograded scores, as a histogram;
- each test cell's share of full marks over the class, and its discrimination: the
  correlation between the cell's score and the rest of the autograded score (near 0 or
  negative: the cell does not separate students who master the assignment from those who
  do not; undefined when either is the same for everybody);
- the diagnoses the failing tests named, ranked by how many students hit them, each with
  the students' ids. A diagnosis is a test cell's failure message with its numbers left
  out, so that the same mistake made with other values counts once per student;
- for the manually graded answers, how many are graded so far.

Every text from a submission (messages carry values the student's code produced) is
escaped: the page shows it, never runs it. Messages are shown whole, whatever feedback
reveals (initlab_grading.checking.reveal): read through initlab_grading.results, they
carry the expected values and formulas without their marks.
"""

from __future__ import annotations

import argparse
import base64
import csv
import html
import io
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from nbgrader.api import Gradebook

from initlab_grading.course.layout import ensure_tools_on_path, gradebook_url, test_cell_ids
from initlab_grading.course.results import SampleResult, collect_results

_NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d+(?:\.\d+)?|\.\d+)(?:[eE][-+]?\d+)?(?!\w|\.\d)")
"""A number standing alone: not the digit of a name such as x0 or float32."""
NUMBER_MARK = "#"
"""What stands for each number of a message in a diagnosis."""


@dataclass
class Diagnosis:
    cell: str
    text: str
    """The message with each number replaced by NUMBER_MARK."""
    example: str
    """One student's full message."""
    students: list[str] = field(default_factory=list)


@dataclass
class CellStats:
    cell: str
    max_score: float
    share: float
    """Mean fraction of the cell's points the class earned."""
    discrimination: float | None


def diagnosis_text(message: str) -> str:
    """A failure message without its numbers, whitespace collapsed."""
    return " ".join(_NUMBER.sub(NUMBER_MARK, message).split())


def students_of(root: Path, assignment: str) -> list[str]:
    """The students with a graded submission of ``assignment``, sorted."""
    ensure_tools_on_path()
    with Gradebook(gradebook_url(root)) as gb:
        return sorted(s.student.id for s in gb.assignment_submissions(assignment) if s.notebooks)


def diagnoses(results: list[SampleResult], tests: set[str]) -> list[Diagnosis]:
    """Each named failure of a test cell, with the students who hit it (each once),
    most students first."""
    found: dict[tuple[str, str], Diagnosis] = {}
    for res in results:
        for cell_id in sorted(tests):
            cell = res.cells.get(cell_id)
            if cell is None or not cell.message or cell.score == cell.max_score:
                continue
            key = (cell_id, diagnosis_text(cell.message))
            diag = found.setdefault(key, Diagnosis(cell_id, key[1], cell.message))
            if res.student not in diag.students:
                diag.students.append(res.student)
    return sorted(found.values(), key=lambda d: (-len(d.students), d.cell, d.text))


def _correlation(xs: list[float], ys: list[float]) -> float | None:
    n = len(xs)
    if n < 2:
        return None
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    syy = sum((y - my) ** 2 for y in ys)
    if sxx == 0 or syy == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / math.sqrt(sxx * syy)


def autograded_score(res: SampleResult, tests: set[str]) -> float:
    """The points of the student's test cells (manual answers left out)."""
    return sum(res.cells[g].score or 0.0 for g in tests if g in res.cells)


def cell_stats(results: list[SampleResult], tests: set[str]) -> list[CellStats]:
    """Share of full marks and discrimination of each test cell, by cell id."""
    totals = [autograded_score(res, tests) for res in results]
    stats = []
    for cell_id in sorted(tests):
        scores = [res.cells[cell_id].score or 0.0 for res in results]
        max_score = results[0].cells[cell_id].max_score if results else 0.0
        share = sum(scores) / (max_score * len(scores)) if max_score and scores else 0.0
        rest = [t - s for t, s in zip(totals, scores, strict=True)]
        stats.append(CellStats(cell_id, max_score, share, _correlation(scores, rest)))
    return stats


def manual_progress(results: list[SampleResult], tests: set[str]) -> dict[str, tuple[int, int]]:
    """For each manually graded cell: (answers graded so far, answers)."""
    progress: dict[str, tuple[int, int]] = {}
    for res in results:
        for cell_id, cell in res.cells.items():
            if cell_id in tests:
                continue
            done, total = progress.get(cell_id, (0, 0))
            progress[cell_id] = (done + (cell.score is not None), total + 1)
    return dict(sorted(progress.items()))


def _histogram_png(totals: list[float], max_total: float) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3), dpi=100)
    top = math.ceil(max_total) or 1
    step = max(1, math.ceil(top / 25))  # a bar per point, or per few points past 25
    edges = [k - step / 2 for k in range(0, top + step + 1, step)]
    ax.hist(totals, bins=edges, color="#4477aa", edgecolor="white")
    ax.set_xlabel(f"autograded score (of {max_total:g})")
    ax.set_ylabel("students")
    ax.yaxis.get_major_locator().set_params(integer=True)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.2f}"


def render_html(
    assignment: str,
    results: list[SampleResult],
    tests: set[str],
    diags: list[Diagnosis],
) -> str:
    esc = html.escape
    totals = [autograded_score(res, tests) for res in results]
    max_total = results[0].auto_max(tests) if results else 0.0
    stats = cell_stats(results, tests)
    manual = manual_progress(results, tests)
    mean = sum(totals) / len(totals) if totals else 0.0
    rows = [
        f"<tr><td>{esc(s.cell)}</td><td>{s.max_score:g}</td><td>{s.share:.0%}</td>"
        f"<td>{_fmt(s.discrimination)}</td></tr>"
        for s in stats
    ]
    manual_rows = [
        f"<tr><td>{esc(cell)}</td><td>{done} of {total}</td></tr>"
        for cell, (done, total) in manual.items()
    ]
    diag_rows = [
        f"<tr><td>{rank}</td><td>{esc(d.cell)}</td><td>{esc(d.example)}</td>"
        f"<td>{len(d.students)}</td><td>{esc(', '.join(d.students))}</td></tr>"
        for rank, d in enumerate(diags, start=1)
    ]
    png = _histogram_png(totals, max_total) if results else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>Class report: {esc(assignment)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; max-width: 70em; }}
table {{ border-collapse: collapse; margin-bottom: 1.5em; }}
th, td {{ border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left;
         vertical-align: top; }}
th {{ background: #f0f0f0; }}
td:nth-child(3) {{ max-width: 40em; }}
</style></head><body>
<h1>Class report: {esc(assignment)}</h1>
<p>{len(results)} graded submissions; mean autograded score {mean:.1f} of {max_total:g}.</p>
<h2>Score distribution</h2>
{f'<img alt="histogram of autograded scores" src="data:image/png;base64,{png}">' if png else ""}
<h2>Test cells</h2>
<p>Share: the fraction of the cell's points the class earned. Discrimination: the
correlation of the cell's score with the rest of the autograded score (n/a when either is
the same for every student).</p>
<table><tr><th>test cell</th><th>points</th><th>share of full marks</th>
<th>discrimination</th></tr>
{"".join(rows)}
</table>
<h2>Diagnoses, most frequent first</h2>
<p>The failing tests' messages (one student's wording shown; the same message with other
numbers counts as the same diagnosis). Also in {esc(assignment)}-diagnoses.csv.</p>
<table><tr><th>#</th><th>test cell</th><th>message</th><th>students</th><th>ids</th></tr>
{"".join(diag_rows) or '<tr><td colspan="5">no test failed</td></tr>'}
</table>
<h2>Manually graded answers</h2>
<table><tr><th>answer cell</th><th>graded</th></tr>
{"".join(manual_rows) or '<tr><td colspan="2">none</td></tr>'}
</table>
</body></html>
"""


def write_report(root: Path, assignment: str, out: Path | None = None) -> tuple[Path, Path]:
    """Write the HTML report and the diagnoses CSV of ``assignment``; return their paths."""
    out = out or root / "reports"
    out.mkdir(parents=True, exist_ok=True)
    tests = test_cell_ids(root, assignment)
    results = collect_results(root, assignment, students_of(root, assignment))
    diags = diagnoses(results, tests)
    page = out / f"{assignment}.html"
    page.write_text(render_html(assignment, results, tests, diags), encoding="utf-8")
    table = out / f"{assignment}-diagnoses.csv"
    with table.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["rank", "test_cell", "diagnosis", "students", "student_ids", "example"])
        for rank, d in enumerate(diags, start=1):
            ids = " ".join(d.students)
            writer.writerow([rank, d.cell, d.text, len(d.students), ids, d.example])
    return page, table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("assignment")
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="course root")
    parser.add_argument("--out", type=Path, default=None, help="default: ROOT/reports")
    args = parser.parse_args(argv)
    page, table = write_report(args.root.resolve(), args.assignment, args.out)
    print(f"Class report: {page}\nDiagnoses:    {table}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
