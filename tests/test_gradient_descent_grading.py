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


def test_abs_stopping_rule_is_named():
    """f rises over the first step of the overshooting case, so only the seed's signed rule
    stops there; the abs() variant goes on and is named."""
    ns = sample_answers("gradient_descent", "abs-decrease")
    with pytest.raises(CheckFailed, match="not its absolute value"):
        grading.check_stopping_rule(ns["gradient_descent"])
    ref = grading.STOPPING_CASES[-1].reference()
    assert len(ref) == 2 and grading.f(ref[1]) > grading.f(ref[0])


def test_a_gradient_that_evaluates_f_fails_and_the_formula_passes():
    import sys

    ns = sample_answers("gradient_descent", "finite-difference-gradient")
    grading.check_grad(ns["grad_f"])  # right values: without f the calls go unseen
    before = sys.getprofile()
    with pytest.raises(CheckFailed, match="evaluated your f 4 time"):
        grading.check_grad(ns["grad_f"], ns["f"])
    assert sys.getprofile() is before
    ref = sample_answers("gradient_descent", "float32-vectorised")
    grading.check_grad(ref["grad_f"], ref["f"])


def test_minimum_accepts_float32_solves_and_rejects_a_slip():
    H32 = grading.HESSIAN.astype(np.float32)
    b32 = grading.F.b.astype(np.float32)
    for x_star in (
        np.linalg.solve(H32, b32),
        np.linalg.inv(H32) @ b32,
        np.linalg.solve(grading.HESSIAN, grading.F.b),
        [8, 4],
    ):
        grading.check_minimum(x_star, grading.HESSIAN)
    # the bound is a few float32 spacings of 8 and 4, far below any slip
    assert np.all(grading.minimum_tolerance() < 1e-4)
    with pytest.raises(CheckFailed, match="x_star"):
        grading.check_minimum([8.0, 4.001], grading.HESSIAN)
