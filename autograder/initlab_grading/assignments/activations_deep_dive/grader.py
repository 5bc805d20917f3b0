"""Assignment 3b (activation functions, deep dive): references and the checks its hidden tests run.

Instructor-only. Every check compares a student's answer with what the student's own run
computed:

- Part 2 (the best learning rate): the rate the rule picks from the student's own search, a
  tie accepted either way; the rate another rule picks is named (:data:`BEST_LR_VARIANTS`).
- Part 3 (the table of test accuracies): within the round-off of a float32 summary
  (:func:`summary_atol`).
- Part 4 (the learned betas): one float32 rounding.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from initlab.checks import CheckFailed, as_array, call_answer, unit_roundoff
from initlab_grading.checking.reveal import expected, formula

CHECKS_OUTSIDE_KERNEL = True
"""The test cells run in the grading worker, the kernel answering for the notebook's names
(initlab_grading.grading.remote)."""

EVIDENCE = {"retrain_explain": ["summary_table"], "beta_explain": ["learned_beta"]}
"""Written answers and the code cells (grade_ids) whose submitted outputs they discuss:
formgrader and the feedback show those outputs beside the answer
(initlab_grading.grading.evidence)."""

# --------------------------------------------------------------------------------------
# Part 2: the best learning rate per activation, from the student's own search

BEST_LR_VARIANTS: dict[str, tuple[Callable[[Any], float], str]] = {
    "worst": (
        lambda r: -float(r.history["val_acc"][-1]),
        "that is the rate with the lowest final validation accuracy"
        + formula(": take the largest (max, not min)"),
    ),
    "val_loss": (
        lambda r: -float(r.history["val_loss"][-1]),
        "that is the rate with the lowest final validation loss"
        + formula("; the rule is the highest final validation accuracy"),
    ),
    "train_acc": (
        lambda r: float(r.history["train_acc"][-1]),
        "that is the rate with the highest training accuracy"
        + formula("; choose on the validation set, the images the network does not train on"),
    ),
    "best_epoch": (
        lambda r: float(np.nanmax(r.history["val_acc"])),
        "that is the rate with the best validation accuracy at any epoch"
        + formula("; the rule looks at the accuracy after the last epoch"),
    ),
}
"""Other selection rules a student may apply, with the diagnosis given when the student's
rate is the one a rule picks and the right rule's is not."""


def _argmax_lrs(runs: list, key: Callable[[Any], float]) -> set[float]:
    values = np.array([key(r) for r in runs], dtype=np.float64)
    values = np.where(np.isnan(values), -np.inf, values)
    return {float(r.config.lr) for r, v in zip(runs, values, strict=True) if v == values.max()}


def _final_val_acc(r: Any) -> float:
    return float(r.history["val_acc"][-1])


def check_best_lr(best_lr: Any, search: list) -> None:
    """Hidden check: ``best_lr[name]`` is a rate whose network in the student's own
    ``search`` has the highest validation accuracy after the last epoch (any of them when
    several tie); rates are compared exactly, since they are the grid's own floats.

    Named slips: the position of the best rate in the grid instead of the rate (a whole
    number that is no searched rate, whose grid entry is the best rate); a validation
    accuracy of the search instead of a rate (equal to one); one rate for every
    activation, the best network's over the whole search; and the other selection rules of
    :data:`BEST_LR_VARIANTS`."""
    names = list(dict.fromkeys(r.config.activation for r in search))
    if not hasattr(best_lr, "keys"):
        raise CheckFailed("best_lr must be a dict from each activation's name to its best rate.")
    missing = [n for n in names if n not in best_lr]
    if missing:
        raise CheckFailed(f"best_lr has no rate for {', '.join(missing)}: give one per activation.")
    given: dict[str, float] = {}
    for name in names:
        try:
            given[name] = float(best_lr[name])
        except (TypeError, ValueError):
            raise CheckFailed(f"best_lr[{name!r}] must be a number (a rate from lrs).") from None
    pooled = _argmax_lrs(search, _final_val_acc)
    for name in names:
        runs = [r for r in search if r.config.activation == name]
        got = given[name]
        grid = {float(r.config.lr) for r in runs}
        ordered = sorted(grid)
        best = _argmax_lrs(runs, _final_val_acc)
        closest = min(grid, key=lambda lr: abs(lr - got))
        if not abs(closest - got) <= 1e-12 * closest:  # nan too
            if got.is_integer() and 0 <= got < len(ordered) and ordered[int(got)] in best:
                raise CheckFailed(
                    f"best_lr[{name!r}] is {got:g}: that is the position of the best rate in "
                    "lrs, not the rate. Give the rate itself"
                    + expected(f", lrs[{got:g}] = {ordered[int(got)]:.4g}")
                    + "."
                )
            accuracies = {float(a) for r in runs for a in np.ravel(r.history["val_acc"])}
            if got in accuracies:
                raise CheckFailed(
                    f"best_lr[{name!r}] is {got:.6g}: that is a validation accuracy of your "
                    "search, not a learning rate. Store the rate of the best network, "
                    "r.config.lr."
                )
            raise CheckFailed(
                f"best_lr[{name!r}] is {got:.6g}, which is not one of the searched rates "
                f"({', '.join(f'{lr:.4g}' for lr in ordered)}): take it from the search."
            )
        if closest in best:
            continue
        final = {float(r.config.lr): _final_val_acc(r) for r in runs}
        right = min(best)
        if len(set(given.values())) == 1 and closest in pooled:
            raise CheckFailed(
                f"best_lr gives every activation the same rate, {closest:.4g}, the rate of the "
                "best network over the whole search"
                + formula(
                    "; each activation gets its own rate, the best among its own networks"
                    + expected(
                        f": for {name}, lr {right:.4g} (validation accuracy "
                        f"{final[right]:.4f} against {final[closest]:.4f})"
                    )
                )
                + "."
            )
        for key, words in BEST_LR_VARIANTS.values():
            if closest in _argmax_lrs(runs, key):
                raise CheckFailed(f"best_lr[{name!r}] is {closest:.4g}: {words}.")
        raise CheckFailed(
            f"best_lr[{name!r}] is {closest:.4g}, whose network ends with validation accuracy "
            f"{final[closest]:.4f}"
            + expected(f"; lr {right:.4g} ends with {final[right]:.4f}")
            + "."
            + formula(" Pick the rate with the highest validation accuracy after the last epoch.")
        )


# --------------------------------------------------------------------------------------
# Part 3: the table of test accuracies

SUMMARY_KEYS = ("mean", "std", "min", "max")

SUMMARY_CASES = (
    {"relu": [0.9518, 0.925, 0.9387], "tanh": [0.9255, 0.9282, 0.9258]},
    {"swish": [0.9605, 0.9608, 0.9599, 0.9604, 0.9607]},
    {"mish": [0.93]},
)
"""Made-up accuracies the hidden test summarises besides the student's own: 3 and 5 seeds,
and one seed (whose sample standard deviation is undefined)."""


def summary_atol(num_seeds: int) -> float:
    """Largest difference from the float64 summary that round-off of a float32 answer can
    explain, for accuracies in [0, 1]: a mean of k values takes k rounded operations and the
    input's rounding, so within (k + 1) u; a standard deviation from deviations about that
    mean adds the subtraction, the squares, the sum, the division and the square root, so
    within (k + 4) u of a magnitude at most 1; doubled for safety of the first-order bound."""
    return 2 * (num_seeds + 4) * unit_roundoff(np.float32)


def reference_summary(accs: Any) -> dict[str, float]:
    """Mean, sample standard deviation (ddof 1; nan for one seed), min and max."""
    a = np.asarray(accs, dtype=np.float64)
    std = float(a.std(ddof=1)) if len(a) > 1 else float("nan")
    return {"mean": float(a.mean()), "std": std, "min": float(a.min()), "max": float(a.max())}


def _summary_row(table: Any, name: str) -> dict[str, float]:
    if not hasattr(table, "keys") or name not in table:
        raise CheckFailed(
            f"summarize must return a dict with one entry per activation; {name!r} is missing."
        )
    row = table[name]
    if not hasattr(row, "keys") or set(SUMMARY_KEYS) - set(row):
        raise CheckFailed(
            f"summarize(...)[{name!r}] must be a dict with the keys {', '.join(SUMMARY_KEYS)}."
        )
    try:
        return {key: float(row[key]) for key in SUMMARY_KEYS}
    except (TypeError, ValueError):
        raise CheckFailed(f"summarize(...)[{name!r}] must hold numbers.") from None


def check_summary(summarize: Callable, test_acc: Any) -> None:
    """Hidden check: ``summarize`` on the student's own test accuracies and on made-up ones
    against :func:`reference_summary`, within :func:`summary_atol`; the usual slips (the
    population standard deviation, the variance, the standard error of the mean, min and
    max swapped, a number or an error instead of nan for one seed) are named."""
    cases = [*(("made-up accuracies", c) for c in SUMMARY_CASES), ("your test_acc", test_acc)]
    several_passed = False  # a case where every activation has several seeds came through
    for label, accs in cases:
        given = {name: list(map(float, values)) for name, values in accs.items()}
        one_seed = any(len(values) == 1 for values in given.values())
        hint = ""
        if one_seed and several_passed:
            hint = (
                "It works with several seeds and fails with one: with a single seed the sample "
                "standard deviation is undefined"
                + expected(
                    ", so return nan there (as np.std(..., ddof=1) does) instead of computing it"
                )
                + "."
            )
        table = call_answer(summarize, copy.deepcopy(given), what=f"summarize({given})", hint=hint)
        for name, values in given.items():
            got, want = _summary_row(table, name), reference_summary(values)
            tol = summary_atol(len(values))
            where = f"summarize({label})[{name!r}] for accuracies {values}"
            for key in ("mean", "min", "max"):
                if abs(got[key] - want[key]) > tol:
                    if (
                        key != "mean"
                        and abs(got[key] - want["max" if key == "min" else "min"]) <= tol
                    ):
                        raise CheckFailed(f"{where}: min and max are swapped.")
                    raise CheckFailed(
                        f"{where}: {key} is {got[key]:.6g}"
                        + expected(f"; expected {want[key]:.6g}")
                        + "."
                    )
            if len(values) == 1:
                if not math.isnan(got["std"]):
                    raise CheckFailed(
                        f"{where}: with one seed the sample standard deviation is undefined"
                        + expected("; return nan (np.std(..., ddof=1) does)")
                        + f", not {got['std']:.6g}."
                    )
                continue
            if abs(got["std"] - want["std"]) <= tol:
                continue
            population = want["std"] * math.sqrt((len(values) - 1) / len(values))
            if abs(got["std"] - population) <= tol:
                raise CheckFailed(
                    f"{where}: std is the population standard deviation (divided by n)"
                    + formula(
                        "; the spread over seeds is the sample standard deviation, divided by "
                        "n - 1 (ddof=1)"
                    )
                    + "."
                )
            if abs(got["std"] - want["std"] ** 2) <= tol:
                raise CheckFailed(
                    f"{where}: std is the variance" + formula("; take its square root") + "."
                )
            if abs(got["std"] - want["std"] / math.sqrt(len(values))) <= tol:
                raise CheckFailed(
                    f"{where}: std is the standard error of the mean (the standard deviation "
                    "divided by sqrt(n))"
                    + formula("; the spread over seeds is the sample standard deviation itself")
                    + "."
                )
            raise CheckFailed(
                f"{where}: std is {got['std']:.6g}"
                + expected(f"; expected {want['std']:.6g}")
                + "."
            )
        several_passed = several_passed or not one_seed


# --------------------------------------------------------------------------------------
# Part 4: the learned betas


ROUNDED_DECIMALS = (0, 1, 2, 3, 4, 5)
"""Roundings the betas check names. Float32 keeps about 7 significant digits, so a beta
between 1 and 10 rounded to 6 decimals may pass as stored; rounded to at most 5 it is off
by up to 5e-6, far above the tolerance (1.2e-7 relative), and fails unless the learned value
happens to lie that close to a number with so few decimals."""


def check_learned_betas(betas: Any, learned: Any) -> None:
    """Hidden check: ``betas`` lists the two learned betas of ``learned`` (the student's own
    run), layer 1 first. They are read, not computed, so float32 storage is the only
    difference allowed: one rounding, u relative. Named slips: the order, the starting
    values, and values rounded to a few decimals (:data:`ROUNDED_DECIMALS`)."""
    want = np.asarray(learned.params["beta"], dtype=np.float64).ravel()
    got = as_array(betas, "betas").ravel()
    if got.shape != want.shape:
        raise CheckFailed(
            f"betas must hold one beta per hidden layer, {len(want)} numbers; it has {got.size}."
        )
    tol = 2 * unit_roundoff(np.float32) * np.abs(want)
    if np.all(np.abs(got - want) <= tol):
        return
    if np.all(np.abs(got[::-1] - want) <= tol):
        raise CheckFailed(
            "betas are in the wrong order: layer 1 (after the 784 -> 200 layer) first."
        )
    if np.allclose(got, 1.0):
        raise CheckFailed(
            "betas are the starting values (1.0): read the trained values from learned.params."
        )
    for decimals in ROUNDED_DECIMALS:
        rounded = np.round(want, decimals)
        if np.all(np.abs(got - rounded) <= 2 * unit_roundoff(np.float32) * np.abs(rounded)):
            raise CheckFailed(
                f"betas are {got.tolist()}"
                + expected(f", your run's values {want.tolist()}")
                + f" rounded to {decimals} decimal{'s' * (decimals != 1)}: give them as learned, "
                "unrounded (the test allows only float32 storage)."
            )
    raise CheckFailed(
        f"betas are {got.tolist()}"
        + expected(f"; your run learned {want.tolist()}")
        + ": read them from learned.params['beta']."
    )
