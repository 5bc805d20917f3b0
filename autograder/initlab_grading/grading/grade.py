"""Grade a whole class in parallel with the real nbgrader.

    python -m initlab_grading.grading ASSIGNMENT [--root DIR] [--workers N]
        [--timeout SECONDS] [--retries N] [--report FILE]
        [--memory-limit GIB] [--file-limit GIB] [--cell-timeout SECONDS]
        [--isolate] [--kernel-python PATH]
        [--engine local|dask --scheduler tcp://HOST:PORT]

``--workers`` grading workers (default: the number of CPU cores; initlab_grading.grading.worker)
each load nbgrader and the course configuration once and then grade one submission of
submitted/<student>/<assignment>/ after another, in the process, with nbgrader's own
``Autograde`` (what ``nbgrader autograde ASSIGNMENT --student STUDENT --force`` runs), each
submission in a kernel of its own. Before the first submission a kernel is started once
under the same limits (it must import numpy and torch) and the first worker is started:
if either fails, grading stops at once with what to fix. A submission that runs past
``--timeout`` seconds is stopped at once with its worker and kernel, and a fresh worker
grades the next one. A run that fails for a reason outside the student's control (the
gradebook was locked by another writer, a kernel did not start, a kernel was killed by
SIGKILL) is retried up to ``--retries`` times; a worker that dies while grading a
submission is retried once (the notebook itself may have killed it); a failure caused by
the submission itself (for example a notebook that is not valid JSON) is reported and not
retried. A progress line per finished submission (counts, time left), a summary and a JSON
report come at the end; each submission that was not graded says what the gradebook holds
for it. Ctrl-C stops the workers and kernels and writes the report of what was graded.
Grades land in the gradebook exactly as with ``nbgrader autograde`` (tested).
``--engine dask`` grades each submission as a task on a Dask cluster instead, in an
``nbgrader autograde --student`` process of its own (initlab_grading.grading.distributed).

Broken and hostile submissions (docs/security.md): each kernel runs through
the launcher initlab_grading.grading.sandbox (a reduced environment, no import from its working
folder, a memory and a file-size limit), and with ``--isolate`` (as root, local engine) as
an unprivileged user id of its own that cannot read the gradebook or other students'
files. Before grading, each submission is compared with the release (not JSON, renamed,
cells deleted, duplicated, edited, turned into markdown, metadata stripped, extra files,
links); while grading, GuardedExecute reports tampering, a dying kernel, time-outs, huge
output and what the notebook left in its folder. Every finding is a line in the report
(``notes``).
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import asdict
from pathlib import Path

from initlab_grading.course.layout import REPO_ROOT, gradebook_url
from initlab_grading.course.report import write_report
from initlab_grading.grading.attempts import (
    GradingInterrupted,
    GradingResult,
    print_now,
    printable,
    progress_line,
    submissions,
)
from initlab_grading.grading.distributed import ClusterError, grade_on_dask
from initlab_grading.grading.kernels import (
    DEFAULT_FILE_LIMIT_GIB,
    DEFAULT_MEMORY_LIMIT_GIB,
    DEFAULT_NPROC,
)
from initlab_grading.grading.kernelspecs import (
    UidPool,
    _grader_supports_curve,
    _ipykernel_supports_curve,
    check_kernel,
)
from initlab_grading.grading.options import GradingOptions
from initlab_grading.grading.worker_pool import (
    GradingWorker,
    KernelOptions,
    WorkerFailure,
    WorkerSlot,
    make_private,
)

# --------------------------------------------------------------------------------------
# A class


def grade_class(
    root: Path,
    assignment: str,
    options: GradingOptions | None = None,
    progress: Callable[[str], object] = print_now,
    on_worker: Callable[[GradingWorker], None] | None = None,
) -> list[GradingResult]:
    """Grade every submission of ``assignment`` under ``options`` (default
    ``GradingOptions()``): with ``options.workers`` parallel grading workers, or with
    ``options.engine == "dask"`` as tasks on the Dask cluster at ``options.scheduler``.

    ``progress``: called with a line per finished submission.
    ``on_worker``: called with a worker after each submission it graded (tests).
    Ctrl-C raises GradingInterrupted with the results so far."""
    if options is None:
        options = GradingOptions()
    students = submissions(root, assignment)
    # a student folder whose name is not valid UTF-8 cannot be a gradebook id: reported,
    # never graded, and the others are graded as usual
    unnamed = [_not_utf8(s) for s in students if printable(s) != s]
    students = [s for s in students if printable(s) == s]
    if not students and not unnamed:
        raise SystemExit(
            f"No submissions of {assignment!r} under {root / 'submitted'}: run "
            f"`nbgrader collect {assignment}` first."
        )
    if options.isolate and options.engine != "local":
        raise SystemExit(
            "--isolate works with the local engine only: it needs root on the machine that "
            "runs the kernels. Leave out --isolate or grade with --engine local."
        )
    if options.engine == "dask":
        results = grade_on_dask(root, assignment, students, options, progress) if students else []
        return _with_unnamed(results, unnamed, progress)
    if options.isolate and os.geteuid() != 0:
        raise SystemExit(
            "--isolate runs each kernel as an unprivileged user, which needs root; "
            "run grading as root or leave out --isolate."
        )
    uids = UidPool() if options.isolate else None
    try:
        results = (
            _grade_locally(root, assignment, students, options, uids, progress, on_worker)
            if students
            else []
        )
        return _with_unnamed(results, unnamed, progress)
    finally:
        if uids is not None:
            uids.close()


def _not_utf8(student: str) -> GradingResult:
    """The result of a student folder whose name is not valid UTF-8: not graded."""
    detail = (
        f"not graded: the folder name submitted/{printable(student)} is not valid UTF-8, so "
        "nbgrader cannot record it; rename the folder to the student's id and grade this "
        "student again"
    )
    return GradingResult(printable(student), "failed", 0.0, 0, detail, [detail])


def _with_unnamed(
    results: list[GradingResult], unnamed: list[GradingResult], progress: Callable[[str], object]
) -> list[GradingResult]:
    """The results of a run and those of the folders it could not grade for their names."""
    if not unnamed:
        return results
    for k, res in enumerate(unnamed, start=len(results) + 1):
        progress(progress_line(k, len(results) + len(unnamed), res))
    return sorted([*results, *unnamed], key=lambda r: r.student)


def _grade_locally(
    root: Path,
    assignment: str,
    students: list[str],
    options: GradingOptions,
    uids: UidPool | None,
    progress: Callable[[str], object],
    on_worker: Callable[[GradingWorker], None] | None,
) -> list[GradingResult]:
    memory_limit, file_limit = options.memory_limit, options.file_limit
    kernel_python, cell_timeout = options.kernel_python, options.cell_timeout
    kernel = KernelOptions(
        memory=int(memory_limit * 2**30) if memory_limit else None,
        fsize=int(file_limit * 2**30) if file_limit else None,
        nproc=DEFAULT_NPROC if uids is not None else None,
        python=kernel_python,
        bwrap=options.bubblewrap,
    )
    check_uid = uids.take() if uids else None

    def check() -> tuple[str, bool]:
        return check_kernel(
            root, kernel_python, kernel.memory, kernel.fsize, check_uid, kernel.nproc, kernel.bwrap
        )

    here = kernel_python in (None, sys.executable)
    if here:  # the kernel check runs while the first worker starts
        kernel.curve = _grader_supports_curve() and _ipykernel_supports_curve()
        checking = ThreadPoolExecutor(max_workers=1).submit(check)
    else:
        problem, kernel.curve = check()
        if problem:
            raise SystemExit(f"cannot grade: {problem}")
    db_url = gradebook_url(root)
    count = min(options.workers or os.cpu_count() or 1, len(students))
    alive: set[GradingWorker] = set()
    slots = [WorkerSlot(root, assignment, kernel, cell_timeout, alive) for _ in range(count)]
    free: queue.Queue[WorkerSlot] = queue.Queue()
    stop = threading.Event()
    try:
        try:
            first = slots[0].start()  # fail fast: a worker that cannot start stops grading
        except WorkerFailure as err:
            problem = checking.result()[0] if here else ""
            raise SystemExit(
                f"cannot grade: {problem}"
                if problem
                else f"cannot grade: the first grading worker did not start ({err}). Run "
                f"`nbgrader autograde {assignment} --student STUDENT` in {root} to see why."
            ) from None
        if here:
            problem = checking.result()[0]
            if problem:
                raise SystemExit(f"cannot grade: {problem}")
        if uids is not None:
            make_private(root)
            if not os.environ.get("INITLAB_DATA"):
                progress(
                    "warning: INITLAB_DATA is not set, so isolated kernels (each with a home of "
                    "its own) find no MNIST and fetch it: set INITLAB_DATA to a folder other "
                    "users can read that holds it (see docs/library.md, MNIST without internet)"
                )
        if first.config:
            tail = "\n".join(first.ready_log.strip().splitlines()[-8:])
            raise SystemExit(
                f"cannot grade: nbgrader could not load {root / 'nbgrader_config.py'}:\n{tail}"
            )
        for slot in slots:
            free.put(slot)
        return _run_pool(
            students, slots, free, stop, alive, options.timeout, options.retries, uids, db_url,
            progress, on_worker,
        )  # fmt: skip
    finally:
        for slot in slots:
            slot.close()


def _interrupted(student: str) -> GradingResult:
    return GradingResult(student, "interrupted", 0.0, 0, "grading was interrupted (Ctrl-C)")


def _run_pool(
    students: list[str],
    slots: list[WorkerSlot],
    free: queue.Queue[WorkerSlot],
    stop: threading.Event,
    alive: set,
    timeout: float,
    retries: int,
    uids: UidPool | None,
    db_url: str,
    progress: Callable[[str], object],
    on_worker: Callable[[GradingWorker], None] | None,
) -> list[GradingResult]:
    def one(student: str) -> GradingResult:
        if stop.is_set():
            return _interrupted(student)
        slot = free.get()  # one is free: the pool runs at most len(slots) at once
        try:
            uid = uids.take() if uids is not None else None
            result = slot.grade(student, timeout, retries, uid, db_url, stop)
            if on_worker is not None and slot.worker is not None:
                on_worker(slot.worker)
            return result
        except Exception as err:  # a fault of the kit's, not the student's: reported
            slot.discard()
            return GradingResult(
                student, "failed", 0.0, 1, f"internal error: {type(err).__name__}: {err}"[:500]
            )
        finally:
            free.put(slot)

    def result_of(job: Future, student: str) -> GradingResult:
        try:
            return job.result()
        except Exception as err:
            return GradingResult(
                student, "failed", 0.0, 1, f"internal error: {type(err).__name__}: {err}"[:500]
            )

    results: dict[str, GradingResult] = {}
    start = time.monotonic()
    pool = ThreadPoolExecutor(max_workers=len(slots))
    jobs = {pool.submit(one, s): s for s in students}
    try:
        for done, job in enumerate(as_completed(jobs), start=1):
            res = result_of(job, jobs[job])
            results[res.student] = res
            progress(progress_line(done, len(students), res, time.monotonic() - start))
    except KeyboardInterrupt:
        stop.set()
        for job in jobs:
            job.cancel()
        for worker in list(alive):
            worker.kill()  # running submissions end now
        pool.shutdown(wait=True)
        for job, student in jobs.items():
            if student not in results:
                done_ok = job.done() and not job.cancelled()
                results[student] = result_of(job, student) if done_ok else _interrupted(student)
        raise GradingInterrupted(sorted(results.values(), key=lambda r: r.student)) from None
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return sorted(results.values(), key=lambda r: r.student)


def summary(results: list[GradingResult], wall: float) -> str:
    counts: dict[str, int] = {}
    for r in results:
        counts[r.status] = counts.get(r.status, 0) + 1
    parts = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    lines = [f"{len(results)} submissions in {wall:.1f} s ({parts})"]
    for r in results:
        if r.status != "graded":
            lines.append(f"  {r.student}: {r.status} ({r.detail})")
    noted = [r for r in results if r.notes]
    if noted:
        lines.append("What happened beyond the scores:")
        for r in noted:
            lines += [f"  {r.student}: {note}" for note in r.notes if note != r.detail]
    return "\n".join(lines)


def _count(kind: type, minimum: float, what: str, allow_zero: bool = False):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value < minimum or (value == 0 and not allow_zero and minimum == 0):
            raise argparse.ArgumentTypeError(f"{text} is not {what}")
        return value

    return parse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m initlab_grading.grading", description=__doc__.splitlines()[0]
    )
    parser.add_argument("assignment")
    parser.add_argument("--root", type=Path, default=REPO_ROOT, help="course root")
    parser.add_argument(
        "--workers",
        type=_count(int, 1, "a number of workers (1 or more)"),
        default=None,
        help="parallel grading workers (local engine; default: one per CPU core; a Dask "
        "worker runs --nthreads at once)",
    )
    parser.add_argument(
        "--timeout",
        type=_count(float, 1e-9, "a positive number of seconds"),
        default=900.0,
        help="seconds per submission (default %(default)s)",
    )
    parser.add_argument(
        "--retries",
        type=_count(int, 0, "0 or more", allow_zero=True),
        default=2,
        help="retries of infrastructure failures (default %(default)s)",
    )
    parser.add_argument(
        "--report",
        type=Path,
        default=None,
        help="JSON report (default: autograded/<assignment>-report.json)",
    )
    parser.add_argument(
        "--memory-limit",
        type=_count(float, 0, "0 (no limit) or a positive number of GiB", allow_zero=True),
        default=DEFAULT_MEMORY_LIMIT_GIB,
        help="GiB of private writable memory per kernel process, 0 for none "
        "(default %(default)s; importing torch needs about 1)",
    )
    parser.add_argument(
        "--file-limit",
        type=_count(float, 0, "0 (no limit) or a positive number of GiB", allow_zero=True),
        default=DEFAULT_FILE_LIMIT_GIB,
        help="GiB per file a kernel writes, 0 for none (default %(default)s)",
    )
    parser.add_argument(
        "--cell-timeout",
        type=_count(float, 1e-9, "a positive number of seconds"),
        default=None,
        help="seconds per cell, rounded up to whole seconds (default: Execute.timeout in "
        "nbgrader_config.py)",
    )
    parser.add_argument(
        "--isolate",
        action="store_true",
        help="run each kernel as its own unprivileged user (needs root; local engine); "
        "see docs/security.md",
    )
    parser.add_argument(
        "--no-bubblewrap",
        dest="bubblewrap",
        action="store_false",
        help="run kernels without bubblewrap: they can then read and write what the grader "
        "can and reach the network (only where bwrap cannot be installed); see "
        "docs/security.md",
    )
    parser.add_argument(
        "--kernel-python",
        default=None,
        help="the Python that runs kernels (default: this one); with --isolate it must be "
        "readable by other users; with --engine dask it must exist on every worker machine",
    )
    parser.add_argument(
        "--engine",
        choices=["local", "dask"],
        default="local",
        help="local: grading workers on this machine; dask: tasks on a Dask cluster",
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
    options = GradingOptions(
        workers=args.workers,
        timeout=args.timeout,
        retries=args.retries,
        memory_limit=args.memory_limit or None,
        cell_timeout=args.cell_timeout,
        file_limit=args.file_limit or None,
        isolate=args.isolate,
        bubblewrap=args.bubblewrap,
        kernel_python=args.kernel_python,
        engine=args.engine,
        scheduler=args.scheduler,
    )
    errors: tuple[type[Exception], ...] = ()
    if args.engine == "dask":
        errors = (ClusterError,)
    start = time.monotonic()
    interrupted = False
    try:
        results = grade_class(root, args.assignment, options)
    except errors as err:  # the cluster cannot grade this course
        print(f"error: {err}", file=sys.stderr)
        return 2
    except GradingInterrupted as stopped:
        results, interrupted = stopped.results, True
    wall = time.monotonic() - start
    print(printable(summary(results, wall)))
    report = args.report or root / "autograded" / f"{args.assignment}-report.json"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(json.dumps([asdict(r) for r in results], indent=1))
    print(f"Report: {report}")
    if any(r.status == "graded" for r in results):
        try:
            page, table = write_report(root, args.assignment)
            print(f"Class report: {page} (diagnoses: {table.name})")
        except Exception as err:  # the grades are in the gradebook whatever happens here
            print(f"The class report could not be written: {err!r}", file=sys.stderr)
    if interrupted:
        print("Interrupted: the submissions marked 'interrupted' were not graded.")
        return 130
    return 0 if all(r.status == "graded" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
