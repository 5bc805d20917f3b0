"""The kit's nbgrader preprocessors (configured in nbgrader_config.py).

HideHiddenTests keeps hidden tests hidden in generated feedback. By default nbgrader's
feedback shows the autograded notebook, in which the test cells carry their hidden tests
again, and a failing hidden test shows a traceback through that code and through the
reference in this package. This preprocessor removes the hidden region from each test
cell, cuts the traceback of a failed test down to its message (the checks' messages say
what is wrong without showing the test), keeps of such a cell's printed output only the
lines its own code prints (``print("Visible tests passed.")``), blanks out, in every
cell's output, each line that quotes a line of a hidden test, and shows the checks'
messages at the instructor's level (``reveal``: the expected value, the formula, or only
the diagnosis; initlab_grading.checking.reveal).
"""

from __future__ import annotations

import ast
import os
import re
import time
from pathlib import Path

from nbclient.exceptions import DeadKernelError
from nbclient.util import run_sync
from nbconvert.exporters.exporter import ResourcesDict
from nbformat import v4 as nbformat_v4
from nbformat.notebooknode import NotebookNode
from nbgrader.preprocessors import ClearHiddenTests, DeduplicateIds, Execute, OverwriteCells
from nbgrader.preprocessors.base import NbGraderPreprocessor
from traitlets import Bool, Enum, Integer

from initlab_grading.checking.reveal import LEVELS, render
from initlab_grading.course.layout import grade_id, is_test_cell
from initlab_grading.grading.remote import KernelGone, KernelLink, error_output, run_test_cell
from initlab_grading.grading.sandbox import HIDE_GRADER_VARIABLE, folder_state
from initlab_grading.grading.screen import review_notes

HIDDEN_NOTE = "# (Hidden tests ran here. Their code is not shown; their messages are below.)"
QUOTE_NOTE = "[a line quoting hidden test code is not shown]"
GUARD_CALLS = (
    '__import__("initlab_grading.grading.guard"',
    "__import__('sys').modules['_initlab_guard']",
)
"""How the lines GuardedExecute adds to a notebook while grading begin."""
DROPPED_NOTE = "[other output of this test cell is not shown in feedback]"
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_MIN_QUOTED = 12
"""Lines of a hidden test shorter than this (``)``, ``else:``) are not looked for."""


def _printed_constants(source: str) -> set[str]:
    """The lines a cell prints with ``print("constant", ...)``: the kit's own messages."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    lines: set[str] = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "print"
            and node.args
            and not node.keywords
            and all(isinstance(a, ast.Constant) and isinstance(a.value, str) for a in node.args)
        ):
            lines.update(" ".join(a.value for a in node.args).splitlines())
    return lines


def _notebook_frames(traceback: list[str]) -> list[str]:
    """An IPython traceback without the frames of installed files (``File /path/...``):
    the frames of the notebook's own cells (``Cell In[...]``) and the message stay, the
    grading machine's paths and library code do not reach feedback."""
    return [entry for entry in traceback if not _ANSI.sub("", entry).lstrip().startswith("File ")]


class HideHiddenTests(ClearHiddenTests):
    """Remove hidden test code, and what could show it, from feedback.

    - A test cell with a hidden region: the region is removed from its source; of its
      printed output only the lines the cell's own ``print`` calls with constant text
      print are kept (the rest came from code the tests called, which may be the
      student's); an error shows ``ename: evalue`` only; rich output is dropped.
    - Every cell: an error's traceback keeps the notebook's own frames and the message,
      not the frames of installed files (the checks, the library, with their paths).
    - Every cell: an output line that contains a line of any hidden test (stripped, at
      least 12 characters), or a line the grading guard added to the notebook, is
      replaced by a note, so a notebook that prints the source of the test calling it
      (``inspect``, ``linecache``, IPython's ``In``) shows nothing of it.
    - Every cell: each output's text (messages, tracebacks, printed and displayed text)
      is shown at the level ``reveal``: the spans a check marked as the expected value or
      the formula are removed as that level says, and no mark is left
      (initlab_grading.checking.reveal).
    A notebook that encodes what it read (base64, reversed) is not recognised; see
    docs/security.md.
    """

    reveal = Enum(
        LEVELS,
        default_value="expected",
        help="How much the checks' failure messages reveal in feedback: 'expected' (the "
        "expected value, the formula and the diagnosis), 'formula' (no expected value) or "
        "'diagnosis' (neither the expected value nor the formula).",
    ).tag(config=True)

    def preprocess(self, nb: NotebookNode, resources: ResourcesDict):
        self._hidden_lines = set()
        for cell in nb.cells:
            if cell.cell_type == "code" and self.begin_test_delimeter in cell.source:
                inside = False
                for line in cell.source.splitlines():
                    if self.begin_test_delimeter in line:
                        inside = True
                    elif self.end_test_delimeter in line:
                        inside = False
                    elif inside and len(line.strip()) >= _MIN_QUOTED:
                        self._hidden_lines.add(line.strip())
        return super().preprocess(nb, resources)

    def _redact(self, text: str) -> str:
        if not text:
            return text
        out = []
        for line in text.split("\n"):
            plain = _ANSI.sub("", line)  # tracebacks are coloured
            if any(g in plain for g in GUARD_CALLS) or any(h in plain for h in self._hidden_lines):
                out.append(QUOTE_NOTE)
            else:
                out.append(line)
        return render("\n".join(out), self.reveal)

    def _redact_output(self, output: NotebookNode) -> None:
        if output.output_type == "stream":
            output.text = self._redact(output.text)
        elif output.output_type == "error":
            output.evalue = self._redact(output.evalue)
            output.traceback = [self._redact(line) for line in output.traceback]
        elif "data" in output:
            for mime, value in list(output.data.items()):
                if isinstance(value, str) and mime.startswith("text/"):
                    output.data[mime] = self._redact(value)
                elif isinstance(value, list):
                    output.data[mime] = [self._redact(v) for v in value]

    def preprocess_cell(
        self, cell: NotebookNode, resources: ResourcesDict, cell_index: int
    ) -> tuple[NotebookNode, ResourcesDict]:
        if cell.cell_type != "code":
            return cell, resources
        original = cell.source
        if self._remove_hidden_test_region(cell):
            cell.source = cell.source.rstrip() + "\n" + HIDDEN_NOTE
            own = _printed_constants(original)
            kept, dropped = [], False
            for output in cell.get("outputs", []):
                if output.output_type == "stream":
                    lines = output.text.splitlines()
                    mine = [ln for ln in lines if ln in own]
                    dropped = dropped or len(mine) < len([ln for ln in lines if ln.strip()])
                    if mine:
                        output.text = "\n".join(mine) + "\n"
                        kept.append(output)
                elif output.output_type == "error":
                    output.traceback = [f"{output.ename}: {output.evalue}"]
                    kept.append(output)
                else:
                    dropped = True
            if dropped:
                kept.insert(
                    0, NotebookNode(output_type="stream", name="stdout", text=DROPPED_NOTE + "\n")
                )
            cell.outputs = kept
        for output in cell.get("outputs", []):
            if output.output_type == "error":
                output.traceback = _notebook_frames(output.traceback)
            self._redact_output(output)
        return cell, resources


INSTRUCTOR_TAG = "instructor-only"
"""Cell tag of the source notebooks' instructor checks: assertions that the statements a
notebook makes about its own outputs hold. They run in solutions/ (nbval executes them in
CI) and never reach the release."""


class DropInstructorCells(NbGraderPreprocessor):
    """Remove the cells tagged ``instructor-only`` (see :data:`INSTRUCTOR_TAG`) from the
    student version. First in ``GenerateAssignment.preprocessors``, so nbgrader neither
    locks, checksums nor records them. (An nbgrader preprocessor: nbconvert's own are
    disabled unless enabled, and nbgrader registers them as they are.)"""

    def preprocess(self, nb: NotebookNode, resources: ResourcesDict):
        nb.cells = [c for c in nb.cells if INSTRUCTOR_TAG not in c.metadata.get("tags", [])]
        return nb, resources


_MARKDOWN_TAGS = frozenset(
    "a abbr b blockquote br code del div em h1 h2 h3 h4 h5 h6 hr i img li ol p pre s span "
    "strong sub sup table tbody td th thead tr ul".split()
)
_MARKDOWN_ATTRIBUTES = {"a": ["href", "title"], "img": ["src", "alt", "title"], "*": ["class"]}


class SanitizeMarkdown(NbGraderPreprocessor):
    """Markdown cells that carry raw HTML or a ``javascript:`` link, rendered to HTML and
    cleaned with bleach: tags a rendered markdown cell uses stay, anything else (a
    ``<script>``, an ``on*`` handler, a ``javascript:`` URL) becomes inert text.

    nbgrader's feedback and formgrade templates render markdown cells without nbconvert's
    ``sanitize_html`` (which covers outputs only), and any markdown cell of a submission
    may hold a student's text. Registered as an ``HTMLExporter`` preprocessor, so it runs
    for ``generate_feedback`` and for formgrader's view alike."""

    def preprocess_cell(self, cell: NotebookNode, resources: ResourcesDict, index: int):
        text = cell.source if cell.cell_type == "markdown" else ""
        if "<" in text or "javascript:" in text.lower():
            import bleach
            from nbconvert.filters.markdown_mistune import markdown2html_mistune

            clean = bleach.clean(
                markdown2html_mistune(text),
                tags=_MARKDOWN_TAGS,
                attributes=_MARKDOWN_ATTRIBUTES,
                strip=False,
            )
            # one raw HTML block for the template's own markdown pass: no blank lines
            cell.source = "<div>\n" + "\n".join(ln for ln in clean.splitlines() if ln.strip())
            cell.source += "\n</div>"
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

        def position(name: str) -> int | None:
            for idx, cell in enumerate(nb.cells):
                if grade_id(cell) == name:
                    return idx
            return None

        for order, name in enumerate(source_ids):
            if name not in grade_cells or position(name) is not None:
                continue
            self.log.warning("Missing grade cell %s encountered, adding to notebook", name)
            cell = self.missing_cell_transform(
                source_cells[order],
                grade_cells[name].max_score,
                is_solution=name in solution_ids,
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
        submitted = {grade_id(cell) for cell in nb.cells}
        for task in source_nb.task_cells:
            if task.name not in submitted:
                cell = source_cells[source_ids.index(task.name)]
                nb.cells.append(self.missing_cell_transform(cell, task.max_score, is_task=True))
        return nb, resources


# --------------------------------------------------------------------------------------
# Grading hostile or broken submissions

REPORT_TAG = "INITLAB-REPORT"
"""Log lines that start with this tag become lines of grade.py's report."""
KILLED_NOTE = "killed by SIGKILL"
"""In the report line of a kernel that SIGKILL ended: grade.py grades it again."""


def _module_names(nb: NotebookNode) -> dict[str, str]:
    """Names that the notebook's locked, ungraded code cells (the instructor's setup) bind
    to modules: {"np": "numpy", "checks": "initlab.checks", ...}."""
    setup = []
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if cell.cell_type == "code" and meta.get("locked") and not meta.get("grade"):
            setup.append(cell.source)
    return _modules_bound(setup)


def _modules_bound(sources: list[str]) -> dict[str, str]:
    """Names that these cells' import statements bind to modules."""
    import importlib.util

    names: dict[str, str] = {}
    for source in sources:
        try:
            tree = ast.parse(source)
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


def _trusted_sources(resources: ResourcesDict) -> tuple[dict[str, str], dict[str, str]]:
    """For an assignment whose grader sets ``CHECKS_OUTSIDE_KERNEL``: {grade_id: source}
    of its test cells, to run outside the kernel, and the modules its setup cells bind
    (``_modules_bound``), both from the gradebook's copy of the notebook (not the
    submitted one). Empty for the others."""
    import importlib

    from nbgrader.api import Gradebook

    info = resources.get("nbgrader") or {}
    assignment, notebook, db_url = (info.get(k) for k in ("assignment", "notebook", "db_url"))
    if not (assignment and notebook and db_url):
        return {}, {}
    try:
        grader = importlib.import_module(f"initlab_grading.assignments.{assignment}.grader")
    except ImportError:
        return {}, {}
    if not getattr(grader, "CHECKS_OUTSIDE_KERNEL", False):
        return {}, {}
    with Gradebook(db_url) as gb:
        found = gb.find_notebook(notebook, assignment)
        graded = {c.name for c in found.grade_cells}
        tests = {c.name for c in found.grade_cells if c.cell_type == "code"}
        tests -= {c.name for c in found.solution_cells}
        code = [c for c in found.source_cells if c.cell_type == "code"]
        sources = {c.name: c.source for c in code if c.name in tests}
        setup = [c.source for c in code if c.locked and c.name not in graded]
        return sources, _modules_bound(setup)


GUARD_SOURCE = Path(__file__).with_name("guard.py").read_text(encoding="utf-8")
"""The grading guard, loaded as text into a kernel that cannot import initlab_grading."""


def _kernel_environment() -> dict[str, str]:
    """This process's environment, asking the sandbox launcher to keep initlab_grading
    out of the kernel's reach (its ``HIDE_GRADER_VARIABLE``)."""
    return {**os.environ, HIDE_GRADER_VARIABLE: "1"}


_CAPPED_KINDS = frozenset(
    {"stream", "display_data", "execute_result", "update_display_data", "error"}
    | {"comm_open", "comm_msg", "comm_close"}
)
"""Kernel messages that count against a cell's output cap (GuardedExecute)."""


class GuardedExecute(Execute):
    """nbgrader's Execute, hardened against submissions that fight the grader.

    - **Tampering.** A first cell records what the tests rely on before any of the
      notebook's cells runs, and every graded test cell gets a last line that checks it
      again and prints a marker derived from a per-run secret (initlab_grading.grading.guard). A
      test cell whose marker is missing scores zero, with an error saying why, even when
      the notebook switched off IPython's error display. Both additions are removed
      again after execution: the gradebook, the autograded notebook and feedback show the
      test cells as written.
    - **A kernel that dies** (``os._exit``, a segfault, the memory limit): nbgrader would
      abort the whole submission. Here the cells that ran keep their outputs and scores,
      the cell that was running shows that the kernel died, and the test cells after it
      score zero as not run.
    - **Huge output**: a cell's messages of every kind (streams, displays, display
      updates, comms) stop being collected after ``max_output_bytes``, and an error's text
      is cut to ``max_error_chars`` (the notebook, the gradebook's copy, feedback and the
      grading process stay small), with a report line.
    - **After the kernel**, before nbgrader (as root) writes the graded notebook into the
      kernel's folder and chmods the files there: every process of the kernel's sandbox
      user id is ended (--isolate), and symbolic and hard links, sockets, fifos and every
      file the kernel created or changed are removed (``sandbox.secure_folder``), so root
      follows no link and feedback copies nothing the notebook wrote.
    - **Code no honest answer needs** in a cell the student could edit (naming the hidden
      tests' package, tracing hooks, the kernel's shell...; assigning a module's attribute;
      rebinding a module name the tests use) gets a report line for the instructor's
      review (initlab_grading.grading.screen), scores unchanged.
    - A kernel ended by SIGKILL (the out-of-memory killer's signal) is named in its report
      line, and grade.py grades the submission again.

    Each of these writes a line tagged ``INITLAB-REPORT`` to the log; grade.py puts those
    lines in its report.
    """

    max_output_bytes = Integer(
        2_000_000, help="Outputs kept per cell (bytes of text); the rest is dropped."
    ).tag(config=True)
    max_error_chars = Integer(
        20_000, help="Characters kept of an error's message and of each traceback line."
    ).tag(config=True)
    store_widget_state = Bool(
        False,
        help="Widget state is not kept: grading needs none, and a submission's comm "
        "messages could fill the grader's memory or break nbclient's export of it.",
    ).tag(config=True)

    def preprocess(self, nb: NotebookNode, resources: ResourcesDict, km=None):
        import secrets

        from initlab_grading.grading.guard import marker

        nonce = secrets.token_hex(16)
        names = _module_names(nb)
        used: dict[str, dict[str, str]] = {}  # test cell -> the setup's modules it uses
        for cell in filter(is_test_cell, nb.cells):
            in_cell = _used_names(cell.source)
            used[grade_id(cell)] = {n: m for n, m in names.items() if n in in_cell}
        reviews = review_notes(
            nb.cells,
            lambda cell, i: grade_id(cell) or f"cell {i + 1}",
            {n: m for modules in used.values() for n, m in modules.items()},
        )
        self._trusted, self._modules = _trusted_sources(resources)
        guard = '__import__("initlab_grading.grading.guard", fromlist=["_"])'
        if self._trusted:  # the kernel cannot import initlab_grading: the guard goes as text
            guard = GUARD_CALLS[1]
        originals = {}
        for cell in filter(is_test_cell, nb.cells):
            gid = grade_id(cell)
            originals[gid] = cell.source
            if gid in self._trusted:
                continue
            cell.source = cell.source.rstrip("\n") + f"\n{guard}.finished({gid!r}, {used[gid]!r})"
        snapshot = nbformat_v4.new_code_cell(f"{guard}.snapshot({nonce!r})")
        nb.cells.insert(0, snapshot)
        nb.cells.append(nbformat_v4.new_code_cell(f"{guard}.files({nonce!r})"))
        self._dead_in = ""
        self._link: KernelLink | None = None
        self._output_sizes: dict[int, int] = {}
        self._truncated: set[int] = set()
        self._notes: list[str] = reviews
        folder = (resources.get("metadata") or {}).get("path") or os.getcwd()
        before = folder_state(folder)
        try:
            nb, resources = super().preprocess(nb, resources, km)
        finally:
            self.nb = nb
            self._after_kernel(folder, before)
        first, last = nb.cells.pop(0), nb.cells.pop()
        self._files_note(last, marker(nonce, "files"))
        if any(o.output_type == "error" for o in first.get("outputs", [])):
            err = [o for o in first.outputs if o.output_type == "error"][0]
            self._note(f"the grading guard could not start ({err.ename}: {err.evalue})")
        for cell in nb.cells:
            name = grade_id(cell) or f"cell {nb.cells.index(cell) + 1}"
            for out in cell.get("outputs", []):
                if out.output_type == "error" and out.ename == "MemoryError":
                    self._note(f"{name}: MemoryError (the memory limit or the machine's memory)")
                if out.output_type == "error" and out.ename == "CellTimeoutError":
                    self._note(f"{name}: stopped by the per-cell time limit ({self.timeout} s)")
            if not is_test_cell(cell):
                continue
            gid = grade_id(cell)
            cell.source = originals.get(gid, cell.source)
            want = marker(nonce, gid)
            seen = gid in self._trusted  # run here, not in the kernel: no marker
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
                cell.outputs.append(error_output("GradingIntegrityError", evalue))
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

    def _after_kernel(self, folder: str, before: dict) -> None:
        """Once the kernel is gone, before nbgrader (as root) writes the graded notebook
        into the kernel's folder and chmods its files: end every process of the kernel's
        user id (--isolate), then remove what the kernel left there (symbolic or hard
        links to other files, sockets, files it created or changed; they would otherwise
        be followed by root's writes, or copied into feedback) and give the folder back."""
        from initlab_grading.grading.sandbox import UID_VARIABLE, kill_user, secure_folder

        uid = os.environ.get(UID_VARIABLE, "")
        if uid.isdigit() and os.geteuid() == 0:
            left = kill_user(int(uid))
            if left:
                raise RuntimeError(
                    f"processes {left} of the sandbox user {uid} could not be ended; "
                    "nothing is written into the submission's folder"
                )
        owner = os.stat(os.path.dirname(os.path.abspath(folder)))
        removed = secure_folder(folder, owner.st_uid, owner.st_gid, before)
        if removed:
            more = f" and {len(removed) - 6} more" if len(removed) > 6 else ""
            self._note(
                "files the notebook left in its folder were removed (not graded, not in "
                "feedback): " + ", ".join(removed[:6]) + more
            )

    def _kernel_signal(self) -> int | None:
        """The signal that ended the kernel process, if one did (None if unknown)."""
        try:
            code = self.km.provisioner.process.poll()
        except AttributeError:
            return None
        return -code if code is not None and code < 0 else None

    def _note(self, text: str) -> None:
        if text not in self._notes:
            self._notes.append(text)

    def preprocess_cell(self, cell, resources, index):
        if self._dead_in:
            if cell.cell_type == "code":
                cell.outputs = (
                    [error_output("KernelDied", f"Not run: the kernel died in {self._dead_in}.")]
                    if is_test_cell(cell)
                    else []
                )
            return cell, resources
        try:
            if index == 0 and self._trusted:  # before the snapshot, out of the history
                self._link = KernelLink(self, self._deadline())
                self._link.load("_initlab_guard", GUARD_SOURCE)
                self._link.install()
            if is_test_cell(cell) and grade_id(cell) in self._trusted:
                return self._run_outside(cell, resources, index)
            return super().preprocess_cell(cell, resources, index)
        except (DeadKernelError, KernelGone):
            self._dead_in = grade_id(cell) or f"cell {index}"
            cell.outputs.append(
                error_output(
                    "KernelDied",
                    "The kernel died while running this cell (os._exit, a crash, or the "
                    "memory limit); the cells after it did not run.",
                )
            )
            how = ""
            if self._kernel_signal() == 9:
                how = f" ({KILLED_NOTE}: the machine's out-of-memory killer or the notebook)"
            self._note(
                f"kernel died in {self._dead_in}{how}: scores of the cells before it are "
                "kept, the test cells after it scored 0"
            )
            return cell, resources

    async def async_start_new_kernel(self, **kwargs):
        """For checks outside the kernel, a kernel whose path leaves out autograder/: it
        cannot import the references or the checks (``_kernel_environment``)."""
        if self._trusted and "env" not in kwargs:
            kwargs["env"] = _kernel_environment()
        return await super().async_start_new_kernel(**kwargs)

    start_new_kernel = run_sync(async_start_new_kernel)

    def _run_outside(self, cell: NotebookNode, resources: ResourcesDict, index: int):
        """A test cell of an assignment whose checks run outside the kernel: its
        gradebook source runs in this process (initlab_grading.grading.remote)."""
        gid = grade_id(cell)
        source = self._trusted[gid]
        cell.outputs = run_test_cell(self._link, source, self._modules, gid, self._deadline())
        return cell, resources

    def _deadline(self) -> float:
        """When a request to the kernel made now runs out of the per-cell time limit."""
        return time.monotonic() + (self.timeout or 300)

    def process_message(self, msg: dict, cell: NotebookNode, cell_index: int):
        """Every message a cell sends counts against its ``max_output_bytes``, whatever
        its kind: streams, displays, display updates (which nbclient applies to earlier
        outputs before recording anything), comm messages (whose widget state nbclient
        keeps) and errors. Past the cap, messages are dropped, except errors, which a
        test cell's score rests on: their text is cut to ``max_error_chars``."""
        kind = msg["msg_type"]
        if kind in _CAPPED_KINDS:
            content = msg.get("content", {})
            size = len(str(content)) + sum(len(b) for b in msg.get("buffers") or ())
            total = self._output_sizes.get(cell_index, 0) + size
            self._output_sizes[cell_index] = total
            if kind == "error":
                self._cut_error(content, size, cell, cell_index)
            elif total > self.max_output_bytes:
                self._truncate(cell, cell_index, kind)
                return None
        try:
            return super().process_message(msg, cell, cell_index)
        except Exception as err:  # nbclient trusts a widget's comm_open to be well formed
            if not kind.startswith("comm"):
                raise
            name = grade_id(cell) or f"cell {cell_index}"
            self._note(f"{name}: a malformed {kind} message was ignored ({err!r})")
            return None

    def _truncate(self, cell: NotebookNode, cell_index: int, kind: str) -> None:
        if cell_index in self._truncated:
            return
        self._truncated.add(cell_index)
        cell.outputs.append(
            NotebookNode(
                output_type="stream",
                name="stderr",
                text=f"\n[Output truncated: more than {self.max_output_bytes} bytes.]\n",
            )
        )
        name = grade_id(cell) or f"cell {cell_index}"
        what = "" if kind in ("stream", "display_data", "execute_result") else f" ({kind})"
        self._note(f"{name}: output truncated at {self.max_output_bytes} bytes{what}")

    def _cut_error(self, content: dict, size: int, cell: NotebookNode, cell_index: int) -> None:
        cap = self.max_error_chars
        if size <= cap:
            return
        evalue = str(content.get("evalue", ""))
        if len(evalue) > cap:
            content["evalue"] = evalue[:cap] + f" [... {len(evalue) - cap} characters cut]"
        lines = [str(line)[:cap] for line in (content.get("traceback") or [])]
        content["traceback"] = lines[:20] + (lines[-20:] if len(lines) > 40 else lines[20:])
        name = grade_id(cell) or f"cell {cell_index}"
        self._note(f"{name}: an error message of {size} characters cut to {cap}")
