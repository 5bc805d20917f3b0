"""Assignment 1's reference and hidden checks, tested directly (no nbgrader)."""

import numpy as np
import pytest

from conftest import sample_answers
from initlab.checks import CheckFailed
from initlab_grading.assignments.gradient_descent import grader as grading


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


def test_the_seed_run_ends_at_max_steps_not_by_the_tolerance_rule():
    """The 10-step run from (6, 6) with lr = 0.1 takes every step it may: its last decrease
    is far above tol, so the notebook must not say the tolerance rule stopped it. With room
    to go on, the tolerance rule stops it after 40 steps, short of the minimum."""
    path = grading.SEED_CASE.reference()
    assert len(path) - 1 == grading.SEED_CASE.max_steps
    last = grading.f(path[-2]) - grading.f(path[-1])
    assert last > 50 * grading.SEED_CASE.tol  # 0.0957 against 1e-3
    longer = grading.Case(grading.F, (6.0, 6.0), 1000, 0.1, 1e-3).reference()
    assert len(longer) - 1 == 40
    assert grading.f(longer[-2]) - grading.f(longer[-1]) < 1e-3
    assert np.linalg.norm(longer[-1] - grading.MINIMUM) > 0.05


def test_one_point_short_of_a_max_steps_run_is_not_blamed_on_tol():
    """A trajectory one point short of a reference that ended at max_steps gets the message
    that its last step's decrease was not below tol, never 'the decrease was < tol'."""

    def one_short(x0, func, grad, max_steps, lr, tol=1e-3):
        return grading.gradient_descent(x0, func, grad, max_steps, lr, tol)[:-1]

    with pytest.raises(CheckFailed) as info:
        grading._check_against_reference(
            grading.SEED_CASE,
            one_short(np.array(grading.SEED_CASE.x0), grading.f, grading.grad_f, 10, 0.1),
        )
    message = str(info.value)
    assert "stopped after step 9" in message and "not below tol" in message
    assert "one point early" not in message


def test_no_constant_step_at_the_supremum_converges():
    """2/3 is the supremum of the converging constant steps, not a largest converging step:
    from (6, 6) the step 2/3 alternates between (6, 6) and (10, 2) forever, and every step
    just below it converges."""
    eta = grading.LARGEST_STABLE_STEP
    x = grading.X_START.copy()
    for t in range(200):
        x = x - eta * grading.grad_f(x)
        np.testing.assert_allclose(x, [10.0, 2.0] if t % 2 == 0 else [6.0, 6.0], atol=1e-12)
    x = grading.X_START.copy()
    for _ in range(2000):
        x = x - 0.99 * eta * grading.grad_f(x)
    assert np.linalg.norm(x - grading.MINIMUM) < 1e-6
    grading.check_largest_stable_step(2 / 3)
    grading.check_largest_stable_step(np.float32(2 / 3))
    with pytest.raises(CheckFailed, match="not the supremum of the step sizes that converge"):
        grading.check_largest_stable_step(0.5)


def test_an_aliased_trajectory_costs_the_trajectory_cell_only():
    """Points appended as one array updated in place: the schedule and the stopping rule
    are judged on the points grad received; the trajectory check names the aliasing."""
    ns = sample_answers("gradient_descent", "aliased-trajectory")
    grading.check_step_schedule(ns["gradient_descent"])
    grading.check_stopping_rule(ns["gradient_descent"])
    with pytest.raises(grading.CheckFailed, match="one array changed in place"):
        grading.check_trajectories(ns["gradient_descent"])


def test_aliasing_is_recovered_only_from_one_grad_call_per_step():
    """An optimiser that calls grad twice per step cannot be read off grad's arguments: the
    aliasing is named instead of guessing the points."""

    def twice(x0, func, grad, max_steps, lr, tol=1e-3):
        x = np.array(x0, dtype=float)
        trajectory = [x]
        for t in range(1, max_steps + 1):
            grad(x)
            x -= lr / np.sqrt(t) * np.asarray(grad(x))
            trajectory.append(x)
        return trajectory

    with pytest.raises(grading.CheckFailed, match="one array changed in place"):
        grading.check_step_schedule(twice)


def test_a_single_point_instead_of_the_trajectory_is_named():
    ns = sample_answers("gradient_descent", "final-point-only")
    for check in (
        grading.check_step_schedule,
        grading.check_stopping_rule,
        grading.check_trajectories,
    ):
        with pytest.raises(CheckFailed, match="that is one point, not the trajectory"):
            check(ns["gradient_descent"])

    def ends_only(x0, func, grad, max_steps, lr, tol=1e-3):  # two points: not one
        path = grading.gradient_descent(x0, func, grad, max_steps, lr, tol)
        return path[[0, -1]]

    with pytest.raises(CheckFailed) as info:
        grading.check_trajectories(ends_only)
    assert "one point" not in str(info.value)


def test_the_trajectory_check_names_a_wrong_schedule_only_when_the_steps_follow_it():
    ns = sample_answers("gradient_descent", "schedule-one-over-t")
    with pytest.raises(CheckFailed, match="point 2 of the trajectory.*The steps follow lr / t"):
        grading.check_trajectories(ns["gradient_descent"])

    def constant(x0, func, grad, max_steps, lr, tol=1e-3):
        x, path = np.array(x0, dtype=float), [np.array(x0, dtype=float)]
        for _ in range(max_steps):
            x = x - lr * np.asarray(grad(x))
            path.append(x)
            if func(path[-2]) - func(x) < tol:
                break
        return np.array(path)

    with pytest.raises(CheckFailed, match="The steps follow a constant lr"):
        grading.check_trajectories(constant)

    def doubled_gradient(x0, func, grad, max_steps, lr, tol=1e-3):  # right schedule, wrong step
        return grading.gradient_descent(
            x0, func, lambda x: 2 * np.asarray(grad(x)), max_steps, lr, tol
        )

    with pytest.raises(CheckFailed, match="point 1 of the trajectory") as info:
        grading.check_trajectories(doubled_gradient)
    assert "The steps follow" not in str(info.value)
