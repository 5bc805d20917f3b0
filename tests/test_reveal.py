"""How much feedback reveals (initlab_grading.checking.reveal): the marks the hidden checks
put on expected values and formulas, and what each level of feedback keeps of them."""

from __future__ import annotations

import pytest

from initlab_grading.checking.reveal import LEVELS, expected, formula, plain, render

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
    from initlab_grading.preprocessors import HideHiddenTests

    nb, _ = HideHiddenTests(reveal=level).preprocess(_graded_notebook(), {})
    texts = _texts(nb)
    shown = render(MESSAGE, level)
    assert not any("⟦" in text for text in texts), texts
    assert texts[0] == "Visible tests passed.\n"
    assert texts[1:] == [shown, f"CheckFailed: {shown}", shown + "\n", shown, shown, shown]


def test_feedback_shows_the_expected_value_by_default():
    from traitlets.config import Config

    from initlab_grading.preprocessors import HideHiddenTests

    assert HideHiddenTests().reveal == "expected"
    config = Config()
    config.HideHiddenTests.reveal = "diagnosis"
    assert HideHiddenTests(config=config).reveal == "diagnosis"
    with pytest.raises(Exception, match="reveal"):
        HideHiddenTests(reveal="everything")
