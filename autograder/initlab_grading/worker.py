"""A long-lived grading worker: one process that autogrades many submissions in turn.

    python -m initlab_grading.worker ASSIGNMENT [--cell-timeout SECONDS]

Started by initlab_grading.grade with the course root as its working folder. It loads
nbgrader and the course's nbgrader_config.py once, then reads one JSON line per submission
on stdin (``{"student": "s001"}``), runs nbgrader's own ``Autograde`` converter for that
student in this process (what ``nbgrader autograde ASSIGNMENT --student s001 --force``
runs, without starting Python, nbgrader and the configuration again), and answers one JSON
line: ``{"student", "success", "log", "error"}``. Each submission still gets a kernel of
its own, started through the kernelspec that grade.py rewrites before each submission
(memory limit, --isolate's user id).

The answers go to the stdout the worker was started with; file descriptor 1 is pointed at
stderr first, so that nothing else the worker or a kernel writes there can break a line
of the protocol. A worker that is stopped (a submission ran past its time limit) or dies
is replaced by grade.py; nothing in it outlives the submission being graded but nbgrader's
loaded code and configuration.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("assignment")
    parser.add_argument("--cell-timeout", type=float, default=None)
    args = parser.parse_args(argv)

    answers = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)

    from nbgrader.apps.autogradeapp import AutogradeApp
    from nbgrader.converters import Autograde

    app = AutogradeApp()
    handler, buffer = _capture(app.log)
    options = [f"--Execute.timeout={int(args.cell_timeout)}"] if args.cell_timeout else []
    app.initialize([args.assignment, *options])
    app.coursedir.assignment_id = args.assignment
    app.log.removeHandler(handler)
    answers.write(json.dumps({READY: True, "log": buffer.getvalue()}) + "\n")

    for line in sys.stdin:
        job = json.loads(line)
        app.coursedir.student_id = job["student"]
        converter = Autograde(coursedir=app.coursedir, parent=app)
        converter.force = True
        converter.create_student = True
        handler, buffer = _capture(app.log)
        try:
            converter.start()
            answer = {"success": True, "error": ""}
        except BaseException:  # nbgrader's own failure, or anything else: reported
            answer = {"success": False, "error": traceback.format_exc()}
        finally:
            app.log.removeHandler(handler)
        answer.update(student=job["student"], log=buffer.getvalue())
        answers.write(json.dumps(answer) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
