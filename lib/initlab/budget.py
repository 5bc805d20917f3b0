"""Experiment budgets: one knob that decides how heavy the experiments in a notebook run.

Three budgets exist:

``grade``
    Whenever nbgrader executes a notebook to autograde or validate it (nbgrader sets
    ``NBGRADER_EXECUTION``), and in CI (``CI`` is set). Seconds per experiment: enough to
    exercise the code, not to reproduce a result.
``default``
    A student's laptop: a whole notebook runs in at most five minutes on two CPU cores.
``full``
    The protocol of the seed exercise or paper the notebook reproduces.

The environment variable ``INITLAB_BUDGET`` overrides the automatic choice, e.g.
``INITLAB_BUDGET=full jupyter lab``, everywhere except under nbgrader's autograde and
validate: there the budget is always ``grade``, so a grader's or student's environment
cannot make grading run the full protocol (or change what the graded cells compute).
Commands that execute notebooks without setting ``NBGRADER_EXECUTION`` (``nbgrader
generate_solution``, ``jupyter nbconvert --execute``) follow ``INITLAB_BUDGET``.

In a notebook::

    from initlab import budget
    num_epochs = budget.pick(grade=2, default=20, full=1000)
"""

from __future__ import annotations

import os
from typing import TypeVar

BUDGETS: tuple[str, ...] = ("grade", "default", "full")
"""The budget names, lightest first."""

ENV_VAR = "INITLAB_BUDGET"

T = TypeVar("T")


class BudgetError(ValueError):
    """Raised for an unknown budget name; the message says which names exist."""


def _validate(name: str, source: str) -> str:
    cleaned = name.strip().lower()
    if cleaned not in BUDGETS:
        raise BudgetError(
            f"{source} is {name!r}, which is not a budget. Use one of "
            f"{', '.join(BUDGETS)} (for example {ENV_VAR}=default), or unset it to let "
            "initlab choose: 'grade' under nbgrader and CI, 'default' otherwise."
        )
    return cleaned


def current() -> str:
    """Return the budget in force: ``grade`` whenever nbgrader autogrades or validates
    (``NBGRADER_EXECUTION`` set, whatever ``INITLAB_BUDGET`` says); otherwise
    ``INITLAB_BUDGET`` if set, else ``grade`` in CI (``CI``), else ``default``."""
    if os.environ.get("NBGRADER_EXECUTION"):
        return "grade"
    override = os.environ.get(ENV_VAR, "")
    if override.strip():
        return _validate(override, f"The environment variable {ENV_VAR}")
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        return "grade"
    return "default"


def pick(*, grade: T, default: T, full: T) -> T:
    """Return the value given for the budget in force (see :func:`current`)."""
    return {"grade": grade, "default": default, "full": full}[current()]


def describe() -> str:
    """One line for the top of a notebook: which budget runs and how to change it."""
    name = current()
    if os.environ.get("NBGRADER_EXECUTION"):
        return (
            f"initlab experiment budget: {name!r} (nbgrader is grading or validating, "
            f"which always runs the {name!r} budget)"
        )
    return (
        f"initlab experiment budget: {name!r} (one of {', '.join(BUDGETS)}; "
        f"set {ENV_VAR} before starting Jupyter to change it)"
    )
