"""nbgrader preprocessor that keeps hidden tests hidden in generated feedback.

By default nbgrader's feedback shows the autograded notebook, in which the test cells
carry their hidden tests again, and a failing hidden test shows a traceback through
that code and through the reference in this package. This preprocessor removes the
hidden region from each test cell and cuts the traceback of a failed hidden test down
to its message (the checks' messages say what is wrong without showing the test).
"""

from __future__ import annotations

from nbconvert.exporters.exporter import ResourcesDict
from nbformat.notebooknode import NotebookNode
from nbgrader.preprocessors import ClearHiddenTests

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
