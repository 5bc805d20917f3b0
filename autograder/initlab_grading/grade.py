"""Grade a whole class in parallel with the real nbgrader.

    python -m initlab_grading.grade ASSIGNMENT [--root DIR] [--workers N]
        [--timeout SECONDS] [--retries N] [--report FILE]
        [--memory-limit GIB] [--file-limit GIB] [--cell-timeout SECONDS]
        [--isolate] [--kernel-python PATH]
        [--engine local|dask --scheduler tcp://HOST:PORT]

``--workers`` grading workers (default: the number of CPU cores; initlab_grading.worker)
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
``nbgrader autograde --student`` process of its own (initlab_grading.distributed).

Broken and hostile submissions (docs/security.md): each kernel runs through
the launcher initlab_grading.sandbox (a reduced environment, no import from its working
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
import fcntl
import itertools
import json
import math
import os
import pwd
import queue
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from fnmatch import fnmatch
from pathlib import Path

import nbformat

from initlab_grading.course import REPO_ROOT, ensure_tools_on_path, gradebook_url, notebook_name
from initlab_grading.kernels import DEFAULT_FILE_LIMIT_GIB, DEFAULT_MEMORY_LIMIT_GIB, launcher
from initlab_grading.preprocessors import KILLED_NOTE, REPORT_TAG
from initlab_grading.sandbox import (
    CODE_FILES,
    job_processes,
    kill_pids,
    kill_user,
    remove_private_folders,
    secure_folder,
)

DEFAULT_NPROC = max(512, 8 * (os.cpu_count() or 1))
"""Processes and threads per sandbox user id with --isolate (RLIMIT_NPROC; torch starts a
thread per core)."""
SANDBOX_UID_BASE = 61000
SANDBOX_UID_COUNT = 20000
"""Kernels run with --isolate get user ids from SANDBOX_UID_BASE on, a fresh one per
submission, never one of an account in the password database, and never one that another
grading run on this machine holds (a lock file per id)."""
PRIVATE_PATHS = (
    "gradebook.db",
    "nbgrader_config.py",
    "source",
    "solutions",
    "submitted",
    "autograded",
    "feedback",
)
"""What --isolate makes readable by the course's owner only."""

WORKER_STOPPED = "grading worker stopped"
"""How a report names a grading worker that did not start or died (retried: a fresh one
grades the submission again)."""
WORKER_DEATH_RETRIES = 1
"""A worker that dies while grading a submission is replaced and the submission graded
again this many times at most (whatever --retries says): without --isolate the notebook
can kill its worker, and each attempt would cost a fresh worker."""

# Log fragments of failures that another attempt can fix: they come from the grading
# machinery (the shared gradebook, kernel start-up), never from what a student wrote.
INFRASTRUCTURE_FAILURES = (
    "database is locked",
    "Kernel died before replying to kernel_info",
    "Timeout waiting for kernel_info reply",
    # jupyter_client's wait_for_ready: the kernel started but did not answer within the
    # start-up timeout (60 s), seen once in a course run on a loaded 2-core machine
    # (a shared VM whose speed varies); the kernel never ran the student's code
    "Kernel didn't respond in",
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

_KERNEL_CHECK = (
    "import ipykernel, numpy, torch, initlab, initlab_grading.guard, zmq\n"
    "from ipykernel.kernelapp import IPKernelApp\n"
    "curve = 'curve_secretkey' in IPKernelApp.class_trait_names() and zmq.has('curve')\n"
    "print('INITLAB-CURVE' if curve else 'INITLAB-NO-CURVE')\n"
)


@dataclass
class GradingResult:
    student: str
    status: str  # graded | timed out | failed | interrupted
    seconds: float
    attempts: int
    detail: str = ""
    notes: list[str] = field(default_factory=list)
    """What happened to this submission beyond its scores, one report line each."""
    gradebook: str = ""
    """For a submission that was not graded: what the gradebook holds for this student."""


@dataclass
class Attempt:
    """One nbgrader run of one submission."""

    log: str = ""
    ok: bool = False
    timed_out: bool = False
    worker_died: bool = False
    """The grading process died (or broke its protocol) while grading this submission."""


class GradingInterrupted(KeyboardInterrupt):
    """Ctrl-C while grading; ``results`` has every submission, those not graded as
    "interrupted"."""

    def __init__(self, results: list[GradingResult]) -> None:
        super().__init__("grading interrupted")
        self.results = results


def printable(text: str) -> str:
    """``text`` with what is not valid UTF-8 written as backslash escapes. Names read from
    a submission (folders, files a student or a kernel made) keep undecodable bytes as
    lone surrogates, which a strict UTF-8 stream or a database refuses."""
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate that is no escaped byte
        raw = text.encode("utf-8", "backslashreplace")
    return raw.decode("utf-8", "backslashreplace")


def print_now(line: str) -> None:
    """Progress goes to stdout at once, also into a pipe; names that are not valid UTF-8
    are escaped, so that no student's file name can stop the run."""
    print(printable(line), flush=True)


def submissions(root: Path, assignment: str) -> list[str]:
    """Students with a submission of this assignment, sorted."""
    base = root / "submitted"
    return sorted(p.parent.name for p in base.glob(f"*/{assignment}") if p.is_dir())


def _infrastructure(log: str) -> str:
    return next((frag for frag in INFRASTRUCTURE_FAILURES if frag in log), "")


# --------------------------------------------------------------------------------------
# Processes


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
    kill_pids([*descendants(proc.pid), proc.pid])
    proc.communicate()


def _kill_job(token: str, uid: int | None) -> None:
    """End what is left of one submission's kernel: the processes carrying its job token
    (the kernel and what it started, also after its grading worker died) and, with
    --isolate, every process of its user id. Nobody else's processes are touched."""
    for _ in range(3):
        pids = job_processes(token)
        if not pids:
            break
        kill_pids(pids)
        time.sleep(0.05)
    if uid is not None:
        kill_user(uid)


def _discard_autograded(root: Path, assignment: str, student: str) -> None:
    """Remove a submission's autograded folder after a run that did not finish (as
    nbgrader does when it fails): no half-graded notebook is left for feedback."""
    folder = root / "autograded" / student / assignment
    if folder.is_symlink():
        folder.unlink()
    elif folder.exists():
        shutil.rmtree(folder, ignore_errors=True)  # never follows symbolic links


# --------------------------------------------------------------------------------------
# Before and after grading one submission


def inspect_submission(root: Path, assignment: str, student: str) -> tuple[str, list[str]]:
    """Compare a submission with the release before grading it. Returns (why it cannot be
    graded, or ""; report lines about what nbgrader will repair or leave out)."""
    folder = root / "submitted" / student / assignment
    name = notebook_name(assignment)
    path = folder / name
    links, code, other = [], [], []
    for base, dirs, files in os.walk(folder):
        for entry in dirs + files:
            full = Path(base, entry)
            rel = printable(str(full.relative_to(folder)))
            if full.is_symlink():
                links.append(rel)
            elif full.is_file() and rel not in (name, "timestamp.txt"):
                (code if any(fnmatch(entry, p) for p in CODE_FILES) else other).append(rel)
    if links:
        return (
            f"not graded: the submission contains symbolic links ({', '.join(sorted(links))}); "
            "nbgrader would copy what they point to into the kernel's folder. Replace them "
            "by the files themselves (or remove them) and grade this student again.",
            [],
        )
    notes = []
    if code:
        notes.append(
            f"files not copied for grading: {', '.join(sorted(code)[:8])}"
            + (f" and {len(code) - 8} more" if len(code) > 8 else "")
            + " (code next to the notebook is never copied or imported; "
            "nbgrader_config.py's CourseDirectory.ignore)"
        )
    if other:
        notes.append(
            f"other files copied next to the notebook: {', '.join(sorted(other)[:8])}"
            + (f" and {len(other) - 8} more" if len(other) > 8 else "")
        )
    if not path.is_file():
        others = sorted(printable(p.name) for p in folder.glob("*.ipynb"))
        found = f" (it has {', '.join(others)})" if others else " (it has no notebook)"
        return (
            f"not graded: the submission has no {name}{found}; nbgrader grades only that "
            f"name. Rename the notebook to {name} and grade this student again.",
            notes,
        )
    try:
        json.loads(path.read_text(encoding="utf-8"))
        nb = nbformat.read(path, as_version=4)
    except (ValueError, UnicodeDecodeError) as err:
        return (
            f"not graded: {name} is not a valid notebook ({str(err)[:120]}). Nothing else "
            "was affected.",
            notes,
        )
    except Exception as err:  # nbformat's validation errors have no common base
        return f"not graded: {name} cannot be read as a notebook ({str(err)[:120]})", notes
    release_path = root / "release" / assignment / name
    if not release_path.is_file():
        return "", notes
    release = nbformat.read(release_path, as_version=4)
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


Record = tuple | str | None
"""What the gradebook holds for one student's submission: None (nothing), a string (it
could not be read: why) or (timestamp, grades, score, max score)."""


def gradebook_record(db_url: str, assignment: str, student: str) -> Record:
    from nbgrader.api import Gradebook, MissingEntry

    try:
        with Gradebook(db_url) as gb:
            try:
                sub = gb.find_submission(assignment, student)
            except MissingEntry:
                return None
            grades = tuple(
                sorted(
                    (nb.name, g.name, g.auto_score, g.manual_score, g.needs_manual_grade)
                    for nb in sub.notebooks
                    for g in nb.grades
                )
            )
            return (str(sub.timestamp), grades, float(sub.score), float(sub.max_score))
    except Exception as err:  # a locked or unreachable gradebook: say so, grade on
        return f"could not be read ({type(err).__name__}: {str(err)[:200]})"


def describe_gradebook(before: Record, after: Record, assignment: str, student: str) -> str:
    """What the gradebook holds for a submission that was not graded, in words."""
    if isinstance(after, str):
        return f"The gradebook {after}."
    if after is None:
        return f"The gradebook has no submission of {assignment} by {student}: exports show 0."
    timestamp, grades, score, max_score = after
    points = f"{score:g} of {max_score:g} points"
    scored = any(g[2] is not None or g[3] is not None for g in grades)
    if before == after:
        if not scored:
            return (
                "The gradebook is unchanged: it has a submission of this student without "
                "scores (exports show 0)."
            )
        return (
            f"The gradebook is unchanged: it holds an earlier grading of this student ({points})."
        )
    if isinstance(before, tuple) and before[1:] == after[1:]:
        return (
            f"The gradebook still holds an earlier grading of this student ({points}), now "
            f"under this submission's timestamp ({timestamp}); grade this student again."
        )
    if not scored:
        return (
            "The gradebook now has a submission of this student without scores "
            "(exports show 0); grade this student again."
        )
    return (
        f"The gradebook was written before grading stopped: it holds {points} from this "
        "attempt, which may be incomplete; grade this student again."
    )


def _report_lines(log: str) -> list[str]:
    return [ln.split(REPORT_TAG, 1)[1].strip() for ln in log.splitlines() if REPORT_TAG in ln]


def _grade_attempts(
    root: Path,
    assignment: str,
    student: str,
    timeout: float,
    retries: int,
    run: Callable[[], Attempt],
    db_url: str,
    stop: threading.Event | None = None,
) -> GradingResult:
    """What grading one submission means, whichever process runs nbgrader: inspect the
    submission, then call ``run`` (one nbgrader run) until it succeeds, fails for a reason
    of the submission's, or has failed ``retries + 1`` times for a reason of the
    machinery's (a worker death: WORKER_DEATH_RETRIES + 1 times at most). A result that is
    not "graded" says what the gradebook holds for the student."""
    start = time.monotonic()
    fatal, notes = inspect_submission(root, assignment, student)
    before = gradebook_record(db_url, assignment, student)

    def not_graded(status: str, attempts: int, detail: str, lines: list[str]) -> GradingResult:
        held = describe_gradebook(before, gradebook_record(db_url, assignment, student),
                                  assignment, student)  # fmt: skip
        return GradingResult(
            student, status, time.monotonic() - start, attempts, detail, [*lines, held], held
        )

    if fatal:
        return not_graded("failed", 0, fatal, [fatal, *notes])
    attempts = deaths = 0
    while True:
        if attempts and stop is not None and stop.is_set():
            return not_graded("interrupted", attempts, "grading was interrupted (Ctrl-C)", notes)
        attempts += 1
        outcome = run()
        if stop is not None and stop.is_set():
            return not_graded("interrupted", attempts, "grading was interrupted (Ctrl-C)", notes)
        if outcome.timed_out:
            detail = f"stopped after {timeout:g} s"
            return not_graded(
                "timed out", attempts, detail, [*notes, f"{detail} (whole-submission limit)"]
            )
        log = outcome.log
        notes_run = [*notes, *_report_lines(log)]
        config = next((f for f in CONFIG_FAILURES if f in log), "")
        failed = not outcome.ok or "There was an error processing" in log or config
        if not failed:
            killed = any(KILLED_NOTE in n for n in notes_run)
            if killed and attempts <= retries:
                time.sleep(min(2.0 * attempts, 10.0))
                continue  # an innocent kernel the out-of-memory killer chose, perhaps
            if killed and attempts > 1:
                notes_run.append(f"the kernel was {KILLED_NOTE} in each of {attempts} attempts")
            return GradingResult(
                student, "graded", time.monotonic() - start, attempts, "", notes_run
            )
        cause = _infrastructure(log)
        deaths += outcome.worker_died
        again = attempts <= retries and (not outcome.worker_died or deaths <= WORKER_DEATH_RETRIES)
        if cause and again:
            time.sleep(min(2.0 * attempts, 10.0))
            continue
        lines = [ln for ln in log.splitlines() if "ERROR" in ln or "Error" in ln]
        detail = (
            (f"infrastructure: {cause}; " if cause else "")
            + (f"configuration: {config}; " if config else "")
            + " | ".join(lines[-3:])
        )[:500]
        if deaths > 1:
            notes_run.append(
                f"the grading worker died each time this notebook was graded ({deaths} times): "
                "it may stop its own grading process; grade it with --isolate, where it cannot"
            )
        return not_graded("failed", attempts, detail, notes_run)


def _reclaim(root: Path, assignment: str, student: str) -> list[str]:
    """Give a graded student's folder back to the course's owner, private again, with
    nothing in it that root's later reads or writes would follow (links, special files)."""
    folder = root / "autograded" / student
    owner = folder.parent.stat()
    try:
        secure_folder(str(folder / assignment), owner.st_uid, owner.st_gid)
        if folder.is_dir() and not folder.is_symlink():
            os.lchown(folder, owner.st_uid, owner.st_gid)
            folder.chmod(0o700)
    except OSError as err:
        return [f"its autograded folder could not be given back to the course's owner: {err}"]
    return []


# --------------------------------------------------------------------------------------
# Kernels


def _write_kernelspec(
    folder: Path,
    memory: int | None,
    uid: int | None,
    python: str | None = None,
    *,
    token: str = "",
    fsize: int | None = None,
    nproc: int | None = None,
    curve: bool = False,
) -> None:
    """Write into ``folder`` (a JUPYTER_PATH entry) a python3 kernelspec that starts the
    kernel (with ``python``, default this interpreter) through initlab_grading.sandbox.
    Jupyter reads kernel.json each time it starts a kernel, so rewriting it changes the
    next kernel only. ``curve``: declare CurveZMQ support (encrypted channels)."""
    spec = folder / "kernels" / "python3"
    spec.mkdir(parents=True, exist_ok=True)
    argv = launcher(memory=memory, fsize=fsize, uid=uid, nproc=nproc, job=token)
    argv += [python or sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    argv += ["--InteractiveShellApp.ignore_cwd=True"]
    spec_json = {"argv": argv, "display_name": "Python 3 (grading)", "language": "python"}
    if curve:
        spec_json["metadata"] = {"supported_encryption": ["curve"]}
    spec.joinpath("kernel.json").write_text(json.dumps(spec_json))


def _jupyter_path(spec: Path) -> str:
    """JUPYTER_PATH with ``spec`` first, so that its python3 kernelspec is the one used."""
    return os.pathsep.join(
        [str(spec), *filter(None, os.environ.get("JUPYTER_PATH", "").split(os.pathsep))]
    )


def _grader_supports_curve() -> bool:
    try:
        import zmq
        from jupyter_client.manager import KernelManager
    except ImportError:
        return False
    return "transport_encryption" in KernelManager.class_trait_names() and zmq.has("curve")


def _ipykernel_supports_curve() -> bool:
    """Whether this interpreter's ipykernel reads CurveZMQ keys from its connection file."""
    try:
        from ipykernel.kernelapp import IPKernelApp
    except ImportError:
        return False
    return "curve_secretkey" in IPKernelApp.class_trait_names()


def check_kernel(
    root: Path,
    python: str | None = None,
    memory: int | None = None,
    fsize: int | None = None,
    uid: int | None = None,
    nproc: int | None = None,
) -> tuple[str, bool]:
    """Start ``python`` the way a grading kernel starts (initlab_grading.sandbox with the
    same limits, as ``uid`` with --isolate) and import what kernels need: ipykernel,
    numpy, torch, initlab, initlab_grading. Returns ("" or what is wrong and how to fix
    it, whether the kernel's channels can be encrypted)."""
    python = python or sys.executable

    def attempt(memory: int | None) -> subprocess.CompletedProcess:
        work = Path(tempfile.mkdtemp(prefix="initlab-kernel-check-"))
        work.chmod(0o755)
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(
                [
                    str(root / "autograder"),
                    *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep)),
                ]
            ),
        }
        cmd = [sys.executable, "-P", "-m", "initlab_grading.sandbox"]
        cmd += ["--memory", str(memory)] if memory else []
        cmd += ["--fsize", str(fsize)] if fsize else []
        cmd += ["--uid", str(uid)] if uid is not None else []
        cmd += ["--nproc", str(nproc)] if nproc and uid is not None else []
        cmd += ["--", python, "-c", _KERNEL_CHECK]
        try:
            return subprocess.run(
                cmd, cwd=work, env=env, capture_output=True, text=True, timeout=600
            )
        finally:
            if uid is not None:
                kill_user(uid)
                remove_private_folders(uid)
            shutil.rmtree(work, ignore_errors=True)

    proc = attempt(memory)
    if proc.returncode == 0:
        return "", "INITLAB-CURVE" in proc.stdout and _grader_supports_curve()
    why = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1][:300]
    if memory and attempt(None).returncode == 0:
        return (
            f"a kernel under the memory limit of {memory / 2**30:g} GiB cannot import numpy "
            f"and torch ({why}). Importing torch alone needs about 1 GiB: raise "
            f"--memory-limit (default {DEFAULT_MEMORY_LIMIT_GIB:g}), or give 0 for no limit.",
            False,
        )
    if uid is not None:
        return (
            f"--isolate: a kernel running as user id {uid} cannot start ({why}). "
            f"Everything a kernel loads must be readable by other users: the interpreter "
            f"{python} with its standard library and site-packages, and "
            f"{root / 'autograder'}. An interpreter under /root (pyenv, conda) is not. "
            "Install the grading environment in a folder others can read, or name such an "
            "interpreter with --kernel-python.",
            False,
        )
    return (
        f"a grading kernel cannot start ({why}): the kernel's Python {python} needs "
        "ipykernel, numpy, torch and the initlab library (pip install './initlab[instructor]'), "
        f"and {root / 'autograder'} must hold initlab_grading.",
        False,
    )


def check_isolation(root: Path, python: str | None = None) -> str:
    """check_kernel as an isolated kernel (a sandbox user id), without limits: "" when
    such a kernel can start, else what is wrong and how to fix it."""
    uids = UidPool()
    try:
        return check_kernel(root, python, uid=uids.take())[0]
    finally:
        uids.close()


class UidPool:
    """Sandbox user ids for one grading run (--isolate): a fresh one per submission. An id
    is taken only if no account has it and no other run on this machine holds it (an
    flock'ed file per id under /tmp/initlab-grading-uids/); processes and private folders an
    earlier run left under that id are removed first, and again when the run ends."""

    def __init__(self, base: int = SANDBOX_UID_BASE, count: int = SANDBOX_UID_COUNT) -> None:
        self.base, self.end = base, base + count
        self.dir = Path(tempfile.gettempdir()) / "initlab-grading-uids"
        self.dir.mkdir(mode=0o700, exist_ok=True)
        if self.dir.is_symlink() or self.dir.stat().st_uid != os.geteuid():
            raise SystemExit(f"{self.dir} is not a folder of this user's: remove it")
        self.held: dict[int, int] = {}
        self.next = base
        self.lock = threading.Lock()

    def take(self) -> int:
        with self.lock:
            for uid in range(self.next, self.end):
                try:
                    pwd.getpwuid(uid)
                    continue  # a real account
                except KeyError:
                    pass
                fd = os.open(self.dir / str(uid), os.O_CREAT | os.O_RDWR | os.O_NOFOLLOW, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    continue  # another grading run's
                self.held[uid], self.next = fd, uid + 1
                kill_user(uid)
                remove_private_folders(uid)
                return uid
        raise RuntimeError(f"no free sandbox user id in {self.base}..{self.end - 1}")

    def close(self) -> None:
        with self.lock:
            for uid, fd in self.held.items():
                kill_user(uid)
                remove_private_folders(uid)
                os.close(fd)
            self.held.clear()


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
) -> GradingResult:
    """Autograde one submission in its own ``nbgrader autograde --student`` process (the
    Dask engine's way; grade_class's local engine keeps workers running instead).
    ``memory_limit`` and ``file_limit`` (GiB) and ``uid`` apply to its kernel only;
    ``cell_timeout`` overrides Execute.timeout; ``kernel_python`` is the interpreter the
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
            spec, memory, uid, kernel_python, token=token, fsize=fsize, nproc=nproc, curve=curve
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


# --------------------------------------------------------------------------------------
# Long-lived grading workers (the local engine)


class WorkerFailure(RuntimeError):
    """A grading worker did not start ("start"), died while grading ("died") or answered
    something that is not its protocol ("protocol"); the message says how
    (WORKER_STOPPED)."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


WORKER_START_TIMEOUT = 300.0
"""Seconds a grading worker may take to load nbgrader and the course configuration."""


@dataclass
class KernelOptions:
    """How grading kernels start (see initlab_grading.sandbox)."""

    memory: int | None = None
    fsize: int | None = None
    nproc: int | None = None
    python: str | None = None
    curve: bool = False


class GradingWorker:
    """One long-lived ``initlab_grading.worker`` process (nbgrader loaded once, many
    submissions graded in turn) and the kernelspec folder its kernels start from."""

    def __init__(
        self,
        root: Path,
        assignment: str,
        kernel: KernelOptions,
        cell_timeout: float | None,
        alive: set | None = None,
    ) -> None:
        self.kernel = kernel
        self.key = secrets.token_hex(16)
        self.jobs = itertools.count(1)
        self.proc: subprocess.Popen | None = None
        self.spec = Path(tempfile.mkdtemp(prefix="initlab-kernelspec-"))
        self.stderr = tempfile.TemporaryFile()
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.alive = alive if alive is not None else set()
        self.last_resources: dict[str, int] = {}
        try:
            self._start(root, assignment, cell_timeout)
        except TimeoutError:
            self.stop()
            raise WorkerFailure(
                f"{WORKER_STOPPED}: it did not start within {WORKER_START_TIMEOUT:g} s", "start"
            ) from None
        except WorkerFailure as err:
            self.stop()
            raise WorkerFailure(str(err), "start") from None
        except BaseException:
            self.stop()
            raise

    def _start(self, root: Path, assignment: str, cell_timeout: float | None) -> None:
        k = self.kernel
        _write_kernelspec(self.spec, k.memory, None, k.python, fsize=k.fsize, curve=k.curve)
        package_parent = str(Path(__file__).resolve().parents[1])
        env = {
            **os.environ,
            "JUPYTER_PATH": _jupyter_path(self.spec),
            "PYTHONPATH": os.pathsep.join(
                [package_parent, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
            ),
        }
        cmd = [sys.executable, "-P", "-m", "initlab_grading.worker", assignment]
        cmd += ["--cell-timeout", str(cell_timeout)] if cell_timeout else []
        cmd += ["--encrypt"] if k.curve else []
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
            start_new_session=True,  # a Ctrl-C in the terminal reaches grade.py only
        )
        self.alive.add(self)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self._send({"key": self.key})
        ready = self._answer(WORKER_START_TIMEOUT)
        if ready.get("key") != self.key or not ready.get("ready"):
            raise WorkerFailure(f"{WORKER_STOPPED}: its first line was not the ready line", "start")
        self.ready_log = ready.get("log", "")
        self.config = next((f for f in CONFIG_FAILURES if f in self.ready_log), "")

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        try:
            for line in self.proc.stdout:
                self.lines.put(line)
        except (OSError, ValueError):
            pass
        self.lines.put(None)

    def _send(self, message: dict) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(message) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            raise WorkerFailure(self._why_stopped(), "died") from None

    def _answer(self, timeout: float) -> dict:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError from None
        if line is None:
            raise WorkerFailure(self._why_stopped(), "died")
        try:
            answer = json.loads(line)
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise WorkerFailure(
                f"{WORKER_STOPPED}: it answered a line that is not its protocol "
                f"({line.strip()[:80]!r})",
                "protocol",
            )
        return answer

    def _why_stopped(self) -> str:
        assert self.proc is not None
        try:
            code = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            code = None
        self.stderr.seek(0)
        tail = self.stderr.read()[-4000:].decode(errors="replace").strip().splitlines()
        last = f" ({tail[-1][:200]})" if tail else ""
        how = (
            f"it was killed by signal {-code}"
            if code and code < 0
            else f"it exited with status {code}"
        )
        return f"{WORKER_STOPPED}: {how}{last}"

    def grade(self, student: str, uid: int | None, timeout: float, token: str) -> Attempt:
        """Autograde one submission. Stops this worker (at once) when it runs past
        ``timeout`` seconds; raises WorkerFailure when the worker dies or breaks the
        protocol (then it must be replaced)."""
        k = self.kernel
        _write_kernelspec(
            self.spec, k.memory, uid, k.python, token=token, fsize=k.fsize, nproc=k.nproc,
            curve=k.curve,
        )  # fmt: skip
        job = next(self.jobs)
        self._send({"key": self.key, "job": job, "student": student, "uid": uid})
        try:
            answer = self._answer(timeout)
        except TimeoutError:
            self.kill()
            answer = self._late_answer()
            if answer is None:
                return Attempt(timed_out=True)
        if (answer.get("key"), answer.get("job"), answer.get("student")) != (
            self.key,
            job,
            student,
        ):
            self.kill()
            raise WorkerFailure(
                f"{WORKER_STOPPED}: its answer was not for this job (job {answer.get('job')!r}, "
                f"student {answer.get('student')!r}): something other than the worker wrote "
                "into its output",
                "protocol",
            )
        self.last_resources = {k: answer.get(k, -1) for k in ("fds", "rss")}
        log = answer.get("log", "") + answer.get("error", "")
        if self.config:
            log += f"\n[ERROR] {self.config} (when the grading worker started)"
        return Attempt(log, bool(answer.get("success")))

    def _late_answer(self) -> dict | None:
        """After a kill on time-out: the answer, if the worker sent it before it died."""
        self.reader.join(timeout=5)
        while True:
            try:
                line = self.lines.get_nowait()
            except queue.Empty:
                return None
            if line is None:
                return None
            try:
                answer = json.loads(line)
            except ValueError:
                return None
            if isinstance(answer, dict) and answer.get("key") == self.key:
                return answer

    def kill(self) -> None:
        """End the worker and every process below it (the kernel of the submission it is
        grading) at once."""
        if self.proc is not None and self.proc.poll() is None:
            kill_pids([*descendants(self.proc.pid), self.proc.pid])
            self.proc.wait()

    def stop(self) -> None:
        """End the worker: politely (it is idle), else at once; remove its files."""
        if self.proc is not None and self.proc.poll() is None and self.proc.stdin is not None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=5)
            except (OSError, ValueError, subprocess.TimeoutExpired):
                pass
        self.kill()
        self.alive.discard(self)
        self.stderr.close()
        shutil.rmtree(self.spec, ignore_errors=True)


class WorkerSlot:
    """One of grade_class's parallel places: a grading worker, started when first needed
    and replaced after a submission that ran past its time limit or stopped it."""

    def __init__(
        self,
        root: Path,
        assignment: str,
        kernel: KernelOptions,
        cell_timeout: float | None,
        alive: set | None = None,
    ) -> None:
        self.root, self.assignment = root, assignment
        self.kernel, self.cell_timeout = kernel, cell_timeout
        self.alive = alive if alive is not None else set()
        self.worker: GradingWorker | None = None

    def start(self) -> GradingWorker:
        if self.worker is None:
            self.worker = GradingWorker(
                self.root, self.assignment, self.kernel, self.cell_timeout, self.alive
            )
        return self.worker

    def grade(
        self,
        student: str,
        timeout: float,
        retries: int,
        uid: int | None,
        db_url: str,
        stop: threading.Event | None = None,
    ) -> GradingResult:
        def run() -> Attempt:
            token = secrets.token_hex(8)
            try:
                attempt = self.start().grade(student, uid, timeout, token)
            except WorkerFailure as err:
                self.discard()
                attempt = Attempt(f"[ERROR] {err}", worker_died=err.kind != "start")
            worker_gone = self.worker is not None and self.worker.proc.poll() is not None
            if attempt.timed_out or worker_gone:
                self.discard()  # the worker and the kernel still running the submission
            _kill_job(token, uid)
            if attempt.timed_out or attempt.worker_died:
                _discard_autograded(self.root, self.assignment, student)
            return attempt

        try:
            return _grade_attempts(
                self.root, self.assignment, student, timeout, retries, run, db_url, stop
            )
        finally:
            if uid is not None:
                _reclaim(self.root, self.assignment, student)
                remove_private_folders(uid)  # its processes were ended after each attempt

    def discard(self) -> None:
        """Kill this slot's worker at once (it is busy or broken); a fresh one comes next."""
        if self.worker is not None:
            self.worker.kill()
            self.worker.stop()
            self.worker = None

    def close(self) -> None:
        if self.worker is not None:
            self.worker.stop()
            self.worker = None


def make_private(root: Path) -> list[str]:
    """chmod go-rwx on the course's private paths (PRIVATE_PATHS and gradebook journals);
    returns the paths changed."""
    changed = []
    for name in (*PRIVATE_PATHS, "gradebook.db-journal", "gradebook.db-wal"):
        path = root / name
        if path.exists() and not path.is_symlink():
            mode = path.stat().st_mode & 0o777
            if mode & 0o077:
                path.chmod(mode & 0o700)
                changed.append(name)
    (root / "autograded").mkdir(exist_ok=True, mode=0o700)
    for folder in (root / "autograded").iterdir():
        if folder.is_dir() and not folder.is_symlink():
            folder.chmod(0o700)
    return changed


# --------------------------------------------------------------------------------------
# A class


def _check_options(
    workers: int | None,
    timeout: float,
    retries: int,
    memory_limit: float | None,
    cell_timeout: float | None,
    file_limit: float | None,
) -> None:
    problems = []
    if workers is not None and workers < 1:
        problems.append(f"workers must be at least 1, not {workers}")
    if not timeout > 0:
        problems.append(f"timeout must be a positive number of seconds, not {timeout}")
    if retries < 0:
        problems.append(f"retries must be 0 or more, not {retries}")
    if memory_limit is not None and memory_limit < 0:
        problems.append(f"memory_limit must be 0 (none) or a positive GiB, not {memory_limit}")
    if file_limit is not None and file_limit < 0:
        problems.append(f"file_limit must be 0 (none) or a positive GiB, not {file_limit}")
    if cell_timeout is not None and not cell_timeout > 0:
        problems.append(f"cell_timeout must be a positive number of seconds, not {cell_timeout}")
    if problems:
        raise ValueError("; ".join(problems))


def grade_class(
    root: Path,
    assignment: str,
    workers: int | None = None,
    timeout: float = 900.0,
    retries: int = 2,
    progress: Callable[[str], object] = print_now,
    memory_limit: float | None = DEFAULT_MEMORY_LIMIT_GIB,
    cell_timeout: float | None = None,
    isolate: bool = False,
    kernel_python: str | None = None,
    engine: str = "local",
    scheduler: str | None = None,
    file_limit: float | None = DEFAULT_FILE_LIMIT_GIB,
    on_worker: Callable[[GradingWorker], None] | None = None,
) -> list[GradingResult]:
    """Grade every submission of ``assignment`` with ``workers`` parallel grading workers,
    or with ``engine="dask"`` as tasks on the Dask cluster at ``scheduler``.

    ``memory_limit``: GiB of private writable memory per kernel (None or 0: unlimited).
    ``file_limit``: GiB per file a kernel writes (None or 0: unlimited).
    ``cell_timeout``: seconds per cell (default: Execute.timeout of nbgrader_config.py).
    ``isolate``: run each kernel as its own unprivileged user (needs root; local engine
    only) after making the course's private paths readable by their owner only.
    ``kernel_python``: the interpreter kernels run (default: this one).
    ``on_worker``: called with a worker after each submission it graded (tests).
    Ctrl-C raises GradingInterrupted with the results so far."""
    _check_options(workers, timeout, retries, memory_limit, cell_timeout, file_limit)
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
    if engine not in ("local", "dask"):
        raise ValueError(f"engine must be 'local' or 'dask', not {engine!r}")
    if isolate and engine != "local":
        raise SystemExit(
            "--isolate works with the local engine only: it needs root on the machine that "
            "runs the kernels. Leave out --isolate or grade with --engine local."
        )
    if engine == "dask":
        from initlab_grading.distributed import grade_on_dask

        results = grade_on_dask(
            root,
            assignment,
            students,
            scheduler,
            timeout,
            retries,
            progress,
            memory_limit=memory_limit,
            cell_timeout=cell_timeout,
            kernel_python=kernel_python,
            file_limit=file_limit,
        ) if students else []  # fmt: skip
        return _with_unnamed(results, unnamed, progress)
    if isolate and os.geteuid() != 0:
        raise SystemExit(
            "--isolate runs each kernel as an unprivileged user, which needs root; "
            "run grading as root or leave out --isolate."
        )
    uids = UidPool() if isolate else None
    try:
        results = _grade_locally(
            root, assignment, students, workers, timeout, retries, progress, memory_limit,
            cell_timeout, kernel_python, file_limit, uids, on_worker,
        ) if students else []  # fmt: skip
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
    workers: int | None,
    timeout: float,
    retries: int,
    progress: Callable[[str], object],
    memory_limit: float | None,
    cell_timeout: float | None,
    kernel_python: str | None,
    file_limit: float | None,
    uids: UidPool | None,
    on_worker: Callable[[GradingWorker], None] | None,
) -> list[GradingResult]:
    kernel = KernelOptions(
        memory=int(memory_limit * 2**30) if memory_limit else None,
        fsize=int(file_limit * 2**30) if file_limit else None,
        nproc=DEFAULT_NPROC if uids is not None else None,
        python=kernel_python,
    )
    check_uid = uids.take() if uids else None

    def check() -> tuple[str, bool]:
        return check_kernel(
            root, kernel_python, kernel.memory, kernel.fsize, check_uid, kernel.nproc
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
    count = min(workers or os.cpu_count() or 1, len(students))
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
            students, slots, free, stop, alive, timeout, retries, uids, db_url, progress,
            on_worker,
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


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def progress_line(done: int, total: int, res: GradingResult, elapsed: float | None = None) -> str:
    """``[done/total] student: status in S s (detail); N left, about T to go``: one line per
    finished submission, with the time left extrapolated from the run so far."""
    extra = f" after {res.attempts} attempts" if res.attempts > 1 else ""
    line = f"[{done}/{total}] {res.student}: {res.status} in {res.seconds:.1f} s{extra}"
    line += f" ({res.detail})" if res.detail else ""
    if elapsed is not None and done < total:
        line += f"; {total - done} left, about {_duration(elapsed / done * (total - done))} to go"
    return line


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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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
    errors: tuple[type[Exception], ...] = ()
    if args.engine == "dask":
        from initlab_grading.distributed import ClusterError

        errors = (ClusterError,)
    start = time.monotonic()
    interrupted = False
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
            file_limit=args.file_limit or None,
        )
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
        from initlab_grading.report import write_report

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
