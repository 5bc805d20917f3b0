"""A long-lived grading worker: one process that autogrades many submissions in turn.

    python -m initlab_grading.grading.worker ASSIGNMENT [--cell-timeout SECONDS] [--encrypt]

Started by initlab_grading.grading.grade with the course root as its working folder, in a session
of its own (a Ctrl-C in the grader's terminal reaches grade.py, which stops the workers).
It loads nbgrader and the course's nbgrader_config.py once, then reads JSON lines on stdin:
first ``{"key": KEY}``, a secret of this worker's grader, then one line per submission,
``{"key": KEY, "job": N, "student": "s001", "uid": 61000 or null}``. For each it runs
nbgrader's own ``Autograde`` converter for that student in this process (what ``nbgrader
autograde ASSIGNMENT --student s001 --force`` runs, without starting Python, nbgrader and
the configuration again) and answers one JSON line: ``{"key", "job", "student", "success",
"log", "error", "fds", "rss"}`` (``fds``, ``rss``: this process's open file descriptors and
resident memory after the job). Each submission still gets a kernel of its own, started
through the kernelspec that grade.py rewrites before each submission (memory limit,
--isolate's user id, the job's token).

The answers go to the stdout the worker was started with, through a descriptor no kernel
inherits; file descriptor 1 is pointed at stderr first, so that nothing else the worker or
a kernel writes there can break a line of the protocol. A line without the key (written
by something other than grade.py) ends the worker with an error. A worker that is stopped
(a submission ran past its time limit) or dies is replaced by grade.py; nothing in it
outlives the submission being graded but nbgrader's loaded code and configuration.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import math
import os
import sys
import traceback

READY = "ready"
"""The first line a worker writes, once nbgrader and the configuration are loaded."""


def _capture(log: logging.Logger) -> tuple[logging.Handler, io.StringIO]:
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(logging.Formatter("[%(levelname)s] %(message)s"))
    log.addHandler(handler)
    return handler, buffer


def _resources() -> dict[str, int]:
    """Open file descriptors and resident memory (bytes) of this process."""
    try:
        fds = len(os.listdir("/proc/self/fd"))
        with open("/proc/self/statm") as fh:
            rss = int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return {"fds": -1, "rss": -1}
    return {"fds": fds, "rss": rss}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("assignment")
    parser.add_argument("--cell-timeout", type=float, default=None)
    parser.add_argument(
        "--encrypt", action="store_true", help="require CurveZMQ on the kernels' channels"
    )
    args = parser.parse_args(argv)

    answers = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")  # not inheritable
    os.dup2(2, 1)
    key = json.loads(sys.stdin.readline() or "{}").get("key")
    if not key:
        print("initlab_grading.grading.worker: no key on the first line of stdin", file=sys.stderr)
        return 2

    from nbgrader.apps.autogradeapp import AutogradeApp
    from nbgrader.converters import Autograde

    from initlab_grading.grading.sandbox import UID_VARIABLE

    app = AutogradeApp()
    handler, buffer = _capture(app.log)
    options = []
    if args.cell_timeout:
        options.append(f"--Execute.timeout={math.ceil(args.cell_timeout)}")
    if args.encrypt:
        options.append("--KernelManager.transport_encryption=required")
    app.initialize([args.assignment, *options])
    app.coursedir.assignment_id = args.assignment
    app.log.removeHandler(handler)
    answers.write(json.dumps({READY: True, "key": key, "log": buffer.getvalue()}) + "\n")

    for line in sys.stdin:
        try:
            job = json.loads(line)
            valid = isinstance(job, dict) and job.get("key") == key and "student" in job
        except ValueError:
            valid = False
        if not valid:
            print(
                "initlab_grading.grading.worker: a line on stdin without this worker's key "
                "(something other than the grader wrote to it); stopping",
                file=sys.stderr,
            )
            return 3
        app.coursedir.student_id = job["student"]
        if job.get("uid") is not None:
            os.environ[UID_VARIABLE] = str(job["uid"])
        else:
            os.environ.pop(UID_VARIABLE, None)
        converter = Autograde(coursedir=app.coursedir, parent=app)
        converter.force = True
        converter.create_student = True
        handler, buffer = _capture(app.log)
        try:
            converter.start()
            answer = {"success": True, "error": ""}
        except Exception:  # nbgrader's own failure, or anything else: reported
            answer = {"success": False, "error": traceback.format_exc()}
        finally:
            app.log.removeHandler(handler)
        answer.update(key=key, job=job.get("job"), student=job["student"], log=buffer.getvalue())
        answer.update(_resources())
        answers.write(json.dumps(answer) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
