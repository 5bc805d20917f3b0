"""The kit's nbgrader preprocessors (configured in nbgrader_config.py).

HideHiddenTests keeps hidden tests hidden in generated feedback. By default nbgrader's
feedback shows the autograded notebook, in which the test cells carry their hidden tests
again, and a failing hidden test shows a traceback through that code and through the
reference in this package. This preprocessor removes the hidden region from each test
cell and cuts the traceback of a failed hidden test down to its message (the checks'
messages say what is wrong without showing the test).
"""

from __future__ import annotations

from nbconvert.exporters.exporter import ResourcesDict
from nbformat.notebooknode import NotebookNode
from nbgrader.preprocessors import ClearHiddenTests, OverwriteCells

HIDDEN_NOTE = "# (Hidden tests ran here. Their code is not shown; their messages are below.)"


class HideHiddenTests(ClearHiddenTests):
    """Remove hidden test code and the tracebacks through it from feedback."""

    def preprocess_cell(
        self, cell: NotebookNode, resources: ResourcesDict, cell_index: int
    ) -> tuple[NotebookNode, ResourcesDict]:
        if cell.cell_type == "code" and self._remove_hidden_test_region(cell):
            cell.source = cell.source.rstrip() + "\n" + HIDDEN_NOTE
            for output in cell.get("outputs", []):
                if output.output_type == "error":
                    output.traceback = [f"{output.ename}: {output.evalue}"]
        return cell, resources


class RestoreDeletedCells(OverwriteCells):
    """nbgrader's OverwriteCells, with deleted test cells restored in every position.

    nbgrader 0.9.6's ``add_missing_grade_cells`` means to insert a deleted grade cell after
    the previous grade or solution cell, but looks up the previous source cell of any kind
    and raises KeyError when that is an ordinary locked cell (as when a test follows an
    example cell). Here the restored cell goes after the nearest earlier cell of the
    source that is still in the submission (or first, if none is).
    """

    def add_missing_grade_cells(
        self, nb: NotebookNode, resources: ResourcesDict
    ) -> tuple[NotebookNode, ResourcesDict]:
        source_nb = self.gradebook.find_notebook(self.notebook_id, self.assignment_id)
        source_cells = list(source_nb.source_cells)
        source_ids = [cell.name for cell in source_cells]
        grade_cells = {cell.name: cell for cell in source_nb.grade_cells}
        solution_ids = {cell.name for cell in source_nb.solution_cells}

        def position(grade_id: str) -> int | None:
            for idx, cell in enumerate(nb.cells):
                if cell.metadata.get("nbgrader", {}).get("grade_id") == grade_id:
                    return idx
            return None

        for order, grade_id in enumerate(source_ids):
            if grade_id not in grade_cells or position(grade_id) is not None:
                continue
            self.log.warning("Missing grade cell %s encountered, adding to notebook", grade_id)
            cell = self.missing_cell_transform(
                source_cells[order],
                grade_cells[grade_id].max_score,
                is_solution=grade_id in solution_ids,
            )
            insert_at = 0
            for earlier in reversed(source_ids[:order]):
                idx = position(earlier)
                if idx is not None:
                    insert_at = idx + 1
                    break
            nb.cells.insert(insert_at, cell)
        return nb, resources
