"""Grade a class on a Dask distributed cluster (a scheduler and workers on several machines).

    dask scheduler --port 8786                                   # one machine
    PYTHONPATH=/courses/initlab/autograder dask worker tcp://HOST:8786 --nthreads 4  # each
    PYTHONPATH=autograder python -m initlab_grading.grading ASSIGNMENT \\
        --engine dask --scheduler tcp://HOST:8786

Each submission is one Dask task that runs :func:`grade_one`: one
``nbgrader autograde ASSIGNMENT --student STUDENT --force`` process (the local engine keeps
long-lived grading workers instead, initlab_grading.grading.worker), with the same inspection of
the submission, kernel launcher and limits (``--memory-limit``, ``--file-limit``,
``--cell-timeout``, ``--kernel-python``, which must then exist on every worker machine),
time limit and retries of infrastructure failures, through the same ``_grade_attempts``,
so scores are the same (tested). A worker runs as many submissions at once as it has
threads (``dask worker --nthreads``). ``--isolate`` is refused: it needs root on the
machine that runs the kernels.

What this assumes:

- Shared course folder. Every worker sees the course root at the same absolute path as the
  machine that submits the grading (an NFS or similar mount): nbgrader reads
  submitted/<student>/ and the course's nbgrader_config.py there and writes autograded/.
  Before grading, each worker is asked whether it sees the folder and can import the kit;
  grading does not start otherwise.
- One gradebook all workers can write. With several machines that is a database server:
  set ``c.CourseDirectory.db_url = "postgresql+psycopg2://user@dbhost/initlab"`` in the
  course's nbgrader_config.py (workers need ``psycopg2-binary``; name the driver: SQLAlchemy
  2.1 reads a bare ``postgresql://`` as psycopg 3). sqlite allows one writer at a time
  through a file lock that network filesystems do not provide reliably, so a sqlite
  gradebook is refused when any worker runs on another host; with every worker on this
  host it works, and a writer that finds the file locked ("database is locked") is retried
  as an infrastructure failure.
- What a worker machine needs installed: the same Python environment as the instructor
  (``pip install "initlab[instructor]"``: nbgrader, the kit's dependencies, dask/distributed,
  psycopg2), the ``python3`` Jupyter kernel, the MNIST files where an assignment uses them
  (``$INITLAB_DATA``), and ``PYTHONPATH=<course root>/autograder`` when the worker starts,
  so that tasks can import ``initlab_grading``.
"""

from __future__ import annotations

import math
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from initlab_grading.course.layout import ensure_tools_on_path, gradebook_url
from initlab_grading.grading.attempts import (
    Attempt,
    GradingInterrupted,
    GradingResult,
    _discard_autograded,
    _grade_attempts,
    _kill_job,
    _kill_tree,
    _reclaim,
    progress_line,
)
from initlab_grading.grading.kernels import (
    DEFAULT_FILE_LIMIT_GIB,
    DEFAULT_MEMORY_LIMIT_GIB,
    DEFAULT_NPROC,
)
from initlab_grading.grading.kernelspecs import (
    _grader_supports_curve,
    _ipykernel_supports_curve,
    _jupyter_path,
    _write_kernelspec,
)
from initlab_grading.grading.options import GradingOptions
from initlab_grading.grading.sandbox import remove_private_folders


class ClusterError(RuntimeError):
    """The cluster cannot grade this course; the message says why and what to do."""


def _make_probe() -> Callable[[str], dict]:
    """A function that reports what one worker sees of the course. It is defined inside
    this one so that cloudpickle sends it to the workers by value: it runs even where
    ``initlab_grading`` cannot be imported, which is one of the things it checks."""

    def probe(root: str, db_url: str) -> dict:
        import importlib.util
        import os
        import socket
        import sys

        try:  # the database driver this worker's SQLAlchemy picks for db_url
            from sqlalchemy.engine import make_url

            make_url(db_url).get_dialect().import_dbapi()
            driver = ""
        except Exception as err:
            driver = f"{type(err).__name__}: {err}"

        spec = importlib.util.find_spec("initlab_grading")
        scripts = os.path.dirname(sys.executable)
        return {
            "host": socket.gethostname(),
            "course": os.path.isfile(os.path.join(root, "nbgrader_config.py")),
            "submitted": os.path.isdir(os.path.join(root, "submitted")),
            "kit": bool(spec and spec.origin),
            "nbgrader": os.path.exists(os.path.join(scripts, "nbgrader")),
            "driver": driver,
        }

    return probe


def _make_exists() -> Callable[[str], bool]:
    """A function (sent by value, like the probe) that says whether a file exists."""

    def exists(path: str) -> bool:
        import os

        return os.access(path, os.X_OK)

    return exists


def worker_problems(probes: dict[str, dict], root: Path, db_url: str, local_host: str) -> list[str]:
    """Every reason the workers (``address -> probe result``) cannot grade this course."""
    problems = []
    if not probes:
        problems.append(
            "the scheduler has no workers: start at least one with "
            "`dask worker tcp://SCHEDULER:8786` on a machine that mounts the course folder"
        )
    for address, p in sorted(probes.items()):
        where = f"worker {address} on {p['host']}"
        if not p["course"]:
            problems.append(
                f"{where} does not see {root / 'nbgrader_config.py'}: mount the shared course "
                f"folder at {root} on that machine"
            )
        elif not p["submitted"]:
            problems.append(f"{where} sees {root} but not its submitted/ folder")
        if not p["kit"]:
            problems.append(
                f"{where} cannot import initlab_grading: start it with "
                f"PYTHONPATH={root / 'autograder'}"
            )
        if not p["nbgrader"]:
            problems.append(
                f"{where} has no nbgrader next to its Python: install initlab[instructor]"
            )
        if p["driver"]:
            problems.append(
                f"{where} cannot load the database driver for {db_url.split(':', 1)[0]} "
                f"({p['driver']}): write the URL as postgresql+psycopg2://... and "
                "pip install psycopg2-binary"
            )
    remote = sorted({p["host"] for p in probes.values() if p["host"] != local_host})
    if db_url.startswith("sqlite") and remote:
        problems.append(
            f"the gradebook is the sqlite file {db_url.removeprefix('sqlite:///')}, and workers "
            f"run on other machines ({', '.join(remote)}): sqlite takes one writer at a time "
            "through file locks that network filesystems do not honour reliably. Set "
            'c.CourseDirectory.db_url = "postgresql+psycopg2://USER@DBHOST/DBNAME" in '
            "nbgrader_config.py (nbgrader creates the tables on first use)"
        )
    return problems


def grade_on_dask(
    root: Path,
    assignment: str,
    students: list[str],
    options: GradingOptions,
    progress: Callable[[str], object] = print,
) -> list[GradingResult]:
    """Grade ``students``' submissions of ``assignment`` as tasks on the Dask cluster at
    ``options.scheduler`` (``tcp://host:port``), each under ``options``' time limit,
    retries, kernel limits and kernel interpreter (see :func:`grade_one`); results as
    ``grade.grade_class`` returns them."""
    try:
        from distributed import Client, as_completed
    except ImportError as err:
        raise ClusterError(
            "the Dask engine needs dask and distributed: pip install 'initlab[instructor]'"
        ) from err

    scheduler, kernel_python = options.scheduler, options.kernel_python
    if not scheduler:
        raise ClusterError("the Dask engine needs the scheduler's address, tcp://HOST:PORT")
    db_url = gradebook_url(root)
    try:
        client = Client(scheduler, timeout=30, set_as_default=False)
    except OSError as err:
        raise ClusterError(
            f"no Dask scheduler answers at {scheduler} ({err}): start one with "
            "`dask scheduler` and give its address as --scheduler tcp://HOST:8786"
        ) from err
    with client:
        probes = client.run(_make_probe(), str(root), db_url)
        problems = worker_problems(probes, root, db_url, socket.gethostname())
        if problems:
            raise ClusterError("cannot grade on this cluster:\n  " + "\n  ".join(problems))
        if kernel_python:
            found = client.run(_make_exists(), kernel_python)
            missing = sorted(w for w, ok in found.items() if not ok)
            if missing:
                raise ClusterError(
                    f"--kernel-python {kernel_python} is not an executable on workers "
                    f"{', '.join(missing)}: install the same interpreter at that path on every "
                    "worker machine, or leave out --kernel-python"
                )
        threads = sum(w["nthreads"] for w in client.scheduler_info()["workers"].values())
        if db_url.startswith("sqlite"):
            progress(
                f"warning: the gradebook is sqlite ({db_url}); its writers queue on one file "
                "lock. For more than a few concurrent graders set CourseDirectory.db_url to "
                "PostgreSQL."
            )
        progress(f"{len(students)} submissions on {len(probes)} Dask workers ({threads} threads)")
        start = time.monotonic()
        futures = {
            client.submit(
                grade_one,
                root,
                assignment,
                s,
                options.timeout,
                options.retries,
                options.memory_limit,
                options.cell_timeout,
                None,
                kernel_python,
                options.file_limit,
                options.bubblewrap,
                pure=False,
                key=f"grade-{assignment}-{s}-{time.time_ns()}",
            ): s
            for s in students
        }
        results = []
        try:
            for done, future in enumerate(as_completed(futures, loop=client.loop), start=1):
                try:
                    res = future.result()
                except Exception as err:  # a worker died more often than Dask allows, ...
                    res = GradingResult(
                        futures[future],
                        "failed",
                        time.monotonic() - start,
                        1,
                        f"infrastructure: the Dask task failed ({type(err).__name__}: {err})"[:500],
                    )
                results.append(res)
                progress(progress_line(done, len(students), res, time.monotonic() - start))
        except KeyboardInterrupt:
            client.cancel(list(futures))
            finished = {r.student for r in results}
            results += [
                GradingResult(s, "interrupted", 0.0, 0, "grading was interrupted (Ctrl-C)")
                for s in students
                if s not in finished
            ]
            raise GradingInterrupted(sorted(results, key=lambda r: r.student)) from None
    return sorted(results, key=lambda r: r.student)


# --------------------------------------------------------------------------------------
# One submission in an nbgrader process of its own (the Dask engine)


def grade_one(
    root: Path,
    assignment: str,
    student: str,
    timeout: float,
    retries: int,
    memory_limit: float | None = DEFAULT_MEMORY_LIMIT_GIB,
    cell_timeout: float | None = None,
    uid: int | None = None,
    kernel_python: str | None = None,
    file_limit: float | None = DEFAULT_FILE_LIMIT_GIB,
    bubblewrap: bool = True,
) -> GradingResult:
    """Autograde one submission in its own ``nbgrader autograde --student`` process (the
    Dask engine's way; grade_class's local engine keeps workers running instead).
    ``memory_limit`` and ``file_limit`` (GiB) and ``uid`` apply to its kernel only;
    ``cell_timeout`` overrides Execute.timeout; ``bubblewrap``: the kernel inside bubblewrap
    (initlab_grading.grading.sandbox); ``kernel_python`` is the interpreter the
    kernel runs (default: this one)."""
    ensure_tools_on_path()
    db_url = gradebook_url(root)
    cmd = [
        str(Path(sys.executable).with_name("nbgrader")),
        "autograde",
        assignment,
        f"--student={student}",
        "--force",
    ]
    if cell_timeout:
        cmd.append(f"--Execute.timeout={math.ceil(cell_timeout)}")
    memory = int(memory_limit * 2**30) if memory_limit else None
    fsize = int(file_limit * 2**30) if file_limit else None
    spec = Path(tempfile.mkdtemp(prefix="initlab-kernelspec-"))
    env = {**os.environ, "JUPYTER_PATH": _jupyter_path(spec)}
    if uid is not None:
        env["INITLAB_SANDBOX_UID"] = str(uid)
    nproc = DEFAULT_NPROC if uid is not None else None
    curve = kernel_python in (None, sys.executable) and _grader_supports_curve()
    curve = curve and _ipykernel_supports_curve()
    if curve:
        cmd.append("--KernelManager.transport_encryption=required")

    def run() -> Attempt:
        token = secrets.token_hex(8)
        _write_kernelspec(
            spec,
            memory,
            uid,
            kernel_python,
            token=token,
            fsize=fsize,
            nproc=nproc,
            curve=curve,
            bwrap=bubblewrap,
        )
        proc = subprocess.Popen(
            cmd, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        try:
            log, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_tree(proc)  # nbgrader and the kernel it started
            _kill_job(token, uid)
            _discard_autograded(root, assignment, student)
            return Attempt(timed_out=True)
        _kill_job(token, uid)
        return Attempt(log, proc.returncode == 0)

    try:
        return _grade_attempts(root, assignment, student, timeout, retries, run, db_url)
    finally:
        shutil.rmtree(spec, ignore_errors=True)
        if uid is not None:
            _reclaim(root, assignment, student)
            remove_private_folders(uid)
