"""Assignment 4b (initialization, deep dive): references and the checks its hidden tests run.

Instructor-only. Conventions as in Assignment 4
(``initlab_grading.assignments.initialization.grader``).

Tolerances:

- ``Var[XY]`` and ``E[z^2]`` are a few rounded operations: within ``8 u`` of the size of
  their terms (``u`` float32's unit round-off); Skorski's scale within ``6 u``.
- ``skorski_std`` must not use torch.nn.init or initlab, checked statically and by recording
  calls while it runs (``initlab_grading.checking.integrity.call_own``).
- The random-matrix products: ``log |v_L|`` within ``z`` standard deviations of its exact
  mean, ``z`` for the test cell's false-failure budget 1e-6 over its three scales.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from initlab.checks import CheckFailed, as_array, call_answer, unit_roundoff, z_score
from initlab_grading.checking.integrity import call_own, refuse_libraries
from initlab_grading.checking.reveal import expected, formula
from initlab_grading.checking.thresholds import CELL_FALSE_FAILURE

CHECKS_OUTSIDE_KERNEL = True
"""The test cells run in the grading worker, the kernel answering for the notebook's names
(initlab_grading.grading.remote)."""

EVIDENCE = {
    "symmetry_explain": ["symmetry_demo"],
    "together": ["putting_together"],
    "training_explain": ["training_curves"],
}
"""Written answers and the code cells (grade_ids) whose submitted outputs they discuss:
formgrader and the feedback show those outputs beside the answer
(initlab_grading.grading.evidence)."""


# --------------------------------------------------------------------------------------
# References


def var_product(mean_x: float, var_x: float, mean_y: float, var_y: float) -> float:
    """Var[XY] for independent X and Y."""
    return var_x * mean_y**2 + var_y * mean_x**2 + var_x * var_y


def output_second_moment(mean_x: float, var_x: float, n_in: int, var_w: float) -> float:
    """E over draws of z^2 for one unit z = sum_j w_j x_j with zero-mean weights."""
    return n_in * var_w * (var_x + mean_x**2)


def skorski_std(n_in: int, n_out: int) -> float:
    """Skorski's curvature-based scale 1 / (sqrt(n_in) + sqrt(n_out))."""
    return 1.0 / (math.sqrt(n_in) + math.sqrt(n_out))


# --------------------------------------------------------------------------------------
# Checks


def check_var_product(student: Callable) -> None:
    rng = np.random.default_rng(11)
    for _ in range(20):
        mx, my = rng.normal(size=2) * 3
        vx, vy = np.exp(rng.normal(size=2))
        what = f"var_product({mx:.3g}, {vx:.3g}, {my:.3g}, {vy:.3g})"
        got = float(as_array(call_answer(student, mx, vx, my, vy, what=what), what, shape=()))
        want = var_product(mx, vx, my, vy)
        if abs(got - want) > 8 * unit_roundoff() * (vx * my**2 + vy * mx**2 + vx * vy):
            hint = ""
            if abs(got - vx * vy) <= 1e-6 * abs(want):
                hint = " That is Var[X]Var[Y] alone, which holds only when both means are zero."
            elif abs(got - (vx * my**2 + vy * mx**2)) <= 1e-6 * abs(want):
                hint = " The term Var[X]Var[Y] is missing."
            elif abs(got - (vx + mx**2) * (vy + my**2)) <= 1e-6 * abs(want):
                hint = (
                    " That is E[(XY)^2] = E[X^2]E[Y^2], the second moment"
                    + formula("; the variance subtracts E[XY]^2 = (E[X]E[Y])^2")
                    + "."
                )
            raise CheckFailed(
                f"{what} is {got:.6g}" + expected(f"; expected {want:.6g}") + f".{hint}"
            )


def check_output_second_moment(student: Callable) -> None:
    rng = np.random.default_rng(5)
    for _ in range(10):
        n_in = int(rng.integers(1, 800))
        var_w, var_x = np.exp(rng.normal(size=2))
        mean_x = float(rng.normal() * 2)
        what = f"output_second_moment({mean_x:.3g}, {var_x:.3g}, {n_in}, {var_w:.3g})"
        got = float(as_array(call_answer(student, mean_x, var_x, n_in, var_w, what=what), what))
        want = output_second_moment(mean_x, var_x, n_in, var_w)
        if abs(got - want) > 8 * unit_roundoff() * want:
            hint = ""
            if abs(got - n_in * var_w * var_x) <= 1e-6 * want:
                hint = (
                    " That is n Var(w) Var(x), which holds only for zero-mean inputs"
                    + formula(": a nonzero mean adds n Var(w) E[x]^2")
                    + "."
                )
            raise CheckFailed(
                f"{what} is {got:.6g}" + expected(f"; expected {want:.6g}") + f".{hint}"
            )


def check_skorski_std(student: Callable) -> None:
    refuse_libraries(student, "skorski_std")
    for n_in, n_out in [(1, 1), (784, 200), (200, 64), (3, 1000), (4096, 4096)]:
        what = f"skorski_std({n_in}, {n_out})"
        got = float(as_array(call_own(student, n_in, n_out, what=what), what))
        want = skorski_std(n_in, n_out)
        if abs(got - want) > 6 * unit_roundoff() * want:
            hint = ""
            if abs(got - want**2) <= 1e-6 * want**2:
                hint = " That is the variance; return the standard deviation."
            elif abs(got - 1 / math.sqrt(n_in + n_out)) <= 1e-6 * want:
                hint = " That is 1/sqrt(n_in + n_out); the square roots are taken separately."
            elif abs(got - math.sqrt(2 / (n_in + n_out))) <= 1e-6 * want:
                hint = (
                    " That is Xavier's standard deviation sqrt(2 / (n_in + n_out)), not the "
                    "scale from the spectral norm."
                )
            raise CheckFailed(
                f"{what} is {got:.6g}" + expected(f"; expected {want:.6g}") + f".{hint}"
            )


# --------------------------------------------------------------------------------------
# Part 3: products of random matrices

PRODUCT_SCALES = (0.8, 1.0, 1.25)


def product_log_growth(n: int, depth: int, scale: float) -> tuple[float, float]:
    """Mean and standard deviation of log |v_L| for v_0 a unit vector and v_k = M_k v_(k-1),
    M_k with i.i.d. N(0, scale^2 / n) entries: given v, |M v|^2 = (scale^2 / n) |v|^2 chi2_n,
    so log |v_L| is a sum of depth i.i.d. terms log(scale) + log(chi2_n / n) / 2, with
    E[log chi2_n] = digamma(n / 2) + log 2 and Var[log chi2_n] = trigamma(n / 2)."""
    from scipy.special import digamma, polygamma

    mean = depth * (math.log(scale) + (digamma(n / 2) + math.log(2 / n)) / 2)
    std = math.sqrt(depth * float(polygamma(1, n / 2)) / 4)
    return float(mean), std


def _grows_as(history: np.ndarray, n: int, scale: float, z: float) -> bool:
    """Whether the norms, up to the last layer before they leave [1e-30, 1e30] (float32's
    range, with room), grow as :func:`product_log_growth` says for ``scale``: within z
    standard deviations at that layer."""
    inside = (history > 1e-30) & (history < 1e30)
    k = int(np.argmin(inside)) if not inside.all() else len(history)
    if k == 0:
        return False
    mean, std = product_log_growth(n, k, scale)
    return abs(math.log(float(history[k - 1])) - mean) <= z * std


def check_products(norms: Any, n: int, depth: int) -> None:
    """Hidden check: for each scale, log |v_L| within z standard deviations of its mean
    (:func:`product_log_growth`), z for a false-failure probability of CELL_FALSE_FAILURE
    over the three scales; a sum of 60 i.i.d. log-chi-square terms, whose skewness
    (-sqrt(2 / n) per term, /sqrt(depth) for the sum: below 0.03 here) is negligible at
    this z. A result near a classic mistake's growth is named; one that overflows or
    underflows float32 (the entries off by a factor sqrt(n), at these n and depth) is named
    as too large or too small."""
    if not hasattr(norms, "keys") or set(norms) != set(PRODUCT_SCALES):
        raise CheckFailed(
            f"norms must map each scale {PRODUCT_SCALES} to its list of norms (one per layer)."
        )
    z = z_score(CELL_FALSE_FAILURE / len(PRODUCT_SCALES))
    for scale in PRODUCT_SCALES:
        history = as_array(norms[scale], f"norms[{scale}]").ravel()
        if len(history) != depth:
            raise CheckFailed(
                f"norms[{scale}] has {len(history)} entries"
                + expected(f"; expected one per layer, {depth}")
                + "."
            )
        last = float(history[-1])
        if not np.isfinite(last) or last > 1e30:
            how = ""
            if _grows_as(history, n, scale * math.sqrt(n), z):
                how = (
                    " Your norms grow as with entries of standard deviation scale: the division "
                    "by sqrt(n) is missing."
                )
            raise CheckFailed(
                f"norms[{scale}] grows to {last:.3g} after {depth} layers: the entries are far "
                f"too large.{how}"
                + formula(
                    " Their standard deviation is scale / sqrt(n), so that each layer "
                    "multiplies |v| by about scale."
                )
            )
        if last <= 1e-30:
            how = ""
            if _grows_as(history, n, scale / math.sqrt(n), z):
                how = (
                    " Your norms shrink as with entries of standard deviation scale / n"
                    + formula(": divide by math.sqrt(n), not by n")
                    + "."
                )
            raise CheckFailed(
                f"norms[{scale}] shrinks to {last:.3g} after {depth} layers: the entries are far "
                f"too small.{how}" + formula(" Their standard deviation is scale / sqrt(n).")
            )
        mean, std = product_log_growth(n, depth, scale)
        got = math.log(last)
        if abs(got - mean) <= z * std:
            continue
        mistakes = {
            "the entries have standard deviation scale**2 / sqrt(n): multiply by scale once": (
                product_log_growth(n, depth, scale**2)[0]
            ),
            "v is the starting vector times one matrix: multiply the previous layer's v, so that "
            "the matrices multiply up": product_log_growth(n, 1, scale)[0],
        }
        for words, value in mistakes.items():
            if abs(got - value) <= z * std:
                raise CheckFailed(f"norms[{scale}]: {words}.")
        raise CheckFailed(
            f"After {depth} layers at scale {scale}, log |v| = {got:.3f}"
            + formula(
                f"; a product of matrices with entries of standard deviation {scale} / sqrt({n})"
                + expected(f" gives {mean:.3f} +- {z * std:.3f}")
            )
            + "."
            + formula(" Each layer multiplies v by a fresh n x n matrix of such entries.")
        )
