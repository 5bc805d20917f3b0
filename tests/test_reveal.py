"""How much feedback reveals (initlab_grading.checking.reveal): the marks the hidden checks
put on expected values and formulas, and what each level of feedback keeps of them."""

from __future__ import annotations

import contextlib
import functools
import io
import itertools
import re
from typing import Any

import nbformat
import pytest

from conftest import REPO
from initlab.checks import CheckFailed
from initlab_grading.checking.reveal import LEVELS, expected, formula, plain, render
from initlab_grading.course import layout
from initlab_grading.course.samples import Sample, samples_for

MESSAGE = (
    "grad_f([0.0, 0.0]) returned [12.0, -0.0]"
    + expected("; expected [-12.0, 0.0]")
    + ". The gradient has the wrong sign"
    + formula(": df/dx1 = 2(x1 - 6) - x2")
    + "."
)


def test_the_expected_level_only_removes_the_marks():
    shown = render(MESSAGE, "expected")
    assert shown == (
        "grad_f([0.0, 0.0]) returned [12.0, -0.0]; expected [-12.0, 0.0]. The gradient has the "
        "wrong sign: df/dx1 = 2(x1 - 6) - x2."
    )
    assert shown == plain(MESSAGE) == render(MESSAGE)


def test_the_formula_level_leaves_out_the_expected_value():
    assert render(MESSAGE, "formula") == (
        "grad_f([0.0, 0.0]) returned [12.0, -0.0]. The gradient has the wrong sign: "
        "df/dx1 = 2(x1 - 6) - x2."
    )


def test_the_diagnosis_level_leaves_out_the_expected_value_and_the_formula():
    assert render(MESSAGE, "diagnosis") == (
        "grad_f([0.0, 0.0]) returned [12.0, -0.0]. The gradient has the wrong sign."
    )


def test_an_expected_value_inside_a_formula_goes_first():
    message = (
        "step 2 had step size 0.05"
        + formula("; expected lr / sqrt(2)" + expected(" = 0.0707"))
        + ". The steps follow lr / t."
    )
    assert render(message, "expected") == (
        "step 2 had step size 0.05; expected lr / sqrt(2) = 0.0707. The steps follow lr / t."
    )
    assert render(message, "formula") == (
        "step 2 had step size 0.05; expected lr / sqrt(2). The steps follow lr / t."
    )
    assert render(message, "diagnosis") == "step 2 had step size 0.05. The steps follow lr / t."


@pytest.mark.parametrize(
    "message, shown",
    [
        # the punctuation after a span wins over the one before it
        ("x is 5; " + expected("expected 3") + ".", "x is 5."),
        ("x is 5, " + expected("the reference gives 3") + ", and y is 2.", "x is 5, and y is 2."),
        # a span in parentheses takes them along; one that opens them leaves the rest
        ("x is 5 (" + expected("expected 3") + ").", "x is 5."),
        ("x is 5 (" + expected("expected 3, ") + "allowed 2).", "x is 5 (allowed 2)."),
        # a whole sentence, first, in the middle or last
        (expected("Expected 3.") + " The sign is wrong.", "The sign is wrong."),
        ("x is 5. " + formula("Use x + 1.") + " The sign is wrong.", "x is 5. The sign is wrong."),
        ("x is 5. " + formula("Use x + 1."), "x is 5."),
        # a span that ends the text without a full stop
        ("x is 5" + expected("; expected 3"), "x is 5"),
        ("x is 5; " + expected("expected 3"), "x is 5."),
        # two spans in a row
        ("x is 5" + expected("; expected 3") + "." + formula(" Use x + 1."), "x is 5."),
        # other lines are left as they are
        ("first line\n" + expected("Expected 3.") + " x\nlast", "first line\nx\nlast"),
    ],
)
def test_the_sentence_still_reads_once_spans_are_removed(message, shown):
    assert render(message, "diagnosis") == shown


def test_a_span_cut_short_is_removed_to_the_end_of_its_text():
    """An error message cut to its length limit may lose a span's closing mark: the rest of
    that text goes with it, never shown unmarked."""
    cut = ("x is 5" + expected("; expected 3 (allowed 0.1)") + ". Look at y.")[:28]
    assert "⟦expected⟧" in cut and "⟦/expected⟧" not in cut
    assert render(cut, "formula") == render(cut, "diagnosis") == "x is 5"
    assert render(cut, "expected") == "x is 5; expected 3"


@pytest.mark.parametrize("level", LEVELS)
def test_no_mark_survives_at_any_level(level):
    stray = "a ⟦/expected⟧ b ⟦formula⟧ c ⟦/formula⟧ d ⟦expected⟧"
    assert "⟦" not in render(stray, level)
    assert "⟦" not in render(MESSAGE, level)


def test_text_without_marks_is_left_alone():
    text = "It works with several seeds and fails with one (as np.std(..., ddof=1) does) ."
    for level in LEVELS:
        assert render(text, level) is text
    assert expected("") == formula("") == ""


def test_an_unknown_level_is_refused():
    with pytest.raises(ValueError, match="diagnosis"):
        render(MESSAGE, "nothing")


# -- feedback: HideHiddenTests shows every output at the configured level ------------------


def _graded_notebook():
    from nbformat import v4

    test = v4.new_code_cell(
        'print("Visible tests passed.")\n### BEGIN HIDDEN TESTS\ngrading.check_x(x)\n'
        "### END HIDDEN TESTS"
    )
    test.metadata["nbgrader"] = {
        "grade": True,
        "solution": False,
        "locked": True,
        "grade_id": "test_x",
        "points": 1,
        "schema_version": 3,
    }
    test.outputs = [
        v4.new_output("stream", name="stdout", text="Visible tests passed.\n"),
        v4.new_output("error", ename="CheckFailed", evalue=MESSAGE, traceback=["..."]),
    ]
    printed = v4.new_code_cell("print(message)")  # a cell that prints a check's message
    printed.outputs = [
        v4.new_output("stream", name="stdout", text=MESSAGE + "\n"),
        v4.new_output("display_data", data={"text/plain": MESSAGE}),
        v4.new_output("error", ename="CheckFailed", evalue=MESSAGE, traceback=[MESSAGE]),
    ]
    return v4.new_notebook(cells=[test, printed])


def _texts(nb) -> list[str]:
    texts = []
    for cell in nb.cells:
        for out in cell.outputs:
            if out.output_type == "stream":
                texts.append(out.text)
            elif out.output_type == "error":
                texts += [out.evalue, *out.traceback]
            else:
                texts += [v for v in out.data.values() if isinstance(v, str)]
    return texts


@pytest.mark.parametrize("level", LEVELS)
def test_feedback_shows_every_output_at_the_configured_level(level):
    from initlab_grading.grading.preprocessors import HideHiddenTests

    nb, _ = HideHiddenTests(reveal=level).preprocess(_graded_notebook(), {})
    texts = _texts(nb)
    shown = render(MESSAGE, level)
    assert not any("⟦" in text for text in texts), texts
    assert texts[0] == "Visible tests passed.\n"
    assert texts[1:] == [shown, f"CheckFailed: {shown}", shown + "\n", shown, shown, shown]


def test_feedback_blanks_lines_that_quote_hidden_test_code():
    """A notebook of an assignment whose checks run in the kernel can print the hidden
    test that called it (its stack, IPython's history): each line quoting the hidden
    code is blanked in every kind of output; the rest stays."""
    from nbformat import v4

    from initlab_grading.grading.preprocessors import QUOTE_NOTE, HideHiddenTests

    nb = _graded_notebook()
    leak = v4.new_code_cell("print(In)")
    quoted = "the caller:\n  grading.check_x(x)\nend"
    leak.outputs = [
        v4.new_output("stream", name="stdout", text=quoted),
        v4.new_output("error", ename="ValueError", evalue=quoted, traceback=[quoted]),
        v4.new_output("display_data", data={"text/plain": quoted}),
    ]
    nb.cells.append(leak)
    nb, _ = HideHiddenTests().preprocess(nb, {})
    texts = _texts(v4.new_notebook(cells=[nb.cells[-1]]))
    assert texts and all(t == f"the caller:\n{QUOTE_NOTE}\nend" for t in texts), texts


def test_feedback_shows_the_expected_value_by_default():
    from traitlets.config import Config

    from initlab_grading.grading.preprocessors import HideHiddenTests

    assert HideHiddenTests().reveal == "expected"
    config = Config()
    config.HideHiddenTests.reveal = "diagnosis"
    assert HideHiddenTests(config=config).reveal == "diagnosis"
    with pytest.raises(Exception, match="reveal"):
        HideHiddenTests(reveal="everything")


# -- every grader: the hidden checks of each mistake sample, at every level ---------------
#
# Each sample's answers run in-process after the master's own cells (setup, instructor
# cells, reference answers), and the hidden part of each test cell the sample loses runs
# as grading runs it. Its message, rendered at each level, must keep what that level
# shows (the sample's stated text included) and nothing of what it hides.

_MARK = re.compile(r"⟦(/?)(expected|formula)⟧")
_SOLUTION_MARKER = re.compile(r"^\s*### (BEGIN|END) SOLUTION\s*$")
_HIDDEN = ("### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS")
_FLOAT = re.compile(r"-?\d+\.\d+(?:e[-+]?\d+)?|\d+e[-+]?\d+")
_STATES_VALUE = re.compile(
    r"\bexpected\b|\bshould be\b|\bthe reference gives\b|\bthe engine's is\b|"
    r"\byour run learned\b|\bgives? -?\d\S* \+-"
)
"""Phrases that state a correct value; none may be left at the level "diagnosis"."""
_SHOWN_ANYWAY = re.compile(
    r"has shape \([^)]*\)[^;.]*; expected \([^)]*\)|raised \w+: .*?\.(?=\s|$)"
)
"""What a message may say at every level although it reads like an expected value: the
shape an answer must have (the task states it) and the text of the student's own
exception."""


def _code_cells(assignment: str) -> list[tuple[Any, dict]]:
    nb = nbformat.read(REPO / "source" / assignment / f"{assignment}.ipynb", as_version=4)
    return [(c, c.metadata.get("nbgrader", {})) for c in nb.cells if c.cell_type == "code"]


def _is_test(meta: dict) -> bool:
    return bool(meta.get("grade")) and not meta.get("solution")


@contextlib.contextmanager
def _quiet():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield
    plt.close("all")


@functools.lru_cache(maxsize=1)  # one assignment at a time: the parameters come in order
def _master_namespace(assignment: str) -> dict:
    """The master's cells up to its last test cell, run in order (setup, instructor cells,
    reference answers; not the tests)."""
    cells = _code_cells(assignment)
    last_test = max(i for i, (_, meta) in enumerate(cells) if _is_test(meta))
    namespace: dict = {}
    with _quiet():
        for cell, meta in cells[:last_test]:
            if not meta or _is_test(meta):
                continue  # instructor checks, tests
            lines = [ln for ln in cell.source.splitlines() if not _SOLUTION_MARKER.match(ln)]
            exec("\n".join(lines), namespace)
    return namespace


def _hidden_messages(assignment: str, sample: Sample) -> dict[str, str]:
    """The message of each hidden check the sample fails, by test cell."""
    cells = _code_cells(assignment)
    namespace = dict(_master_namespace(assignment))
    ids = [meta.get("grade_id") for _, meta in cells]
    first = min(i for i, gid in enumerate(ids) if gid in sample.answers)
    last = max(i for i, gid in enumerate(ids) if gid in sample.lost)
    messages = {}
    with _quiet():
        for i, (cell, meta) in enumerate(cells):
            if meta.get("solution") and ids[i] in sample.answers:
                source = sample.answers[ids[i]]
            elif first < i < last and meta.get("locked") and not _is_test(meta):
                # an instructor cell that may use the sample's answers (the activation table);
                # the long runs keep the reference's results
                if "nbval-ignore-output" in cell.metadata.get("tags", []):
                    continue
                source = cell.source
            elif ids[i] in sample.lost and _HIDDEN[0] in cell.source:
                hidden = cell.source.split(_HIDDEN[0])[1].split(_HIDDEN[1])[0]
                try:
                    exec(hidden, dict(namespace))
                except CheckFailed as failure:
                    messages[ids[i]] = str(failure)
                else:
                    messages[ids[i]] = ""
                continue
            else:
                continue
            try:
                exec(source, namespace)
            except Exception:  # noqa: BLE001 -- nbgrader runs on after a failing cell too
                pass
    return messages


def _labelled(message: str) -> tuple[str, list[str]]:
    """The message without marks, and the kind of each of its characters: "expected",
    "formula" or "" (never marked)."""
    text, kinds, stack, pos = [], [], [], 0
    for mark in [*_MARK.finditer(message), None]:
        end = mark.start() if mark else len(message)
        kind = "expected" if "expected" in stack else (stack[-1] if stack else "")
        text.append(message[pos:end])
        kinds += [kind] * (end - pos)
        if mark is None:
            break
        if mark[1] and mark[2] in stack:
            stack.remove(mark[2])
        elif not mark[1]:
            stack.append(mark[2])
        pos = mark.end()
    return "".join(text), kinds


def _runs(text: str, kinds: list[str], kind: str) -> list[str]:
    return [
        "".join(ch for ch, _ in group)
        for key, group in itertools.groupby(zip(text, kinds, strict=True), key=lambda p: p[1])
        if key == kind
    ]


def _flat(text: str) -> str:
    return " ".join(text.split())


def _mistake_samples() -> list[tuple[str, Sample]]:
    found = []
    for assignment in layout.ASSIGNMENTS:
        hidden = {
            meta.get("grade_id") for c, meta in _code_cells(assignment) if _HIDDEN[0] in c.source
        }
        for sample in samples_for(assignment):
            if sample.screened:  # a hostile sample: it would change this process
                continue
            if not sample.blank and set(sample.lost) & hidden and sample.answers:
                found.append((assignment, sample))
    return found


@pytest.mark.parametrize(
    "assignment, sample", _mistake_samples(), ids=lambda v: getattr(v, "student", v)
)
def test_each_sample_s_hidden_messages_reveal_what_each_level_allows(assignment, sample):
    messages = _hidden_messages(assignment, sample)
    assert messages and all(messages.values()), f"a hidden check passed: {messages}"
    for cell_id, message in messages.items():
        text, kinds = _labelled(message)
        for level in LEVELS:
            assert "⟦" not in render(message, level), (level, message)
        assert render(message, "expected") == text
        diagnosis = render(message, "diagnosis")
        shown = _flat(text)
        # the sample's own text, where it comes from the hidden check, shows at the
        # strongest level that its marks allow; its unmarked part shows at every level
        lost = _flat(sample.lost[cell_id])
        if lost in shown:
            start = shown.index(lost)
            flat_kinds = [k for ch, k in zip(text, kinds, strict=True) if not ch.isspace()]
            before = len(shown[:start].replace(" ", ""))
            inside = set(flat_kinds[before : before + len(lost.replace(" ", ""))])
            level = "expected" if "expected" in inside else "formula" if inside else "diagnosis"
            assert lost in _flat(render(message, level)), (level, message)
            for piece in _runs(text, kinds, ""):
                piece = _flat(piece).strip(" .,;:")
                if len(piece) >= 10 and piece in lost:
                    assert piece in _flat(diagnosis), (piece, diagnosis)
        # at "diagnosis": no phrase that states a value, no number only the expected
        # value had, and every unmarked part of the message
        assert not _STATES_VALUE.search(_SHOWN_ANYWAY.sub("", diagnosis)), diagnosis
        unmarked = "".join(_runs(text, kinds, ""))
        for span in _runs(text, kinds, "expected"):
            for number in _FLOAT.findall(span):
                assert number not in diagnosis or number in unmarked, (number, diagnosis)
        for piece in _runs(text, kinds, ""):
            piece = _flat(piece).strip(" .,;:")
            assert piece in _flat(diagnosis), (piece, diagnosis)
        # at "formula": every formula, without the expected values in it
        with_formulas = _flat(render(message, "formula"))
        for span in _runs(text, kinds, "formula"):
            span = _flat(span).strip(" .,;:")
            assert span in with_formulas, (span, with_formulas)
            assert span not in _flat(diagnosis) or span in _flat(unmarked), (span, diagnosis)
