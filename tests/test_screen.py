"""The grading side's screen of a submission's own cells (initlab_grading.grading.screen):
each kind of name is found as a whole word wherever it stands, ordinary answers pass, and
only cells the student could edit are read."""

from __future__ import annotations

import pytest
from nbformat import v4

from initlab_grading.grading.screen import review_notes, suspect_names


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


def test_only_cells_the_student_could_edit_are_read():
    locked = v4.new_code_cell("from initlab_grading.assignments import x")
    locked.metadata["nbgrader"] = {"locked": True, "grade_id": "setup"}
    answer = v4.new_code_cell("import ctypes\nimport importlib")
    answer.metadata["nbgrader"] = {"solution": True, "locked": False, "grade_id": "answer"}
    added = v4.new_code_cell("sys.settrace(None)")
    text = v4.new_markdown_cell("I did not use initlab_grading.")
    notes = review_notes(
        [locked, answer, text, added],
        lambda c, i: c.metadata.get("nbgrader", {}).get("grade_id") or f"cell {i + 1}",
    )
    assert notes == [
        "answer: names importlib (an import by computed name); ctypes (raw memory access); "
        "review this notebook",
        "cell 4: names settrace (a tracing hook, which can read and change a test's "
        "variables); review this notebook",
    ]
