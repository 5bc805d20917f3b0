"""One submission's grading: the records of its result and attempts, the checks of the
submission before grading, the attempts with their retries, the processes and files they
leave, and what the gradebook holds after. The local engine's workers
(initlab_grading.grading.worker_pool) and the Dask engine's tasks
(initlab_grading.grading.distributed) both grade through it; the grading command
(initlab_grading.grading.grade) runs a class."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path

import nbformat

from initlab_grading.course.layout import notebook_name
from initlab_grading.grading.preprocessors import KILLED_NOTE, REPORT_TAG
from initlab_grading.grading.sandbox import (
    CODE_FILES,
    job_processes,
    kill_pids,
    kill_user,
    secure_folder,
)

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
