"""Assignment 3b's references and hidden checks, tested directly (no nbgrader)."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from initlab.checks import CheckFailed
from initlab_grading.assignments.activations_deep_dive import grader as grading
from initlab_grading.course.samples import samples_for

LEARNED = SimpleNamespace(params={"beta": np.array([2.1726, 1.8118], dtype=np.float32)})
"""Stands for Part 4's trained swish network: only its learned betas are read."""


def _answers(student):
    (sample,) = [s for s in samples_for("activations_deep_dive") if s.student == student]
    namespace = {"np": np, "torch": torch, "learned": LEARNED}
    for grade_id in ("summary", "betas"):
        if grade_id in sample.answers:
            exec(sample.answers[grade_id], namespace)
    return namespace


# --------------------------------------------------------------------------------------
# Part 2: best_lr from the student's own search


def _fake_search():
    """Two activations, four rates, two epochs; histories chosen so that every selection
    rule in BEST_LR_VARIANTS picks a different rate from the right one for relu."""
    from types import SimpleNamespace

    def run(name, lr, val_acc, val_loss, train_acc):
        history = {
            "val_acc": np.array(val_acc),
            "val_loss": np.array(val_loss),
            "train_acc": np.array(train_acc),
        }
        return SimpleNamespace(config=SimpleNamespace(activation=name, lr=lr), history=history)

    lrs = np.logspace(-3, 0, 4)
    return lrs, [
        # right: the last epoch's best validation accuracy is lrs[1]
        run("relu", float(lrs[0]), [0.99, 0.55], [0.40, 0.45], [0.2, 0.3]),  # best epoch
        run("relu", float(lrs[1]), [0.70, 0.80], [0.60, 0.70], [0.6, 0.7]),
        run("relu", float(lrs[2]), [0.10, 0.60], [0.30, 0.20], [0.9, 0.95]),  # val loss, train acc
        run("relu", float(lrs[3]), [0.30, 0.40], [0.90, 0.90], [0.1, 0.1]),  # worst
        run("tanh", float(lrs[0]), [0.5, 0.7], [1.0, 1.0], [0.5, 0.5]),
        run("tanh", float(lrs[1]), [0.5, 0.7], [1.0, 1.0], [0.5, 0.5]),  # a tie
        run("tanh", float(lrs[2]), [0.5, 0.6], [1.0, 1.0], [0.5, 0.5]),
        run("tanh", float(lrs[3]), [0.5, 0.6], [1.0, 1.0], [0.5, 0.5]),
    ]


def test_best_lr_accepts_the_right_rate_and_either_of_a_tie():
    lrs, search = _fake_search()
    for tanh_lr in (lrs[0], lrs[1]):
        grading.check_best_lr({"relu": lrs[1], "tanh": tanh_lr}, search)


@pytest.mark.parametrize(
    ("index", "message"),
    [
        (0, "best validation accuracy at any epoch"),
        (2, "lowest final validation loss"),
        (3, "lowest final validation accuracy"),
    ],
)
def test_best_lr_names_the_rule_the_student_applied(index, message):
    lrs, search = _fake_search()
    with pytest.raises(CheckFailed, match=message):
        grading.check_best_lr({"relu": lrs[index], "tanh": lrs[0]}, search)


def test_best_lr_outside_the_grid_or_missing_is_told_so():
    lrs, search = _fake_search()
    with pytest.raises(CheckFailed, match="not one of the searched rates") as info:
        grading.check_best_lr({"relu": 0.85, "tanh": lrs[0]}, search)
    assert "validation accuracy" not in str(info.value)
    # a validation accuracy of the search (relu's lrs[1] ends at 0.8) is named as one
    with pytest.raises(CheckFailed, match="that is a validation accuracy of your search"):
        grading.check_best_lr({"relu": 0.8, "tanh": lrs[0]}, search)
    with pytest.raises(CheckFailed, match="no rate for tanh"):
        grading.check_best_lr({"relu": lrs[1]}, search)


TEST_ACC = {"relu": [0.9518, 0.925, 0.9387], "sigmoid": [0.9158, 0.8986, 0.913]}


def test_summary_reference_and_another_way_pass():
    def reference(test_acc):
        return {n: grading.reference_summary(a) for n, a in test_acc.items()}

    grading.check_summary(reference, TEST_ACC)
    grading.check_summary(_answers("another-way")["summarize"], TEST_ACC)


def test_summary_in_float32_passes_and_the_bound_is_not_loose():
    """A float32 summary is within summary_atol; an error 100 times the bound fails."""

    def in_float32(test_acc):
        out = {}
        for name, accs in test_acc.items():
            a = torch.tensor(accs, dtype=torch.float32)
            std = float(a.std()) if len(a) > 1 else math.nan
            out[name] = {
                "mean": float(a.mean()),
                "std": std,
                "min": float(a.min()),
                "max": float(a.max()),
            }
        return out

    grading.check_summary(in_float32, TEST_ACC)

    def shifted(t):
        return {
            n: {**r, "mean": r["mean"] + 100 * grading.summary_atol(len(t[n]))}
            for n, r in in_float32(t).items()
        }

    with pytest.raises(CheckFailed, match="mean is"):
        grading.check_summary(shifted, TEST_ACC)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda a, r: {**r, "std": float(np.std(a))}, "population standard deviation"),
        (lambda a, r: {**r, "std": float(np.var(a, ddof=1))}, "the variance"),
        (lambda a, r: {**r, "min": r["max"], "max": r["min"]}, "swapped"),
        (lambda a, r: {**r, "std": 0.0 if len(a) == 1 else r["std"]}, "return nan"),
    ],
)
def test_summary_slips_are_named(change, message):
    def slipped(test_acc):
        return {n: change(a, grading.reference_summary(a)) for n, a in test_acc.items()}

    with pytest.raises(CheckFailed, match=message):
        grading.check_summary(slipped, TEST_ACC)


def test_summary_with_a_missing_key_is_told_so():
    with pytest.raises(CheckFailed, match="keys mean, std, min, max"):
        grading.check_summary(lambda t: {n: {"mean": np.mean(a)} for n, a in t.items()}, TEST_ACC)


def test_learned_betas_pass_and_slips_are_named():
    grading.check_learned_betas(_answers("another-way")["betas"], LEARNED)
    grading.check_learned_betas(torch.tensor(LEARNED.params["beta"]), LEARNED)
    with pytest.raises(CheckFailed, match="wrong order"):
        grading.check_learned_betas([1.8118, 2.1726], LEARNED)
    with pytest.raises(CheckFailed, match="starting values"):
        grading.check_learned_betas([1.0, 1.0], LEARNED)
    with pytest.raises(CheckFailed, match="one beta per hidden layer"):
        grading.check_learned_betas([2.1726], LEARNED)


def _search(finals: dict[str, list[float]]):
    """A one-epoch search on lrs = logspace(-3, 0, 4): each activation's final validation
    accuracies, one per rate (losses and training accuracies follow them)."""
    lrs = np.logspace(-3, 0, 4)
    runs = []
    for name, accs in finals.items():
        for lr, acc in zip(lrs, accs, strict=True):
            history = {
                "val_acc": np.array([acc]),
                "val_loss": np.array([1 - acc]),
                "train_acc": np.array([acc]),
            }
            runs.append(
                SimpleNamespace(config=SimpleNamespace(activation=name, lr=lr), history=history)
            )
    return lrs, runs


def test_best_lr_given_as_the_position_in_lrs_is_named():
    lrs, search = _search({"relu": [0.1, 0.5, 0.9, 0.3], "tanh": [0.1, 0.2, 0.3, 0.4]})
    grading.check_best_lr({"relu": lrs[2], "tanh": lrs[3]}, search)
    with pytest.raises(CheckFailed, match=r"is 2: that is the position of the best rate in lrs"):
        grading.check_best_lr({"relu": 2, "tanh": 3}, search)
    # a whole number whose grid entry is not the best, or a number that is no index: not named
    for wrong in (0, 2.5, 7):
        with pytest.raises(CheckFailed, match="not one of the searched rates") as info:
            grading.check_best_lr({"relu": wrong, "tanh": lrs[3]}, search)
        assert "position" not in str(info.value)
    # 1 is an index and a searched rate: read as the rate
    _, ones = _search({"relu": [0.1, 0.9, 0.5, 0.3]})
    with pytest.raises(CheckFailed, match="whose network ends with") as info:
        grading.check_best_lr({"relu": 1}, ones)
    assert "position" not in str(info.value)


def test_one_rate_for_every_activation_is_named_only_when_it_is_the_pooled_best():
    finals = {
        "relu": [0.1, 0.5, 0.9, 0.3],
        "sigmoid": [0.1, 0.1, 0.2, 0.6],
        "tanh": [0.1, 0.2, 0.8, 0.4],
    }
    lrs, search = _search(finals)
    grading.check_best_lr({"relu": lrs[2], "sigmoid": lrs[3], "tanh": lrs[2]}, search)
    with pytest.raises(CheckFailed, match="the rate of the best network over the whole search"):
        grading.check_best_lr({n: lrs[2] for n in finals}, search)
    # the same rate everywhere but not the pooled best: not named so
    with pytest.raises(CheckFailed) as info:
        grading.check_best_lr({n: lrs[3] for n in finals}, search)
    assert "whole search" not in str(info.value)
    # the pooled best for one activation only (the others differ): not named so
    with pytest.raises(CheckFailed) as info:
        grading.check_best_lr({"relu": lrs[2], "sigmoid": lrs[2], "tanh": lrs[1]}, search)
    assert "whole search" not in str(info.value)
    # every activation's best is the same rate: the same rate everywhere is right
    _, same = _search({"relu": [0.1, 0.5, 0.9, 0.3], "tanh": [0.1, 0.2, 0.8, 0.4]})
    grading.check_best_lr({"relu": lrs[2], "tanh": lrs[2]}, same)


def test_summary_standard_error_is_named_and_distinct_from_the_other_slips():
    def sem(test_acc):
        out = {}
        for n, a in test_acc.items():
            row = grading.reference_summary(a)
            out[n] = {**row, "std": row["std"] / math.sqrt(len(a))}
        return out

    with pytest.raises(CheckFailed, match="standard error of the mean") as info:
        grading.check_summary(sem, TEST_ACC)
    assert "population" not in str(info.value) and "variance" not in str(info.value)
    # the population std and the variance are not taken for it
    for change in (lambda a: float(np.std(a)), lambda a: float(np.var(a, ddof=1))):

        def slipped(test_acc, change=change):
            return {
                n: {**grading.reference_summary(a), "std": change(a)} for n, a in test_acc.items()
            }

        with pytest.raises(CheckFailed) as info:
            grading.check_summary(slipped, TEST_ACC)
        assert "standard error" not in str(info.value)


def test_summary_failing_on_a_single_seed_only_is_named():
    stdev = _answers("summary-stdev-one-seed")["summarize"]
    with pytest.raises(CheckFailed, match="works with several seeds and fails with one"):
        grading.check_summary(stdev, TEST_ACC)

    def always_fails(test_acc):
        raise ValueError("no")

    with pytest.raises(CheckFailed) as info:
        grading.check_summary(always_fails, TEST_ACC)
    assert "single seed" not in str(info.value)


@pytest.mark.parametrize(
    "student, message",
    [
        ("summary-variance", "std is the variance"),
        ("summary-standard-error", "standard error of the mean"),
    ],
)
def test_summary_samples_get_their_diagnosis(student, message):
    with pytest.raises(CheckFailed, match=message):
        grading.check_summary(_answers(student)["summarize"], TEST_ACC)


@pytest.mark.parametrize("decimals", grading.ROUNDED_DECIMALS)
def test_rounded_betas_are_named(decimals):
    learned = SimpleNamespace(params={"beta": np.array([2.1726341, 1.8118432], dtype=np.float32)})
    want = learned.params["beta"].astype(np.float64)
    with pytest.raises(CheckFailed, match=f"rounded to {decimals} decimal"):
        grading.check_learned_betas(np.round(want, decimals).tolist(), learned)


def test_rounded_betas_diagnosis_needs_the_rounding():
    with pytest.raises(CheckFailed, match="rounded to 2 decimals"):
        grading.check_learned_betas(_answers("betas-rounded")["betas"], LEARNED)
    with pytest.raises(CheckFailed) as info:
        grading.check_learned_betas([2.5, 1.3], LEARNED)  # another run's values, say
    assert "rounded" not in str(info.value)
