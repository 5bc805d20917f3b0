"""Assignment 5b's references and hidden checks, tested directly (no nbgrader)."""

from __future__ import annotations

import pytest
import torch

from conftest import sample_answers
from initlab_grading import kurtosis_deep_dive as grading


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
    with pytest.raises(grading.CheckFailed, match="in place"):
        grading.check_zero_init(lambda t: torch.eye(t.shape[0]))


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
