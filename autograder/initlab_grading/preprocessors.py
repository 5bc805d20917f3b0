"""The kit's nbgrader preprocessors (configured in nbgrader_config.py).

HideHiddenTests keeps hidden tests hidden in generated feedback. By default nbgrader's
feedback shows the autograded notebook, in which the test cells carry their hidden tests
again, and a failing hidden test shows a traceback through that code and through the
reference in this package. This preprocessor removes the hidden region from each test
cell and cuts the traceback of a failed hidden test down to its message (the checks'
messages say what is wrong without showing the test).
"""

from __future__ import annotations

from nbclient.exceptions import DeadKernelError
from nbconvert.exporters.exporter import ResourcesDict
from nbformat import v4 as nbformat_v4
from nbformat.notebooknode import NotebookNode
from nbgrader.preprocessors import ClearHiddenTests, DeduplicateIds, Execute, OverwriteCells
from traitlets import Integer

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


class DropDuplicateIds(DeduplicateIds):
    """nbgrader's DeduplicateIds, which keeps the last cell of each grade id, without the
    failure it causes: it leaves an empty ``nbgrader`` dict on the other copies, which
    nbgrader 0.9.6 then reads as metadata of schema version 0 and refuses the whole
    submission ("use an old version"). Here the copies lose the key and run as ordinary
    cells."""

    def preprocess_cell(
        self, cell: NotebookNode, resources: ResourcesDict, cell_index: int
    ) -> tuple[NotebookNode, ResourcesDict]:
        cell, resources = super().preprocess_cell(cell, resources, cell_index)
        if cell.metadata.get("nbgrader", None) == {}:
            del cell.metadata["nbgrader"]
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

    def add_missing_task_cells(
        self, nb: NotebookNode, resources: ResourcesDict
    ) -> tuple[NotebookNode, ResourcesDict]:
        """nbgrader's, without its KeyError on a cell whose nbgrader metadata has no
        grade_id (DeduplicateIds leaves a duplicated cell's metadata empty)."""
        source_nb = self.gradebook.find_notebook(self.notebook_id, self.assignment_id)
        source_cells = list(source_nb.source_cells)
        source_ids = [cell.name for cell in source_cells]
        submitted = {cell.metadata.get("nbgrader", {}).get("grade_id") for cell in nb.cells}
        for task in source_nb.task_cells:
            if task.name not in submitted:
                cell = source_cells[source_ids.index(task.name)]
                nb.cells.append(self.missing_cell_transform(cell, task.max_score, is_task=True))
        return nb, resources


# --------------------------------------------------------------------------------------
# Grading hostile or broken submissions

REPORT_TAG = "INITLAB-REPORT"
"""Log lines that start with this tag become lines of grade.py's report."""


def _is_test(cell: NotebookNode) -> bool:
    meta = cell.metadata.get("nbgrader", {})
    return cell.cell_type == "code" and bool(meta.get("grade")) and not meta.get("solution")


def _grade_id(cell: NotebookNode) -> str:
    return cell.metadata.get("nbgrader", {}).get("grade_id", "")


def _error(ename: str, evalue: str) -> NotebookNode:
    return NotebookNode(
        output_type="error", ename=ename, evalue=evalue, traceback=[f"{ename}: {evalue}"]
    )


def _module_names(nb: NotebookNode) -> dict[str, str]:
    """Names that the notebook's locked, ungraded code cells (the instructor's setup) bind
    to modules: {"np": "numpy", "checks": "initlab.checks", ...}."""
    import ast
    import importlib.util

    names: dict[str, str] = {}
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if cell.cell_type != "code" or not meta.get("locked") or meta.get("grade"):
            continue
        try:
            tree = ast.parse(cell.source)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    names[alias.asname or alias.name.split(".")[0]] = (
                        alias.name if alias.asname else alias.name.split(".")[0]
                    )
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    try:
                        is_module = importlib.util.find_spec(full) is not None
                    except (ImportError, ValueError):
                        is_module = False
                    if is_module:
                        names[alias.asname or alias.name] = full
    return names


def _used_names(source: str) -> set[str]:
    import ast

    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}


class GuardedExecute(Execute):
    """nbgrader's Execute, hardened against submissions that fight the grader.

    - **Tampering.** A first cell records what the tests rely on before any of the
      notebook's cells runs, and every graded test cell gets a last line that checks it
      again and prints a marker derived from a per-run secret (initlab_grading.guard). A
      test cell whose marker is missing scores zero, with an error saying why, even when
      the notebook switched off IPython's error display. Both additions are removed
      again after execution: the gradebook, the autograded notebook and feedback show the
      test cells as written.
    - **A kernel that dies** (``os._exit``, a segfault, the memory limit): nbgrader would
      abort the whole submission. Here the cells that ran keep their outputs and scores,
      the cell that was running shows that the kernel died, and the test cells after it
      score zero as not run.
    - **Huge output**: a cell's outputs stop being collected after ``max_output_bytes``
      (the notebook, the gradebook's copy and feedback stay small) and say so.

    Each of these writes a line tagged ``INITLAB-REPORT`` to the log; grade.py puts those
    lines in its report.
    """

    max_output_bytes = Integer(
        2_000_000, help="Outputs kept per cell (bytes of text); the rest is dropped."
    ).tag(config=True)

    def preprocess(self, nb: NotebookNode, resources: ResourcesDict, km=None):
        import secrets

        from initlab_grading.guard import marker

        nonce = secrets.token_hex(16)
        names = _module_names(nb)
        originals = {}
        for cell in nb.cells:
            if _is_test(cell):
                gid = _grade_id(cell)
                originals[gid] = cell.source
                used = {n: m for n, m in names.items() if n in _used_names(cell.source)}
                cell.source = (
                    cell.source.rstrip("\n")
                    + f'\n__import__("initlab_grading.guard", fromlist=["_"]).finished({gid!r}, '
                    + f"{used!r})"
                )
        snapshot = nbformat_v4.new_code_cell(
            f'__import__("initlab_grading.guard", fromlist=["_"]).snapshot({nonce!r})'
        )
        nb.cells.insert(0, snapshot)
        nb.cells.append(
            nbformat_v4.new_code_cell(
                f'__import__("initlab_grading.guard", fromlist=["_"]).files({nonce!r})'
            )
        )
        self._dead_in = ""
        self._output_sizes: dict[int, int] = {}
        self._truncated: set[int] = set()
        self._notes: list[str] = []
        try:
            nb, resources = super().preprocess(nb, resources, km)
        finally:
            self.nb = nb
        first, last = nb.cells.pop(0), nb.cells.pop()
        self._files_note(last, marker(nonce, "files"))
        if any(o.output_type == "error" for o in first.get("outputs", [])):
            err = [o for o in first.outputs if o.output_type == "error"][0]
            self._note(f"the grading guard could not start ({err.ename}: {err.evalue})")
        for cell in nb.cells:
            name = _grade_id(cell) or f"cell {nb.cells.index(cell) + 1}"
            for out in cell.get("outputs", []):
                if out.output_type == "error" and out.ename == "MemoryError":
                    self._note(f"{name}: MemoryError (the memory limit or the machine's memory)")
                if out.output_type == "error" and out.ename == "CellTimeoutError":
                    self._note(f"{name}: stopped by the per-cell time limit ({self.timeout} s)")
            if not _is_test(cell):
                continue
            gid = _grade_id(cell)
            cell.source = originals.get(gid, cell.source)
            want = marker(nonce, gid)
            seen = False
            for out in cell.get("outputs", []):
                if out.output_type == "stream" and want in out.text:
                    seen = True
                    out.text = out.text.replace(want + "\n", "").replace(want, "")
            cell.outputs = [
                o for o in cell.get("outputs", []) if not (o.output_type == "stream" and not o.text)
            ]
            errors = [o for o in cell.outputs if o.output_type == "error"]
            stderr = any(o.output_type == "stream" and o.name == "stderr" for o in cell.outputs)
            if stderr and not errors:
                self._note(f"{gid}: wrote to stderr (a warning or progress bar): not scored")
            if errors and errors[-1].ename == "GradingIntegrityError":
                self._note(f"{gid}: scored 0, {errors[-1].evalue.split(': ', 1)[-1]}")
            elif not errors and not seen:
                evalue = (
                    "This test did not run to its end, yet no error was shown: your notebook "
                    "changes how cells run or how errors are displayed. The test scores zero."
                )
                cell.outputs.append(_error("GradingIntegrityError", evalue))
                self._note(f"{gid}: scored 0, the test stopped early without showing an error")
        for note in self._notes:
            self.log.warning("%s %s", REPORT_TAG, note)
        return nb, resources

    def _files_note(self, cell: NotebookNode, want: str) -> None:
        """A report line from guard.files' output: course files opened outside the
        submission's folder, and whether the system refused."""
        import json

        text = "".join(o.text for o in cell.get("outputs", []) if o.output_type == "stream")
        line = next((ln for ln in text.splitlines() if ln.startswith(want)), None)
        if line is None:
            return
        found = json.loads(line[len(want) :])
        if not found:
            return
        parts = [
            f"{path} ({how}, {'NOT refused' if may else 'refused'})"
            for path, (how, may) in list(found.items())[:6]
        ]
        more = f" and {len(found) - 6} more" if len(found) > 6 else ""
        fix = (
            "; grade with --isolate so that the system refuses"
            if any(may for _, may in found.values())
            else ""
        )
        self._note("opened course files outside its own folder: " + ", ".join(parts) + more + fix)

    def _note(self, text: str) -> None:
        if text not in self._notes:
            self._notes.append(text)

    def preprocess_cell(self, cell, resources, index):
        if self._dead_in:
            if cell.cell_type == "code":
                cell.outputs = (
                    [_error("KernelDied", f"Not run: the kernel died in {self._dead_in}.")]
                    if _is_test(cell)
                    else []
                )
            return cell, resources
        try:
            return super().preprocess_cell(cell, resources, index)
        except DeadKernelError:
            self._dead_in = _grade_id(cell) or f"cell {index}"
            cell.outputs.append(
                _error(
                    "KernelDied",
                    "The kernel died while running this cell (os._exit, a crash, or the "
                    "memory limit); the cells after it did not run.",
                )
            )
            self._note(
                f"kernel died in {self._dead_in}: scores of the cells before it are kept, "
                "the test cells after it scored 0"
            )
            return cell, resources

    def output(self, outs, msg, display_id, cell_index):
        size = len(str(msg.get("content", "")))
        total = self._output_sizes.get(cell_index, 0) + size
        self._output_sizes[cell_index] = total
        if total > self.max_output_bytes and msg["msg_type"] in (
            "stream",
            "display_data",
            "execute_result",
            "update_display_data",
        ):
            if cell_index not in self._truncated:
                self._truncated.add(cell_index)
                outs.append(
                    NotebookNode(
                        output_type="stream",
                        name="stderr",
                        text=f"\n[Output truncated: more than {self.max_output_bytes} bytes.]\n",
                    )
                )
                cell = self.nb.cells[cell_index]
                name = _grade_id(cell) or f"cell {cell_index}"
                self._note(f"{name}: output truncated at {self.max_output_bytes} bytes")
            return None
        return super().output(outs, msg, display_id, cell_index)
