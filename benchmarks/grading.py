"""Grading throughput, measured in one run (not a test; prints figures and ratios).

    PYTHONPATH=autograder .venv/bin/python benchmarks/grading.py [--assignment ID]
        [--class-size N] [--workers N]

Builds a class of N submissions (default 40) of one assignment in a temporary course,
cycling through its sample submissions, at the ``grade`` budget. Then, on the same
submissions:

1. plain sequential ``nbgrader autograde ASSIGNMENT`` (one process grades the class);
2. the kit's parallel grading (``initlab_grading.grade``: ``--workers`` long-lived
   grading workers, each grading one submission after another);
3. executing each submission's notebook alone with nbclient (no nbgrader), one after
   another, which is the floor any grader pays.

It prints seconds per submission for each, the speed-up of 2 over 1, and the kit's
overhead per submission: the worker time (2) spends per submission (its wall time times
the number of workers, divided by the class size; start-up of the workers included) minus
(3)'s time per submission.
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

from initlab_grading import course, grade  # noqa: E402
from initlab_grading.samples import samples_for  # noqa: E402


def build_class(root: Path, assignment: str, size: int) -> list[str]:
    shutil.copytree(REPO / "source", root / "source")
    shutil.copy(REPO / "nbgrader_config.py", root / "nbgrader_config.py")
    (root / "autograder").symlink_to(REPO / "autograder", target_is_directory=True)
    course.nbgrader(root, "generate_assignment", assignment, "--force")
    samples = samples_for(assignment)
    students = []
    for i in range(size):
        sample = samples[i % len(samples)]
        student = f"s{i:03d}"
        folder = root / "submitted" / student / assignment
        folder.mkdir(parents=True)
        nb = course.build_submission(root, assignment, sample)
        nbformat.write(nb, folder / course.notebook_name(assignment))
        (folder / "timestamp.txt").write_text(course.SUBMISSION_TIME)
        students.append(student)
    return students


def execute_alone(root: Path, assignment: str, student: str) -> float:
    path = root / "submitted" / student / assignment / course.notebook_name(assignment)
    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    NotebookClient(nb, timeout=600, allow_errors=True, kernel_name="python3").execute()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assignment", default="gradient_descent", choices=course.ASSIGNMENTS)
    parser.add_argument("--class-size", type=int, default=40)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    os.environ["INITLAB_BUDGET"] = "grade"
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(REPO / "autograder"), os.environ.get("PYTHONPATH", "")]
    )
    course.ensure_tools_on_path()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        students = build_class(root, args.assignment, args.class_size)
        n = len(students)
        print(
            f"{args.assignment}: {n} submissions, {args.workers} workers, "
            f"{os.cpu_count()} CPU cores"
        )

        start = time.perf_counter()
        course.nbgrader(root, "autograde", args.assignment, "--force")
        sequential = time.perf_counter() - start

        start = time.perf_counter()
        results = grade.grade_class(
            root, args.assignment, workers=args.workers, progress=lambda _: None
        )
        parallel = time.perf_counter() - start
        failed = [r.student for r in results if r.status != "graded"]
        per_submission = statistics.mean(r.seconds for r in results)

        execution = [execute_alone(root, args.assignment, s) for s in students]
        floor = statistics.mean(execution)

    print(
        f"sequential nbgrader autograde: {sequential / n:6.2f} s per submission "
        f"({sequential:.0f} s)"
    )
    print(
        f"kit, parallel:                 {parallel / n:6.2f} s per submission "
        f"({parallel:.0f} s); failed: {failed or 'none'}"
    )
    print(f"notebook execution alone:      {floor:6.2f} s per submission")
    print(
        f"speed-up of the kit over sequential: {sequential / parallel:.2f}x "
        f"with {args.workers} workers"
    )
    worker_time = parallel * args.workers / n
    print(
        f"kit overhead per submission over execution alone: {worker_time - floor:+.2f} s "
        f"({worker_time:.2f} s of worker time per submission; each submission took "
        f"{per_submission:.2f} s from start to grade with {args.workers} at once)"
    )


if __name__ == "__main__":
    main()
