"""The grading side's screen of a submission's own cells (initlab_grading.grading.screen):
each kind of name is found as a whole word wherever it stands, each way of changing a module
the tests use is found, ordinary answers pass, and only cells the student could edit are
read; no reference answer, bundled sample or released cell of any assignment gets a line."""

from __future__ import annotations

import nbformat
import pytest
from nbformat import v4

from initlab_grading.course import build, layout
from initlab_grading.course.samples import samples_for
from initlab_grading.grading.preprocessors import _module_names
from initlab_grading.grading.screen import changed_modules, review_notes, suspect_names

SETUP = {"np": "numpy", "checks": "initlab.checks", "stats": "scipy.stats"}
"""Names a setup cell bound to modules that the test cells use."""


@pytest.mark.parametrize(
    "source, name",
    [
        ("from initlab_grading.assignments.gradient_descent import grader", "initlab_grading"),
        ("import sys\nsys.settrace(lambda *a: None)", "settrace"),
        ("threading.setprofile(hook)", "setprofile"),
        ("g = sys.modules['numpy']", "sys.modules"),
        ("m = __import__('initlab' + '_grading')", "__import__"),
        ("import importlib", "importlib"),
        ("import builtins\nbuiltins.abs = len", "builtins"),
        ("__builtins__.abs = len", "__builtins__"),
        ("ip = get_ipython()", "get_ipython"),
        ("caller = sys._getframe(1)", "_getframe"),
        ("inspect.stack(0)", "inspect.stack"),
        ("import gc\nobjs = gc.get_objects()", "gc.get_objects"),
        ("import ctypes", "ctypes"),
        ("copy = types.FunctionType(f.__code__, dict(f.__globals__))", "FunctionType"),
    ],
)
def test_each_kind_of_name_is_found(source, name):
    (found,) = suspect_names(source)
    assert found.startswith(f"{name} (")


@pytest.mark.parametrize(
    "source",
    [
        "def grad_f(x):\n    return np.array([2 * (x[0] - 6) - x[1], 2 * x[1] - x[0]])",
        "largest_stable_step = 2.0 / 3.0",
        "my_builtins_list = [abs, len]\nimportlib_version = 3",  # part of a longer word
        "import inspect\nsig = inspect.signature(f)",
        "torch.nn.init.kaiming_normal_(w)",
    ],
)
def test_ordinary_answers_pass(source):
    assert suspect_names(source) == []


@pytest.mark.parametrize(
    "source, said",
    [
        ("np.allclose = lambda *a, **k: True", "assigns numpy.allclose"),
        (
            "np._core.fromnumeric._wrapreduction = f",
            "assigns numpy._core.fromnumeric._wrapreduction",
        ),
        ("stats.norm.isf = lambda q: 0.0", "assigns scipy.stats.norm.isf"),
        ("from scipy import stats as s\ns.kstest = f", "assigns scipy.stats.kstest"),
        ("import scipy.stats\nscipy.stats.kstest = f", "assigns scipy.stats.kstest"),
        ("import scipy.stats as st\nst.norm.isf = f", "assigns scipy.stats.norm.isf"),
        ("import torch\nfirst, torch.allclose = 1, f", "assigns torch.allclose"),
        ("import builtins\nbuiltins.abs = len", "assigns builtins.abs"),
        ("del np.any", "deletes numpy.any"),
        ("setattr(np, 'all', f)", "setattr on numpy"),
        (
            "checks = SimpleNamespace(check_close=print)",
            "rebinds checks (initlab.checks)",
        ),
        ("def checks():\n    pass", "rebinds checks"),
        ("from initlab import budget, plotting as p\np = None", "rebinds p (initlab.plotting)"),
    ],
)
def test_changes_to_the_modules_the_tests_use_are_found(source, said):
    (found,) = changed_modules(source, SETUP)
    assert found.startswith(said), found


@pytest.mark.parametrize(
    "source",
    [
        "x = np.zeros(3)\nx[0] = 1.0\nnet.weight = w",  # arrays and objects of one's own
        "plt.rcParams['figure.dpi'] = 80",  # an item, not an attribute
        "data = X[:100]",  # a module name the tests do not use
        "%timeit f(1)",  # IPython syntax: not Python, nothing to read
    ],
)
def test_ordinary_code_changes_no_module(source):
    assert changed_modules(source, SETUP) == []


def test_only_cells_the_student_could_edit_are_read():
    locked = v4.new_code_cell("from initlab_grading.assignments import x")
    locked.metadata["nbgrader"] = {"locked": True, "grade_id": "setup"}
    answer = v4.new_code_cell("import ctypes\nimport importlib")
    answer.metadata["nbgrader"] = {"solution": True, "locked": False, "grade_id": "answer"}
    added = v4.new_code_cell("sys.settrace(None)")
    text = v4.new_markdown_cell("I did not use initlab_grading.")
    patched = v4.new_code_cell("np.allclose = lambda *a, **k: True\ncheck = 1")
    notes = review_notes(
        [locked, answer, text, added, patched],
        lambda c, i: c.metadata.get("nbgrader", {}).get("grade_id") or f"cell {i + 1}",
        SETUP,
    )
    assert notes == [
        "answer: names importlib (an import by computed name); ctypes (raw memory access); "
        "review this notebook",
        "cell 4: names settrace (a tracing hook, which can read and change a test's "
        "variables); review this notebook",
        "cell 5: assigns numpy.allclose (changes a module the tests use); review this notebook",
    ]


@pytest.mark.parametrize("assignment", layout.ASSIGNMENTS)
def test_no_reference_sample_or_released_cell_is_listed(repo, assignment):
    """The release's cells, and the reference answers and every bundled sample's answers as
    cells of their own, screened as grading screens them, with every module the setup binds
    (grading uses those the test cells use): none is listed, except the hostile samples,
    each with the line it states."""
    release = nbformat.read(repo / "release" / assignment / layout.notebook_name(assignment), 4)
    answers = [("reference", build.reference_answers(repo, assignment))]
    samples = samples_for(assignment)
    answers += [(sample.student, sample.answers) for sample in samples if not sample.screened]
    cells = list(release.cells)
    for student, sources in answers:
        for grade_id, source in sources.items():
            cells.append(v4.new_code_cell(source, metadata={"where": f"{student} {grade_id}"}))

    def where(cell, index):
        return cell.metadata.get("where") or f"release cell {index + 1}"

    assert review_notes(cells, where, _module_names(release)) == []
    for sample in samples:
        if sample.screened:  # a hostile sample: its answers get the line it states
            sources = [v4.new_code_cell(source) for source in sample.answers.values()]
            notes = review_notes(sources, where, _module_names(release))
            assert any(sample.screened in note for note in notes), (sample.student, notes)
