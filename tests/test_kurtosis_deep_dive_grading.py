"""Assignment 5b's references and hidden checks, tested directly (no nbgrader)."""

from __future__ import annotations

import pytest
import torch

from conftest import sample_answers
from initlab_grading.assignments.kurtosis_deep_dive import grader as grading


def _reference_zero_init(t):
    if t.dim() != 2 or t.shape[0] != t.shape[1]:
        raise ValueError("square only")
    with torch.no_grad():
        return t.copy_(torch.eye(t.shape[0]))


def test_reference_passes_every_check():
    grading.check_var_sample_variance(grading.var_sample_variance)
    grading.check_var_sample_variance_by_simulation(grading.var_sample_variance)
    grading.check_zero_init(_reference_zero_init)


def test_answers_written_another_way_pass_every_check():
    ns = sample_answers("kurtosis_deep_dive", "written-another-way")
    grading.check_var_sample_variance(ns["var_sample_variance"])
    grading.check_var_sample_variance_by_simulation(ns["var_sample_variance"])
    grading.check_zero_init(ns["zero_init_"])


@pytest.mark.parametrize(
    "wrong, hint",
    [
        (lambda kappa, var_x, n: (kappa - 1) * var_x**2 / n, "large-n limit"),
        (
            lambda kappa, var_x, n: grading.var_sample_variance(kappa, var_x, n) / var_x,
            "var_x in place of its square",
        ),
    ],
    ids=["large-n-limit", "variance-not-squared"],
)
def test_var_sample_variance_names_the_slip(wrong, hint):
    with pytest.raises(grading.CheckFailed, match=hint):
        grading.check_var_sample_variance(wrong)


@pytest.mark.parametrize(
    "wrong",
    [
        lambda kappa, var_x, n: 1.2 * grading.var_sample_variance(kappa, var_x, n),
        lambda kappa, var_x, n: (kappa - 1) * var_x**2 / n,
    ],
    ids=["20-percent-high", "large-n-limit"],
)
def test_var_sample_variance_simulation_catches_a_wrong_formula(wrong):
    with pytest.raises(grading.CheckFailed, match="simulating samples of size"):
        grading.check_var_sample_variance_by_simulation(wrong)


def test_zero_init_check_accepts_identity_and_rejects_copies():
    grading.check_zero_init(_reference_zero_init)
    with pytest.raises(grading.CheckFailed, match="return it; it returned a new tensor and left"):
        grading.check_zero_init(lambda t: torch.eye(t.shape[0]))

    def no_return(t):
        _reference_zero_init(t)

    with pytest.raises(grading.CheckFailed, match="return it; it returned None"):
        grading.check_zero_init(no_return)

    def filled_but_copy(t):
        return _reference_zero_init(t).clone()

    with pytest.raises(grading.CheckFailed, match="return it; it filled the tensor but returned"):
        grading.check_zero_init(filled_but_copy)


def _fill_eye(t):
    with torch.no_grad():
        return t.copy_(torch.eye(t.shape[0]))


def _fill_eye_any_shape(t):
    with torch.no_grad():
        return t.copy_(torch.eye(*t.shape))


def _index_first_row(t):
    if t.shape[1] != t.shape[0]:
        t.shape[7]  # an IndexError instead of a ValueError
    return _fill_eye(t)


@pytest.mark.parametrize(
    "answer, message",
    [
        (_fill_eye_any_shape, "did not raise"),
        (_fill_eye, "raised RuntimeError"),
        (_index_first_row, "raised IndexError"),
    ],
    ids=["no-check", "torch-error", "index-error"],
)
def test_zero_init_on_a_non_square_weight_needs_a_value_error(answer, message):
    with pytest.raises(grading.CheckFailed, match=message) as info:
        grading.check_zero_init(answer)
    assert "ValueError" in str(info.value)


@pytest.mark.parametrize(
    "student, hint",
    [
        ("var-s2-large-n", "large-n limit"),
        ("var-s2-variance-not-squared", "var_x in place of its square"),
        ("var-s2-normal-case", "the value for normal data only"),
        ("var-s2-missing-parentheses", "without parentheses only the fraction"),
        ("var-s2-excess-kurtosis-formula", "the formula for the excess kurtosis"),
    ],
)
def test_each_var_sample_variance_sample_gets_its_own_diagnosis(student, hint):
    answer = sample_answers("kurtosis_deep_dive", student)["var_sample_variance"]
    with pytest.raises(grading.CheckFailed, match=hint) as info:
        grading.check_var_sample_variance(answer)
    others = [words for _, words in grading.VAR_S2_SLIPS if hint not in words]
    assert not any(words in str(info.value) for words in others)


def test_the_var_sample_variance_slips_differ_from_each_other_where_they_are_wrong():
    """A diagnosis fires only when its condition holds: on every case where a slip is wrong,
    it is farther than the diagnoses' 64 u (relative) from the truth and from every other
    slip, so the right formula is named by none and a slip by its own words only."""
    u = grading.unit_roundoff()
    for kappa, var_x, n in grading.VAR_S2_CASES:
        want = grading.var_sample_variance(kappa, var_x, n)
        values = [slip(kappa, var_x, n) for slip, _ in grading.VAR_S2_SLIPS]
        for i, a in enumerate(values):
            if abs(a - want) <= 64 * u * abs(want):
                continue  # right on this case: never reached with its value
            assert abs(a - want) > 64 * u * abs(a)
            for b in values[i + 1 :]:
                assert abs(a - b) > 128 * u * max(abs(a), abs(b)), (kappa, var_x, n)
    grading.check_var_sample_variance(grading.var_sample_variance)


def test_zero_init_names_zeros_and_an_unzeroed_diagonal_and_not_other_fills():
    def zeros(t):
        if t.shape[0] != t.shape[1]:
            raise ValueError("square only")
        with torch.no_grad():
            return t.zero_()

    def diagonal_only(t):
        if t.shape[0] != t.shape[1]:
            raise ValueError("square only")
        with torch.no_grad():
            return t.fill_diagonal_(1.0)

    def ones(t):
        if t.shape[0] != t.shape[1]:
            raise ValueError("square only")
        with torch.no_grad():
            return t.fill_(1.0)

    with pytest.raises(grading.CheckFailed, match="wrote zeros everywhere"):
        grading.check_zero_init(zeros)
    with pytest.raises(grading.CheckFailed, match="left the other entries as they were"):
        grading.check_zero_init(diagonal_only)
    with pytest.raises(grading.CheckFailed, match="did not write the identity") as info:
        grading.check_zero_init(ones)
    assert "zeros everywhere" not in str(info.value) and "as they were" not in str(info.value)
    for student, words in (
        ("zero-zeros", "wrote zeros everywhere"),
        ("zero-diagonal-only", "left the other entries as they were"),
        ("zero-assert-square", "raised AssertionError"),
    ):
        answer = sample_answers("kurtosis_deep_dive", student)["zero_init_"]
        with pytest.raises(grading.CheckFailed, match=words):
            grading.check_zero_init(answer)
