"""Assignment 2b (backpropagation, deep dive): reference answers and the checks its hidden
tests run.

Instructor-only. Every value is compared with an independent oracle: closed forms for the
sigmoid, exact derivatives for the finite-difference checker, the reference formula and a
Monte Carlo estimate for the gradient moments. Part 2's checks
(``centred_difference_tolerance``, ``relative_error_tolerance``) and the Monte Carlo check of
Part 3 (``check_moments_monte_carlo``, a median of means with a proven false-failure bound)
carry their own derivations; the sigmoid's tolerances are stated next to its check.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from initlab.checks import (
    CheckFailed,
    as_array,
    call_answer,
    check_finite,
    unit_roundoff,
)
from initlab_grading.checking.calls import inside
from initlab_grading.checking.integrity import uses_library
from initlab_grading.checking.reveal import expected, formula

CHECKS_OUTSIDE_KERNEL = True
"""The test cells run in the grading worker, the kernel answering for the notebook's names
(initlab_grading.grading.remote)."""

U32 = unit_roundoff(np.float32)
U64 = unit_roundoff(np.float64)

EVIDENCE = {"planted_bug_explain": ["planted_bug"]}
"""Written answers and the code cells (grade_ids) whose submitted outputs they discuss:
formgrader and the feedback show those outputs beside the answer
(initlab_grading.grading.evidence)."""


# --------------------------------------------------------------------------------------
# Part 1: the sigmoid and its derivative


def sigmoid_ref(x: Any) -> np.ndarray:
    """sigma(x) in float64 from exp(-|x|), accurate to a few u64 relative down to the
    subnormal range (torch's float64 sigmoid flushes sigma(-710) to 0; tests/ compare the
    two where both are normal numbers)."""
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def sigmoid_grad_ref(x: Any) -> np.ndarray:
    """sigma'(x) = sigma(x) sigma(-x), relative accuracy a few u64 for every x."""
    x = np.asarray(x, dtype=np.float64)
    return sigmoid_ref(x) * sigmoid_ref(-x)


def sigmoid_points(dtype: Any) -> np.ndarray:
    """Points at which the sigmoid is checked, exactly representable in ``dtype``."""
    rng = np.random.default_rng(3)
    base = [
        0.0,
        1e-8,
        -1e-8,
        0.5,
        -0.5,
        1.0,
        -1.0,
        5.0,
        -5.0,
        17.0,
        -17.0,
        30.0,
        -30.0,
        80.0,
        -80.0,
        89.0,
        -89.0,
        100.0,
        -100.0,
        500.0,
        -500.0,
        710.0,
        -710.0,
        800.0,
        -800.0,
        1e3,
        -1e3,
        1e4,
        -1e4,
    ]
    return np.concatenate([base, rng.uniform(-40, 40, 40)]).astype(dtype)


SIGMA_REL_UNITS = 5
"""A stable sigma is within 5 u of itself, relative: exp of -|x| (at most one spacing,
2 u), one addition and one division (u each), and a spare u."""
SIGMA_PRIME_REL_UNITS = 12
"""sigma' written without cancellation is within 12 u of itself, relative:
sigma(x) sigma(-x) is 5 u + 5 u + u (the product); e^-|x| / (1 + e^-|x|)^2 is 2 u + 2 u + u
+ u; s (1 - s) with s = sigma(-|x|) <= 1/2 keeps 1 - s >= 1/2, so 1 - s is within
5 u s / (1 - s) + u <= 6 u and the product within 5 u + 6 u + u. tests/ check all three
against 50-digit values."""


def _sigmoid_tolerances(x: np.ndarray, dtype: Any) -> tuple[np.ndarray, np.ndarray]:
    """Allowed absolute errors of sigma and sigma' at ``x``, for an answer in ``dtype``.

    Both must be accurate relative to their own value, down to the subnormal range:
    sigma within ``SIGMA_REL_UNITS`` u, sigma' within ``SIGMA_PRIME_REL_UNITS`` u. The
    float64 oracle (the same formulas) adds the same number of float64 units. Below the
    smallest normal number (sigma(-89) in float32, sigma'(709) in float64) every operation
    may be off by half a subnormal spacing absolutely, so four spacings are allowed too.

    sigma' as s (1 - s) fails this for large positive x, by design: s is within a rounding
    error of 1, so 1 - s is off by up to about u absolutely while sigma'(x) ~ e^-x, a relative
    error near u e^x, and exactly 0 once s rounds to 1 (x > 17 in float32, x > 37 in
    float64). ``_cancellation_bound`` is the absolute error s (1 - s) can reach.
    """
    u, u64 = unit_roundoff(dtype), U64
    floor = 4 * np.finfo(dtype).smallest_subnormal
    s = sigmoid_ref(x)
    sp = sigmoid_grad_ref(x)
    tol_s = SIGMA_REL_UNITS * (u + u64) * s + floor
    tol_sp = SIGMA_PRIME_REL_UNITS * (u + u64) * sp + floor
    return tol_s, tol_sp


def _cancellation_bound(x: np.ndarray, dtype: Any) -> np.ndarray:
    """The absolute error of s (1 - s) with a stable s in ``dtype`` (to first order): the
    error 5 u s of s passes unchanged into 1 - s, which is then multiplied by s, plus
    rounding of 1 - s and of the product: ``7 u sigma' + 5 u s^2``, twice for safety."""
    u = unit_roundoff(dtype)
    s = sigmoid_ref(x)
    floor = 4 * np.finfo(dtype).smallest_subnormal
    return 2 * (7 * u * sigmoid_grad_ref(x) + 5 * u * s * s) + floor


CANCELLATION_HINT = (
    "1 - sigmoid(x) cancels for large positive x: sigmoid(x) is within a rounding error of 1, "
    "so the difference keeps only that rounding error (and is exactly 0 once sigmoid(x) rounds "
    "to 1)." + formula(" Compute 1 - sigma(x) as sigma(-x): sigma'(x) = sigma(x) sigma(-x).")
)


def _call_sigmoid(func: Callable, x: np.ndarray, name: str) -> np.ndarray:
    what = f"{name} on a {x.dtype} array"
    try:
        with inside(func, "float_errors_raised"):
            out = call_answer(func, x.copy(), what=what)
    except CheckFailed as exc:
        if isinstance(exc.__cause__, FloatingPointError):
            raise CheckFailed(
                f"{what} overflowed or produced nan ({exc.__cause__}) for inputs up to |x| = "
                "1e4. exp(-x) overflows for large negative x: compute exp only of -|x| "
                "(np.where evaluates both of its branches, so it does not avoid the overflow)."
            ) from None
        raise
    return as_array(out, what, shape=x.shape)


def check_sigmoid(sigmoid: Callable, sigmoid_grad: Callable) -> None:
    """Hidden check: sigma and sigma' in float32 and float64 from -1e4 to 1e4, each
    accurate relative to its own value (see ``_sigmoid_tolerances``). A failure reports the
    point where the answer is worst in units of its allowed difference."""
    for dtype in (np.float32, np.float64):
        x = sigmoid_points(dtype)
        tol_s, tol_sp = _sigmoid_tolerances(x, dtype)
        # what an answer that computes in float32 whatever its input reaches: the float32
        # tolerance plus rounding x itself to float32 (u32 |x| relative in sigma and sigma',
        # whose logarithmic slopes sigma(-x) and 1 - 2 sigma(x) are at most 1), twice
        tol32_s, tol32_sp = _sigmoid_tolerances(x, np.float32)
        tol32_s = tol32_s + 2 * U32 * np.abs(x) * sigmoid_ref(x)
        tol32_sp = tol32_sp + 2 * U32 * np.abs(x) * sigmoid_grad_ref(x)
        for func, name, want, tol, tol32 in (
            (sigmoid, "sigmoid", sigmoid_ref(x), tol_s, tol32_s),
            (sigmoid_grad, "sigmoid_grad", sigmoid_grad_ref(x), tol_sp, tol32_sp),
        ):
            got = _call_sigmoid(func, x, name)
            check_finite(got, f"{name} on a {np.dtype(dtype).name} array")
            err = np.abs(got.astype(np.float64) - want)
            if np.all(err <= tol):
                continue
            i = int(np.argmax(err / tol))
            hint = ""
            if name == "sigmoid_grad" and abs(got[i] - sigmoid_ref(x[i])) <= tol[i]:
                hint = (
                    " That is sigma itself"
                    + formula("; the derivative is sigma(x) sigma(-x) = sigma (1 - sigma)")
                    + "."
                )
            elif (
                name == "sigmoid_grad" and x[i] > 0 and np.all(err <= _cancellation_bound(x, dtype))
            ):
                # within the absolute round-off of s (1 - s) everywhere: the cancellation
                hint = " " + CANCELLATION_HINT
            elif dtype == np.float64 and np.all(err <= tol32):
                hint = (
                    " The error is float32-sized: compute in the dtype of the input "
                    "(float64 in, float64 out)."
                )
            elif name == "sigmoid" and x[i] < -30:
                hint = (
                    " For large negative x, 1 - 1/(1 + e^-x)-style formulas lose every "
                    "digit" + formula("; use e^x / (1 + e^x) there") + "."
                )
            accuracy = ""
            if want[i] > 0:
                units = SIGMA_PRIME_REL_UNITS if name == "sigmoid_grad" else SIGMA_REL_UNITS
                accuracy = (
                    f", a relative error of {err[i] / want[i]:.2g} where a few units of "
                    f"round-off ({units} u = {units * unit_roundoff(dtype):.2g}) are allowed"
                )
            raise CheckFailed(
                f"{name}({x[i]:g}) in {np.dtype(dtype).name} is {got[i]:.8g}"
                + expected(f"; expected {want[i]:.8g} (allowed difference {tol[i]:.3g}{accuracy})")
                + f".{hint}"
            )


# --------------------------------------------------------------------------------------
# Part 2: gradient checking


def _g_test(x: Any) -> float:
    """The test function g(x) = sum(exp(x_i) + x_i^2 / 2), evaluated in float64 whatever
    the dtype of x (so the only float32 round-off is the student's own)."""
    x = np.asarray(x, dtype=np.float64)
    return float(np.sum(np.exp(x) + 0.5 * x * x))


CD_STEP = 2.0**-5
"""The step of the hidden centred-difference check. The points lie on a grid of 2^-7 in
[-1, 1], so x +- h is a multiple of 2^-7 below 2 in magnitude: exact in float32 and
float64, and the quotient's only errors are truncation and the rounding of g's values."""


def centred_difference_tolerance(x: np.ndarray, h: float = CD_STEP) -> np.ndarray:
    """Allowed distance of a centred difference of ``_g_test`` from the exact gradient
    ``exp(x) + x``, per entry, for an answer computed in float32 or float64.

    Truncation, exactly: along coordinate i the quotient is
    ``(phi(x + h) - phi(x - h)) / (2 h)`` with ``phi(t) = e^t + t^2 / 2``, which equals
    ``e^x sinh(h) / h + x``; it exceeds the derivative by ``e^x (sinh(h)/h - 1)``
    (``~ e^x h^2 / 6``). A centred difference with any step up to h is within that.

    Round-off (x +- h exact, see ``CD_STEP``): each value ``g_+-`` is exact to a few u64 and
    may be rounded to float32 (``u |g_+-|`` each), the difference of the two adds
    ``u |g_+ - g_-|``, division by 2h is exact (a power of 2) and storing the quotient adds
    ``u |Q|``. So ``|err| <= u (|g_+| + |g_-| + |g_+ - g_-|) / (2 h) + u |Q|`` with
    u = u32, allowed twice (second-order terms), plus the float64 evaluation of g.
    """
    x = np.asarray(x, dtype=np.float64)
    grad = np.exp(x) + x
    trunc = np.exp(x) * (np.sinh(h) / h - 1.0)
    tol = np.empty_like(x)
    for i in np.ndindex(x.shape):
        step = np.zeros_like(x)
        step[i] = h
        gp, gm = _g_test(x + step), _g_test(x - step)
        mag = float(np.sum(np.exp(np.abs(x) + h) + 0.5 * (np.abs(x) + h) ** 2))
        f64 = 2 * (x.size + 3) * U64 * mag / (2 * h)
        r32 = U32 * (abs(gp) + abs(gm) + abs(gp - gm)) / (2 * h) + U32 * abs(grad[i] + trunc[i])
        tol[i] = trunc[i] + 2 * r32 + f64
    return tol


def centred_difference_points() -> list[np.ndarray]:
    """The two arguments of the hidden check: a vector and a matrix (centred_difference
    takes x of any shape), on the grid of ``CD_STEP``."""
    rng = np.random.default_rng(11)
    return [rng.integers(-128, 129, size=shape) / 128.0 for shape in [(4,), (2, 3)]]


def _one_sided(x: np.ndarray, h: float, sign: float) -> np.ndarray:
    out = np.empty_like(x)
    g0 = _g_test(x)
    for i in np.ndindex(x.shape):
        step = np.zeros_like(x)
        step[i] = sign * h
        out[i] = (_g_test(x + step) - g0) / (sign * h)
    return out


def _written_by_student(func: Callable, name: str, forbidden: tuple[str, ...]) -> None:
    """Part 2 grades the student's own checker, not a library's."""
    used = uses_library(func, forbidden)
    if used:
        raise CheckFailed(
            f"Your {name} uses {used}. Part 2 grades your own implementation: write it with "
            "numpy; calling a library's finite-difference or error helpers earns no points here."
        )


def _check_one_entry_at_a_time(
    what: str, x: np.ndarray, given: np.ndarray, points: list[np.ndarray], h: float
) -> None:
    """The checker must leave the x it was given as it was, and evaluate g only at x or at x
    with one entry moved (by about h): a checker that does not put x[i] back evaluates later
    entries at a shifted point, which a separable g cannot reveal through the values. An
    unmoved entry differs from x by round-off only (far below h / 2), a moved one by about h."""
    if given.shape == x.shape and not np.array_equal(given, x):
        raise CheckFailed(
            f"{what} changed the x it was given: put each x[i] back after moving it, or "
            "move the entries of a copy."
        )
    for z in points:
        if z.shape != x.shape:
            continue
        moved = np.argwhere(np.abs(z - x) > h / 2)
        if len(moved) > 1:
            entries = ", ".join(str([int(k) for k in i]) for i in moved[:3])
            raise CheckFailed(
                f"{what} evaluated g at a point where several entries ({entries}) differ from "
                "x: after moving x[i] by +h and -h, put it back before moving the next entry. "
                "(With a g that mixes the entries, the derivatives would come out wrong.)"
            )


def check_centred_difference(centred_difference: Callable) -> None:
    """Hidden check: the student's difference quotient matches the exact gradient of
    ``_g_test`` within ``centred_difference_tolerance`` (truncation plus float32 round-off),
    for x of shape (4,) and (2, 3) at h = 2^-5. The points g is evaluated at are recorded:
    each may differ from x in one entry only, and x must come back unchanged
    (:func:`_check_one_entry_at_a_time`).

    A one-sided quotient is off by ``e^x ((e^h - 1)/h - 1) + h/2 >= 0.0215`` (at x = -1),
    at least 40 times the largest allowed difference (about 5e-4; tests/ check the ratio),
    so it fails, and is named. So does a quotient divided by h instead of 2 h.
    """
    _written_by_student(centred_difference, "centred_difference", ("initlab", "scipy"))
    h = CD_STEP
    for x in centred_difference_points():
        exact = np.exp(x) + x
        tol = centred_difference_tolerance(x, h)
        what = f"centred_difference(g, x, h={h:g}) for x of shape {x.shape}"
        points: list[np.ndarray] = []

        def g(z: Any, _points: list = points) -> float:
            _points.append(np.array(z, dtype=np.float64, copy=True))
            return _g_test(z)

        given = x.copy()
        got = call_answer(centred_difference, g, given, h, what=what)
        _check_one_entry_at_a_time(what, x, given, points, h)
        arr = as_array(got, what, shape=x.shape)
        err = np.abs(arr - exact)
        if np.all(err <= tol):
            continue
        i = np.unravel_index(int(np.argmax(err / tol)), x.shape)
        entry = [int(k) for k in i]
        message = (
            f"{what} gives {arr[i]:.10g} at entry {entry}"
            + expected(
                f"; the exact derivative of g(x) = sum(exp(x) + x^2/2) there is "
                f"{exact[i]:.10g}, and a centred difference is within {tol[i]:.2g} of it (its "
                "h^2/6 truncation error plus float32 round-off)"
            )
            + "."
        )
        for sign in (1.0, -1.0):
            if np.all(np.abs(arr - _one_sided(x, h, sign)) <= tol):
                raise CheckFailed(
                    message + " That is a one-sided difference (f(x + h) - f(x)) / h, whose "
                    "error is O(h)"
                    + formula("; use (f(x + h e_i) - f(x - h e_i)) / (2 h), whose error is O(h^2)")
                    + "."
                )
        if np.all(np.abs(arr - 2 * exact) <= 2 * tol):
            raise CheckFailed(message + " Divide by 2 h, the distance between x - h and x + h.")
        raise CheckFailed(
            message
            + formula(
                " Perturb one entry at a time, by +h and by -h, and divide the "
                "difference of the two values by 2 h."
            )
        )


def relative_error_tolerance(a: np.ndarray, b: np.ndarray) -> float:
    """Allowed difference of ``relative_error(a, b)`` from the float64 value r, for an
    answer computed in float32 (n entries, u = u32).

    Rounding the inputs to float32 and subtracting gives ``d_i + e_i`` with
    ``|e_i| <= u (|a_i| + |b_i|) + u |d_i|``, so the norm of the difference moves by at most
    ``u (||a|| + ||b||) + u ||d||`` (triangle inequality): with cancellation (a close to b)
    this, not a relative error of r, dominates. Summing n squares and the square root
    add ``(n/2 + 1) u`` relative to ``||d||``; the denominator ``max(||a||, ||b||)`` is off
    by ``(n/2 + 2) u`` relative (input rounding included), and the division adds ``u``. In all

        |r_computed - r| <= u (||a|| + ||b||) / max(||a||, ||b||) + (n + 5) u r,

    to first order; the check allows twice that (0 when a and b are both zero, where the
    answer must be exactly 0).
    """
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    scale = max(na, nb)
    if scale == 0:
        return 0.0
    r = float(np.linalg.norm(a - b)) / scale
    return 2.0 * (U32 * (na + nb) / scale + (a.size + 5) * U32 * r)


def check_relative_error(relative_error: Callable) -> None:
    """Hidden check: ||a - b|| / max(||a||, ||b||), and 0 for two zero arrays, within
    ``relative_error_tolerance`` (float32 answers pass, cancellation included)."""
    _written_by_student(relative_error, "relative_error", ("initlab",))
    rng = np.random.default_rng(12)
    cases = [
        (np.zeros(3), np.zeros(3)),
        (np.ones(2), -np.ones(2)),
        (np.zeros(2), rng.normal(size=2)),
    ]
    for shape in [(5,), (3, 4), (2, 2, 2), (200,)]:
        a = rng.normal(size=shape)
        cases.append((a, a + 1e-6 * rng.normal(size=shape)))
    for a, b in cases:
        want = float(np.linalg.norm(a - b)) / max(np.linalg.norm(a), np.linalg.norm(b), 1e-300)
        got = call_answer(relative_error, a.copy(), b.copy(), what="relative_error")
        got = float(as_array(got, "relative_error(a, b)", shape=()))
        tol = relative_error_tolerance(a, b)
        if not abs(got - want) <= tol:
            hint = ""
            if np.all(a == 0) and np.all(b == 0):
                hint = (
                    " Two zero arrays agree" + expected(": return 0 (avoid dividing by zero)") + "."
                )
            raise CheckFailed(
                f"relative_error for arrays of shape {a.shape} is {got:.6g}"
                + formula(
                    "; expected "
                    + expected(f"{want:.6g} = ")
                    + "||a - b|| / max(||a||, ||b||)"
                    + expected(f" (allowed difference {tol:.2g})")
                )
                + f".{hint}"
            )


def optimal_step(dtype: Any) -> float:
    """The step that balances truncation (~ h^2) and round-off (~ eps / h): eps^(1/3)
    for a function whose derivatives are of order one."""
    return float(np.finfo(dtype).eps) ** (1.0 / 3.0)


STEP_FACTOR = 10.0
"""A chosen h passes within a factor 10 of eps^(1/3): the error bound h^2/6 + eps/h at
c h* is (c^2 + 2/c) / 3 times its minimum, at most 34 times for c in [1/10, 10]."""


def check_steps(h_float64: Any, h_float32: Any) -> None:
    for h, dtype in ((h_float64, np.float64), (h_float32, np.float32)):
        name = f"h_{np.dtype(dtype).name}"
        h = float(as_array(h, name, shape=()))
        best = optimal_step(dtype)
        if not best / STEP_FACTOR <= h <= best * STEP_FACTOR:
            hint = ""
            eps = float(np.finfo(dtype).eps)
            if abs(np.log10(h / np.sqrt(eps))) < 0.5:
                hint = " That is sqrt(eps), the best step of a one-sided difference."
            elif h < best:
                hint = (
                    " The step is too small: the round-off eps |f| / h grows as h shrinks"
                    + expected(
                        f", and at h = {h:.3g} it is {best / h:.3g} times what it is at eps^(1/3)"
                    )
                    + ", while the truncation error h^2/6 is already far below it there; a "
                    "smaller step is not a more accurate one."
                )
            raise CheckFailed(
                f"{name} = {h:.3g} is far from the bottom of the V"
                + formula(
                    ": truncation ~ h^2 and round-off ~ eps / h balance near eps^(1/3)"
                    + expected(f" = {best:.2g}")
                    + f" for {np.dtype(dtype).name}"
                )
                + "."
                + hint
            )


# --------------------------------------------------------------------------------------
# Part 2: the planted bug

PLANTED_BUG_LINE = "d"
"""The labelled line of the notebook's ``backward_to_debug`` that holds the bug: phi' taken
at the activations A[l - 1] instead of the pre-activations Z[l - 1]."""
PLANTED_BUG_HINTS = {
    "a": "line (a) is right: the output layer's error, and W3's gradient built from it, pass "
    "the check; look at what changes only the layers below the output",
    "b": "line (b) is right: it builds every layer's gradient the same way, yet W3's passes "
    "the check; look at what reaches only the layers below the output",
    "c": "line (c) is right: it sends the error back through W^(l), Delta^(l) W^(l), as the "
    "backward recursion says; compare the next line with the recursion of Assignment 2, Part 2",
}


def check_planted_bug(bug_line: Any) -> None:
    """Hidden check: the letter of the planted bug's line. A wrong letter gets a hint that
    points from the gradient check's evidence (W3 passes, W1 and W2 fail) to the line."""
    if not isinstance(bug_line, str) or bug_line.strip().strip("()").lower() not in tuple("abcd"):
        raise CheckFailed(
            f"bug_line is {bug_line!r}; give the letter of one labelled line: 'a', 'b', 'c' or 'd'."
        )
    letter = bug_line.strip().strip("()").lower()
    if letter != PLANTED_BUG_LINE:
        raise CheckFailed(f"bug_line = {letter!r}: {PLANTED_BUG_HINTS[letter]}.")


# --------------------------------------------------------------------------------------
# Part 3: mean and variance of the weight gradient under independence


def grad_weight_moments(
    widths, weight_vars, sp_mean, sp_sq_mean, a_mean, a_sq_mean, g_mean, g_sq_mean
):
    """Reference: E and Var of an entry of grad W^(l), l = 1..L (index l - 1), for one
    example (a batch of one: Delta^(l) is the single row delta^(l)).

    delta^(L)_i = s^(L)_i g_i; delta^(l)_i = s^(l)_i sum_k W^(l+1)_{ki} delta^(l+1)_k.
    With W zero-mean and everything independent, E[delta^(l)] = 0 for l < L and
    E[(delta^(l))^2] = E[s^(l)^2] n^(l+1) Var[W^(l+1)] E[(delta^(l+1))^2]; the gradient
    entry is delta^(l)_i a^(l-1)_j.
    """
    L = len(widths) - 1
    second = [0.0] * (L + 1)
    first = [0.0] * (L + 1)
    second[L] = sp_sq_mean[L - 1] * g_sq_mean
    first[L] = sp_mean[L - 1] * g_mean
    for l in range(L - 1, 0, -1):  # noqa: E741
        second[l] = sp_sq_mean[l - 1] * widths[l + 1] * weight_vars[l] * second[l + 1]
    layers = range(1, L + 1)
    mean = np.array([first[k] * a_mean[k - 1] for k in layers])
    var = np.array([second[k] * a_sq_mean[k - 1] for k in layers]) - mean**2
    return mean, var


@dataclass
class MomentCase:
    widths: list[int]
    weight_vars: list[float]
    sp_p: list[float]  # sigma' ~ Bernoulli(p) (ReLU's derivative) ...
    sp_scale: list[float]  # ... times this scale
    a_kind: str  # "halfnormal" (ReLU-like activations) or "uniform01" (sigmoid-like)
    g_mean: float
    g_std: float

    def moments(self) -> dict[str, Any]:
        p, c = np.array(self.sp_p), np.array(self.sp_scale)
        L = len(self.widths) - 1
        if self.a_kind == "halfnormal":
            am, asq = np.sqrt(2 / np.pi), 1.0
        else:
            am, asq = 0.5, 1 / 3
        return dict(
            widths=list(self.widths),
            weight_vars=list(self.weight_vars),
            sp_mean=[float(v) for v in p * c],
            sp_sq_mean=[float(v) for v in p * c * c],
            a_mean=[float(am)] * L,
            a_sq_mean=[asq] * L,
            g_mean=self.g_mean,
            g_sq_mean=self.g_mean**2 + self.g_std**2,
        )


MOMENT_CASES = [
    MomentCase(
        [3, 4, 5, 2], [0.5, 0.4, 0.5], [0.5, 0.5, 0.5], [1.0, 1.0, 1.0], "halfnormal", 0.5, 1.0
    ),
    MomentCase([2, 3, 2], [1.0, 0.25], [0.7, 0.4], [0.25, 0.5], "uniform01", 1.0, 0.5),
    MomentCase([5, 5, 5, 5, 5], [0.4, 0.4, 0.4, 0.4], [0.5] * 4, [1.0] * 4, "halfnormal", 0.0, 1.0),
]


def _check_moment_call(func: Callable, case: MomentCase, tol_units: float = 1.0):
    m = case.moments()
    what = f"grad_weight_moments for widths {case.widths}"
    out = call_answer(
        func, **{k: (list(v) if isinstance(v, list) else v) for k, v in m.items()}, what=what
    )
    if not (isinstance(out, tuple | list) and len(out) == 2):
        raise CheckFailed(f"{what} must return the pair (mean, var).")
    L = len(case.widths) - 1
    mean = as_array(out[0], f"the mean from {what}", shape=(L,))
    var = as_array(out[1], f"the variance from {what}", shape=(L,))
    return m, what, mean, var


def check_moments_reference(func: Callable) -> None:
    """Hidden check against the reference formula within its float32 round-off
    (``_moment_roundoff``); a variance that another formula gives in every case is named
    (``_variance_slip``)."""
    for case in MOMENT_CASES:
        m, what, mean, var = _check_moment_call(func, case)
        want_mean, want_var = grad_weight_moments(**m)
        tol_mean, tol_var = _moment_roundoff(want_mean, want_var)
        for name, got, want, tol in (
            ("mean", mean, want_mean, tol_mean),
            ("variance", var, want_var, tol_var),
        ):
            bad = ~(np.abs(got - want) <= tol)
            if not np.any(bad):
                continue
            l = int(np.argmax(bad))  # noqa: E741
            hint = _moment_hint(func, name)
            raise CheckFailed(
                f"The {name} of grad W^({l + 1}) from {what} is {got[l]:.6g}"
                + expected(f"; expected {want[l]:.6g}")
                + f".{hint}"
            )


def _moment_roundoff(mean: np.ndarray, var: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The float32 round-off allowed for a mean and a variance computed by the formula of
    ``grad_weight_moments`` or a variant of it: each value is a product of at most
    3 L + 3 rounded factors and one subtraction, (3 L + 6) u32 times the sum of the
    magnitudes."""
    k = (3 * len(mean) + 6) * U32
    return k * np.abs(mean), k * (var + 2 * mean**2)


def _zero_mean_slip(m: dict) -> dict:
    return dict(
        m, sp_sq_mean=[q - p * p for p, q in zip(m["sp_mean"], m["sp_sq_mean"], strict=True)]
    )


def _all_zero_mean_slip(m: dict) -> dict:
    a_var = [q - p * p for p, q in zip(m["a_mean"], m["a_sq_mean"], strict=True)]
    return dict(_zero_mean_slip(m), a_sq_mean=a_var, g_sq_mean=m["g_sq_mean"] - m["g_mean"] ** 2)


def _squared_mean_slip(m: dict) -> dict:
    return dict(m, sp_sq_mean=[p * p for p in m["sp_mean"]])


def _fan_in_slip(m: dict) -> dict:
    """widths[l] (layer l's own width) where the recursion has n^(l+1) = widths[l + 1]: the
    reference reads widths[l + 1], so shifting the list by one gives the slip."""
    return dict(m, widths=[m["widths"][0]] + list(m["widths"][:-1]))


ZERO_MEAN_TEXT = (
    " You used Var[phi'] where E[phi'^2] belongs: phi' >= 0 for ReLU, sigmoid and tanh, so it "
    "does not have zero mean" + formula(" and E[phi'^2] = Var[phi'] + E[phi']^2") + "."
)
SQUARED_MEAN_TEXT = (
    " You used E[phi']^2 where E[phi'^2] belongs: the square of the mean is not the mean of "
    "the square"
    + formula(" (E[phi'^2] = Var[phi'] + E[phi']^2, larger unless phi' is constant)")
    + "; the function receives E[phi'(z^(l))^2] as sp_sq_mean[l - 1]."
)
FAN_IN_TEXT = (
    " The width is the wrong layer's"
    + formula(
        ": delta^(l)_i = phi'(z^(l)_i) sum_k delta^(l+1)_k W^(l+1)_{ki} sums over the n^(l+1) "
        "units of layer l + 1, so the factor is n^(l+1) = widths[l + 1]"
    )
    + ", not n^(l) = widths[l]."
)
_MOMENT_SLIPS: list[tuple[str, Callable[[dict], dict]]] = [
    (ZERO_MEAN_TEXT, _zero_mean_slip),
    (ZERO_MEAN_TEXT, _all_zero_mean_slip),
    (SQUARED_MEAN_TEXT, _squared_mean_slip),
    (FAN_IN_TEXT, _fan_in_slip),
]
"""Variance slips, each with the formula it gives (the reference on altered inputs)."""


def _variance_slip(func: Callable) -> str:
    """The message of the slip whose formula gives the answer's variances in every case of
    ``MOMENT_CASES``, within that formula's float32 round-off (``_moment_roundoff``); the
    variance returned as the second moment var + mean^2 counts too. Every case is needed:
    in some cases two slips give the same numbers (E[phi']^2 = Var[phi'] when phi' is 0 or 1
    with probability 1/2 each), in others a slip changes nothing (equal widths). '' when no
    slip fits."""
    answers = []
    for case in MOMENT_CASES:
        try:
            _, _, _, var = _check_moment_call(func, case)
        except CheckFailed:
            return ""
        answers.append((case.moments(), var))
    for text, slip in _MOMENT_SLIPS:
        fits = True
        for m, var in answers:
            sm, sv = grad_weight_moments(**slip(m))
            tol = _moment_roundoff(sm, sv)[1]
            if not (np.all(np.abs(var - sv) <= tol) or np.all(np.abs(var - sv - sm**2) <= tol)):
                fits = False
                break
        if fits:
            return text
    return ""


def _moment_hint(func: Callable, name: str) -> str:
    text = _variance_slip(func) if name == "variance" else ""
    return text or formula(
        " E[(delta^(l))^2] = E[phi'(z^(l))^2] n^(l+1) Var[W^(l+1)] E[(delta^(l+1))^2], "
        "E[(delta^(L))^2] = E[phi'(z^(L))^2] E[g^2]; the mean is nonzero only for the last layer."
    )


MC_SAMPLES = 200_000
MC_FALSE_FAILURE = 1e-6
"""Total false-failure probability of the Monte Carlo check (union bound over its tests)."""


def model_moments(case: MomentCase) -> list[dict[str, float]]:
    """Exact E[X], E[X^2], E[X^4] of X = grad W^(l)[0, 0], l = 1..L, under the sampled
    model of ``monte_carlo_moments`` (sigma' = c Bernoulli(p), normal W and g), computed
    independently of ``grad_weight_moments``; the Monte Carlo check needs the variances
    of X and X^2 to bound its sampling error.

    Given delta^(l+1), the entries G_i = sum_k delta_k W_ki of the row delta W are independent
    N(0, v S) with S = sum_k delta_k^2 (the columns of W are independent), so with
    q_k = E[sigma'^k] of layer l: E[delta_i^2] = q_2 v E[S], E[delta_i^4] = 3 q_4 v^2 E[S^2],
    E[delta_i^2 delta_j^2] = q_2^2 v^2 E[S^2] (i != j), which gives E[S] and E[S^2] of
    layer l. At the output, delta_i = sigma'_i g_i, independent over i.
    """
    L = len(case.widths) - 1
    n = case.widths
    mu, sd = case.g_mean, case.g_std
    g_mom = {
        1: mu,
        2: mu**2 + sd**2,
        3: mu**3 + 3 * mu * sd**2,
        4: mu**4 + 6 * mu**2 * sd**2 + 3 * sd**4,
    }
    if case.a_kind == "halfnormal":
        a_mom = {1: np.sqrt(2 / np.pi), 2: 1.0, 3: 2 * np.sqrt(2 / np.pi), 4: 3.0}
    else:
        a_mom = {k: 1.0 / (k + 1) for k in (1, 2, 3, 4)}

    def sp(l, k):  # noqa: E741 -- E[sigma'(z^(l))^k]
        return case.sp_p[l - 1] * case.sp_scale[l - 1] ** k

    m2, m4 = {}, {}
    e2, e4 = sp(L, 2) * g_mom[2], sp(L, 4) * g_mom[4]
    m2[L], m4[L] = e2, e4
    S1, S2 = n[L] * e2, n[L] * e4 + n[L] * (n[L] - 1) * e2 * e2
    for l in range(L - 1, 0, -1):  # noqa: E741
        v = case.weight_vars[l]  # Var W^(l+1)
        m2[l] = sp(l, 2) * v * S1
        m4[l] = 3 * sp(l, 4) * v * v * S2
        S1, S2 = n[l] * m2[l], n[l] * m4[l] + n[l] * (n[l] - 1) * (sp(l, 2) * v) ** 2 * S2
    out = []
    for l in range(1, L + 1):  # noqa: E741
        mean = sp(L, 1) * g_mom[1] * a_mom[1] if l == L else 0.0
        out.append({"mean": mean, "second": m2[l] * a_mom[2], "fourth": m4[l] * a_mom[4]})
    return out


@functools.lru_cache(maxsize=8)
def median_of_means_plan(false_failure: float, max_groups: int = 101) -> tuple[int, float]:
    """Number of groups k (odd) and per-group failure probability q for a median of k
    group means that misses by more than ``sigma / sqrt(n q)`` (n per group) with
    probability at most ``false_failure``, for any distribution with variance sigma^2.

    Each group mean misses by more than that with probability at most q (Chebyshev); the
    groups are independent, so the median misses only if (k + 1) / 2 or more groups do,
    which has probability at most P(Binomial(k, q) >= (k + 1) / 2) (computed exactly).
    The tolerance is ``sigma sqrt(k / (N q))`` for N samples in all: the plan minimises
    k / q.
    """
    from scipy.stats import binom

    best: tuple[float, int, float] | None = None
    for k in range(1, max_groups + 1, 2):
        lo, hi = 0.0, 0.5
        for _ in range(40):
            mid = 0.5 * (lo + hi)
            if binom.sf((k - 1) // 2, k, mid) <= false_failure:
                lo = mid
            else:
                hi = mid
        if lo > 0 and (best is None or k / lo < best[0]):
            best = (k / lo, k, lo)
    if best is None:
        raise ValueError(f"no median-of-means plan reaches {false_failure}")
    return best[1], best[2]


def monte_carlo_moments(case: MomentCase, num_samples: int = MC_SAMPLES, seed: int = 5):
    """Samples of grad W^(l)[0, 0] for l = 1..L under the independence model: fresh
    weights, derivatives, activations and upstream gradients for every sample."""
    rng = np.random.default_rng(seed)
    L = len(case.widths) - 1
    n = case.widths
    N = num_samples

    def s(l):  # noqa: E741 -- sigma'(z^(l)) for every unit of layer l
        return case.sp_scale[l - 1] * (rng.random((N, n[l])) < case.sp_p[l - 1])

    def a(l):  # noqa: E741
        if case.a_kind == "halfnormal":
            return np.abs(rng.standard_normal(N))
        return rng.random(N)

    delta = s(L) * (case.g_mean + case.g_std * rng.standard_normal((N, n[L])))
    grads = [None] * L
    for l in range(L, 0, -1):  # noqa: E741
        grads[l - 1] = delta[:, 0] * a(l - 1)
        if l > 1:
            W = rng.standard_normal((N, n[l], n[l - 1])) * np.sqrt(case.weight_vars[l - 1])
            delta = s(l - 1) * np.einsum("nki,nk->ni", W, delta)
    return np.array(grads)  # (L, N)


def check_moments_monte_carlo(func: Callable) -> None:
    """Hidden check against a Monte Carlo estimate of the independence model.

    For each case and layer, X = grad W^(l)[0, 0] is sampled N = MC_SAMPLES times; the
    student's mean is compared with a median of k group means of X, and the student's
    variance + mean^2 (the second moment) with a median of k group means of X^2. With
    ``median_of_means_plan`` each comparison fails a correct answer with probability at
    most ``MC_FALSE_FAILURE / (number of comparisons)`` whatever the (skewed,
    heavy-tailed) distribution of X, given only the variances of X and X^2, which
    ``model_moments`` computes exactly; by the union bound the whole check fails a
    correct answer with probability at most MC_FALSE_FAILURE = 1e-6 (over the draw of
    the samples: no normal approximation). The samples are seeded, so the check is also
    deterministic. The float32 round-off of the answer is allowed on top.
    """
    num_tests = sum(2 * (len(c.widths) - 1) for c in MOMENT_CASES)
    p_test = MC_FALSE_FAILURE / num_tests
    k, q = median_of_means_plan(p_test)
    for case in MOMENT_CASES:
        m, what, mean, var = _check_moment_call(func, case)
        samples = monte_carlo_moments(case)
        N = samples.shape[1]
        size = N // k
        L = samples.shape[0]
        exact = model_moments(case)
        rnd = (3 * L + 6) * U32
        for l in range(L):  # noqa: E741
            x = samples[l, : k * size].reshape(k, size)
            est_mean = float(np.median(x.mean(axis=1)))
            est_second = float(np.median((x * x).mean(axis=1)))
            mo = exact[l]
            sd_x = np.sqrt(mo["second"] - mo["mean"] ** 2)
            sd_x2 = np.sqrt(mo["fourth"] - mo["second"] ** 2)
            scale = 1.0 / np.sqrt(size * q)
            got_second = float(var[l] + mean[l] ** 2)
            for name, got, est, eps, shown in (
                ("mean", float(mean[l]), est_mean, sd_x * scale + rnd * abs(mo["mean"]), ""),
                (
                    "variance",
                    got_second,
                    est_second,
                    sd_x2 * scale + 2 * rnd * mo["second"],
                    f" is {float(var[l]):.6g}, so E[(grad W)^2] = variance + mean^2 =",
                ),
            ):
                if abs(got - est) > eps:
                    stat = "X" if name == "mean" else "X^2"
                    raise CheckFailed(
                        f"The {name} of grad W^({l + 1}) from {what}{shown or ' is'} "
                        f"{got:.6g}"
                        + expected(
                            f", but {N} samples X of the independence model give "
                            f"{est:.6g} (the median of {k} group means of {stat}; allowed "
                            f"difference {eps:.2g}, which a correct answer exceeds with "
                            f"probability below {p_test:.1e})"
                        )
                        + "."
                        + _moment_hint(func, name)
                    )
