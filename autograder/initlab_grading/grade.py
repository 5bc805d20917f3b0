"""Grade a whole class in parallel with the real nbgrader.

    python -m initlab_grading.grade ASSIGNMENT [--root DIR] [--workers N]
        [--timeout SECONDS] [--retries N] [--report FILE]
        [--memory-limit GIB] [--cell-timeout SECONDS] [--isolate] [--kernel-python PATH]
        [--engine local|dask --scheduler tcp://HOST:PORT]

``--workers`` grading workers (default: the number of CPU cores; initlab_grading.worker)
each load nbgrader and the course configuration once and then grade one submission of
submitted/<student>/<assignment>/ after another, in the process, with nbgrader's own
``Autograde`` (what ``nbgrader autograde ASSIGNMENT --student STUDENT --force`` runs), each
submission in a kernel of its own. A submission that runs past ``--timeout`` seconds is
stopped with its worker and kernel, and a fresh worker grades the next one. A run that
fails for a reason outside the student's control (the gradebook was locked by another
writer, a kernel did not start, the worker died) is retried up to ``--retries`` times; a
failure caused by the submission itself (for example a notebook that is not valid JSON)
is reported and not retried. One line per finished submission shows progress; a summary
and a JSON report come at the end. Grades land in the gradebook exactly as with
``nbgrader autograde``. ``--engine dask`` grades each submission as a task on a Dask
cluster instead, in an ``nbgrader autograde --student`` process of its own
(initlab_grading.distributed).

Broken and hostile submissions (README, "Hostile submissions"): each kernel
runs under a memory limit (``--memory-limit``, default 6 GiB) through the launcher
initlab_grading.sandbox, and with ``--isolate`` (as root, local engine) as an unprivileged
user that cannot read the gradebook or other students' files. Before grading, each
submission is compared with the release (not JSON, renamed, cells deleted, duplicated,
edited, turned into markdown, metadata stripped); while grading, GuardedExecute reports
tampering, a dying kernel, time-outs and huge output. Every finding is a line in the
report (``notes``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nbformat

from initlab_grading.course import REPO_ROOT, ensure_tools_on_path, notebook_name
from initlab_grading.preprocessors import REPORT_TAG

DEFAULT_MEMORY_LIMIT_GIB = 6.0
"""Per-kernel limit on private writable memory (RLIMIT_DATA). Importing torch (CUDA build)
with numpy, matplotlib and torchvision uses 0.9 GB of it (VmData, measured); the rest is
room for the notebooks' data and networks."""
SANDBOX_UID_BASE = 61000
"""Kernels run with --isolate get user ids from here on, one per submission of a run."""
PRIVATE_PATHS = ("gradebook.db", "source", "solutions", "submitted", "autograded", "feedback")
"""What --isolate makes readable by the course's owner only."""

WORKER_STOPPED = "grading worker stopped"
"""How a report names a grading worker that did not start or died (retried: a fresh one
grades the submission again)."""

# Log fragments of failures that another attempt can fix: they come from the grading
# machinery (the shared gradebook, kernel start-up), never from what a student wrote.
INFRASTRUCTURE_FAILURES = (
    "database is locked",
    "Kernel died before replying to kernel_info",
    "Timeout waiting for kernel_info reply",
    "Address already in use",
    "No space left on device",
    WORKER_STOPPED,
    # PostgreSQL gradebook (CourseDirectory.db_url): two graders adding the same student or
    # submission at once (the second insert is refused; its retry finds the row), lock
    # ordering, a server restarting.
    "duplicate key value violates unique constraint",
    "deadlock detected",
    "could not serialize access",
    "server closed the connection unexpectedly",
)
# Log fragments meaning nbgrader ran with the wrong configuration: never a student's fault.
CONFIG_FAILURES = ("Exception while loading config file",)


@dataclass
class GradingResult:
    student: str
    status: str  # graded | timed out | failed
    seconds: float
    attempts: int
    detail: str = ""
    notes: list[str] = field(default_factory=list)
    """What happened to this submission beyond its scores, one report line each."""


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


def _kill_pids(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _kill_strays(folder: Path) -> None:
    """Kill every process working in ``folder`` (a submission's autograded/ folder, where
    its kernel runs): the kernel of a grading worker that died is no longer below it."""
    folder = folder.resolve()
    for cwd in Path("/proc").glob("[0-9]*/cwd"):
        try:
            where = Path(os.readlink(cwd))
        except OSError:
            continue
        if where == folder or folder in where.parents:
            _kill_pids([int(cwd.parent.name)])


def _kill_tree(proc: subprocess.Popen) -> None:
    _kill_pids([*descendants(proc.pid), proc.pid])
    proc.communicate()


def inspect_submission(root: Path, assignment: str, student: str) -> tuple[str, list[str]]:
    """Compare a submission with the release before grading it. Returns (why it cannot be
    graded, or ""; report lines about what nbgrader will repair)."""
    folder = root / "submitted" / student / assignment
    name = notebook_name(assignment)
    path = folder / name
    if not path.is_file():
        others = sorted(p.name for p in folder.glob("*.ipynb"))
        found = f" (it has {', '.join(others)})" if others else " (it has no notebook)"
        return (
            f"not graded: the submission has no {name}{found}; nbgrader grades only that "
            f"name, so the gradebook has no submission and exports show 0. Rename the "
            f"notebook to {name} and grade this student again.",
            [],
        )
    try:
        json.loads(path.read_text(encoding="utf-8"))
        nb = nbformat.read(path, as_version=4)
    except (ValueError, UnicodeDecodeError) as err:
        return (
            f"not graded: {name} is not a valid notebook ({str(err)[:120]}); the gradebook "
            "has no submission and exports show 0. Nothing else was affected.",
            [],
        )
    except Exception as err:  # nbformat's validation errors have no common base
        return f"not graded: {name} cannot be read as a notebook ({str(err)[:120]})", []
    release_path = root / "release" / assignment / name
    if not release_path.is_file():
        return "", []
    release = nbformat.read(release_path, as_version=4)
    notes = []
    unmarked = sum(1 for c in nb.cells if "nbgrader" not in c.metadata)
    if unmarked == len(nb.cells) and nb.cells:
        notes.append(
            "nbgrader metadata stripped from every cell: answers cannot be matched to their "
            "cells; the test cells were restored from the release and ran before the answers"
        )
        return "", notes
    for cell in release.cells:
        meta = cell.metadata.get("nbgrader", {})
        gid = meta.get("grade_id")
        if not gid or not (meta.get("grade") or meta.get("solution")):
            continue
        test = meta.get("grade") and not meta.get("solution")
        copies = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == gid]
        if not copies:
            notes.append(f"{gid} was deleted (or its metadata stripped): restored and graded")
            continue
        if len(copies) > 1:
            notes.append(
                f"{gid} appears {len(copies)} times: the last is graded, the others ran as "
                "ordinary cells"
            )
        if copies[-1].cell_type != cell.cell_type:
            notes.append(
                f"{gid} was turned into {copies[-1].cell_type}: graded as the release's "
                f"{cell.cell_type} cell"
            )
        elif test and copies[-1].source.strip() != cell.source.strip():
            notes.append(f"test cell {gid} was edited: graded with the instructor's version")
    return "", notes


def _kernelspec(memory: int | None, uid: int | None, python: str | None = None) -> Path:
    """A new folder for JUPYTER_PATH with the grading kernelspec (``_write_kernelspec``)."""
    folder = Path(tempfile.mkdtemp(prefix="initlab-kernelspec-"))
    _write_kernelspec(folder, memory, uid, python)
    return folder


def _write_kernelspec(
    folder: Path, memory: int | None, uid: int | None, python: str | None = None
) -> None:
    """Write into ``folder`` (a JUPYTER_PATH entry) a python3 kernelspec that starts the
    kernel (with ``python``, default this interpreter) through initlab_grading.sandbox.
    Jupyter reads kernel.json each time it starts a kernel, so rewriting it changes the
    next kernel only."""
    spec = folder / "kernels" / "python3"
    spec.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "initlab_grading.sandbox"]
    argv += ["--memory", str(memory)] if memory else []
    argv += ["--uid", str(uid)] if uid is not None else []
    argv += ["--", python or sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    spec.joinpath("kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": "Python 3 (grading)", "language": "python"})
    )


def _jupyter_path(spec: Path) -> str:
    """JUPYTER_PATH with ``spec`` first, so that its python3 kernelspec is the one used."""
    return os.pathsep.join(
        [str(spec), *filter(None, os.environ.get("JUPYTER_PATH", "").split(os.pathsep))]
    )


def _report_lines(log: str) -> list[str]:
    return [ln.split(REPORT_TAG, 1)[1].strip() for ln in log.splitlines() if REPORT_TAG in ln]


def _grade_attempts(
    root: Path,
    assignment: str,
    student: str,
    timeout: float,
    retries: int,
    uid: int | None,
    run: Callable[[], tuple[str, bool] | None],
) -> GradingResult:
    """What grading one submission means, whichever process runs nbgrader: inspect the
    submission, then call ``run`` (one nbgrader run: its log and whether it succeeded, or
    None when it ran past ``timeout``) until it succeeds, fails for a reason of the
    submission's, or has failed ``retries + 1`` times for a reason of the machinery's."""
    start = time.monotonic()
    fatal, notes = inspect_submission(root, assignment, student)
    if fatal:
        return GradingResult(student, "failed", time.monotonic() - start, 0, fatal, [fatal])
    attempts = 0
    try:
        while True:
            attempts += 1
            outcome = run()
            if outcome is None:
                detail = f"stopped after {timeout:g} s"
                return GradingResult(
                    student,
                    "timed out",
                    time.monotonic() - start,
                    attempts,
                    detail,
                    [*notes, f"{detail} (whole-submission limit): not graded"],
                )
            log, ok = outcome
            notes_run = [*notes, *_report_lines(log)]
            config = next((f for f in CONFIG_FAILURES if f in log), "")
            failed = not ok or "There was an error processing" in log or config
            if not failed:
                return GradingResult(
                    student, "graded", time.monotonic() - start, attempts, "", notes_run
                )
            cause = _infrastructure(log)
            if cause and attempts <= retries:
                time.sleep(min(2.0 * attempts, 10.0))
                continue
            lines = [ln for ln in log.splitlines() if "ERROR" in ln or "Error" in ln]
            detail = (
                (f"infrastructure: {cause}; " if cause else "")
                + (f"configuration: {config}; " if config else "")
                + " | ".join(lines[-3:])
            )
            return GradingResult(
                student, "failed", time.monotonic() - start, attempts, detail[:500], notes_run
            )
    finally:
        if uid is not None:
            _reclaim(root / "autograded" / student)


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
) -> GradingResult:
    """Autograde one submission in its own ``nbgrader autograde --student`` process (the
    Dask engine's way; grade_class's local engine keeps workers running instead).
    ``memory_limit`` (GiB) and ``uid`` apply to its kernel only; ``cell_timeout``
    overrides Execute.timeout; ``kernel_python`` is the interpreter the kernel runs
    (default: this one)."""
    ensure_tools_on_path()
    cmd = [
        str(Path(sys.executable).with_name("nbgrader")),
        "autograde",
        assignment,
        f"--student={student}",
        "--force",
    ]
    if cell_timeout:
        cmd.append(f"--Execute.timeout={int(cell_timeout)}")
    memory = int(memory_limit * 2**30) if memory_limit else None
    spec = _kernelspec(memory, uid, kernel_python)
    env = {**os.environ, "JUPYTER_PATH": _jupyter_path(spec)}

    def run() -> tuple[str, bool] | None:
        proc = subprocess.Popen(
            cmd, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        try:
            log, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_tree(proc)  # nbgrader and the kernel it started
            return None
        return log, proc.returncode == 0

    try:
        return _grade_attempts(root, assignment, student, timeout, retries, uid, run)
    finally:
        shutil.rmtree(spec, ignore_errors=True)


class WorkerFailure(RuntimeError):
    """A grading worker did not start or stopped; the message says how (WORKER_STOPPED)."""


WORKER_START_TIMEOUT = 300.0
"""Seconds a grading worker may take to load nbgrader and the course configuration."""


class GradingWorker:
    """One long-lived ``initlab_grading.worker`` process (nbgrader loaded once, many
    submissions graded in turn) and the kernelspec folder its kernels start from."""

    def __init__(
        self,
        root: Path,
        assignment: str,
        memory: int | None,
        cell_timeout: float | None,
        kernel_python: str | None,
    ) -> None:
        self.memory, self.kernel_python = memory, kernel_python
        self.spec = Path(tempfile.mkdtemp(prefix="initlab-kernelspec-"))
        _write_kernelspec(self.spec, memory, None, kernel_python)
        self.stderr = tempfile.TemporaryFile()
        package_parent = str(Path(__file__).resolve().parents[1])
        env = {
            **os.environ,
            "JUPYTER_PATH": _jupyter_path(self.spec),
            "PYTHONPATH": os.pathsep.join(
                [package_parent, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
            ),
        }
        cmd = [sys.executable, "-m", "initlab_grading.worker", assignment]
        cmd += ["--cell-timeout", str(cell_timeout)] if cell_timeout else []
        self.proc = subprocess.Popen(
            cmd,
            cwd=root,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
            encoding="utf-8",
            bufsize=1,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        try:
            ready = self._answer(WORKER_START_TIMEOUT)
        except TimeoutError:
            self.stop()
            raise WorkerFailure(
                f"{WORKER_STOPPED}: it did not start within {WORKER_START_TIMEOUT:g} s"
            ) from None
        self.config = next((f for f in CONFIG_FAILURES if f in ready.get("log", "")), "")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def _answer(self, timeout: float) -> dict:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError from None
        if line is None:
            raise WorkerFailure(self._why_stopped())
        return json.loads(line)

    def _why_stopped(self) -> str:
        try:
            code = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            code = None
        self.stderr.seek(0)
        tail = self.stderr.read()[-4000:].decode(errors="replace").strip().splitlines()
        last = f" ({tail[-1][:200]})" if tail else ""
        return f"{WORKER_STOPPED}: it exited with status {code}{last}"

    def grade(self, student: str, uid: int | None, timeout: float) -> tuple[str, bool] | None:
        """Autograde one submission: (nbgrader's log, whether it succeeded), or None when
        it ran past ``timeout`` seconds (then this worker must be stopped). Raises
        WorkerFailure when the worker dies."""
        _write_kernelspec(self.spec, self.memory, uid, self.kernel_python)
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps({"student": student}) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise WorkerFailure(self._why_stopped()) from None
        try:
            answer = self._answer(timeout)
        except TimeoutError:
            return None
        log = answer.get("log", "") + answer.get("error", "")
        if self.config:
            log += f"\n[ERROR] {self.config} (when the grading worker started)"
        return log, bool(answer.get("success"))

    def stop(self) -> None:
        """End the worker: politely when it is idle, else it and every process below it
        (the kernel of the submission it was grading) are killed."""
        if self.proc.poll() is None and self.proc.stdin is not None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=5 if self.lines.empty() else 0.01)
            except (OSError, subprocess.TimeoutExpired):
                pass
        if self.proc.poll() is None:
            _kill_pids([*descendants(self.proc.pid), self.proc.pid])
            self.proc.wait()
        self.stderr.close()
        shutil.rmtree(self.spec, ignore_errors=True)


class WorkerSlot:
    """One of grade_class's parallel places: a grading worker, started when first needed
    and replaced after a submission that ran past its time limit or stopped it."""

    def __init__(
        self,
        root: Path,
        assignment: str,
        memory_limit: float | None,
        cell_timeout: float | None,
        kernel_python: str | None,
    ) -> None:
        self.root, self.assignment = root, assignment
        self.memory = int(memory_limit * 2**30) if memory_limit else None
        self.cell_timeout, self.kernel_python = cell_timeout, kernel_python
        self.worker: GradingWorker | None = None

    def grade(self, student: str, timeout: float, retries: int, uid: int | None) -> GradingResult:
        def run() -> tuple[str, bool] | None:
            try:
                if self.worker is None:
                    self.worker = GradingWorker(
                        self.root,
                        self.assignment,
                        self.memory,
                        self.cell_timeout,
                        self.kernel_python,
                    )
                outcome = self.worker.grade(student, uid, timeout)
            except WorkerFailure as err:
                self.close()
                _kill_strays(self.root / "autograded" / student)
                return f"[ERROR] {err}", False
            if outcome is None:
                self.close()  # the worker and the kernel still running the submission
                _kill_strays(self.root / "autograded" / student)
            return outcome

        return _grade_attempts(self.root, self.assignment, student, timeout, retries, uid, run)

    def close(self) -> None:
        if self.worker is not None:
            self.worker.stop()
            self.worker = None


def _reclaim(folder: Path) -> None:
    """Give a graded student's folder back to the course's owner, private again."""
    owner = folder.parent.stat()
    for path in [folder, *folder.rglob("*")]:
        try:
            os.lchown(path, owner.st_uid, owner.st_gid)
        except OSError:
            pass
    if folder.exists():
        folder.chmod(0o700)


def check_isolation(root: Path, python: str | None = None) -> str:
    """Start ``python`` the way an isolated kernel starts (initlab_grading.sandbox, as the
    first sandbox user) and import what a kernel needs. Returns "" when that works, else
    what is wrong and how to fix it."""
    python = python or sys.executable
    work = Path(tempfile.mkdtemp(prefix="initlab-isolation-check-"))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [
                str(root / "autograder"),
                *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep)),
            ]
        ),
    }
    cmd = [sys.executable, "-m", "initlab_grading.sandbox", "--uid", str(SANDBOX_UID_BASE)]
    cmd += ["--", python, "-c", "import ipykernel, numpy, initlab, initlab_grading"]
    try:
        proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=300)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if proc.returncode == 0:
        return ""
    why = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
    return (
        f"--isolate: a kernel running as user id {SANDBOX_UID_BASE} cannot start ({why}). "
        f"Everything a kernel loads must be readable by other users: the interpreter "
        f"{python} with its standard library and site-packages, and {root / 'autograder'}. "
        "An interpreter under /root (pyenv, conda) is not. Install the grading environment "
        "in a folder others can read, or name such an interpreter with --kernel-python."
    )


def make_private(root: Path) -> list[str]:
    """chmod go-rwx on the course's private paths (PRIVATE_PATHS and gradebook journals);
    returns the paths changed."""
    changed = []
    for name in (*PRIVATE_PATHS, "gradebook.db-journal", "gradebook.db-wal"):
        path = root / name
        if path.exists():
            mode = path.stat().st_mode & 0o777
            if mode & 0o077:
                path.chmod(mode & 0o700)
                changed.append(name)
    (root / "autograded").mkdir(exist_ok=True, mode=0o700)
    for folder in (root / "autograded").iterdir():
        if folder.is_dir():
            folder.chmod(0o700)
    return changed


def grade_class(
    root: Path,
    assignment: str,
    workers: int | None = None,
    timeout: float = 900.0,
    retries: int = 2,
    progress=print,
    memory_limit: float | None = DEFAULT_MEMORY_LIMIT_GIB,
    cell_timeout: float | None = None,
    isolate: bool = False,
    kernel_python: str | None = None,
    engine: str = "local",
    scheduler: str | None = None,
) -> list[GradingResult]:
    """Grade every submission of ``assignment`` with ``workers`` parallel processes, or
    with ``engine="dask"`` as tasks on the Dask cluster at ``scheduler``.

    ``memory_limit``: GiB of private writable memory per kernel (None: unlimited).
    ``cell_timeout``: seconds per cell (default: Execute.timeout of nbgrader_config.py).
    ``isolate``: run each kernel as its own unprivileged user (needs root; local engine
    only) after making the course's private paths readable by their owner only.
    ``kernel_python``: the interpreter kernels run (default: this one)."""
    students = submissions(root, assignment)
    if not students:
        raise SystemExit(
            f"No submissions of {assignment!r} under {root / 'submitted'}: run "
            f"`nbgrader collect {assignment}` first."
        )
    if engine not in ("local", "dask"):
        raise ValueError(f"engine must be 'local' or 'dask', not {engine!r}")
    if isolate and engine != "local":
        raise SystemExit(
            "--isolate works with the local engine only: it needs root on the machine that "
            "runs the kernels. Leave out --isolate or grade with --engine local."
        )
    if engine == "dask":
        from initlab_grading.distributed import grade_on_dask

        return grade_on_dask(
            root,
            assignment,
            students,
            scheduler,
            timeout,
            retries,
            progress,
            memory_limit=memory_limit,
            cell_timeout=cell_timeout,
        )
    if isolate:
        if os.geteuid() != 0:
            raise SystemExit(
                "--isolate runs each kernel as an unprivileged user, which needs root; "
                "run grading as root or leave out --isolate."
            )
        problem = check_isolation(root, kernel_python)
        if problem:
            raise SystemExit(problem)
        make_private(root)
    uids = itertools.count(SANDBOX_UID_BASE)
    lock = threading.Lock()
    workers = min(workers or os.cpu_count() or 1, len(students))
    slots: queue.Queue[WorkerSlot] = queue.Queue()
    for _ in range(workers):
        slots.put(WorkerSlot(root, assignment, memory_limit, cell_timeout, kernel_python))

    def one(student: str) -> GradingResult:
        with lock:
            uid = next(uids) if isolate else None
        slot = slots.get()  # one is free: the pool runs at most `workers` at once
        try:
            return slot.grade(student, timeout, retries, uid)
        finally:
            slots.put(slot)

    results: list[GradingResult] = []
    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            jobs = [pool.submit(one, s) for s in students]
            for done, job in enumerate(as_completed(jobs), start=1):
                res = job.result()
                results.append(res)
                progress(progress_line(done, len(students), res))
    finally:
        while not slots.empty():
            slots.get().close()
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
    noted = [r for r in results if r.notes]
    if noted:
        lines.append("What happened beyond the scores:")
        for r in noted:
            lines += [f"  {r.student}: {note}" for note in r.notes if note != r.detail]
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
        "--memory-limit",
        type=float,
        default=DEFAULT_MEMORY_LIMIT_GIB,
        help="GiB of private writable memory per kernel, 0 for none (default %(default)s)",
    )
    parser.add_argument(
        "--cell-timeout",
        type=float,
        default=None,
        help="seconds per cell (default: Execute.timeout in nbgrader_config.py)",
    )
    parser.add_argument(
        "--isolate",
        action="store_true",
        help="run each kernel as its own unprivileged user (needs root; local engine); see README",
    )
    parser.add_argument(
        "--kernel-python",
        default=None,
        help="the Python that runs kernels (default: this one); with --isolate it must be "
        "readable by other users",
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
            memory_limit=args.memory_limit or None,
            cell_timeout=args.cell_timeout,
            isolate=args.isolate,
            kernel_python=args.kernel_python,
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
