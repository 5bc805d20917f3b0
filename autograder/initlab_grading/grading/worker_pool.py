"""The local engine's long-lived grading workers, seen from the grading command: starting
initlab_grading.grading.worker processes, handing each one submission at a time, and replacing a
worker that dies or runs past its time."""

from __future__ import annotations

import itertools
import json
import os
import queue
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from initlab_grading.grading.attempts import (
    CONFIG_FAILURES,
    WORKER_STOPPED,
    Attempt,
    GradingResult,
    _discard_autograded,
    _grade_attempts,
    _kill_job,
    _reclaim,
    descendants,
)
from initlab_grading.grading.kernelspecs import _jupyter_path, _write_kernelspec
from initlab_grading.grading.sandbox import (
    kill_pids,
    remove_private_folders,
)

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
    """How grading kernels start (see initlab_grading.grading.sandbox)."""

    memory: int | None = None
    fsize: int | None = None
    nproc: int | None = None
    python: str | None = None
    curve: bool = False
    bwrap: bool = True


class GradingWorker:
    """One long-lived ``initlab_grading.grading.worker`` process (nbgrader loaded once, many
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
        _write_kernelspec(
            self.spec, k.memory, None, k.python, fsize=k.fsize, curve=k.curve, bwrap=k.bwrap
        )
        package_parent = str(Path(__file__).resolve().parents[2])
        env = {
            **os.environ,
            "JUPYTER_PATH": _jupyter_path(self.spec),
            "PYTHONPATH": os.pathsep.join(
                [package_parent, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
            ),
        }
        cmd = [sys.executable, "-P", "-m", "initlab_grading.grading.worker", assignment]
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
            bwrap=k.bwrap,
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
