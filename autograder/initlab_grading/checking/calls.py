"""Calling a student's answer from a check: many calls in one go, and calls inside a probe
(initlab_grading.checking.probes), made in the student's kernel when the answer lives there."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from initlab.checks import call_answer
from initlab_grading.checking import probes


def call_rows(student: Callable, rows: Any, *shared: Any, what: str) -> list[Any]:
    """``[student(row, *shared) for row in rows]`` (``rows`` an array or tensor; each call
    gets a copy of its row), a failure reported as :func:`initlab.checks.call_answer`
    reports it. A function of a student's kernel (a ``Remote``) makes all the calls in one
    request; the shared arguments (one random generator) stay shared, as here."""
    if hasattr(type(student), "rows"):
        return call_answer(lambda: student.rows(rows, shared), what=what)
    copy = [row.copy() if hasattr(row, "copy") else row.clone() for row in rows]
    return [call_answer(student, row, *shared, what=what) for row in copy]


@contextlib.contextmanager
def inside(student: Callable, probe: str, *args: Any) -> Iterator[Callable[[], Any]]:
    """Calls of ``student`` made in the block run inside ``probes.<probe>(*args)``: in the
    student's kernel for a function of the kernel (a ``Remote``), here otherwise. Yields a
    function that gives the first report of a call that is not None."""
    if hasattr(type(student), "probed"):
        with student.probed(probes, probe, *args) as reports:  # type: ignore[attr-defined]
            yield lambda: next((r for r in reports if r is not None), None)
    else:
        with getattr(probes, probe)(*args) as report:
            yield report
