"""The student's own outputs beside the written answers that discuss them.

Autograding runs every notebook again at the ``grade`` budget, so the figures and numbers
of a fresh run are not the ones a written answer discusses (a 1-epoch training curve
instead of the student's 10 epochs). An assignment's grader (assignments/<id>/grader.py)
names, in ``EVIDENCE``, the code cells each manually graded answer discusses, by nbgrader
grade_id (nbgrader restores those of a submission from the gradebook)::

    EVIDENCE = {"observations": ["train_six"]}  # answer -> the code cells it discusses

``KeepSubmittedEvidence`` (first of ``Autograde.sanitize_preprocessors``, before nbgrader
clears the outputs) keeps those cells' outputs as submitted: images and plain text only,
at most ``MAX_EVIDENCE_BYTES`` a notebook. ``ShowSubmittedEvidence`` (right after the
execution) puts them in a code cell of their own right after the answer, marked as coming
from the submission. The autograded points still come from the fresh run; formgrader and
the feedback show the evidence, since both read the autograded notebook.
"""

from __future__ import annotations

import importlib
import json
import re

from nbconvert.exporters.exporter import ResourcesDict
from nbformat import v4 as nbformat_v4
from nbformat.notebooknode import NotebookNode, from_dict
from nbgrader.preprocessors.base import NbGraderPreprocessor

from initlab_grading.course.layout import grade_id

STASH = "initlab_submitted_evidence"
"""Notebook metadata key that carries the kept outputs from sanitizing to execution."""
MAX_EVIDENCE_BYTES = 4_000_000
MAX_TEXT = 20_000
_STATIC = ("image/png", "image/jpeg", "text/plain")
_ASSIGNMENT = re.compile(r"^[A-Za-z_]\w*$")


def evidence_of(assignment: str) -> dict[str, list[str]]:
    """``EVIDENCE`` of the assignment's grader module (answer grade_id -> the grade_ids
    of the code cells it discusses), or {} when it names none."""
    if not _ASSIGNMENT.match(assignment or ""):
        return {}
    try:
        module = importlib.import_module(f"initlab_grading.assignments.{assignment}.grader")
    except ImportError:
        return {}
    return dict(getattr(module, "EVIDENCE", {}))


def static_output(output: NotebookNode) -> dict | None:
    """A submitted output reduced to what cannot run: streams as text, displays as their
    images and plain text; errors and everything else dropped."""
    kind = output.get("output_type")
    if kind == "stream":
        return {"output_type": "stream", "name": "stdout", "text": str(output.text)[:MAX_TEXT]}
    if kind in ("display_data", "execute_result"):
        data = {k: v for k, v in output.get("data", {}).items() if k in _STATIC}
        if "text/plain" in data:
            data["text/plain"] = str(data["text/plain"])[:MAX_TEXT]
        if data:
            return {"output_type": "display_data", "data": data, "metadata": {}}
    return None


class KeepSubmittedEvidence(NbGraderPreprocessor):
    """Keep the submitted outputs of the cells the assignment's ``EVIDENCE`` names."""

    def preprocess(self, nb: NotebookNode, resources: ResourcesDict):
        evidence = evidence_of(resources.get("nbgrader", {}).get("assignment", ""))
        nb.metadata.pop(STASH, None)  # whatever the submission put there
        if not evidence:
            return nb, resources
        wanted = {cell_id for ids in evidence.values() for cell_id in ids}
        kept: dict[str, list[dict]] = {}
        room = MAX_EVIDENCE_BYTES
        for cell in nb.cells:
            name = grade_id(cell)
            if cell.cell_type != "code" or name not in wanted or name in kept:
                continue
            kept[name] = []
            for output in cell.get("outputs", []):
                clean = static_output(output)
                size = len(json.dumps(clean)) if clean else 0
                if clean and size <= room:
                    kept[name].append(clean)
                    room -= size
        nb.metadata[STASH] = {"answers": evidence, "cells": kept}
        return nb, resources


class ShowSubmittedEvidence(NbGraderPreprocessor):
    """After each answer that ``EVIDENCE`` names, a code cell with the submitted outputs."""

    def preprocess(self, nb: NotebookNode, resources: ResourcesDict):
        stash = nb.metadata.pop(STASH, None)
        if not stash:
            return nb, resources
        answers, kept = stash.get("answers", {}), stash.get("cells", {})
        cells = []
        for cell in nb.cells:
            cells.append(cell)
            answer = grade_id(cell)
            if cell.cell_type != "markdown" or answer not in answers:
                continue
            for cell_id in answers[answer]:
                outputs = kept.get(cell_id)
                if outputs is None:
                    note = "the submission has no such cell"
                elif not outputs:
                    note = "it had no output: the cell was not run before submitting"
                else:
                    note = "not run again while grading"
                source = (
                    f"# From the submitted notebook: the output of cell {cell_id!r} as the "
                    f"student ran it ({note}); the answer above discusses it."
                )
                safe_id = re.sub(r"[^A-Za-z0-9_-]", "-", f"submitted-{cell_id}")[:64]
                shown = nbformat_v4.new_code_cell(source, id=safe_id)
                shown.outputs = [from_dict(o) for o in outputs or []]
                cells.append(shown)
        nb.cells = cells
        return nb, resources
