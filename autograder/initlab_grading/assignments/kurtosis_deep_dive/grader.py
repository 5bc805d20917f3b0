"""Assignment 5b (the kurtosis lab's deep dive): references and the checks its hidden tests run.

Instructor-only. Notation follows the paper (seed 001) and Assignment 5: ``S_n^2`` is the
unbiased sample variance of ``n`` i.i.d. draws of variance ``var_x`` and kurtosis ``kappa``.

Tolerances:

- ``Var[S_n^2]`` is a handful of rounded operations on values of size ``(kappa + 1) var_x^2 / n``
  at most, so ``32 u`` of that size (``u`` float32's unit round-off) bounds a correct answer
  written in any order.
- The simulation check compares the formula with 20 independent batch estimates of
  ``Var[S_n^2]``; the t quantile (19 degrees of freedom) of the test cell's false-failure
  budget 1e-6, split evenly over its cases, bounds their mean's distance from the truth.
- ZerO is exact: the identity compares equal.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from initlab.checks import CheckFailed, as_array, call_answer, unit_roundoff
from initlab_grading.checking.reveal import expected, formula
from initlab_grading.checking.thresholds import CELL_FALSE_FAILURE

CHECKS_OUTSIDE_KERNEL = True
"""The test cells run in the grading worker, the kernel answering for the notebook's names
(initlab_grading.grading.remote)."""

EVIDENCE = {"figure2_explain": ["figure2"], "figure3_explain": ["figure3"]}
"""Written answers and the code cells (grade_ids) whose submitted outputs they discuss:
formgrader and the feedback show those outputs beside the answer
(initlab_grading.grading.evidence)."""


# --------------------------------------------------------------------------------------
# References


def var_sample_variance(kappa: float, var_x: float, n: int) -> float:
    """Var[S_n^2] of the unbiased sample variance of n i.i.d. draws."""
    return (kappa - (n - 3) / (n - 1)) * var_x**2 / n


VAR_S2_CASES = ((3.0, 1.0, 10), (1.8, 2.0, 4), (9.0, 0.5, 1000), (1.0, 1.0, 2))
"""(kappa, var_x, n) of the formula check: normal, uniform and heavy-tailed data, n from 2."""


# --------------------------------------------------------------------------------------
# Checks


VAR_S2_SLIPS: tuple[tuple[Callable[[float, float, int], float], str], ...] = (
    (
        lambda kappa, var_x, n: (kappa - 1) * var_x**2 / n,
        "That is the large-n limit (kappa - 1) var_x^2 / n"
        + formula("; keep the exact (n - 3) / (n - 1)")
        + ".",
    ),
    (
        lambda kappa, var_x, n: var_sample_variance(kappa, var_x, n) / var_x,
        "That is the formula with var_x in place of its square, var_x ** 2"
        + formula(": the variance of a variance scales with the square of the variance")
        + ".",
    ),
    (
        lambda kappa, var_x, n: 2 * var_x**2 / (n - 1),
        "That is 2 var_x^2 / (n - 1), the value for normal data only (kappa = 3); the formula "
        "depends on kappa" + formula(": (kappa - (n - 3) / (n - 1)) var_x^2 / n") + ".",
    ),
    (
        lambda kappa, var_x, n: (kappa / n + 2 / (n - 1)) * var_x**2,
        "That is (kappa / n + 2 / (n - 1)) var_x^2, the formula for the excess kurtosis "
        "kappa - 3, with the kurtosis itself put in: here kappa is the kurtosis (3 for normal "
        "data)"
        + formula(", so subtract 3 first or use (kappa - (n - 3) / (n - 1)) var_x^2 / n")
        + ".",
    ),
    (
        lambda kappa, var_x, n: kappa - (n - 3) / (n - 1) * var_x**2 / n,
        "That is kappa - (n - 3) / (n - 1) * var_x**2 / n: without parentheses only the fraction "
        "is multiplied by var_x^2 / n"
        + formula("; write (kappa - (n - 3) / (n - 1)) * var_x**2 / n")
        + ".",
    ),
)
"""Wrong formulas for Var[S_n^2], each with the diagnosis given when a student's value is
within 64 u of it (twice the tolerance, relative to its own size) on a case the answer fails;
on every case of :func:`check_var_sample_variance` where they differ from the truth, they
differ from each other by far more (tests/ checks it)."""


def check_var_sample_variance(student: Callable) -> None:
    for kappa, s2, n in VAR_S2_CASES:
        what = f"var_sample_variance(kappa={kappa}, var_x={s2}, n={n})"
        got = float(as_array(call_answer(student, kappa, s2, n, what=what), what, shape=()))
        want = var_sample_variance(kappa, s2, n)
        if not abs(got - want) <= 32 * unit_roundoff() * (kappa + 1) * s2**2 / n:
            hint = ""
            for slip, words in VAR_S2_SLIPS:
                wrong = slip(kappa, s2, n)
                if abs(got - wrong) <= 64 * unit_roundoff() * abs(wrong):
                    hint = " " + words
                    break
            raise CheckFailed(
                f"{what} is {got:.6g}" + expected(f"; expected {want:.6g}") + f".{hint}"
            )


def _sample_variances(dist: str, n: int, reps: int, rng: np.random.Generator) -> np.ndarray:
    """Unbiased sample variances of ``reps`` samples of size n from a unit-variance
    distribution: uniform (kurtosis 1.8), normal (3) or Laplace (6)."""
    if dist == "uniform":
        X = rng.uniform(-(3**0.5), 3**0.5, size=(reps, n))
    elif dist == "normal":
        X = rng.standard_normal((reps, n))
    else:
        X = rng.laplace(0.0, 2**-0.5, size=(reps, n))
    return X.var(axis=1, ddof=1)


VAR_MC_CASES = (("uniform", 1.8, 5), ("normal", 3.0, 10), ("laplace", 6.0, 4), ("normal", 3.0, 2))


def check_var_sample_variance_by_simulation(student: Callable) -> None:
    """The formula against simulation: per case, 20 batches of 5,000 samples each give 20
    independent estimates of Var[S_n^2]; the student's value must lie within the t quantile
    (19 degrees of freedom, false failure 1e-6 per cell split over the cases) of their
    mean, in units of their standard error."""
    from scipy import stats

    rng = np.random.default_rng(2024)
    t_q = float(stats.t.isf(CELL_FALSE_FAILURE / (2 * len(VAR_MC_CASES)), df=19))
    for dist, kappa, n in VAR_MC_CASES:
        est = np.array([_sample_variances(dist, n, 5_000, rng).var(ddof=1) for _ in range(20)])
        mean, se = est.mean(), est.std(ddof=1) / math.sqrt(len(est))
        what = f"var_sample_variance(kappa={kappa}, var_x=1.0, n={n})"
        got = float(as_array(call_answer(student, kappa, 1.0, n, what=what), what, shape=()))
        if abs(got - mean) > t_q * se:
            raise CheckFailed(
                f"{what} is {got:.4g}"
                + expected(
                    f", but simulating samples of size {n} from a {dist} distribution gives "
                    f"{mean:.4g} +- {se:.2g} (standard error)"
                )
                + "."
            )


def check_zero_init(student: Callable) -> None:
    for w in (1, 4, 10):
        t = torch.full((w, w), float("nan"))
        what = f"zero_init_(torch.empty({w}, {w}))"
        out = call_answer(student, t, what=what)
        if out is not t:
            if out is None:
                how = "returned None: return the tensor after filling it"
            elif torch.isnan(t).all():
                how = (
                    "returned a new tensor and left the one it was given unchanged: fill that "
                    "one (tensor.copy_ or fill_diagonal_ under torch.no_grad()) and return it"
                )
            else:
                how = "filled the tensor but returned another one: return the tensor it was given"
            raise CheckFailed(f"{what} must fill the tensor in place and return it; it {how}.")
        if not torch.equal(t, torch.eye(w)):
            off = ~torch.eye(w, dtype=torch.bool)
            if torch.all(t == 0):
                raise CheckFailed(
                    f"{what} wrote zeros everywhere."
                    + formula(
                        " ZerO, despite its name, initializes a square layer to the identity "
                        "matrix: ones on the diagonal, zeros elsewhere."
                    )
                )
            if torch.all(t.diagonal() == 1) and torch.all(torch.isnan(t[off])):
                raise CheckFailed(
                    f"{what} set the diagonal to 1 but left the other entries as they were "
                    "(the test passes a tensor full of nan; torch.empty may hold anything): set "
                    "them to 0 too, e.g. tensor.zero_() before filling the diagonal."
                )
            raise CheckFailed(
                f"{what} did not write the identity"
                + formula(
                    "; ZerO initializes a square layer to the identity matrix (ones on the "
                    "diagonal, zeros elsewhere)"
                )
                + "."
            )
    what = "zero_init_(torch.empty(3, 5))"
    try:
        student(torch.empty(3, 5))
    except ValueError:
        return
    except NotImplementedError:
        raise CheckFailed(
            f"{what} is not implemented yet (it raised NotImplementedError)."
        ) from None
    except Exception as exc:
        raise CheckFailed(
            f"{what} raised {type(exc).__name__}: {exc}. Check the shape yourself before "
            "filling: for a weight that is not square, raise a ValueError that says ZerO at "
            "constant width needs a square weight."
        ) from exc
    raise CheckFailed(
        f"{what} did not raise: ZerO at constant width needs a square weight; raise a "
        "ValueError that says so for any other shape."
    )
