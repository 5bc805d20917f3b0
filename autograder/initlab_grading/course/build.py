"""The instructor's loop on the bundled sample submissions, with the real nbgrader.

    python -m initlab_grading.course [--root DIR] [--assignment NAME ...]

For each assignment: ``nbgrader generate_assignment`` (source/ -> release/),
``nbgrader generate_solution`` (source/ -> solutions/, executed at the ``default`` budget,
the one students run, so that the outputs instructors read are the ones the model answers
discuss and the notebooks' instructor checks hold for them; execution timestamps are
removed and consecutive stream outputs merged, so that a rebuild
whose outputs did not change leaves the committed solution byte for byte as it was), the
sample submissions written to submitted/, autograding with the kit's grading command
(initlab_grading.grading.grade: long-lived grading workers, one per CPU core, each running
nbgrader's own Autograde), ``nbgrader generate_feedback`` and, for the whole course,
``nbgrader export`` to
grades.csv, and the class report of each assignment (initlab_grading.course.report) to
reports/. It prints each sample's score per test cell next to what the sample states it
must score, and exits non-zero when any differ. tasks.py runs it in the course's
virtual environment (``python3 tasks.py course``).
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from pathlib import Path

import nbformat
from nbgrader.api import Gradebook, MissingEntry

from initlab_grading.course.layout import (
    ASSIGNMENTS,
    REPO_ROOT,
    SOLUTION_BUDGET,
    CourseError,
    ensure_tools_on_path,
    grade_id,
    gradebook_url,
    nbgrader,
    notebook_name,
    test_cell_ids,
)
from initlab_grading.course.report import write_report
from initlab_grading.course.results import SampleResult, collect_results
from initlab_grading.course.samples import Sample, samples_for
from initlab_grading.grading.grade import grade_class

SUBMISSION_TIME = "2026-01-15 12:00:00.000000 UTC"
_SOLUTION_MARKERS = re.compile(r"^\s*### (BEGIN|END) SOLUTION\s*$")


def reference_answers(root: Path, assignment: str) -> dict[str, str]:
    """The master's answer cells, keyed by grade_id, without the solution markers."""
    nb = nbformat.read(root / "source" / assignment / notebook_name(assignment), as_version=4)
    answers = {}
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("solution"):
            lines = [ln for ln in cell.source.splitlines() if not _SOLUTION_MARKERS.match(ln)]
            answers[meta["grade_id"]] = "\n".join(lines)
    return answers


def build_submission(root: Path, assignment: str, sample: Sample) -> nbformat.NotebookNode:
    """The release notebook with the sample's answers written into its answer cells."""
    nb = nbformat.read(root / "release" / assignment / notebook_name(assignment), as_version=4)
    nb.cells = [c for c in nb.cells if grade_id(c) not in sample.deleted]
    if sample.blank:
        return nb
    reference = reference_answers(root, assignment)
    unknown = set(sample.answers) - set(reference)
    if unknown:
        raise CourseError(
            f"Sample {sample.student!r} of {assignment} answers cells {sorted(unknown)}, "
            f"which are not answer cells; answer cells are {sorted(reference)}."
        )
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("solution"):
            cell_id = meta["grade_id"]
            cell.source = sample.answers.get(cell_id, reference[cell_id]).strip("\n")
    return nb


def write_submissions(root: Path, assignment: str, samples: list[Sample]) -> None:
    """Put each sample where ``nbgrader collect`` would: submitted/<student>/<assignment>/."""
    for sample in samples:
        folder = root / "submitted" / sample.student / assignment
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        nbformat.write(
            build_submission(root, assignment, sample), folder / notebook_name(assignment)
        )
        (folder / "timestamp.txt").write_text(SUBMISSION_TIME)


# --------------------------------------------------------------------------------------
# Results


def compare_with_samples(
    results: list[SampleResult], samples: list[Sample], test_ids: set[str]
) -> list[str]:
    """Every way the graded samples differ from what they state; empty when all agree."""
    problems = []
    by_student = {s.student: s for s in samples}
    for res in results:
        sample = by_student[res.student]
        for cell_id in sorted(test_ids):
            cell = res.cells[cell_id]
            must_lose = sample.blank or cell_id in sample.lost
            want = 0.0 if must_lose else cell.max_score
            if cell.score != want:
                problems.append(
                    f"{res.student}: {cell_id} scored {cell.score} of {cell.max_score}; "
                    f"the sample states {want}. Message: {cell.message or '(none)'}"
                )
            expected_text = sample.lost.get(cell_id, "")
            if expected_text and expected_text not in cell.message:
                problems.append(
                    f"{res.student}: {cell_id} failed with {cell.message!r}, which does not "
                    f"contain {expected_text!r}."
                )
    return problems


def format_table(assignment: str, results: list[SampleResult], test_ids: set[str]) -> str:
    lines = [f"== {assignment}: autograded points per sample (manual answers wait for grading)"]
    width = max(len(r.student) for r in results)
    for res in results:
        manual = sum(1 for c in res.cells.values() if c.score is None)
        failed = sorted(g for g in test_ids if res.cells[g].score == 0)
        lines.append(
            f"  {res.student:<{width}}  {res.auto_score:5.1f} / {res.auto_max(test_ids):4.1f}"
            f"  manual pending: {manual}  lost: {', '.join(failed) if failed else '-'}"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------------------
# The loop


def forget_samples(root: Path, assignment: str) -> None:
    """Remove the bundled samples' earlier submissions of ``assignment`` from the course
    gradebook: nbgrader refuses to regenerate an assignment whose cells changed while
    submissions of it exist. Other students' submissions are left alone."""
    url = gradebook_url(root)
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        return
    ensure_tools_on_path()
    with Gradebook(url) as gb:
        for sample in samples_for(assignment):
            try:
                gb.remove_submission(assignment, sample.student)
            except MissingEntry:
                pass


def normalize_executed(path: Path) -> bool:
    """Remove what differs between two executions with the same outputs: each cell's
    ``metadata.execution`` (timestamps), the split of a stream into chunks (consecutive
    stream outputs of the same name are merged), and widgets, whose model ids are random
    (their saved state and views go; the text that stands for them stays). Rewrites
    ``path`` only if that changed something (always in nbformat's own layout); returns
    whether it did."""
    before = path.read_text(encoding="utf-8")
    nb = nbformat.reads(before, as_version=4)
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        if cell.cell_type != "code":
            continue
        for out in cell.outputs:
            out.get("data", {}).pop("application/vnd.jupyter.widget-view+json", None)
        merged: list = []
        for out in cell.outputs:
            last = merged[-1] if merged else None
            if (
                out.output_type == "stream"
                and last is not None
                and last.output_type == "stream"
                and last.name == out.name
            ):
                last.text += out.text
            else:
                merged.append(out)
        cell.outputs = merged
    after = nbformat.writes(nb)
    after += "" if after.endswith("\n") else "\n"
    if after == before:
        return False
    path.write_text(after, encoding="utf-8")
    return True


def execution_errors(path: Path) -> list[str]:
    """The errors an executed notebook holds, one line per failing cell: its position, its
    grade_id or first line, and the exception."""
    nb = nbformat.read(path, as_version=4)
    found = []
    for index, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []) if cell.cell_type == "code" else []:
            if out.output_type == "error":
                name = grade_id(cell) or (cell.source.strip().splitlines() or [""])[0][:70]
                found.append(f"cell {index} ({name}): {out.ename}: {out.evalue}")
    return found


STUDENT_GUIDE = Path("docs") / "students.md"
"""The student guide; every build copies it to release/GUIDE.md, where the notebooks'
intros point (the JupyterHub image puts it in each student's home)."""


def build(root: Path, assignment: str) -> None:
    """release/ and solutions/ of one assignment, from its master in source/, and the
    student guide next to the released assignments."""
    guide = root / STUDENT_GUIDE
    if guide.is_file():
        (root / "release").mkdir(exist_ok=True)
        shutil.copyfile(guide, root / "release" / "GUIDE.md")
    forget_samples(root, assignment)
    print(f"[{assignment}] nbgrader generate_assignment", flush=True)
    nbgrader(root, "generate_assignment", assignment, "--force")
    print(f"[{assignment}] nbgrader generate_solution (executes the reference)", flush=True)
    nbgrader(root, "generate_solution", assignment, "--force", budget=SOLUTION_BUDGET)
    solution = root / "solutions" / assignment / notebook_name(assignment)
    normalize_executed(solution)
    errors = execution_errors(solution)
    if errors:
        raise CourseError(
            f"{solution} ran with errors: a failing instructor check means a statement of the "
            "notebook no longer holds for its output. Correct the text or the check in "
            f"{root / 'source' / assignment}, then build again:\n  " + "\n  ".join(errors)
        )


def grade_samples(root: Path, assignment: str) -> list[str]:
    """Autograde the sample submissions against the release in the course root, write
    their feedback, print the table; return the mismatches with the samples' statements."""
    samples = samples_for(assignment)
    write_submissions(root, assignment, samples)
    print(
        f"[{assignment}] autograde {len(samples)} sample submissions "
        "(initlab_grading.grading.grade)",
        flush=True,
    )

    graded = grade_class(root, assignment, progress=lambda _: None)
    failed = [r for r in graded if r.status != "graded"]
    if failed:
        raise CourseError(f"grading failed for {[(r.student, r.detail) for r in failed]}")
    notes = {r.student: r.notes for r in graded}
    print(f"[{assignment}] nbgrader generate_feedback", flush=True)
    nbgrader(root, "generate_feedback", assignment, "--force")

    page, _ = write_report(root, assignment)
    print(f"[{assignment}] class report: {page}", flush=True)
    tests = test_cell_ids(root, assignment)
    results = collect_results(root, assignment, [s.student for s in samples])
    print(format_table(assignment, results, tests), flush=True)
    problems = compare_with_samples(results, samples, tests)
    for sample in samples:
        if sample.screened and not any(sample.screened in n for n in notes[sample.student]):
            problems.append(
                f"{sample.student}: the grading report's lines {notes[sample.student]} do not "
                f"say {sample.screened!r}, as the sample states."
            )
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m initlab_grading.course", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--root", type=Path, default=REPO_ROOT, help="course root")
    parser.add_argument(
        "--assignment",
        action="append",
        choices=ASSIGNMENTS,
        help="only this assignment (repeatable); default: all",
    )
    parser.add_argument(
        "--build-only",
        action="store_true",
        help="only rebuild release/ and solutions/ from source/",
    )
    args = parser.parse_args(argv)
    root = args.root.resolve()
    problems = []
    for assignment in args.assignment or ASSIGNMENTS:
        build(root, assignment)
        if not args.build_only:
            problems += grade_samples(root, assignment)
    if args.build_only:
        return 0
    print("[course] nbgrader export -> grades.csv", flush=True)
    nbgrader(root, "export", "--to", str(root / "grades.csv"))
    print(f"Feedback HTML: {root / 'feedback'}/<student>/<assignment>/")
    print(f"Grades CSV:    {root / 'grades.csv'}")
    if problems:
        print("\nSamples that did not score what they state:", *problems, sep="\n  ")
        return 1
    print("\nEvery sample scored exactly what it states.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
