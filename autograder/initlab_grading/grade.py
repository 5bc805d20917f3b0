"""Grade a whole class in parallel with the real nbgrader.

    python -m initlab_grading.grade ASSIGNMENT [--root DIR] [--workers N]
        [--timeout SECONDS] [--retries N] [--report FILE]
        [--engine local|dask --scheduler tcp://HOST:PORT]

Each submission in submitted/<student>/<assignment>/ is graded by its own
``nbgrader autograde ASSIGNMENT --student STUDENT --force`` process, up to ``--workers``
at a time (default: the number of CPU cores). A submission that runs past ``--timeout``
seconds is stopped and reported. A run that fails for a reason outside the student's
control (the gradebook was locked by another writer, a kernel did not start) is retried
up to ``--retries`` times; a failure caused by the submission itself (for example a
notebook that is not valid JSON) is reported and not retried. One line per finished
submission shows progress; a summary and a JSON report come at the end. Grades land in
the gradebook exactly as with ``nbgrader autograde``. ``--engine dask`` runs the same
per-submission grading as tasks on a Dask cluster instead (initlab_grading.distributed).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path

from initlab_grading.course import REPO_ROOT, ensure_tools_on_path

# Log fragments of failures that another attempt can fix: they come from the grading
# machinery (the shared gradebook, kernel start-up), never from what a student wrote.
INFRASTRUCTURE_FAILURES = (
    "database is locked",
    "Kernel died before replying to kernel_info",
    "Timeout waiting for kernel_info reply",
    "Address already in use",
    "No space left on device",
    # PostgreSQL gradebook (CourseDirectory.db_url): two graders adding the same student or
    # submission at once (the second insert is refused; its retry finds the row), lock
    # ordering, a server restarting.
    "duplicate key value violates unique constraint",
    "deadlock detected",
    "could not serialize access",
    "server closed the connection unexpectedly",
)


@dataclass
class GradingResult:
    student: str
    status: str  # graded | timed out | failed
    seconds: float
    attempts: int
    detail: str = ""


def submissions(root: Path, assignment: str) -> list[str]:
    """Students with a submission of this assignment, sorted."""
    base = root / "submitted"
    return sorted(p.parent.name for p in base.glob(f"*/{assignment}") if p.is_dir())


def _infrastructure(log: str) -> str:
    return next((frag for frag in INFRASTRUCTURE_FAILURES if frag in log), "")


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (Linux /proc). Kernels run in sessions of their own,
    so killing nbgrader's process group would not reach them."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def _kill_tree(proc: subprocess.Popen) -> None:
    for pid in [*descendants(proc.pid), proc.pid]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.communicate()


def grade_one(
    root: Path, assignment: str, student: str, timeout: float, retries: int
) -> GradingResult:
    """Autograde one submission in its own nbgrader process."""
    ensure_tools_on_path()
    cmd = [
        str(Path(sys.executable).with_name("nbgrader")),
        "autograde",
        assignment,
        f"--student={student}",
        "--force",
    ]
    start = time.monotonic()
    attempts = 0
    while True:
        attempts += 1
        proc = subprocess.Popen(
            cmd, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        try:
            log, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_tree(proc)  # nbgrader and the kernel it started
            return GradingResult(
                student,
                "timed out",
                time.monotonic() - start,
                attempts,
                f"stopped after {timeout:g} s",
            )
        failed = proc.returncode != 0 or "There was an error processing" in log
        if not failed:
            return GradingResult(student, "graded", time.monotonic() - start, attempts)
        cause = _infrastructure(log)
        if cause and attempts <= retries:
            time.sleep(min(2.0 * attempts, 10.0))
            continue
        lines = [ln for ln in log.splitlines() if "ERROR" in ln or "Error" in ln]
        detail = (f"infrastructure: {cause}; " if cause else "") + " | ".join(lines[-3:])
        return GradingResult(student, "failed", time.monotonic() - start, attempts, detail[:500])


def grade_class(
    root: Path,
    assignment: str,
    workers: int | None = None,
    timeout: float = 900.0,
    retries: int = 2,
    progress=print,
    engine: str = "local",
    scheduler: str | None = None,
) -> list[GradingResult]:
    """Grade every submission of ``assignment`` with ``workers`` parallel processes, or
    with ``engine="dask"`` as tasks on the Dask cluster at ``scheduler``."""
    students = submissions(root, assignment)
    if not students:
        raise SystemExit(
            f"No submissions of {assignment!r} under {root / 'submitted'}: run "
            f"`nbgrader collect {assignment}` first."
        )
    if engine == "dask":
        from initlab_grading.distributed import grade_on_dask

        return grade_on_dask(root, assignment, students, scheduler, timeout, retries, progress)
    if engine != "local":
        raise ValueError(f"engine must be 'local' or 'dask', not {engine!r}")
    workers = workers or os.cpu_count() or 1
    results: list[GradingResult] = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        jobs = [pool.submit(grade_one, root, assignment, s, timeout, retries) for s in students]
        for done, job in enumerate(as_completed(jobs), start=1):
            res = job.result()
            results.append(res)
            progress(progress_line(done, len(students), res))
    return sorted(results, key=lambda r: r.student)


def progress_line(done: int, total: int, res: GradingResult) -> str:
    extra = f" after {res.attempts} attempts" if res.attempts > 1 else ""
    return f"[{done}/{total}] {res.student}: {res.status} in {res.seconds:.1f} s{extra}" + (
        f" ({res.detail})" if res.detail else ""
    )


def summary(results: list[GradingResult], wall: float) -> str:
    counts: dict[str, int] = {}
    for r in results:
        counts[r.status] = counts.get(r.status, 0) + 1
    parts = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    lines = [f"{len(results)} submissions in {wall:.1f} s ({parts})"]
    lines += [f"  {r.student}: {r.status} ({r.detail})" for r in results if r.status != "graded"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("assignment")
    parser.add_argument("--root", type=Path, default=REPO_ROOT, help="course root")
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="parallel processes (local engine; a Dask worker runs --nthreads at once)",
    )
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per submission")
    parser.add_argument("--retries", type=int, default=2, help="retries of infrastructure failures")
    parser.add_argument(
        "--report",
        type=Path,
        default=None,
        help="JSON report (default: autograded/<assignment>-report.json)",
    )
    parser.add_argument(
        "--engine",
        choices=["local", "dask"],
        default="local",
        help="local: processes on this machine; dask: tasks on a Dask cluster",
    )
    parser.add_argument(
        "--scheduler",
        default=os.environ.get("DASK_SCHEDULER_ADDRESS"),
        help="the Dask scheduler, tcp://HOST:PORT (default: $DASK_SCHEDULER_ADDRESS)",
    )
    args = parser.parse_args(argv)
    if args.engine == "dask" and not args.scheduler:
        parser.error("--engine dask needs --scheduler tcp://HOST:PORT (see `dask scheduler`)")
    root = args.root.resolve()
    errors: tuple[type[Exception], ...] = ()
    if args.engine == "dask":
        from initlab_grading.distributed import ClusterError

        errors = (ClusterError,)
    start = time.monotonic()
    try:
        results = grade_class(
            root,
            args.assignment,
            args.workers,
            args.timeout,
            args.retries,
            engine=args.engine,
            scheduler=args.scheduler,
        )
    except errors as err:  # the cluster cannot grade this course
        print(f"error: {err}", file=sys.stderr)
        return 2
    wall = time.monotonic() - start
    print(summary(results, wall))
    report = args.report or root / "autograded" / f"{args.assignment}-report.json"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(json.dumps([asdict(r) for r in results], indent=1))
    print(f"Report: {report}")
    return 0 if all(r.status == "graded" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
