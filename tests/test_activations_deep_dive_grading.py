"""Assignment 3b's references and hidden checks, tested directly (no nbgrader)."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from initlab.checks import CheckFailed
from initlab_grading import activations_deep_dive as grading
from initlab_grading.samples import samples_for

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
    with pytest.raises(CheckFailed, match="not one of the searched rates"):
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
