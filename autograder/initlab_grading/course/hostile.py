"""Hostile and broken submissions of assignment 1 (gradient descent).

Each starts from the reference answers and makes one hostile change: a broken or renamed
notebook, test cells deleted, duplicated, edited or turned into markdown, nbgrader
metadata stripped, an endless loop, a memory bomb, a dying kernel, 100 MB of output
(printed, as one error's message, as display updates, as comm messages), a
file larger than the file limit, warnings from correct code, replaced library functions
or error display, fake modules shipped next to the notebook, links that would make root
overwrite or chmod other files, printing the hidden tests' source into feedback, reading
and writing other people's files, importing the hidden tests' reference, replacing a
hidden check, the hidden tests' module or numpy's internals, unlocking the setup cell to
rebind ``checks``, tracing the checks to rewrite their variables, rewriting the kernel's
replies. Where the change comes with a wrong answer, the wrong answer is what the
change tries to hide. Each states the test cells that must score zero (all others score
full marks), a piece of the grading report's line about it, and whether the submission can
be graded at all. tests/test_hostile_grading.py grades them with
initlab_grading.grading.grade, among normal submissions.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nbformat

from initlab_grading.course import build, layout
from initlab_grading.course.samples import Sample

ASSIGNMENT = "gradient_descent"
NOTEBOOK = layout.notebook_name(ASSIGNMENT)
AFTER_MINIMUM = (
    "test_minimum",
    "test_optimizer_visible",
    "test_step_schedule",
    "test_stopping_rule",
    "test_trajectories",
    "test_stable_step",
)
ALL_TESTS = ("test_f_and_grad_visible", "test_f_and_grad_hidden", "test_hand_iterates")
ALL_TESTS += AFTER_MINIMUM
WRONG_STEP = "largest_stable_step = 1.0"
HAND_ITERATES = "hand_iterates = np.array([[6.0, 6.0], [9.0, 3.0], [8.0, 4.0], [8.0, 4.0]])"


@dataclass(frozen=True)
class HostileSample:
    """``files(root)`` returns the submission folder's files (name -> text)."""

    student: str
    description: str
    files: Callable[[Path], dict[str, str]]
    lost: tuple[str, ...]
    """Test cells that must score zero; every other test cell scores full marks."""
    note: str
    """A piece of the report's line about this submission ("": what it tried leaves no
    line; the test checks its effect instead)."""
    graded: bool = True
    """False: nbgrader cannot grade it (no gradebook submission)."""


def _nb(root: Path, answers: dict[str, str] | None = None) -> nbformat.NotebookNode:
    return build.build_submission(root, ASSIGNMENT, Sample("x", "", answers=answers or {}))


def _cell(nb: nbformat.NotebookNode, grade_id: str) -> nbformat.NotebookNode:
    return next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)


def _one(nb: nbformat.NotebookNode, name: str = NOTEBOOK) -> dict[str, str]:
    return {name: nbformat.writes(nb)}


def _without(root: Path) -> dict[str, str]:
    nb = _nb(root, {"stable_step": WRONG_STEP})
    nb.cells.remove(_cell(nb, "test_stable_step"))
    return _one(nb)


def _duplicated(root: Path) -> dict[str, str]:
    nb = _nb(root, {"stable_step": WRONG_STEP})
    test = _cell(nb, "test_stable_step")
    first = copy.deepcopy(test)
    first.source = "pass"
    first.id = "stable-step-copy"
    nb.cells.insert(nb.cells.index(test), first)
    return _one(nb)


def _edited(root: Path) -> dict[str, str]:
    nb = _nb(root, {"stable_step": WRONG_STEP})
    _cell(nb, "test_stable_step").source = 'print("Visible tests passed.")'
    return _one(nb)


def _markdown(root: Path) -> dict[str, str]:
    nb = _nb(root, {"stable_step": WRONG_STEP})
    test = _cell(nb, "test_stable_step")
    nb.cells[nb.cells.index(test)] = nbformat.v4.new_markdown_cell(
        test.source, metadata=test.metadata, id=test.id
    )
    return _one(nb)


def _stripped(root: Path) -> dict[str, str]:
    nb = _nb(root)
    for cell in nb.cells:
        cell.metadata.pop("nbgrader", None)
    return _one(nb)


_NO_OP_MODULE = (
    '{name} = type("Anything", (), {{"__getattr__": lambda self, name: lambda *a, **k: None}})()'
)
"""An object standing in for a module: every attribute is a function that returns None."""


def _setup_unlocked(root: Path) -> dict[str, str]:
    """A wrong step size; the setup cell's nbgrader metadata removed (so nbgrader cannot
    restore it) and ``checks`` rebound there to an object whose every function returns
    None."""
    nb = _nb(root, {"stable_step": WRONG_STEP})
    setup = _cell(nb, "setup")
    setup.metadata.pop("nbgrader")
    setup.source += "\n\n" + _NO_OP_MODULE.format(name="checks")
    return _one(nb)


def _answers(**answers: str) -> Callable[[Path], dict[str, str]]:
    return lambda root: _one(_nb(root, answers))


# A file reader and writer: what it manages to do ends up in the autograded notebook, and
# the test checks that none of it reached anyone else's files.
_SNOOP = """
import pathlib
course = pathlib.Path.cwd().parents[2]
snooped = {}
for target in ["gradebook.db", "source/gradient_descent/gradient_descent.ipynb",
               "submitted/reference/gradient_descent/gradient_descent.ipynb",
               "autograded/reference/gradient_descent/gradient_descent.ipynb"]:
    try:
        snooped[target] = len((course / target).read_bytes())
    except OSError as err:
        snooped[target] = type(err).__name__
for target in ["gradebook.db", "submitted/reference/gradient_descent/gradient_descent.ipynb",
               "autograded/reference/gradient_descent/pwned.txt"]:
    try:
        with open(course / target, "a") as fh:
            fh.write("pwned")
        snooped["write " + target] = "written"
    except OSError as err:
        snooped["write " + target] = type(err).__name__
print("SNOOPED", snooped)
"""

# Fake modules next to the notebook: a check helper and hidden checks that pass
# everything, and a guard that prints the markers the grader waits for. Imported from the
# kernel's working folder, they would turn a wrong step size into full marks; nbgrader
# does not copy them there and the kernel does not import from there.
_FAKE_GUARD = """
import hashlib
_nonce = None
def snapshot(nonce):
    global _nonce
    _nonce = nonce
def finished(grade_id, names=None):
    print(hashlib.sha256(f"{_nonce}:{grade_id}".encode()).hexdigest()[:32])
def files(nonce):
    print(hashlib.sha256(f"{nonce}:files".encode()).hexdigest()[:32] + "{}")
"""
_FAKE_CHECKS = "def __getattr__(name):\n    return lambda *a, **k: None\n"
_SHIPPED = {
    "initlab_grading/__init__.py": "",
    "initlab_grading/grading/__init__.py": "",
    "initlab_grading/grading/guard.py": _FAKE_GUARD,
    "initlab_grading/assignments/__init__.py": "",
    "initlab_grading/assignments/gradient_descent/__init__.py": "",
    "initlab_grading/assignments/gradient_descent/grader.py": _FAKE_CHECKS,
    "initlab/__init__.py": "",
    "initlab/checks.py": _FAKE_CHECKS,
    "numpy.py": "raise SystemExit('a shipped numpy.py was imported')\n",
    "sitecustomize.py": "raise SystemExit('a shipped sitecustomize.py was imported')\n",
}


def _shipped(root: Path) -> dict[str, str]:
    return {**_one(_nb(root, {"stable_step": WRONG_STEP})), **_SHIPPED}


# Links from the kernel's folder to files elsewhere: nbgrader, as root, writes the graded
# notebook with open(path, "w") and chmods every file there, following links. The notebook
# becomes a link to a file of the course, and a second link points at the gradebook. It
# also prints the kernel's environment (which must not hold the grader's secrets).
ESCAPE_TARGET = "escape-target.txt"
"""A file in the course root that the links sample points the graded notebook at."""
SECRET_VARIABLE = "PGPASSWORD"
_LINKS = f"""
import os, pathlib
course = pathlib.Path.cwd().parents[2]
print("ENVIRONMENT", sorted(os.environ.items()))
os.replace("gradient_descent.ipynb", "moved.ipynb")
os.symlink(course / "{ESCAPE_TARGET}", "gradient_descent.ipynb")
os.symlink(course / "gradebook.db", "gradebook-link")
try:
    os.link(course / "gradebook.db", "gradebook-hardlink")
except OSError as err:
    print("no hard link:", type(err).__name__)
os.mkfifo("a-fifo")
"""

# Code that reads the source of the test calling it (the notebook cells on the stack,
# through linecache) and raises it as its message, and a last answer that prints IPython's
# input history (every cell that ran, hidden tests included).
_LEAK_F_AND_GRAD = """
import inspect
import linecache


def _stack_source():
    cells = [f.filename for f in inspect.stack(0) if "ipykernel_" in f.filename]
    return "\\n".join("".join(linecache.getlines(name)) for name in cells)


def f(x):
    x1, x2 = x
    return (x1 - 6) ** 2 + x2**2 - x1 * x2


def grad_f(x):
    if any(frame.function == "check_grad" for frame in inspect.stack(0)):
        raise ValueError("the test that called me:\\n" + _stack_source())
    x1, x2 = x
    return np.array([2 * (x1 - 6) - x2, 2 * x2 - x1])
"""
_LEAK_HISTORY = "\nprint('HISTORY', '\\n'.join(In))"

# A tracer that rewrites the local variable holding the answer in every check it sees, and
# a kernel that drops its error messages and reports every cell as a success.
_SETTRACE = """
import sys


def _tracer(frame, event, arg):
    if frame.f_code.co_name.startswith("check_") and "value" in frame.f_locals:
        frame.f_locals["value"] = 2.0 / 3.0
    return _tracer


sys.settrace(_tracer)
"""
_REPLIES_REWRITTEN = """
_session = get_ipython().kernel.session
_send = _session.send


def _send_success(stream, msg_or_type, content=None, *args, **kwargs):
    if msg_or_type == "error":
        return None
    if msg_or_type == "execute_reply" and content:
        content = dict(content, status="ok")
    return _send(stream, msg_or_type, content, *args, **kwargs)


_session.send = _send_success
"""

SAMPLES = [
    HostileSample(
        "not-json",
        "a notebook file that is not JSON",
        lambda root: {NOTEBOOK: '{"cells": [ this is not json'},
        ALL_TESTS,
        "is not a valid notebook",
        graded=False,
    ),
    HostileSample(
        "renamed",
        "the reference answers saved under another name",
        lambda root: _one(_nb(root), "gradient_descent-final.ipynb"),
        ALL_TESTS,
        "has no gradient_descent.ipynb (it has gradient_descent-final.ipynb)",
        graded=False,
    ),
    HostileSample(
        "test-deleted",
        "a wrong step size and its test cell deleted",
        _without,
        ("test_stable_step",),
        "test_stable_step was deleted",
    ),
    HostileSample(
        "test-duplicated",
        "a wrong step size; its test cell duplicated, the first copy emptied",
        _duplicated,
        ("test_stable_step",),
        "test_stable_step appears 2 times",
    ),
    HostileSample(
        "test-edited",
        "a wrong step size; its test cell replaced by a print",
        _edited,
        ("test_stable_step",),
        "test cell test_stable_step was edited",
    ),
    HostileSample(
        "test-markdown",
        "a wrong step size; its test cell turned into markdown",
        _markdown,
        ("test_stable_step",),
        "test_stable_step was turned into markdown",
    ),
    HostileSample(
        "metadata-stripped",
        "the reference answers with every cell's nbgrader metadata removed",
        _stripped,
        ALL_TESTS,
        "nbgrader metadata stripped from every cell",
    ),
    HostileSample(
        "endless-loop",
        "an answer cell that never finishes",
        _answers(stable_step="while True:\n    pass"),
        ("test_stable_step",),
        "stable_step: stopped by the per-cell time limit",
    ),
    # np.empty: the limit (RLIMIT_DATA) counts memory when it is reserved, not when it is
    # written, so reserving reaches it at once. Writing the 1.5 GB of the tests' limit
    # (np.ones) took 8.6 s on 2 cores, and longer under load than
    # the tests' 10-s cell limit, which then stopped the cell first (a flaky note).
    HostileSample(
        "memory-bomb",
        "an answer cell that allocates until memory runs out",
        _answers(hand_iterates="hog = [np.empty(2**24) for _ in range(10**6)]\n" + HAND_ITERATES),
        ("test_hand_iterates",),
        "hand_iterates: MemoryError",
    ),
    HostileSample(
        "kernel-exit",
        "os._exit in an answer cell: the kernel dies",
        _answers(minimum="import os\nos._exit(1)"),
        AFTER_MINIMUM,
        "kernel died in minimum",
    ),
    HostileSample(
        "segfault",
        "a segfault in an answer cell: the kernel dies",
        _answers(stable_step="import ctypes\nctypes.string_at(0)"),
        ("test_stable_step",),
        "kernel died in stable_step",
    ),
    HostileSample(
        "huge-output",
        "correct answers that print 100 MB",
        _answers(
            hand_iterates='for _ in range(100):\n    print("x" * 1_000_000)\n' + HAND_ITERATES
        ),
        (),
        "hand_iterates: output truncated",
    ),
    HostileSample(
        "huge-error",
        "correct answers; an answer cell raises an exception with a 60 MB message",
        _answers(hand_iterates=HAND_ITERATES + '\nraise ValueError("x" * 60_000_000)'),
        (),
        "hand_iterates: an error message of",
    ),
    HostileSample(
        "display-updates",
        "correct answers; an answer cell updates one display 60 times with 1 MB each",
        _answers(
            hand_iterates="from IPython.display import display\n"
            "handle = display('x', display_id=True)\n"
            "for _ in range(60):\n    handle.update('y' * 1_000_000)\n" + HAND_ITERATES
        ),
        (),
        "hand_iterates: output truncated at 2000000 bytes (update_display_data)",
    ),
    HostileSample(
        "comm-flood",
        "correct answers; an answer cell sends 300 MB of widget state over a comm",
        _answers(
            hand_iterates="from comm import create_comm\n"
            "channel = create_comm(target_name='jupyter.widget', data={'state': {}})\n"
            "for _ in range(300):\n    channel.send({'state': {'value': 'z' * 1_000_000}})\n"
            + HAND_ITERATES
        ),
        (),
        "hand_iterates: a malformed comm_open message was ignored",
    ),
    HostileSample(
        "warnings",
        "correct answers whose gradient warns and draws a progress bar on stderr",
        _answers(
            f_and_grad="""
import sys
import warnings


def f(x):
    x1, x2 = x
    return (x1 - 6) ** 2 + x2**2 - x1 * x2


def grad_f(x):
    warnings.warn("grad_f: a warning from correct code", stacklevel=1)
    sys.stderr.write("\\r[#####     ] 50%\\r[##########] 100%\\n")
    x1, x2 = x
    return np.array([2 * (x1 - 6) - x2, 2 * x2 - x1])
"""
        ),
        (),
        "test_f_and_grad_visible: wrote to stderr",
    ),
    HostileSample(
        "patched-numpy",
        "a wrong step size with numpy.allclose and builtins.abs replaced",
        _answers(
            stable_step=WRONG_STEP + "\nimport builtins\n"
            "np.allclose = lambda *a, **k: True\nbuiltins.abs = lambda x: 0.0"
        ),
        ("test_stable_step",),
        "assigns numpy.allclose",
    ),
    HostileSample(
        "patched-torch-and-checks",
        "a wrong step size with torch.allclose, a check helper and the hidden check replaced",
        _answers(
            stable_step=WRONG_STEP + "\nimport torch\nfrom initlab import checks as c\n"
            "import initlab_grading.assignments.gradient_descent.grader as g\n"
            "torch.allclose = lambda *a, **k: True\n"
            "c.check_finite = lambda *a, **k: None\n"
            "g.check_largest_stable_step = lambda value: None"
        ),
        ("test_stable_step",),
        "assigns initlab.checks.check_finite",
    ),
    HostileSample(
        "silenced-errors",
        "a wrong step size; IPython's error display switched off and failures erased",
        _answers(
            stable_step=WRONG_STEP + "\nip = get_ipython()\n"
            "ip._showtraceback = lambda *a, **k: None\n"
            "ip.showtraceback = lambda *a, **k: None\n"
            "ip.events.register('post_run_cell', lambda r: setattr(r, 'error_in_exec', None))"
        ),
        ("test_stable_step",),
        "names get_ipython",
    ),
    HostileSample(
        "disk-filler",
        "an answer cell that writes a 100 MB file, past the file-size limit",
        _answers(
            hand_iterates='with open("big.bin", "wb") as fh:\n'
            '    for _ in range(100):\n        fh.write(b"x" * 1_000_000)\n' + HAND_ITERATES
        ),
        ("test_hand_iterates",),
        "big.bin (created while grading)",
    ),
    HostileSample(
        "shipped-modules",
        "a wrong step size with fake initlab_grading, initlab.checks, numpy and "
        "sitecustomize modules shipped next to the notebook",
        _shipped,
        ("test_stable_step",),
        "files not copied for grading: initlab/__init__.py",
    ),
    HostileSample(
        "links-out",
        "correct answers; the notebook replaced by a link to a course file, a link and a "
        "hard link to the gradebook, a fifo, and the environment printed",
        _answers(stable_step="largest_stable_step = 2.0 / 3.0\n" + _LINKS),
        (),
        "gradient_descent.ipynb (a symbolic link)",
    ),
    HostileSample(
        "leaks-hidden-tests",
        "a gradient that, called by a hidden test, would raise the source of every caller as "
        "its message; a last answer that prints IPython's input history: the tests run "
        "outside the kernel, so no caller is a test, the answers are right and the history "
        "holds no test",
        _answers(
            f_and_grad=_LEAK_F_AND_GRAD,
            stable_step="largest_stable_step = 2.0 / 3.0" + _LEAK_HISTORY,
        ),
        (),
        "f_and_grad: names linecache (the frames or source of the code calling it)",
    ),
    HostileSample(
        "imports-reference",
        "the function and its gradient imported from the hidden tests' own reference, no "
        "work of its own: the kernel cannot import it (ModuleNotFoundError), so f and "
        "grad_f are missing; the grading report lists the cell for the instructor to read",
        _answers(
            f_and_grad="from initlab_grading.assignments.gradient_descent.grader import f, grad_f"
        ),
        ("test_f_and_grad_visible", "test_f_and_grad_hidden"),
        "f_and_grad: names initlab_grading (the hidden tests' own package); review this notebook",
    ),
    HostileSample(
        "check-replaced-by-builtin",
        "a wrong step size; the hidden check replaced by a builtin (id): the kernel cannot "
        "import the checks, which run outside it, so the wrong answer loses its point; the "
        "report lists the cell for review",
        _answers(
            stable_step=WRONG_STEP + "\nimport initlab_grading.assignments.gradient_descent.grader"
            " as g\ng.check_largest_stable_step = id"
        ),
        ("test_stable_step",),
        "stable_step: names initlab_grading",
    ),
    HostileSample(
        "grader-module-replaced",
        "a wrong step size; the hidden tests' module replaced, through its package's "
        "attribute, by an object whose every check passes: the kernel cannot import the "
        "package, the checks run outside it, and the wrong answer loses its point; the "
        "report lists the cell for review",
        _answers(
            stable_step=WRONG_STEP
            + "\nimport initlab_grading.assignments.gradient_descent as pkg\n"
            + _NO_OP_MODULE.format(name="pkg.grader")
        ),
        ("test_stable_step",),
        "assigns initlab_grading.assignments.gradient_descent.grader",
    ),
    HostileSample(
        "patched-numpy-internals",
        "a wrong step size; numpy's private helper behind np.any and np.all replaced "
        "(np.all always true, np.any always false)",
        _answers(
            stable_step=WRONG_STEP + "\nimport numpy._core.fromnumeric as fn\n"
            "fn._wrapreduction_any_all = lambda a, ufunc, method, *args, **kwargs: "
            "method == 'all'"
        ),
        ("test_stable_step",),
        "assigns numpy._core.fromnumeric._wrapreduction_any_all",
    ),
    HostileSample(
        "settrace-locals",
        "a wrong step size; a tracer (sys.settrace) that rewrites the answer in every "
        "check's local variables: no check runs in the kernel, the wrong answer loses its "
        "point; the report lists the cell",
        _answers(stable_step=WRONG_STEP + _SETTRACE),
        ("test_stable_step",),
        "stable_step: names settrace",
    ),
    HostileSample(
        "replies-rewritten",
        "a wrong step size; the kernel drops its error messages and reports every cell as "
        "a success: the test cells' errors are made outside the kernel, the wrong answer "
        "loses its point; the report lists the cell",
        _answers(stable_step=WRONG_STEP + _REPLIES_REWRITTEN),
        ("test_stable_step",),
        "stable_step: names get_ipython",
    ),
    HostileSample(
        "setup-unlocked",
        "a wrong step size; the setup cell's nbgrader metadata removed and its checks "
        "rebound to an object whose every function returns None: the test cells run "
        "outside the kernel with the gradebook's setup, so only the wrong answer loses its "
        "point; the report lists the cell",
        _setup_unlocked,
        ("test_stable_step",),
        "rebinds checks (initlab.checks)",
    ),
    HostileSample(
        "snoop",
        "correct answers plus code that reads and writes the gradebook, the master and "
        "another student's files",
        _answers(stable_step="largest_stable_step = 2.0 / 3.0\n" + _SNOOP),
        (),
        "gradebook.db (read/write, ",
    ),
]


INJECTOR = "html-injection"
INJECTED = "initlabInjected"
"""What the injector's scripts would set, and the text its HTML shows when inert."""
_HTML_INJECTION = f"""
from IPython.display import HTML, Javascript, display
display(HTML('<b>bold</b><script>window.{INJECTED} = 1</script>'
             '<img src="x" onerror="window.{INJECTED} = 2">'))
display(Javascript('window.{INJECTED} = 3'))
"""
_MARKDOWN_INJECTION = (
    "The gradient at (8, 4) is zero, so the iterates stop moving. "
    f'<script>window.{INJECTED} = 4</script><img src="x" onerror="window.{INJECTED} = 5">'
)
SAMPLES.append(
    HostileSample(
        INJECTOR,
        "correct answers; an answer cell displays HTML with a script, an image with an "
        "onerror handler and JavaScript; a written answer carries the same in raw HTML",
        _answers(
            stable_step="largest_stable_step = 2.0 / 3.0\n" + _HTML_INJECTION,
            keep_going=_MARKDOWN_INJECTION,
        ),
        (),
        "",
    )
)


def write(root: Path, samples: list[HostileSample]) -> None:
    """Put each sample where ``nbgrader collect`` would."""
    for sample in samples:
        folder = root / "submitted" / sample.student / ASSIGNMENT
        folder.mkdir(parents=True, exist_ok=True)
        for name, text in sample.files(root).items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text(text)
        (folder / "timestamp.txt").write_text(build.SUBMISSION_TIME)
