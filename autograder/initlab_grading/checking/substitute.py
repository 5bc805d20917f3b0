"""Grading a function with the references of the earlier answers it calls, so that a slip
in an earlier answer costs that answer's own test cell only."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator


@contextlib.contextmanager
def earlier_answers_as_references(
    student: Callable, references: dict[str, Callable]
) -> Iterator[None]:
    """While active, each name of ``references`` that ``student``'s module namespace (the
    notebook's) defines is bound to its reference; the student's own come back afterwards.
    For a function of a student's kernel (a ``Remote``) the kernel binds them during each
    call, to stand-ins that call the references here."""
    if hasattr(type(student), "globals_bound"):
        with student.globals_bound(references):  # type: ignore[attr-defined]
            yield
        return
    namespace = getattr(student, "__globals__", None)
    saved = {}
    if isinstance(namespace, dict):
        for name, reference in references.items():
            if name in namespace:
                saved[name] = namespace[name]
                namespace[name] = reference
    try:
        yield
    finally:
        if isinstance(namespace, dict):
            namespace.update(saved)


def graded_with_references(references: dict[str, Callable]) -> Callable[[Callable], Callable]:
    """Decorate a hidden check ``check(student, ...)`` so that it runs inside
    :func:`earlier_answers_as_references` for ``references``."""

    def decorate(check: Callable) -> Callable:
        @functools.wraps(check)
        def wrapped(student: Callable, *args, **kwargs):
            with earlier_answers_as_references(student, references):
                return check(student, *args, **kwargs)

        return wrapped

    return decorate
