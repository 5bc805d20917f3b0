"""Assignment 1's reference and hidden checks, tested directly (no nbgrader)."""

import numpy as np
import pytest

from conftest import sample_answers
from initlab.checks import CheckFailed
from initlab_grading import gradient_descent as grading


def test_reference_reproduces_the_seed():
    path = grading.SEED_CASE.reference()
    assert len(path) == 11
    np.testing.assert_allclose(path[-1], [7.619735, 4.380265], atol=5e-7)
    np.testing.assert_array_equal(grading.grad_f([6.0, 6.0]), [-6.0, 6.0])
    assert grading.f(grading.MINIMUM) == grading.MIN_VALUE == -12.0
    assert grading.LARGEST_STABLE_STEP == pytest.approx(2 / 3)


def test_hand_iterations_of_the_seed():
    grading.check_hand_iterates([[6, 6], [9, 3], [8, 4], [8, 4]])


@pytest.mark.parametrize("case", grading.ALL_CASES, ids=lambda c: c.describe())
def test_every_case_keeps_its_stopping_decisions_clear_of_float32_roundoff(case):
    """The tolerance argument of the module docstring needs every decrease of f to be
    farther from tol than its float32 round-off bound: then a correct float32 answer
    cannot stop at a different step."""
    path = case.reference()
    assert np.all(grading.stopping_margins(case.q, path, case.lr, case.tol) > 0)


def test_float32_answers_pass_every_check():
    ns = sample_answers("gradient_descent", "float32-vectorised")
    grading.check_f(ns["f"])
    grading.check_grad(ns["grad_f"])
    grading.check_step_schedule(ns["gradient_descent"])
    grading.check_stopping_rule(ns["gradient_descent"])
    grading.check_trajectories(ns["gradient_descent"])


def test_a_trajectory_off_by_more_than_the_bound_fails():
    def nudged(x0, func, grad, max_steps, lr, tol=1e-3):
        path = grading.gradient_descent(x0, func, grad, max_steps, lr, tol)
        path[-1] += 1e-3  # far above the float32 bound (about 1e-4 at most here)
        return path

    with pytest.raises(CheckFailed, match="point 10 of the trajectory"):
        grading.check_trajectories(nudged)


def test_gradient_mistakes_are_named():
    with pytest.raises(CheckFailed, match="cross term -x1\\*x2 is missing"):
        grading.check_grad(lambda x: np.array([2 * (x[0] - 6), 2 * x[1]]))
    with pytest.raises(CheckFailed, match="components are swapped"):
        grading.check_grad(lambda x: grading.grad_f(x)[::-1])
    with pytest.raises(CheckFailed, match="changed its input"):

        def mutating(x):
            g = grading.grad_f(x)
            x[:] = 0
            return g

        grading.check_grad(mutating)
