"""Hostile and broken submissions graded beside a normal one by initlab_grading.grading.grade, in
one class run (2 workers): each scores zero on what it broke and full marks elsewhere,
the normal submission scores what it scores alone, the gradebook keeps every row, and the
report has a line saying what happened (initlab_grading.course.hostile). Links out of
the kernel's folder change no file outside it, the grader's secrets never reach a kernel,
and the feedback of a notebook that prints its hidden tests' source shows none of it.

As root the run uses --isolate (with an interpreter other users can run, see
_kernel_python); otherwise it grades without it, and the isolation test and the file
snooper, which would really damage other files, are skipped with the reason. (The links
sample is graded either way: what it points at lies in this test's own course folder.)"""

from __future__ import annotations

import html as html_lib
import json
import os
import re
import shutil
import site
import sqlite3
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest

from conftest import make_course
from initlab_grading.course import build, hostile, layout
from initlab_grading.course.results import collect_results
from initlab_grading.course.samples import samples_for
from initlab_grading.grading import grade, kernelspecs, worker_pool

ASSIGNMENT = hostile.ASSIGNMENT
NORMAL = ("reference",)
SNOOP = "snoop"
UNTOUCHED = "nobody wrote here\n"
SECRET = "initlab-test-secret-6f1c"


def _kernel_python(root: Path, folder: Path) -> tuple[str | None, str]:
    """An interpreter that an isolated kernel (another user id) can run: this one, or a
    virtual environment made from the system's Python of the same version that sees this
    environment's packages (where this one lives under /root, as with pyenv). Returns
    (interpreter or None for this one, "") or (None, why isolation cannot be tested)."""
    if os.geteuid() != 0:
        return None, "--isolate runs kernels as another user: needs root"
    problem = kernelspecs.check_isolation(root)
    if not problem:
        return None, ""
    system = shutil.which(
        f"python{sys.version_info.major}.{sys.version_info.minor}", path="/usr/bin"
    )
    if system is None:
        return None, problem
    folder.chmod(0o755)
    venv = folder / "kernel-python"
    subprocess.run([system, "-m", "venv", "--without-pip", str(venv)], check=True)
    (found,) = venv.glob("lib/python*/site-packages")
    found.joinpath("grading-env.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    python = str(venv / "bin" / "python")
    problem = kernelspecs.check_isolation(root, python)
    return (python, "") if not problem else (None, problem)


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    base = tmp_path_factory.getbasetemp()
    root = make_course(tmp_path_factory.mktemp("hostile-course"), [ASSIGNMENT])
    # A course root on a shared server is reachable by every user; so is this one (pytest
    # makes its folders private), so that only grade.py's isolation protects it.
    for folder in [root, *root.parents]:
        if folder == base.parent.parent:
            break
        folder.chmod(folder.stat().st_mode | 0o755)
    normal = [s for s in samples_for(ASSIGNMENT) if s.student in NORMAL]
    build.write_submissions(root, ASSIGNMENT, normal)
    python, no_isolation = _kernel_python(root, tmp_path_factory.mktemp("kernel"))
    # Without isolation the file snooper would really write into the gradebook and another
    # student's submission: it is only graded where the system can refuse.
    hostile.write(root, [s for s in hostile.SAMPLES if SNOOP != s.student or not no_isolation])
    (root / hostile.ESCAPE_TARGET).write_text(UNTOUCHED)
    report = root / "report.json"
    args = [ASSIGNMENT, "--root", str(root), "--workers", "2", "--timeout", "300"]
    args += ["--cell-timeout", "10", "--memory-limit", "1.5", "--file-limit", "0.05"]
    args += ["--report", str(report)]
    if not no_isolation:
        args += ["--isolate"] + (["--kernel-python", python] if python else [])
    gradebook_mode = (root / "gradebook.db").stat().st_mode
    saved = os.environ.get(hostile.SECRET_VARIABLE)
    os.environ[hostile.SECRET_VARIABLE] = SECRET  # a grader's database password
    try:
        code = grade.main(args)
    finally:
        if saved is None:
            os.environ.pop(hostile.SECRET_VARIABLE)
        else:
            os.environ[hostile.SECRET_VARIABLE] = saved
    rows = {r["student"]: r for r in json.loads(report.read_text())}
    return root, code, rows, no_isolation, gradebook_mode


def _scores(root: Path, students: list[str]) -> dict[str, dict[str, float]]:
    results = collect_results(root, ASSIGNMENT, students)
    tests = layout.test_cell_ids(root, ASSIGNMENT)
    return {r.student: {g: r.cells[g].score for g in tests} for r in results}


def test_normal_submissions_score_what_they_score_alone(graded):
    root, code, rows, *_ = graded
    assert code == 1  # two hostile submissions cannot be graded
    problems = build.compare_with_samples(
        collect_results(root, ASSIGNMENT, list(NORMAL)),
        [s for s in samples_for(ASSIGNMENT) if s.student in NORMAL],
        layout.test_cell_ids(root, ASSIGNMENT),
    )
    assert problems == []
    assert all(rows[s]["status"] == "graded" and rows[s]["notes"] == [] for s in NORMAL)


@pytest.mark.parametrize("sample", hostile.SAMPLES, ids=lambda s: s.student)
def test_hostile_submission_loses_what_it_broke_and_is_reported(graded, sample):
    root, _, rows, no_isolation, _ = graded
    if sample.student == SNOOP and no_isolation:
        pytest.skip(f"the file snooper is graded only with --isolate: {no_isolation}")
    row = rows[sample.student]
    if sample.note:
        assert any(sample.note in note for note in row["notes"]), row
    if not sample.graded:
        assert row["status"] == "failed" and row["attempts"] == 0
        return
    assert row["status"] == "graded", row
    scores = _scores(root, [sample.student])[sample.student]
    maxima = {
        g: c.max_score for g, c in collect_results(root, ASSIGNMENT, ["reference"])[0].cells.items()
    }
    want = {g: 0.0 if g in sample.lost else maxima[g] for g in scores}
    assert scores == want, row["notes"]


def test_gradebook_keeps_every_row(graded):
    root, _, rows, *_ = graded
    db = sqlite3.connect(root / "gradebook.db")
    students = {r[0] for r in db.execute("SELECT id FROM student")}
    submitted = {
        r[0]
        for r in db.execute(
            "SELECT student.id FROM submitted_assignment JOIN student "
            "ON submitted_assignment.student_id = student.id"
        )
    }
    graded_ones = {s.student for s in hostile.SAMPLES if s.graded and s.student in rows}
    graded_ones |= set(NORMAL)
    assert submitted == graded_ones
    assert graded_ones <= students
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_isolated_kernel_cannot_read_or_write_other_files(graded):
    root, _, rows, no_isolation, _ = graded
    if no_isolation:
        pytest.skip(f"graded without --isolate: {no_isolation}")
    nb = (root / "autograded" / SNOOP / ASSIGNMENT / hostile.NOTEBOOK).read_text()
    line = next(ln for ln in json.loads(nb)["cells"] if "SNOOPED" in str(ln.get("outputs")))
    text = str(line["outputs"])
    assert "PermissionError" in text and "written" not in text and "': 1" not in text, text
    (line,) = [n for n in rows[SNOOP]["notes"] if "outside its own folder" in n]
    assert "refused" in line and "NOT refused" not in line, line
    assert (
        "pwned"
        not in (root / "submitted" / "reference" / ASSIGNMENT / hostile.NOTEBOOK).read_text()
    )
    assert not (root / "autograded" / "reference" / ASSIGNMENT / "pwned.txt").exists()
    for name in worker_pool.PRIVATE_PATHS:
        if (root / name).exists():
            assert (root / name).stat().st_mode & 0o077 == 0, name
    # and the student's own folder came back to the course's owner
    assert (root / "autograded" / SNOOP).stat().st_uid == root.stat().st_uid


def _entries(folder: Path) -> dict[str, str]:
    kinds = {}
    for path in folder.rglob("*"):
        kinds[str(path.relative_to(folder))] = (
            "link" if path.is_symlink() else "file" if path.is_file() else "dir"
            if path.is_dir() else "other"
        )  # fmt: skip
    return kinds


def test_links_out_of_the_folder_change_nothing_and_secrets_stay_out(graded):
    """The links sample replaced its notebook by a link to a course file and linked the
    gradebook: nbgrader, as root, would have overwritten the one and chmod'ed the other.
    Its folder holds regular files only afterwards, and its kernel saw none of the
    grader's secrets (PGPASSWORD was set while grading)."""
    root, _, rows, no_isolation, gradebook_mode = graded
    assert (root / hostile.ESCAPE_TARGET).read_text() == UNTOUCHED
    mode = (root / "gradebook.db").stat().st_mode
    if no_isolation:
        assert mode == gradebook_mode, oct(mode)
    else:
        assert mode & 0o077 == 0, oct(mode)
    folder = root / "autograded" / "links-out" / ASSIGNMENT
    assert _entries(folder) == {hostile.NOTEBOOK: "file", "timestamp.txt": "file"}
    text = (folder / hostile.NOTEBOOK).read_text()
    assert "ENVIRONMENT" in text and "PYTHONSAFEPATH" in text  # the kernel's, printed
    assert SECRET not in text and hostile.SECRET_VARIABLE not in text
    (line,) = [n for n in rows["links-out"]["notes"] if "were removed" in n]
    for name in ("gradebook-link (a symbolic link)", "a-fifo (not a regular file)",
                 "moved.ipynb (created while grading)"):  # fmt: skip
        assert name in line, line


def test_shipped_modules_are_neither_copied_nor_imported(graded):
    root, *_ = graded
    folder = root / "autograded" / "shipped-modules" / ASSIGNMENT
    assert _entries(folder) == {hostile.NOTEBOOK: "file", "timestamp.txt": "file"}


def test_the_kernel_never_sees_hidden_test_code(graded):
    """The leaking sample looks for a hidden test among the callers of its gradient, to
    raise its source, and prints IPython's input history. The tests run outside the
    kernel: no caller is a test, the history holds none of their code, and neither do the
    autograded notebook and its feedback."""
    root, *_ = graded
    student = "leaks-hidden-tests"
    layout.nbgrader(root, "generate_feedback", ASSIGNMENT, f"--student={student}", "--force")
    page = (root / "feedback" / student / ASSIGNMENT / f"{ASSIGNMENT}.html").read_text()
    shown = " ".join(html_lib.unescape(re.sub(r"<[^>]+>", " ", page)).split())
    graded_nb = nbformat.read(root / "autograded" / student / ASSIGNMENT / hostile.NOTEBOOK, 4)
    outputs = json.dumps([cell.get("outputs", []) for cell in graded_nb.cells])
    hidden = {
        line.strip()
        for cell in nbformat.read(root / "source" / ASSIGNMENT / hostile.NOTEBOOK, 4).cells
        for line in cell.source.split("### BEGIN HIDDEN TESTS")[-1].splitlines()
        if "BEGIN HIDDEN TESTS" in cell.source and len(line.strip()) >= 12
        and "END HIDDEN TESTS" not in line
    }  # fmt: skip
    assert len(hidden) >= 3 and "HISTORY" in outputs  # the history was printed
    assert [h for h in hidden if json.dumps(h)[1:-1] in outputs] == []
    assert [h for h in hidden if h in shown] == []
    assert "initlab_grading" not in page
    assert "Visible tests passed." in shown


_GUARD_SCRIPT = """
from initlab_grading.grading import guard
guard.snapshot("nonce")
import torch, torch.func, torch.autograd.functional
x = torch.randn(3)
torch.func.jacrev(torch.sin)(x), torch.autograd.functional.jacobian(torch.sin, x)
print("CLEAN", guard.problems())
torch.allclose = lambda *a, **k: True
print("PATCHED", guard.problems())
"""


def test_guard_accepts_torch_internals_and_flags_a_replacement(tmp_path):
    """torch's modules hold functions of frozen standard modules (abc.abstractmethod, whose
    code says "<frozen abc>"): not a replacement. A lambda in torch's namespace is."""
    work = tmp_path / "autograded" / "student" / ASSIGNMENT
    work.mkdir(parents=True)
    out = subprocess.run(
        [sys.executable, "-c", _GUARD_SCRIPT],
        cwd=work,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    ).stdout
    assert "CLEAN []" in out, out
    assert "torch.allclose was replaced by notebook code" in out, out


class _ActiveContent(HTMLParser):
    """Collects what a browser would run from an HTML page: the text of <script>
    elements and ``on*`` event-handler attributes (escaped text is not collected)."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[str] = []
        self.handlers: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._in_script = tag == "script"
        if self._in_script:
            self.scripts.append("")
        self.handlers += [f"{tag} {k}={v}" for k, v in attrs if k.lower().startswith("on")]

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.scripts[-1] += data


def _formgrader_html(root: Path, student: str) -> str:
    """The page formgrader serves for a submitted notebook: its HTMLExporter with the
    course's configuration and the formgrade template, as the formgrader extension sets
    them up."""
    from nbconvert.exporters import HTMLExporter
    from nbgrader.server_extensions.formgrader import handlers

    config = layout.course_config(root)
    config.HTMLExporter.template_name = "formgrade"
    config.HTMLExporter.extra_template_basedirs = [handlers.template_path]
    resources = {"assignment_id": ASSIGNMENT, "notebook_id": ASSIGNMENT, "submission_id": "x"}
    resources |= {"index": 0, "total": 1, "base_url": "", "student": student}
    resources |= {"last_name": "", "first_name": "", "notebook_path": "nb.ipynb"}
    path = root / "autograded" / student / ASSIGNMENT / hostile.NOTEBOOK
    html, _ = HTMLExporter(config=config).from_filename(str(path), resources=resources)
    return html


def test_submitted_html_is_inert_in_feedback_and_formgrader(graded):
    """A submission's <script>, onerror handler and JavaScript output reach neither its
    feedback nor formgrader's view of it as active content; they show as text."""
    root, *_ = graded
    student = hostile.INJECTOR
    layout.nbgrader(root, "generate_feedback", ASSIGNMENT, "--student", student, "--force")
    (feedback,) = (root / "feedback" / student / ASSIGNMENT).glob("*.html")
    pages = {"feedback": feedback.read_text(), "formgrader": _formgrader_html(root, student)}
    for name, page in pages.items():
        found = _ActiveContent()
        found.feed(page)
        assert not [s for s in found.scripts if hostile.INJECTED in s], name
        assert not [h for h in found.handlers if hostile.INJECTED in h], name
        # the submission's content is still there, as text
        assert page.count(hostile.INJECTED) >= 3, name


def test_output_of_every_kind_is_capped(graded):
    """Printed output, one huge error, display updates and comm messages all stop at the
    per-cell cap: the autograded notebooks stay small (the cap is 2 MB a cell)."""
    root, *_ = graded
    for student in ("huge-output", "huge-error", "display-updates", "comm-flood"):
        path = root / "autograded" / student / ASSIGNMENT / hostile.NOTEBOOK
        assert path.stat().st_size < 6_000_000, (student, path.stat().st_size)
