"""Assignment 1 (gradient descent): reference answers and the checks its hidden tests run.

Instructor-only. Hidden test cells import this module while nbgrader grades; students never
have it. Every check compares a student's function with an independent oracle (the
reference below) under tolerances derived from float32 round-off, so an answer computed
in float32 or float64, vectorised or not, passes; a wrong answer fails with a message that
names the mistake when it is one of the common ones.

Tolerance derivation (unit round-off u of float32, the coarsest type accepted):

- A gradient component of f is a sum of at most three terms; rounding the inputs, the
  products and the sum gives at most ``4 u`` times the sum of the terms' magnitudes.
- One gradient-descent step ``x - eta * g`` on a quadratic ``0.5 x'Ax - b'x + c`` in ``d``
  dimensions is off by at most ``delta_t = (d + 6) u || |x| + eta (|A||x| + |b|) ||``
  (rounded inputs, a d-term dot product per component, eta's square root and division,
  the product and the subtraction). An error e_t in x_t grows to at most
  ``rho_t e_t`` with ``rho_t = max_i |1 - eta_t lambda_i|``, so the bound obeys
  ``E_{t+1} = rho_t E_t + delta_t``. The check allows ``2 E_t`` (the factor 2 covers the
  second-order terms that the first-order bound drops).
- The stopping decision compares ``f(x_{t-1}) - f(x_t)`` with ``tol``. Every case used by
  the checks keeps that difference farther from ``tol`` than its own round-off bound (a
  test in tests/ proves it), so a correct float32 answer cannot stop at another step.
- The minimiser: a float32 solve of ``H x = b`` by Gaussian elimination with partial
  pivoting is backward stable: the computed ``x`` solves ``(H + dH) x = b + db`` with
  ``|dH| <= 3 n u |L||U|`` (Higham, *Accuracy and Stability of Numerical Algorithms*,
  Thm 9.4; here ``|L||U| = |H|``, no growth) and ``|db| <= u |b|``. Then
  ``x - x* = H^-1 (db - dH x)``, so ``|x - x*| <= 3 n u |H^-1| (|H||x*| + |b|)`` to first
  order, about ``6 u (27, 21)``; the check allows twice that. Solving through the
  inverse, ``inv(H) @ b``, stays inside the same bound; typing (8, 4) is exact.

What the gradient check does not accept: a ``grad_f`` that calls the student's own ``f``
(a finite-difference or autograd derivative of f). f is quadratic, so a centred
difference is exact up to round-off and would pass every value; the check watches the
calls instead (``sys.setprofile`` while ``grad_f`` runs, set by the kernel when the check
runs outside it: ``Remote.watching``) and says that Part 1 asks for the derived formula.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from initlab.checks import (
    CheckFailed,
    as_array,
    call_answer,
    check_close,
    roundoff_bound,
    unit_roundoff,
)
from initlab_grading.checking.reveal import expected, formula

CHECKS_OUTSIDE_KERNEL = True
"""The test cells run in the grading worker, the kernel answering for the notebook's names
(initlab_grading.grading.remote)."""

EVIDENCE = {"divergence": ["explore_contours", "explore_distance"]}
"""Written answers and the code cells (grade_ids) whose submitted outputs they discuss:
formgrader and the feedback show those outputs beside the answer
(initlab_grading.grading.evidence)."""

# --------------------------------------------------------------------------------------
# The problem: f(x1, x2) = (x1 - 6)^2 + x2^2 - x1 x2 = 0.5 x'Hx - b'x + c


@dataclass(frozen=True)
class Quadratic:
    """``q(x) = 0.5 x'Ax - b'x + c`` with a symmetric positive definite ``A``."""

    A: np.ndarray
    b: np.ndarray
    c: float
    eigenvalues: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "eigenvalues", np.linalg.eigvalsh(self.A))

    @property
    def dim(self) -> int:
        return len(self.b)

    @property
    def minimum(self) -> np.ndarray:
        return np.linalg.solve(self.A, self.b)

    def value(self, x: Any) -> float:
        x = np.asarray(x, dtype=np.float64)
        return float(0.5 * x @ self.A @ x - self.b @ x + self.c)

    def grad(self, x: Any) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        return self.A @ x - self.b

    def value_magnitude(self, x: np.ndarray) -> float:
        """Sum of the magnitudes of the terms that make up ``value(x)``."""
        ax = np.abs(x)
        return float(0.5 * ax @ np.abs(self.A) @ ax + np.abs(self.b) @ ax + abs(self.c))

    def grad_magnitude(self, x: np.ndarray) -> np.ndarray:
        """Per component, the sum of the magnitudes of the terms of ``grad(x)``."""
        return np.abs(self.A) @ np.abs(x) + np.abs(self.b)


F = Quadratic(A=np.array([[2.0, -1.0], [-1.0, 2.0]]), b=np.array([12.0, 0.0]), c=36.0)
"""The assignment's f(x1, x2) = (x1 - 6)^2 + x2^2 - x1 x2."""

X_START = np.array([6.0, 6.0])
MINIMUM = np.array([8.0, 4.0])
MIN_VALUE = -12.0
HESSIAN = F.A
HAND_STEP_SIZES = (1 / 2, 1 / 3, 1 / 4)
LARGEST_STABLE_STEP = 2.0 / float(F.eigenvalues.max())  # 2 / 3
"""The supremum of the constant step sizes from which every start converges: the
converging steps form the open interval (0, 2/3). No largest one exists: at exactly 2/3
the error component along the eigenvector (1, -1) of lambda = 3 is multiplied by -1 at
every step and oscillates forever. The notebook's variable keeps the short name
``largest_stable_step`` and its text asks for the supremum."""


def f(x: Any) -> float:
    """Reference f."""
    return F.value(x)


def grad_f(x: Any) -> np.ndarray:
    """Reference gradient of f."""
    return F.grad(x)


def gradient_descent(
    x0: Any,
    func: Callable[[np.ndarray], Any],
    grad: Callable[[np.ndarray], Any],
    max_steps: int,
    lr: float,
    tol: float = 1e-3,
) -> np.ndarray:
    """Reference optimiser (the R function of the course material, ported): step
    ``lr / sqrt(t)`` at iteration t = 1, 2, ...; after each step, stop if ``f`` decreased
    by less than ``tol``; at most ``max_steps`` steps. Returns the trajectory: x0 and every
    point reached, one row each."""
    x = np.array(x0, dtype=np.float64)
    points = [x.copy()]
    value = float(func(x))
    for t in range(1, max_steps + 1):
        x = x - lr / np.sqrt(t) * np.asarray(grad(x), dtype=np.float64)
        points.append(x.copy())
        new_value = float(func(x))
        if value - new_value < tol:
            break
        value = new_value
    return np.array(points)


# --------------------------------------------------------------------------------------
# Tolerances


def grad_tolerance(q: Quadratic, x: np.ndarray) -> np.ndarray:
    """Round-off bound on a float32 gradient of ``q`` at ``x`` (see module docstring)."""
    return roundoff_bound(q.grad_magnitude(x), q.dim + 2)


def value_tolerance(q: Quadratic, x: np.ndarray) -> float:
    """Round-off bound on a float32 value of ``q`` at ``x``: a sum of d*d + d + 1 terms,
    each a product of at most three rounded factors."""
    return float(roundoff_bound(q.value_magnitude(x), q.dim * q.dim + q.dim + 4))


def trajectory_tolerance(q: Quadratic, trajectory: np.ndarray, lr: float) -> np.ndarray:
    """Allowed distance of a float32 answer from each point of the reference trajectory
    (``2 E_t``; see the module docstring)."""
    u = unit_roundoff()
    bounds = [u * float(np.linalg.norm(trajectory[0]))]
    for t in range(1, len(trajectory)):
        x = trajectory[t - 1]
        eta = lr / np.sqrt(t)
        rho = float(np.max(np.abs(1.0 - eta * q.eigenvalues)))
        delta = (q.dim + 6) * u * float(np.linalg.norm(np.abs(x) + eta * q.grad_magnitude(x)))
        bounds.append(rho * bounds[-1] + delta)
    return 2.0 * np.array(bounds)


def stopping_margins(q: Quadratic, trajectory: np.ndarray, lr: float, tol: float) -> np.ndarray:
    """For each step t, ``|f(x_{t-1}) - f(x_t) - tol|`` minus the round-off bound of that
    difference when a float32 answer computes it. All entries must be positive for a
    case to be fit for grading (checked in tests/)."""
    errs = trajectory_tolerance(q, trajectory, lr)
    margins = []
    for t in range(1, len(trajectory)):
        prev, cur = trajectory[t - 1], trajectory[t]
        decrease = q.value(prev) - q.value(cur)
        bound = 0.0
        for x, e in ((prev, errs[t - 1]), (cur, errs[t])):
            slope = float(np.linalg.norm(q.grad(x)))
            bound += value_tolerance(q, x) + slope * e + 0.5 * float(q.eigenvalues.max()) * e * e
        margins.append(abs(decrease - tol) - bound)
    return np.array(margins)


# --------------------------------------------------------------------------------------
# Checks for the gradient


_GRADIENT_MISTAKES: tuple[tuple[str, Callable[[np.ndarray], np.ndarray]], ...] = (
    (
        "The gradient has the wrong sign: it points downhill instead of uphill. "
        "Differentiate f directly; gradient descent adds the minus sign itself.",
        lambda x: -F.grad(x),
    ),
    (
        "The two components are swapped"
        + formula(": the first entry must be df/dx1 = 2(x1 - 6) - x2")
        + ".",
        lambda x: F.grad(x)[::-1],
    ),
    (
        "The cross term -x1*x2 is missing"
        + formula(": it contributes -x2 to df/dx1 and -x1 to df/dx2")
        + ".",
        lambda x: np.array([2 * (x[0] - 6), 2 * x[1]]),
    ),
    (
        "The factor 2 from differentiating the squares is missing"
        + formula(": d/dx1 (x1 - 6)^2 = 2(x1 - 6) and d/dx2 x2^2 = 2 x2")
        + ".",
        lambda x: np.array([x[0] - 6 - x[1], x[1] - x[0]]),
    ),
    (
        "The cross term is differentiated with respect to the wrong variable"
        + formula(": d/dx1 (-x1*x2) = -x2, not -x1")
        + ".",
        lambda x: np.array([2 * (x[0] - 6) - x[0], 2 * x[1] - x[1]]),
    ),
)


def _diagnose(got: np.ndarray, x: np.ndarray, tol: np.ndarray, mistakes) -> str:
    for message, wrong in mistakes:
        if np.all(np.abs(got - wrong(x)) <= tol):
            return " " + message
    return ""


def gradient_points(num_random: int = 25, seed: int = 2024) -> np.ndarray:
    """Points at which the hidden test evaluates f and its gradient: special points and
    seeded random ones over a wide range (float32 can hold them all)."""
    rng = np.random.default_rng(seed)
    special = np.array([[0.0, 0.0], [6.0, 6.0], [8.0, 4.0], [-3.5, 2.25], [1e3, -2e3]])
    return np.vstack([special, rng.uniform(-100, 100, size=(num_random, 2))])


def check_f(student_f: Callable) -> None:
    """Hidden check: the student's f agrees with the reference everywhere tested."""
    for x in gradient_points():
        got = call_answer(student_f, x.copy(), what=f"f({x.tolist()})")
        got = as_array(got, f"f({x.tolist()})", shape=())
        check_close(
            got,
            F.value(x),
            value_tolerance(F, x),
            f"f({x.tolist()})",
            formula("f(x1, x2) = (x1 - 6)^2 + x2^2 - x1*x2."),
            mark_expected=expected,
        )


def _calls_into(target: Callable | None, func: Callable, *args: Any, what: str) -> tuple:
    """``call_answer(func, *args)`` and how many times the code of ``target`` (a function
    of the student's) ran during that call, counted with ``sys.setprofile`` (any previous
    profiler is restored afterwards)."""
    if hasattr(func, "watching") and hasattr(target, "watching"):  # both in the kernel
        counts: list[int] = []  # (remote.Remote: the kernel counts)
        return call_answer(func.watching(target, counts), *args, what=what), sum(counts)
    code = getattr(target, "__code__", None)
    if code is None:
        return call_answer(func, *args, what=what), 0
    calls = 0

    def profiler(frame, event, arg):  # noqa: ARG001 -- the profiler's signature
        nonlocal calls
        if event == "call" and frame.f_code is code:
            calls += 1

    previous = sys.getprofile()
    sys.setprofile(profiler)
    try:
        result = call_answer(func, *args, what=what)
    finally:
        sys.setprofile(previous)
    return result, calls


def check_grad(student_grad: Callable, student_f: Callable | None = None) -> None:
    """Hidden check: the student's gradient agrees with the reference everywhere tested,
    and names the mistake when it is a common one. With ``student_f``, a gradient that
    evaluates f (a numerical or automatic derivative instead of the derived formula)
    fails too."""
    for x in gradient_points():
        arg = x.copy()
        got, f_calls = _calls_into(student_f, student_grad, arg, what=f"grad_f({x.tolist()})")
        if f_calls:
            raise CheckFailed(
                f"grad_f({x.tolist()}) evaluated your f {f_calls} time(s): that is a numerical "
                "(finite-difference) or automatic derivative of f, not the gradient derived "
                "by hand. Part 1 asks for the formulas: return np.array([df/dx1, df/dx2]) "
                "written in x1 and x2, without calling f."
            )
        if not np.array_equal(arg, x):
            raise CheckFailed(
                f"grad_f changed its input array (from {x.tolist()} to {arg.tolist()}); "
                "leave x as it is and return a new array."
            )
        got = as_array(got, f"grad_f({x.tolist()})", shape=(2,))
        tol = grad_tolerance(F, x)
        want = F.grad(x)
        if not np.all(np.abs(got - want) <= tol):
            raise CheckFailed(
                f"grad_f({x.tolist()}) returned {got.tolist()}"
                + expected(f"; expected {want.tolist()}")
                + "."
                + _diagnose(got, x, tol, _GRADIENT_MISTAKES)
            )


# --------------------------------------------------------------------------------------
# Checks for the hand iterations


def check_hand_iterates(iterates: Any) -> None:
    """Hidden check of the three hand iterations from (6, 6) with step sizes 1/2, 1/3,
    1/4. Each step is judged from the student's own previous point, so one slip is
    reported once, at the step where it happened."""
    pts = as_array(iterates, "hand_iterates", shape=(4, 2))
    check_close(
        pts[0],
        X_START,
        0.0,
        "hand_iterates[0]",
        "The iterations start from (6, 6).",
        mark_expected=expected,
    )
    for t, eta in enumerate(HAND_STEP_SIZES, start=1):
        prev, got = pts[t - 1], pts[t]
        g = F.grad(prev)
        want = prev - eta * g
        tol = roundoff_bound(np.abs(prev) + eta * F.grad_magnitude(prev), 6)
        if np.all(np.abs(got - want) <= tol):
            continue
        hint = ""
        for other in (1 / 2, 1 / 3, 1 / 4, 1.0, 1 / 5):
            if other != eta and np.all(np.abs(got - (prev - other * g)) <= tol):
                hint = (
                    f" Step {t} used step size {_fraction(other)}"
                    + expected(f"; expected {_fraction(eta)}")
                    + "."
                )
                break
        if not hint and np.all(np.abs(got - (prev + eta * g)) <= tol):
            hint = (
                f" Step {t} moved along +gradient (uphill)"
                + formula("; gradient descent subtracts the step size times the gradient")
                + "."
            )
        raise CheckFailed(
            f"hand_iterates[{t}] is {got.tolist()}"
            + expected(
                f"; from {prev.tolist()} with step size {_fraction(eta)} the next point is "
                f"{want.tolist()}"
            )
            + "."
            + hint
        )


def _fraction(value: float) -> str:
    for q in range(1, 7):
        if abs(value * q - round(value * q)) < 1e-12:
            p = round(value * q)
            return str(p) if q == 1 else f"{p}/{q}"
    return f"{value:g}"


# --------------------------------------------------------------------------------------
# Checks for the minimum, the Hessian and the supremum of the stable step sizes


def minimum_tolerance() -> np.ndarray:
    """Allowed error of a float32 minimiser: twice ``3 n u |H^-1| (|H||x*| + |b|)`` (the
    backward-stable solve of the module docstring)."""
    n = F.dim
    inv = np.abs(np.linalg.inv(F.A))
    return 2.0 * roundoff_bound(inv @ (np.abs(F.A) @ np.abs(MINIMUM) + np.abs(F.b)), 3 * n)


def check_minimum(x_star: Any, hessian: Any) -> None:
    """Hidden check of the minimiser, f at the minimiser and the Hessian."""
    x_arr = as_array(x_star, "x_star", shape=(2,))
    check_close(
        x_arr,
        MINIMUM,
        minimum_tolerance(),
        "x_star",
        "The minimiser solves grad f(x) = 0"
        + formula(": 2(x1 - 6) - x2 = 0 and 2 x2 - x1 = 0")
        + ".",
        mark_expected=expected,
    )
    h = as_array(hessian, "hessian", shape=(2, 2))
    if np.allclose(h, 0.5 * HESSIAN, rtol=0, atol=1e-6):
        raise CheckFailed(
            "hessian is half the true Hessian"
            + formula(": the second derivative of (x1 - 6)^2 is 2")
            + "."
        )
    check_close(
        h,
        HESSIAN,
        roundoff_bound(np.abs(HESSIAN), 2),
        "hessian",
        "The Hessian holds the second partial derivatives d2f/dxi dxj.",
        mark_expected=expected,
    )


_STEP_MISTAKES = {
    1.0 / 3.0: "That is 1 / lambda_max"
    + formula("; constant-step gradient descent converges for every step below 2 / lambda_max")
    + ".",
    2.0: "That is 2 / lambda_min; stability is decided by the largest eigenvalue.",
    1.0: "That is 1 / lambda_min; stability is decided by the largest eigenvalue"
    + formula(", and the bound is 2 / lambda_max")
    + ".",
    0.5: "That is 2 / (lambda_min + lambda_max), the step that converges fastest, "
    "not the supremum of the step sizes that converge.",
}


def check_largest_stable_step(value: Any) -> None:
    """Hidden check of the supremum of the constant step sizes that converge from every
    start (2 / lambda_max; no step at or above it converges)."""
    got = float(as_array(value, "largest_stable_step", shape=()))
    tol = roundoff_bound(LARGEST_STABLE_STEP, 4)
    if abs(got - LARGEST_STABLE_STEP) <= tol:
        return
    hint = next((msg for wrong, msg in _STEP_MISTAKES.items() if abs(got - wrong) <= tol), "")
    raise CheckFailed(
        f"largest_stable_step is {got:.6g}, which is not the supremum of the converging "
        "constant step sizes. "
        + (
            hint
            or formula(
                "Along an eigenvector with eigenvalue lambda, one step multiplies the "
                "error by (1 - eta * lambda); it shrinks for every direction only if "
                "|1 - eta * lambda| < 1. Give the upper end of those eta."
            )
        )
    )


# --------------------------------------------------------------------------------------
# Checks for the optimiser

G = Quadratic(
    A=np.array([[3.0, 0.5, 0.0], [0.5, 1.0, -0.25], [0.0, -0.25, 0.5]]),
    b=np.array([1.0, -2.0, 0.5]),
    c=0.0,
)
"""A second, three-dimensional test problem: the optimiser must use the function and
gradient it is given, in any dimension."""


@dataclass(frozen=True)
class Case:
    """One call of the student's optimiser."""

    q: Quadratic
    x0: tuple[float, ...]
    max_steps: int
    lr: float
    tol: float

    def describe(self) -> str:
        name = "f" if self.q is F else "a 3-d quadratic"
        return (
            f"gradient_descent(x0={list(self.x0)}, on {name}, max_steps={self.max_steps}, "
            f"lr={self.lr}, tol={self.tol})"
        )

    def reference(self) -> np.ndarray:
        return gradient_descent(
            np.array(self.x0), self.q.value, self.q.grad, self.max_steps, self.lr, self.tol
        )


SEED_CASE = Case(F, (6.0, 6.0), 10, 0.1, 1e-3)
SCHEDULE_CASES = (
    Case(F, (6.0, 6.0), 6, 0.1, -np.inf),
    Case(G, (1.0, 1.0, -1.0), 5, 0.2, -np.inf),
)
STOPPING_CASES = (
    Case(F, (6.0, 6.0), 50, 0.1, 1e-2),
    Case(F, (0.0, 0.0), 40, 0.3, 0.05),
    Case(G, (2.0, -1.0, 1.0), 30, 0.4, 5e-3),
    # lr = 0.9 > 2 / lambda_max = 2/3: the first step overshoots along the eigenvector
    # (1, -1) of lambda = 3 and f rises from 0 to 22.68, a negative decrease, so the seed's
    # signed rule stops right there; abs(decrease) < tol would go on.
    Case(F, (6.0, 6.0), 20, 0.9, 1e-3),
)
TRAJECTORY_CASES = (
    SEED_CASE,
    Case(F, (10.0, -3.0), 40, 0.5, 5e-3),
    Case(F, (-4.0, 9.0), 40, 0.6, 0.03),
    Case(F, (6.0, 6.0), 3, 0.1, 1e-3),
    Case(G, (1.0, 1.0, -1.0), 12, 0.6, 0.0),
)
ALL_CASES = SCHEDULE_CASES + STOPPING_CASES + TRAJECTORY_CASES


ALIASED = (
    "The trajectory's rows are one array changed in place: each step updates x in place "
    "(x -= ...) and the list holds that same array again, so every row shows the last point. "
    "Append a copy (x.copy()) or make a new array each step (x = x - ...)."
)


def _aliased(out: Any) -> bool:
    """Whether a returned list of points holds one array object more than once."""
    if not isinstance(out, (list, tuple)):
        return False
    arrays = [id(p) for p in out if isinstance(p, np.ndarray)]
    return len(set(arrays)) < len(arrays)


def _run_student(optimizer: Callable, case: Case, recover_aliasing: bool = False) -> np.ndarray:
    """The student's trajectory for ``case``. A trajectory whose rows are one array changed
    in place fails with :data:`ALIASED`; with ``recover_aliasing`` (the checks of the step
    schedule and the stopping rule, so that this slip costs test_trajectories only) the
    points are read instead from the copies of the arguments grad received, one per step,
    and the last point, when grad was called exactly once per step."""
    seen: list[np.ndarray] = []

    def grad(x: Any) -> np.ndarray:
        seen.append(np.array(x, dtype=float, copy=True))
        return case.q.grad(x)

    out = call_answer(
        optimizer,
        np.array(case.x0),
        case.q.value,
        grad,
        case.max_steps,
        case.lr,
        case.tol,
        what=case.describe(),
        hint="Use the func and grad passed in (they may have any number of dimensions), "
        "not f and grad_f.",
    )
    if _aliased(out):
        if not recover_aliasing or len(seen) != len(out) - 1:
            raise CheckFailed(f"In {case.describe()}: {ALIASED}")
        out = [*seen, np.array(out[-1], dtype=float)]
    what = f"The trajectory returned by {case.describe()}"
    if _one_point(out, case.q.dim):
        raise CheckFailed(
            f"{what} has shape ({case.q.dim},); expected (any, {case.q.dim}): {ONE_POINT}"
        )
    traj = as_array(out, what, shape=(None, case.q.dim))
    if len(traj) == 0 or not np.array_equal(traj[0], np.array(case.x0)):
        raise CheckFailed(
            f"The trajectory returned by {case.describe()} does not start with x0. "
            "Return every point, x0 first, one row each."
        )
    return traj


ONE_POINT = (
    "that is one point, not the trajectory. Return x0 and every point reached, one row each "
    "(collect them in a list as you go), not only the last one."
)


def _one_point(out: Any, dim: int) -> bool:
    """Whether an optimiser's output is a single point of the problem's dimension (a 1-d
    array or list of ``dim`` numbers) instead of a trajectory."""
    try:
        arr = np.asarray(out, dtype=float)
    except (TypeError, ValueError):
        return False
    return arr.shape == (dim,)


def _schedules(lr: float, t: np.ndarray) -> dict[str, np.ndarray]:
    """Step sizes of the usual wrong schedules at iterations ``t`` (counted from 1)."""
    return {
        "lr / t": lr / t,
        "a constant lr": np.full(t.shape, lr),
        "lr / sqrt(t + 1) (t counted from 0 and shifted)": lr / np.sqrt(t + 1),
        "lr * sqrt(t)": lr * np.sqrt(t),
        "lr / t**2": lr / t**2,
    }


def _schedule_followed(case: Case, traj: np.ndarray) -> str:
    """The diagnosis of a trajectory whose steps follow one of :func:`_schedules`, or "".

    The step sizes are read off the trajectory's own points (:func:`_step_sizes`), each
    within the trajectory tolerance relative to the step length, as in
    :func:`check_step_schedule`."""
    ref = case.reference()
    n = min(len(traj), len(ref))
    if n < 2:
        return ""
    with np.errstate(all="ignore"):
        etas = _step_sizes(case.q, traj[:n])
        tol_pts = trajectory_tolerance(case.q, ref, case.lr)[:n]
        step_len = np.linalg.norm(np.diff(ref[:n], axis=0), axis=1)
        rel_tol = 2 * (tol_pts[:-1] + tol_pts[1:]) / step_len
    t = np.arange(1, n, dtype=float)
    for name, seq in _schedules(case.lr, t).items():
        if np.all(np.abs(etas - seq) <= rel_tol * seq):
            return (
                f" The steps follow {name}"
                + formula("; use lr / sqrt(t) with t = 1 for the first step")
                + "."
            )
    return ""


def _step_sizes(q: Quadratic, traj: np.ndarray) -> np.ndarray:
    """Step size of each step, read off the trajectory: eta_t = -<dx, g>/<g, g>."""
    etas = []
    for t in range(1, len(traj)):
        g = q.grad(traj[t - 1])
        etas.append(-float((traj[t] - traj[t - 1]) @ g) / float(g @ g))
    return np.array(etas)


def check_step_schedule(optimizer: Callable) -> None:
    """Hidden check: iteration t (counted from 1) uses step size lr / sqrt(t), and
    max_steps bounds the number of steps."""
    for case in SCHEDULE_CASES:
        traj = _run_student(optimizer, case, recover_aliasing=True)
        if len(traj) != case.max_steps + 1:
            raise CheckFailed(
                f"{case.describe()} returned {len(traj)} points; with tol=-inf the "
                "optimiser never stops early"
                + expected(
                    f", so it must take exactly max_steps={case.max_steps} steps and return "
                    f"{case.max_steps + 1} points (x0 first)"
                )
                + "."
            )
        etas = _step_sizes(case.q, traj)
        t = np.arange(1, len(etas) + 1)
        want = case.lr / np.sqrt(t)
        # each eta is read off a difference of float32-accurate points: allow the
        # trajectory tolerance relative to the step length
        ref = case.reference()
        tol_pts = trajectory_tolerance(case.q, ref, case.lr)
        step_len = np.linalg.norm(np.diff(ref, axis=0), axis=1)
        rel_tol = 2 * (tol_pts[:-1] + tol_pts[1:]) / step_len
        ok = np.abs(etas - want) <= rel_tol * want
        if np.all(ok):
            continue
        first = int(np.argmax(~ok))
        hint = _schedule_followed(case, traj) or formula(
            " Use step size lr / sqrt(t) at iteration t = 1, 2, 3, ..."
        )
        raise CheckFailed(
            f"In {case.describe()}, step {first + 1} had step size {etas[first]:.6g}"
            + formula(f"; expected lr / sqrt({first + 1})" + expected(f" = {want[first]:.6g}"))
            + "."
            + hint
        )


def _compare_points(case: Case, traj: np.ndarray, ref: np.ndarray) -> None:
    tol = trajectory_tolerance(case.q, ref, case.lr)
    n = min(len(traj), len(ref))
    dist = np.linalg.norm(traj[:n] - ref[:n], axis=1)
    bad = np.flatnonzero(~(dist <= tol[:n]))
    if bad.size:
        t = int(bad[0])
        raise CheckFailed(
            f"In {case.describe()}, point {t} of the trajectory is {traj[t].tolist()}"
            + expected(
                f"; expected {ref[t].tolist()} (distance {dist[t]:.3g}, allowed {tol[t]:.3g})"
            )
            + "."
            + formula(
                " Point t is x_(t-1) - lr / sqrt(t) * grad(x_(t-1)), using the grad passed in."
            )
            + _schedule_followed(case, traj)
        )


def _check_against_reference(case: Case, traj: np.ndarray) -> None:
    ref = case.reference()
    q = case.q
    n_ref = len(ref)
    if len(traj) > case.max_steps + 1:
        raise CheckFailed(
            f"{case.describe()} returned {len(traj)} points: more than max_steps + 1 = "
            f"{case.max_steps + 1} (x0 and at most max_steps steps)."
        )
    _compare_points(case, traj, ref)
    if len(traj) == n_ref:
        return
    decreases = [q.value(ref[t - 1]) - q.value(ref[t]) for t in range(1, n_ref)]
    stop_step = n_ref - 1
    # the reference ends either by the tolerance rule or at max_steps (then its last
    # decrease is not below tol, and no message may say it was)
    stopped_by_tol = decreases[-1] < case.tol
    if len(traj) == n_ref - 1 and stopped_by_tol:
        raise CheckFailed(
            f"{case.describe()} stopped one point early: the decrease at step {stop_step} "
            f"was {decreases[-1]:.4g} < tol, but the point reached by that step belongs to "
            "the trajectory (take the step, then test the decrease, as Part 4 says)."
        )
    if len(traj) < n_ref:
        k = len(traj) - 1
        raise CheckFailed(
            f"{case.describe()} stopped after step {k}, where f decreased by "
            f"{decreases[k - 1]:.4g}, which is not below tol={case.tol}."
            + formula(
                " Stop only when the decrease f(x_(t-1)) - f(x_t) of the last step is below tol."
            )
        )
    if len(traj) == n_ref + 1:
        raise CheckFailed(
            f"{case.describe()} took one step too many: after step {stop_step} f decreased "
            f"by only {decreases[-1]:.4g} < tol, so the optimiser must stop there."
            + _increase_hint(decreases[-1], case.tol)
        )
    raise CheckFailed(
        f"{case.describe()} returned {len(traj)} points"
        + expected(f"; expected {n_ref}")
        + f": after step {stop_step} f decreased by {decreases[-1]:.4g} < tol={case.tol}, so "
        "it must stop there. Compare the decrease of f over the last step with tol."
        + _increase_hint(decreases[-1], case.tol)
    )


def _increase_hint(decrease: float, tol: float) -> str:
    """Names the abs() mistake when f went up over the step."""
    if decrease < 0 and abs(decrease) >= tol:
        return (
            f" f went up over that step (by {-decrease:.4g}): the decrease "
            "f(x_(t-1)) - f(x_t) is negative, which is below tol, so the rule stops. "
            "Compare the signed decrease with tol, not its absolute value."
        )
    return ""


def _check_stop_consistent(case: Case, traj: np.ndarray) -> None:
    """The stopping decision judged on the student's own points, so a wrong step schedule
    does not also cost the stopping rule: the optimiser must stop after the first step
    whose decrease in f is below tol, and not before. A decrease within round-off of tol
    may go either way."""
    q = case.q
    steps = len(traj) - 1
    if steps > case.max_steps:
        raise CheckFailed(
            f"{case.describe()} took {steps} steps; max_steps={case.max_steps} allows at most "
            f"{case.max_steps} (the trajectory has at most max_steps + 1 points, x0 first)."
        )
    values = np.array([q.value(x) for x in traj])
    slack = np.array([2 * value_tolerance(q, x) for x in traj])
    for t in range(1, steps + 1):
        decrease = values[t - 1] - values[t]
        margin = slack[t - 1] + slack[t]
        if t < steps and decrease < case.tol - margin:
            raise CheckFailed(
                f"{case.describe()} went on after step {t}, where f decreased by "
                f"{decrease:.4g} < tol={case.tol}; it must stop right after that step "
                "(keeping the point that step reached)." + _increase_hint(decrease, case.tol)
            )
        if t == steps and steps < case.max_steps and decrease >= case.tol + margin:
            hint = ""
            nxt = traj[-1] - case.lr / np.sqrt(steps + 1) * q.grad(traj[-1])
            if values[-1] - q.value(nxt) < case.tol:
                hint = (
                    " The next step would decrease f by less than tol: keep that next "
                    "point too. Take the step first, then test its decrease, as Part 4 says."
                )
            raise CheckFailed(
                f"{case.describe()} stopped after step {t}, where f decreased by "
                f"{decrease:.4g}, which is not below tol={case.tol}." + hint
            )


def check_stopping_rule(optimizer: Callable) -> None:
    """Hidden check: the optimiser stops after the first step whose decrease in f is
    below tol, keeping that step's point, and never exceeds max_steps."""
    for case in STOPPING_CASES:
        _check_stop_consistent(case, _run_student(optimizer, case, recover_aliasing=True))


def check_trajectories(optimizer: Callable) -> None:
    """Hidden check: whole trajectories, in 2 and 3 dimensions, with short max_steps
    and tol=0, against the reference."""
    for case in TRAJECTORY_CASES:
        _check_against_reference(case, _run_student(optimizer, case))
