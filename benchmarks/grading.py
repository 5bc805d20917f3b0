"""Grading throughput, measured (not a test; prints figures and ratios, and fails if the
kit's scores differ from plain nbgrader's).

    PYTHONPATH=autograder .venv/bin/python benchmarks/grading.py [--assignment ID ...|--all]
        [--class-size N] [--workers N] [--threads N] [--rounds N] [--no-bubblewrap]

For each assignment (default gradient_descent; ``--all``: every one), builds a class of N
submissions (default 40) in a temporary course, cycling through its sample submissions,
graded at the ``grade`` budget with N threads per kernel (``--threads``, default 1:
OMP/MKL/OpenBLAS threads fixed, so that a kernel's speed does not depend on how many run at
once). One notebook is executed first and not counted (imports and disk caches warm for
every method alike). Then, on the same submissions, ``--rounds`` times (default 1; with 2
or more the order of 1 and 2 alternates and the best round of each counts):

1. plain sequential ``nbgrader autograde ASSIGNMENT`` (one process grades the class);
2. the kit's grading (``initlab_grading.grading.grade``: ``--workers`` long-lived grading
   workers, each grading one submission after another, start-up check included; kernels
   inside bubblewrap unless ``--no-bubblewrap``, so that two runs measure its cost);
3. (once) executing each distinct sample's notebook alone with nbclient (no nbgrader, no
   grading guard), with the source's test cells (hidden tests included) put back as both
   graders do, weighted by how many of the class's submissions are copies of it: the floor
   any grader pays per submission.

It prints seconds per submission for each, the speed-up of 2 over 1, and the kit's
overhead per submission: the worker time (2) spends per submission (its wall time times
the number of workers, divided by the class size; start-up included) minus (3)'s time per
submission, and the same worker time minus plain nbgrader's time per submission. After 1 and
after 2 it reads every cell's score, maximum and manual-grading flag from the gradebook and
compares them; any difference is printed and the exit status is 1.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "autograder"))

import nbformat  # noqa: E402
from nbclient import NotebookClient  # noqa: E402

from initlab_grading.course import build, layout  # noqa: E402
from initlab_grading.course.layout import grade_id, is_test_cell  # noqa: E402
from initlab_grading.course.samples import samples_for  # noqa: E402
from initlab_grading.grading import grade  # noqa: E402
from initlab_grading.grading.options import GradingOptions  # noqa: E402


def build_class(root: Path, assignment: str, size: int) -> list[str]:
    shutil.copytree(REPO / "source" / assignment, root / "source" / assignment)
    shutil.copy(REPO / "nbgrader_config.py", root / "nbgrader_config.py")
    (root / "autograder").symlink_to(REPO / "autograder", target_is_directory=True)
    layout.nbgrader(root, "generate_assignment", assignment, "--force")
    samples = samples_for(assignment)
    students = []
    for i in range(size):
        sample = samples[i % len(samples)]
        student = f"s{i:03d}"
        folder = root / "submitted" / student / assignment
        folder.mkdir(parents=True)
        nb = build.build_submission(root, assignment, sample)
        nbformat.write(nb, folder / layout.notebook_name(assignment))
        (folder / "timestamp.txt").write_text(build.SUBMISSION_TIME)
        students.append(student)
    return students


def with_hidden_tests(root: Path, assignment: str, nb: nbformat.NotebookNode) -> None:
    """Put the source's test cells (hidden tests included) back into a submission, as
    both graders do before executing it; cells the student deleted stay deleted."""
    source = nbformat.read(
        root / "source" / assignment / layout.notebook_name(assignment), as_version=4
    )
    tests = {grade_id(cell): cell.source for cell in source.cells if is_test_cell(cell)}
    for cell in nb.cells:
        if (cell_id := grade_id(cell)) in tests:
            cell.source = tests[cell_id]


def execute_alone(root: Path, assignment: str, student: str) -> float:
    """Seconds to execute one submission with its hidden tests, with nbclient alone."""
    path = root / "submitted" / student / assignment / layout.notebook_name(assignment)
    nb = nbformat.read(path, as_version=4)
    with_hidden_tests(root, assignment, nb)
    start = time.perf_counter()
    NotebookClient(
        nb,
        timeout=600,
        allow_errors=True,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    ).execute()
    return time.perf_counter() - start


def scores(root: Path, assignment: str, students: list[str]) -> dict[str, dict]:
    from nbgrader.api import Gradebook

    with Gradebook(layout.gradebook_url(root)) as gb:
        return {
            s: {
                g.name: (g.auto_score, g.max_score, g.needs_manual_grade)
                for g in gb.find_submission_notebook(assignment, assignment, s).grades
            }
            for s in students
        }


def sequential(root: Path, assignment: str) -> float:
    start = time.perf_counter()
    layout.nbgrader(root, "autograde", assignment, "--force")
    return time.perf_counter() - start


def kit(
    root: Path, assignment: str, workers: int, bubblewrap: bool
) -> tuple[float, list[str], float]:
    start = time.perf_counter()
    options = GradingOptions(workers=workers, bubblewrap=bubblewrap)
    results = grade.grade_class(root, assignment, options, progress=lambda _: None)
    wall = time.perf_counter() - start
    failed = [f"{r.student} ({r.status}: {r.detail})" for r in results if r.status != "graded"]
    return wall, failed, statistics.mean(r.seconds for r in results)


def differences(a: dict, b: dict) -> list[str]:
    found = []
    for student in sorted(a):
        for cell in sorted(a[student]):
            if a[student][cell] != b.get(student, {}).get(cell):
                found.append(
                    f"{student} {cell}: nbgrader {a[student][cell]}, "
                    f"kit {b.get(student, {}).get(cell)}"
                )
    return found


def measure(assignment: str, size: int, workers: int, rounds: int, bubblewrap: bool) -> bool:
    """Run and print one assignment's figures; False if the scores differ."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        students = build_class(root, assignment, size)
        n = len(students)
        print(
            f"\n{assignment}: {n} submissions, {workers} workers, {os.cpu_count()} CPU cores, "
            f"{os.environ['OMP_NUM_THREADS']} thread(s) per kernel, {rounds} round(s)",
            flush=True,
        )
        execute_alone(root, assignment, students[0])  # warm-up, not counted
        seq_times, kit_times, per_submission, failed_all = [], [], [], []
        agree = True
        for r in range(rounds):
            order = ("sequential", "kit") if r % 2 == 0 else ("kit", "sequential")
            by_method = {}
            for method in order:
                if method == "sequential":
                    seq_times.append(sequential(root, assignment))
                else:
                    wall, failed, mean = kit(root, assignment, workers, bubblewrap)
                    kit_times.append(wall)
                    per_submission.append(mean)
                    failed_all += failed
                by_method[method] = scores(root, assignment, students)
            found = differences(by_method["sequential"], by_method["kit"])
            if found:
                agree = False
                print(
                    f"round {r + 1}: scores differ in {len(found)} cells:", *found[:20], sep="\n  "
                )
        cells = sum(len(c) for c in by_method["kit"].values())
        # The class repeats its distinct samples (student i holds sample i % m): each is
        # executed once and weighted by how many submissions hold it.
        m = min(n, len(samples_for(assignment)))
        execution = [execute_alone(root, assignment, s) for s in students[:m]]
        copies = [len(range(k, n, m)) for k in range(m)]
    seq, par = min(seq_times), min(kit_times)
    floor = sum(t * c for t, c in zip(execution, copies, strict=True)) / n
    print(f"sequential nbgrader autograde:   {seq / n:6.2f} s per submission ({seq:.0f} s)")
    print(
        f"kit, parallel:                   {par / n:6.2f} s per submission ({par:.0f} s); "
        f"failed: {sorted(set(failed_all)) or 'none'}"
    )
    print(f"notebook + hidden tests alone:   {floor:6.2f} s per submission")
    print(f"speed-up of the kit over sequential: {seq / par:.2f}x with {workers} workers")
    worker_time = par * workers / n
    print(
        f"kit overhead per submission over execution alone: {worker_time - floor:+.2f} s "
        f"({worker_time:.2f} s of worker time per submission; each submission took "
        f"{min(per_submission):.2f} s from start to grade with {workers} at once)"
    )
    print(
        f"plain sequential nbgrader over execution alone:    {seq / n - floor:+.2f} s per "
        "submission"
    )
    print(
        f"kit over plain sequential nbgrader:                {worker_time - seq / n:+.2f} s per "
        "submission of worker time"
    )
    if rounds > 1:
        print(
            "all rounds: sequential " + ", ".join(f"{t:.0f}" for t in seq_times)
            + " s; kit " + ", ".join(f"{t:.0f}" for t in kit_times) + " s"
        )  # fmt: skip
    print(
        f"scores: {'identical' if agree else 'DIFFERENT'} per cell (score, maximum, manual "
        f"flag) for all {n} submissions ({cells} cells) in every round"
    )
    return agree


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--assignment", action="append", choices=layout.ASSIGNMENTS, help="repeatable"
    )
    parser.add_argument("--all", action="store_true", help="every assignment")
    parser.add_argument("--class-size", type=int, default=40)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--threads", type=int, default=1, help="threads per kernel")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument(
        "--no-bubblewrap", dest="bubblewrap", action="store_false", help="kernels without it"
    )
    args = parser.parse_args()
    assignments = layout.ASSIGNMENTS if args.all else args.assignment or ["gradient_descent"]
    os.environ["INITLAB_BUDGET"] = "grade"
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[name] = str(args.threads)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(REPO / "autograder"), os.environ.get("PYTHONPATH", "")]
    )
    layout.ensure_tools_on_path()
    ok = [
        measure(a, args.class_size, args.workers, args.rounds, args.bubblewrap) for a in assignments
    ]
    return 0 if all(ok) else 1


if __name__ == "__main__":
    sys.exit(main())
