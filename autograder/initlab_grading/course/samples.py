"""Sample submissions that prove each assignment's graders right.

Each assignment has a module assignments/<id>/samples.py with a list ``SAMPLES``. A sample
starts from the reference answers (or from the blank release) and replaces some answer cells
with a plausible mistake; it states which test cells must lose their points and a piece of
the message each must show. The instructor's loop grades them with the real nbgrader,
and tests/ checks that every sample scores exactly what it states.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Sample:
    """One sample submission.

    ``answers`` maps an answer cell's ``grade_id`` to the source that replaces the
    reference answer; ``lost`` maps each test cell that must score zero to a piece of
    the message its failure must show. ``blank`` submits the release untouched;
    ``deleted`` removes cells from the submitted notebook.
    """

    student: str
    description: str
    answers: dict[str, str] = field(default_factory=dict)
    lost: dict[str, str] = field(default_factory=dict)
    blank: bool = False
    deleted: tuple[str, ...] = ()
    """grade_ids of cells the student deleted from the notebook before submitting."""
    screened: str = ""
    """A piece of the review line the grading report gives its answers
    (initlab_grading.grading.screen); "": they get none."""


def samples_for(assignment: str) -> list[Sample]:
    """The samples of one assignment (``initlab_grading.assignments.<id>.samples``)."""
    module = importlib.import_module(f"initlab_grading.assignments.{assignment}.samples")
    return list(module.SAMPLES)
