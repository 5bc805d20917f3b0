"""The student's side in a real JupyterLab, driven in headless Chromium by Playwright.

JupyterLab runs on loopback over a copy of release/ (what a student fetches), started from
the student environment `python3 tasks.py student` builds (tests/test_student_env.py:
its own JupyterLab and nbgrader, the student configuration of deploy/jupyterhub/ in its
etc/jupyter, nothing of autograder/ importable), the exchange a folder prepared by
deploy/jupyterhub/make_exchange.sh, and the grade budget. For every released notebook the
test does what a student does:

1. *Run → Run All Cells*: everything before the first exercise runs, and the first code
   answer cell stops the run with ``NotImplementedError: Replace this line with your answer.``
2. runs each visible test cell by itself before answering, as a student trying things
   does, and collects the message it shows (``student-messages.md`` for review); each must
   be understandable without the test's code: the kit's stub message, a NameError naming
   something a cell above defines (the student guide says to run the cells above), or a sentence
   that names what it checks;
3. pastes the reference answers into the answer cells (select all, insert text, as a
   paste does), *Kernel → Restart Kernel and Run All Cells*: no cell fails and every
   visible test cell prints *Visible tests passed.*;
4. presses nbgrader's **Validate** button: *Success! Your notebook passes all the tests.*

``INITLAB_REVIEW_MESSAGES=1`` adds a pass (about a minute per notebook) that types each
sample mistake of initlab_grading.course.samples into the answered notebook and collects what the
visible tests say (``student-mistake-messages.md``). Screenshots and the collected messages
go to ``$INITLAB_ARTIFACTS`` (default ``build/student-lab``). Chromium is Debian's
``/usr/bin/chromium`` (``$INITLAB_CHROMIUM``), never a browser downloaded by Playwright.
"""

from __future__ import annotations

import ast
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest
from test_student_env import clean_env, stderr_notebook, student_env

from conftest import APT_GET, make_course
from initlab_grading.course import build, layout
from initlab_grading.course.samples import samples_for

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy" / "jupyterhub"
CHROMIUM = Path(os.environ.get("INITLAB_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = Path(os.environ.get("INITLAB_ARTIFACTS", REPO / "build" / "student-lab"))
# No network here: without the background-networking switches Chromium keeps trying
# to reach Google's services and floods the log with refused connections.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
STUB_MESSAGE = "NotImplementedError: Replace this line with your answer."
# what a visible test says when the answer it calls still raises the stub's error
# (initlab.checks.call_answer)
NOT_YET = re.compile(r"CheckFailed: .+ is not implemented yet \(it raised NotImplementedError\)\.")
PASSED = "Visible tests passed."
# A traceback's last line: "SomeError: message" (the message may run over several lines).
ERROR_LINE = re.compile(r"^[A-Za-z_][\w.]*(?:Error|Failed|Exception): ", re.M)

pytestmark = pytest.mark.browser


# --------------------------------------------------------------------------------------
# What the notebooks hold (read from the files, so the browser's view can be compared)


def _cells(home: Path, assignment: str) -> list[dict]:
    """The cells of the notebook the student opens (the copy of release/ in ``home``)."""
    nb = nbformat.read(home / assignment / f"{assignment}.ipynb", as_version=4)
    out = []
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        out.append(
            {
                "type": cell.cell_type,
                "grade_id": meta.get("grade_id"),
                "answer": bool(meta.get("solution")) and cell.cell_type == "code",
                "written": bool(meta.get("solution")) and cell.cell_type == "markdown",
                "test": bool(meta.get("grade")) and not meta.get("solution"),
                "prints_passed": cell.cell_type == "code" and PASSED in cell.source,
            }
        )
    return out


# --------------------------------------------------------------------------------------
# Fixtures: Chromium, a student's JupyterLab, a browser


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def chromium() -> Path:
    """Debian's Chromium; installed with apt-get when missing and allowed (root)."""
    if not CHROMIUM.exists() and os.geteuid() == 0 and shutil.which("apt-get"):
        for cmd in ([*APT_GET, "update"], [*APT_GET, "install", "-y", "chromium"]):
            subprocess.run(cmd, capture_output=True, check=False)
    assert CHROMIUM.exists(), (
        f"No Chromium at {CHROMIUM}. Install Debian's package (`apt-get install -y chromium`) "
        "or point INITLAB_CHROMIUM at a Chromium binary."
    )
    return CHROMIUM


@pytest.fixture(scope="module")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    if REVIEW:
        (ARTIFACTS / "student-mistake-messages.md").write_text(
            "# What the visible tests say about the sample mistakes\n\n"
        )
    print(f"\nstudent-lab artifacts (screenshots, messages): {ARTIFACTS}")
    return ARTIFACTS


@pytest.fixture(scope="module")
def lab(tmp_path_factory, artifacts):
    """JupyterLab of the student environment on 127.0.0.1 over a student's home holding
    the released notebooks; no user configuration, so the environment's own applies."""
    env_dir, _ = student_env(tmp_path_factory)
    home = tmp_path_factory.mktemp("student-home")
    for assignment in layout.ASSIGNMENTS:
        shutil.copytree(REPO / "release" / assignment, home / assignment)
    exchange = tmp_path_factory.mktemp("exchange-volume") / "exchange"
    made = subprocess.run(
        ["sh", str(DEPLOY / "make_exchange.sh"), str(exchange), str(os.getuid()), "initlab"],
        capture_output=True,
        text=True,
    )
    assert made.returncode == 0, made.stderr
    settings = tmp_path_factory.mktemp("lab-settings")
    tracker = settings / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings"
    tracker.parent.mkdir(parents=True)
    # every cell in the DOM, so the test reads all outputs (a student scrolls instead)
    tracker.write_text(json.dumps({"windowingMode": "none"}))
    env = clean_env(
        # the user configuration folder empty: only the environment's configuration
        JUPYTER_CONFIG_DIR=str(tmp_path_factory.mktemp("user-jupyter-config")),
        NBGRADER_EXCHANGE=str(exchange),
        INITLAB_BUDGET="grade",
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        JUPYTERLAB_SETTINGS_DIR=str(settings),
        JUPYTERLAB_WORKSPACES_DIR=str(tmp_path_factory.mktemp("workspaces")),
        # the student's own data folder: nbgrader keeps its record of submissions there
        # (Exchange.cache), which must not carry over from another run
        JUPYTER_DATA_DIR=str(tmp_path_factory.mktemp("jupyter-data")),
    )
    port, token = _free_port(), secrets.token_hex(16)
    cmd = [
        str(env_dir / "bin" / "jupyter-lab"),
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        f"--ServerApp.token={token}",
        f"--ServerApp.root_dir={home}",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    log = artifacts / "jupyterlab.log"
    with open(log, "w") as log_file:
        proc = subprocess.Popen(cmd, cwd=home, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, f"JupyterLab exited; see {log}:\n{log.read_text()[-3000:]}"
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
                break
            except OSError:
                assert time.monotonic() < deadline, f"JupyterLab did not start; see {log}"
                time.sleep(0.3)
        yield {"base": base, "token": token, "home": home, "exchange": exchange, "log": log}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def browser(chromium):
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install initlab[dev]")
    with sync_api.sync_playwright() as pw:
        chromium_browser = pw.chromium.launch(
            executable_path=str(chromium), args=CHROMIUM_ARGS, headless=True
        )
        yield chromium_browser
        chromium_browser.close()


@pytest.fixture(scope="module")
def messages(artifacts):
    """Every message a visible test showed, written for review when the module ends."""
    collected: dict[str, list[tuple[str, str]]] = {}
    yield collected
    lines = [
        "# What the visible tests say to a student who runs them before answering",
        "",
        "Collected by tests/test_student_lab.py in JupyterLab: each test cell run by itself",
        "after *Run All Cells* stopped at the first exercise.",
    ]
    for assignment, found in collected.items():
        lines += ["", f"## {assignment}", ""]
        lines += [f"- `{grade_id}`: {message}" for grade_id, message in found]
    (artifacts / "student-messages.md").write_text("\n".join(lines) + "\n")


# --------------------------------------------------------------------------------------
# Driving JupyterLab as a student does


class Lab:
    """One notebook open in JupyterLab, in one browser page."""

    def __init__(self, page, lab: dict, assignment: str, artifacts: Path) -> None:
        self.page, self.lab, self.assignment = page, lab, assignment
        self.shots = artifacts / assignment
        self.shots.mkdir(exist_ok=True)
        for old in self.shots.glob("*.png"):
            old.unlink()

    def open(self) -> None:
        path = f"{self.assignment}/{self.assignment}.ipynb"
        self.page.goto(f"{self.lab['base']}/lab/tree/{path}?reset&token={self.lab['token']}")
        self.page.wait_for_selector(".jp-NotebookPanel .jp-Notebook .jp-Cell", timeout=90_000)
        self.wait_idle(90)

    def screenshot(self, name: str) -> None:
        self.page.screenshot(path=str(self.shots / f"{name}.png"))

    def menu(self, menu: str, item: str) -> None:
        self.page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(f"^{menu}$")).click()
        self.page.locator(".lm-Menu-itemLabel", has_text=re.compile(f"^{re.escape(item)}")).click()

    def wait_idle(self, timeout_s: float) -> None:
        """Until no cell is queued or running and the kernel says Idle."""
        self.page.wait_for_function(
            """() => {
                const nb = document.querySelector('.jp-NotebookPanel .jp-Notebook');
                if (!nb) return false;
                const prompts = [...nb.querySelectorAll('.jp-InputPrompt')];
                if (prompts.some(p => p.textContent.includes('*'))) return false;
                const items = [...document.querySelectorAll('.jp-StatusBar-Item')];
                return items.some(i => /\\|\\s*Idle/.test(i.textContent));
            }""",
            timeout=timeout_s * 1000,
            polling=250,
        )

    def cells(self) -> list[dict]:
        """Each cell's kind, prompt and output text, read from the page."""
        return self.page.evaluate(
            """() => [...document.querySelectorAll('.jp-NotebookPanel .jp-Notebook .jp-Cell')]
                .map(c => ({
                    code: c.classList.contains('jp-CodeCell'),
                    prompt: (c.querySelector('.jp-InputPrompt') || {}).textContent || '',
                    output: [...c.querySelectorAll('.jp-OutputArea-output')]
                        .map(o => o.innerText).join('\\n'),
                }))"""
        )

    def cell(self, index: int):
        return self.page.locator(".jp-NotebookPanel .jp-Notebook .jp-Cell").nth(index)

    def run_cell(self, index: int, timeout_s: float = 120) -> None:
        """Select a cell, Ctrl+Enter (run it and stay), wait for the kernel."""
        self.cell(index).locator(".jp-InputPrompt").click()
        self.page.keyboard.press("Control+Enter")
        self.wait_idle(timeout_s)

    def paste(self, index: int, text: str) -> None:
        """Replace a cell's text as a paste does: into the editor (Enter opens a rendered
        markdown cell's), select all, insert the text."""
        self.cell(index).locator(".jp-InputPrompt").click()
        self.page.keyboard.press("Enter")
        self.cell(index).locator(".cm-content").click()
        self.page.keyboard.press("Control+a")
        self.page.keyboard.insert_text(text)
        self.page.keyboard.press("Escape")
        shown = self.cell(index).locator(".cm-line").all_text_contents()
        # CodeMirror shows an empty line as a zero-width placeholder
        shown_text = "\n".join(line.replace("\u200b", "") for line in shown)
        assert shown_text.rstrip() == text.rstrip(), f"pasting into cell {index} changed the text"


class Clock:
    """Wall time of each step, printed (pytest -s) for the CI-time budget."""

    def __init__(self, name: str) -> None:
        self.name, self.laps, self.last = name, [], time.monotonic()

    def lap(self, step: str) -> None:
        now = time.monotonic()
        self.laps.append(f"{step} {now - self.last:.1f} s")
        self.last = now

    def report(self) -> None:
        print(f"\n{self.name}: " + ", ".join(self.laps))


def error_message(output: str) -> str | None:
    """The "Name: message" end of a traceback shown in an output, or None if no error."""
    if "Traceback (most recent call last)" not in output:
        return None
    starts = [m.start() for m in ERROR_LINE.finditer(output)]
    return " ".join(output[starts[-1] :].split()) if starts else ""


def _names_defined(source: str) -> set[str]:
    """Names a cell's code binds at top level or anywhere (functions, classes,
    assignments, imports, loop targets); lines of IPython magics are left out."""
    lines = source.splitlines()
    code = "\n".join(line for line in lines if not line.lstrip().startswith(("%", "!")))
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return set()
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return names


def defined_above(home: Path, assignment: str, index: int, answers: dict[str, str]) -> set[str]:
    """What the cells above cell ``index`` define once answered (reference answers in the
    answer cells): what a test message may name for the student to fix or to run."""
    nb = nbformat.read(home / assignment / f"{assignment}.ipynb", as_version=4)
    names = set()
    for cell in nb.cells[:index]:
        if cell.cell_type == "code":
            grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
            names |= _names_defined(answers.get(grade_id, cell.source))
    return names


def unclear(message: str, names: set[str]) -> str | None:
    """Why a test's message would not tell a student what to do without reading the
    test's code, or None if it does: the kit's stub message (or its check's sentence about
    an answer that raised it); a NameError naming something a cell above defines (the
    student guide: run the cells above); any other error a sentence of a few words that names a
    function or variable of the notebook."""
    if not message:
        return "the test fails without a message"
    match = re.fullmatch(r"([A-Za-z_][\w.]*): (.+)", message, re.S)
    if not match:
        return "a bare exception name, no message"
    kind, text = match.groups()
    if kind == "NotImplementedError":
        return None if message == STUB_MESSAGE else "not the kit's stub message"
    if "NotImplementedError" in text and not NOT_YET.fullmatch(message):
        return "not the kit's message for an answer not written yet"
    if kind == "NameError":
        name = re.fullmatch(r"name '(\w+)' is not defined", text)
        if name and name.group(1) in names:
            return None
        return "a NameError for a name no cell above defines"
    if len(text.split()) < 4:
        return "too short to say what is wrong"
    if not set(re.findall(r"[A-Za-z_]\w*", text)) & names:
        return "names no function or variable of the notebook"
    return None


# --------------------------------------------------------------------------------------
# The tests


def test_student_lab_shows_validate_and_assignment_list_only(browser, lab, artifacts, tmp_path):
    """The student's tools are there (Validate in the notebook toolbar, the assignment
    list in the Nbgrader menu, listing what the instructor released into the exchange),
    the instructor's are not (formgrader, course list, Create Assignment)."""
    released = layout.ASSIGNMENTS[0]
    instructor = make_course(tmp_path / "course", [released])
    layout.nbgrader(
        instructor, "release_assignment", released, f"--Exchange.root={lab['exchange']}"
    )
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    try:
        student = Lab(page, lab, layout.ASSIGNMENTS[0], artifacts)
        student.open()
        assert page.locator(".jp-NotebookPanel-toolbar .validate-button").count() == 1
        page.locator(".lm-MenuBar-itemLabel", has_text=re.compile("^Nbgrader$")).click()
        items = page.locator(".lm-Menu-itemLabel").all_inner_texts()
        page.keyboard.press("Escape")
        assert "Assignment List" in items, items
        assert not [i for i in items if "Formgrader" in i or "Course" in i], items
        assert page.get_by_text("Create Assignment").count() == 0
        student.menu("Nbgrader", "Assignment List")
        page.wait_for_selector("#nbgrader-assignment-list", timeout=30_000)
        # the home already holds the release, so nbgrader lists it as downloaded (it
        # must also be in the exchange for that); Submit sends it through the exchange
        row = page.locator("#fetched_assignments_list .list_item", has_text=released).first
        row.wait_for(timeout=30_000)
        assert "initlab" in row.inner_text()
        row.get_by_role("button", name="Submit").click()
        submitted = page.locator("#submitted_assignments_list .list_item", has_text=released)
        submitted.first.wait_for(timeout=60_000)
        inbound = lab["exchange"] / "initlab" / "inbound"
        assert [p.name for p in inbound.iterdir() if f"+{released}+" in p.name], "no submission"
        assert submitted.count() == 1, "the list shows submissions this student never made"
    finally:
        student.screenshot("assignment-list")
        (artifacts / "assignment-list.html").write_text(page.content())
        page.close()


def _validate(lab: dict, path: str) -> dict:
    """What the Validate button asks the server: POST /assignments/validate."""
    request = urllib.request.Request(
        f"{lab['base']}/assignments/validate",
        data=json.dumps({"path": path}).encode(),
        headers={"Authorization": f"token {lab['token']}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=300) as response:
        return json.load(response)


def test_validate_button_judges_stderr_as_grading_does(lab):
    """The server's Validate (the handler the button calls, which reads the configuration
    again for each request) passes a correct answer that warns on stderr, as grading
    scores it, and fails a wrong one that warns the same way."""
    stderr_notebook(lab["home"] / "stderr-check" / "warns.ipynb")
    stderr_notebook(lab["home"] / "stderr-check" / "warns-wrong.ipynb", correct=False)
    try:
        right = _validate(lab, "stderr-check/warns.ipynb")
        assert right == {"success": True, "value": {}}, right
        wrong = _validate(lab, "stderr-check/warns-wrong.ipynb")
        assert wrong["success"] and len(wrong["value"].get("failed", [])) == 1, wrong
        assert "mean([1, 2, 3]) should be 2, not 6" in wrong["value"]["failed"][0]["raw_error"]
    finally:
        shutil.rmtree(lab["home"] / "stderr-check")


@pytest.mark.parametrize("assignment", layout.ASSIGNMENTS)
def test_student_runs_validates_and_passes_visible_tests(
    browser, lab, artifacts, messages, assignment
):
    expected = _cells(lab["home"], assignment)
    answers = build.reference_answers(REPO, assignment)
    first_answer = next(i for i, c in enumerate(expected) if c["answer"])
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    student = Lab(page, lab, assignment, artifacts)
    clock = Clock(assignment)
    try:
        student.open()
        clock.lap("open")
        assert len(student.cells()) == len(expected)
        student.screenshot("01-opened")

        # 1. Run All: runs up to the first exercise, which says what to do
        student.menu("Run", "Run All Cells")
        student.wait_idle(300)
        seen = student.cells()
        errors = {i: error_message(c["output"]) for i, c in enumerate(seen)}
        errors = {i: m for i, m in errors.items() if m is not None}
        student.cell(min(errors, default=first_answer)).scroll_into_view_if_needed()
        student.screenshot("02-run-all-stops-at-first-exercise")
        # A stub at the top of the cell raises there; one inside a function body raises
        # in the first test cell that calls it.
        assert len(errors) == 1, f"Run All Cells should stop at one error: {errors}"
        ((stop, message),) = errors.items()
        next_answer = next(
            (i for i, c in enumerate(expected) if c["answer"] and i > first_answer), len(expected)
        )
        assert stop == first_answer or first_answer < stop < next_answer and expected[stop]["test"]
        # the stub's own line, or the test cell's sentence about the stub it called
        assert message == STUB_MESSAGE or stop != first_answer and NOT_YET.fullmatch(message), (
            f"Run All Cells should stop at the first exercise's stub, not with {message!r}"
        )
        ran = [i for i, c in enumerate(seen) if c["code"] and re.search(r"\[\d+\]", c["prompt"])]
        assert ran == [i for i in range(stop + 1) if expected[i]["type"] == "code"]

        clock.lap("run all to the first exercise")

        # 2. each visible test run by itself before answering: what does it say?
        found = messages.setdefault(assignment, [])
        for i, cell in enumerate(expected):
            if cell["test"]:
                student.run_cell(i)
                message = error_message(student.cells()[i]["output"])
                assert message is not None, f"test cell {cell['grade_id']} passed unanswered"
                found.append((cell["grade_id"], message))
                why = unclear(message, defined_above(lab["home"], assignment, i, answers))
                assert why is None, f"{cell['grade_id']} says {message!r}: {why}"

        clock.lap("each visible test alone")

        # 3. the reference answers pasted in, then Restart Kernel and Run All Cells
        for i, cell in enumerate(expected):
            if cell["answer"] or cell["written"]:
                student.paste(i, answers[cell["grade_id"]])
        clock.lap("paste answers")
        student.menu("Kernel", "Restart Kernel and Run All Cells")
        page.locator(".jp-Dialog .jp-mod-accept").click()
        page.wait_for_timeout(500)
        student.wait_idle(300)
        seen = student.cells()
        failed = {
            expected[i]["grade_id"] or i: error_message(c["output"])
            for i, c in enumerate(seen)
            if error_message(c["output"]) is not None
        }
        student.screenshot("03-answered-run-all")
        assert not failed, f"with the reference answers these cells fail: {failed}"
        for i, cell in enumerate(expected):
            if cell["type"] == "code":
                assert re.search(r"\[\d+\]", seen[i]["prompt"]), f"cell {i} did not run"
            if cell["prints_passed"]:
                assert PASSED in seen[i]["output"], (cell["grade_id"], seen[i]["output"])

        clock.lap("restart and run all")

        # 4. Validate (saves the notebook, then runs nbgrader validate on the server)
        page.locator(".jp-NotebookPanel-toolbar .validate-button").click()
        dialog = page.locator(".jp-Dialog", has_text="Validation Results")
        dialog.wait_for(timeout=300_000)
        student.screenshot("04-validate")
        body = dialog.inner_text()
        assert dialog.locator(".validation-success").count() == 1, body
        assert "Success! Your notebook passes all the tests." in body
        dialog.locator(".jp-mod-accept").click()
        clock.lap("validate")
    finally:
        clock.report()
        page.close()
        _shut_down_kernels(lab)


REVIEW = os.environ.get("INITLAB_REVIEW_MESSAGES") == "1"


@pytest.mark.skipif(
    not REVIEW,
    reason="about a minute per notebook; INITLAB_REVIEW_MESSAGES=1 collects these messages",
)
@pytest.mark.parametrize("assignment", layout.ASSIGNMENTS)
def test_visible_test_messages_for_plausible_mistakes(browser, lab, artifacts, assignment):
    """For review: what the visible tests say about each sample mistake (the samples of
    initlab_grading.course.samples), typed into the answered notebook in JupyterLab. The answer
    cell and the test cells below it run; the reference answer is put back after. The
    messages are written to the artifacts for review; the test fails when one of them
    would not tell a student what to do (``unclear``), or when no mistake was tried."""
    expected = _cells(lab["home"], assignment)
    answers = build.reference_answers(REPO, assignment)
    cell_of = {c["grade_id"]: i for i, c in enumerate(expected)}
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    student = Lab(page, lab, assignment, artifacts)
    lines = [f"## {assignment}", ""]
    problems, tried = [], 0
    try:
        student.open()
        for i, cell in enumerate(expected):
            if cell["answer"]:
                student.paste(i, answers[cell["grade_id"]])
        student.menu("Kernel", "Restart Kernel and Run All Cells")
        page.locator(".jp-Dialog .jp-mod-accept").click()
        page.wait_for_timeout(500)
        student.wait_idle(300)
        mistakes = [s for s in samples_for(assignment) if s.lost and not s.blank and s.answers]
        for sample in mistakes:
            code = [g for g in sample.answers if expected[cell_of[g]]["answer"]]
            if not code:
                continue
            lines.append(f"- **{sample.student}** ({sample.description})")
            tried += 1
            for grade_id in code:
                start = cell_of[grade_id]
                student.paste(start, sample.answers[grade_id].strip("\n"))
                student.run_cell(start)
                said = error_message(student.cells()[start]["output"])
                if said:
                    lines.append(f"  - answer cell `{grade_id}` itself fails: {said}")
                end = next(
                    (j for j in range(start + 1, len(expected)) if expected[j]["answer"]),
                    len(expected),
                )
                for j in range(start + 1, end):
                    if expected[j]["test"]:
                        student.run_cell(j)
                        said = error_message(student.cells()[j]["output"])
                        verdict = said or "visible tests pass (hidden tests decide)"
                        why = said and unclear(
                            said, defined_above(lab["home"], assignment, j, answers)
                        )
                        verdict += f" **(unclear: {why})**" if why else ""
                        if why:
                            problems.append(f"{sample.student}, {expected[j]['grade_id']}: {why}")
                        lines.append(f"  - `{expected[j]['grade_id']}`: {verdict}")
            for grade_id in code:
                student.paste(cell_of[grade_id], answers[grade_id])
                student.run_cell(cell_of[grade_id])
    finally:
        page.close()
        _shut_down_kernels(lab)
        with open(artifacts / "student-mistake-messages.md", "a") as out:
            out.write("\n".join(lines) + "\n\n")
    assert tried, f"no sample mistake of {assignment} has an answer cell to type in"
    assert not problems, "messages a student could not act on:\n" + "\n".join(problems)


def _shut_down_kernels(lab: dict) -> None:
    """Free the kernel's memory and CPU before the next notebook."""
    base, token = lab["base"], lab["token"]
    with urllib.request.urlopen(f"{base}/api/sessions?token={token}") as response:
        sessions = json.load(response)
    for session in sessions:
        request = urllib.request.Request(
            f"{base}/api/sessions/{session['id']}?token={token}", method="DELETE"
        )
        urllib.request.urlopen(request).close()


def test_class_report_renders_in_chromium(browser, artifacts, tmp_path):
    """The instructor's class report (initlab_grading.course.report) in a real browser: the
    histogram loads, a message's HTML shows as text, a screenshot is kept."""
    from initlab_grading.course import report
    from initlab_grading.course.results import CellResult, SampleResult

    message = "CheckFailed: grad_f(1, 2) is 3.5; <b>expected</b> 4"
    tests = {"test_grad", "test_step"}
    results = []
    for i in range(6):
        cells = {
            "test_grad": CellResult("test_grad", 0.0 if i < 4 else 2.0, 2.0,
                                    message if i < 4 else ""),  # fmt: skip
            "test_step": CellResult("test_step", 1.0, 1.0, ""),
            "why": CellResult("why", None if i < 2 else 1.0, 1.0, ""),
        }
        results.append(SampleResult(f"student-{i}", cells))
    path = tmp_path / "demo.html"
    html = report.render_html("demo", results, tests, report.diagnoses(results, tests))
    path.write_text(html, encoding="utf-8")
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    try:
        page.goto(path.as_uri())
        assert page.locator("h1").inner_text() == "Class report: demo"
        assert page.locator("img").evaluate("img => img.naturalWidth") > 0
        assert page.locator("b").count() == 0  # the message's tag is text, not markup
        assert "<b>expected</b>" in page.locator("body").inner_text()
        assert "4 of 6" in page.locator("body").inner_text()  # the manual answers graded
        page.screenshot(path=str(artifacts / "class-report.png"), full_page=True)
    finally:
        page.close()
