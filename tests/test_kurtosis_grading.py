"""Assignment 5's references and hidden checks, tested directly (no nbgrader)."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from conftest import sample_answers
from initlab.checks import z_score
from initlab_grading.assignments.kurtosis import grader as grading
from initlab_grading.checking.reveal import plain


def _reference_he_transform(x, gen):
    return torch.randn(len(x), len(x), generator=gen, dtype=x.dtype) @ x


def test_reference_passes_every_check():
    grading.check_transition_matrix(grading.transition_matrix)
    grading.check_recursion(grading.kurtosis_recursion)
    grading.check_growth_rate(grading.growth_rate)
    grading.check_estimate_kappa_c(grading.estimate_kappa_c)


def test_answers_written_another_way_pass_the_deterministic_checks():
    """matrix_power instead of a loop: within the round-off bound of check_recursion."""
    ns = sample_answers("kurtosis", "written-another-way")
    grading.check_transition_matrix(ns["transition_matrix"])
    grading.check_recursion(ns["kurtosis_recursion"])


def test_recursion_agrees_with_simulated_networks():
    """Proposition 3 against simulation, the check students' answers also face."""
    grading.check_recursion_against_simulation(grading.kurtosis_recursion)


def test_simulation_check_never_fails_the_reference_over_many_seeds():
    """The reference through the simulation check with 200 other seeds, at 50,000 networks
    per case (a quarter of the hidden test's size, so tails are heavier relative to the
    sample): a correct recursion must pass every time. With the old check (E[y^4] of
    fully simulated networks, Laplace inputs, layers up to 3) about 1 seed in 20 failed."""
    failures = []
    for seed in range(1, 201):
        try:
            grading.check_recursion_against_simulation(
                grading.kurtosis_recursion, num_draws=50_000, seed=seed
            )
        except grading.CheckFailed as exc:
            failures.append((seed, str(exc)))
    assert not failures, failures[:3]


@pytest.mark.parametrize(
    "wrong",
    [
        lambda *args: 1.2 * grading.kurtosis_recursion(*args),
        lambda *args: grading.kurtosis_recursion(*args) * np.array([1.0, 0.8, 1.0]),
    ],
    ids=["everything-20-percent-high", "c-20-percent-low"],
)
def test_monte_carlo_catches_a_wrong_formula(wrong):
    with pytest.raises(grading.CheckFailed, match="simulated networks give"):
        grading.check_recursion_against_simulation(wrong)


def test_monte_carlo_catches_the_transposed_matrix():
    """A recursion that builds the transposed matrix itself (not through the answer
    transition_matrix, which the checks replace by the reference) fails the simulation."""
    from initlab_grading.assignments.kurtosis.samples import _RECURSION

    ns = sample_answers("kurtosis", "matrix-transposed")
    ns["wrong_matrix"] = ns["transition_matrix"]
    exec(_RECURSION.replace("transition_matrix(", "wrong_matrix("), ns)
    with pytest.raises(grading.CheckFailed, match="simulated networks give"):
        grading.check_recursion_against_simulation(ns["kurtosis_recursion"])


def test_a_wrong_matrix_costs_its_own_cell_only():
    """The recursion and growth rate written on top of a wrong transition_matrix are graded
    with the reference matrix, and the student's own is back afterwards."""
    ns = sample_answers("kurtosis", "pairs-not-w-minus-1")
    own = ns["transition_matrix"]
    with pytest.raises(grading.CheckFailed, match="entry"):
        grading.check_transition_matrix(own)
    grading.check_recursion(ns["kurtosis_recursion"])
    ns["growth_rate"] = eval(
        "lambda w, a, kappa_w: float(np.max(np.linalg.eigvals("
        "transition_matrix(w, a, kappa_w)[:2, :2]).real))",
        ns,
    )
    grading.check_growth_rate(ns["growth_rate"])
    assert ns["transition_matrix"] is own


def test_simulation_check_refuses_too_few_draws():
    with pytest.raises(ValueError, match="too few"):
        grading.check_recursion_against_simulation(grading.kurtosis_recursion, num_draws=2_000)


def test_skew_adjusted_threshold():
    assert grading.skew_adjusted_z(1e-7, 10**6, 0.0) == pytest.approx(z_score(1e-7), rel=1e-9)
    plain = grading.skew_adjusted_z(1e-7, 10**5, 0.0)
    assert grading.skew_adjusted_z(1e-7, 10**5, 4.0) > plain
    assert grading.skew_adjusted_z(1e-7, 10**7, 4.0) < grading.skew_adjusted_z(1e-7, 10**5, 4.0)


@pytest.mark.parametrize("kind", ["sphere", "scale-mixture"])
@pytest.mark.parametrize("w", [2, 5])
def test_simulation_inputs_have_the_stated_moments(kind, w):
    X, kappa0, c0 = grading.he_inputs(kind, 400_000, w, torch.Generator().manual_seed(3))
    X = X.numpy()
    # variance 1 exactly on the sphere, and within 6 standard errors (< 0.01) otherwise
    assert abs(np.mean(X**2) - 1.0) < 0.01
    est_kappa, est_c = grading.estimate_kappa_c(X)
    # bounded inputs: the standard errors of both estimates are below 0.005 at this size
    assert abs(est_kappa - kappa0) < 0.03 and abs(est_c - c0) < 0.03
    assert abs(np.mean(X[:, 0] * X[:, 1])) < 0.01  # uncorrelated


def test_conditional_moments_match_plain_simulation_at_layer_one():
    """The conditional fourth moment has the same mean as y^4 of a network drawn in full
    (one layer, light-tailed input, so the plain estimate is reliable): within 6 combined
    standard errors."""
    w, a, kind = 3, 0.7, "bernoulli"
    ((fourth, _),) = grading.simulate_conditional_moments(w, a, kind, "sphere", 1, 200_000, 5)
    gen = torch.Generator().manual_seed(6)
    X, _, _ = grading.he_inputs("sphere", 200_000, w, gen)
    W = grading.sample_weights(kind, (200_000, w, w), math.sqrt(2 / (w * (1 + a * a))), gen)
    y4 = ((W @ torch.nn.functional.leaky_relu(X, a).unsqueeze(-1)).squeeze(-1)[:, 0] ** 4).numpy()
    se = math.hypot(fourth.std(), y4.std()) / math.sqrt(200_000)
    assert abs(fourth.mean() - y4.mean()) < 6 * se
    assert fourth.std() < y4.std()  # the point of averaging the last layer out


@pytest.mark.parametrize("w", [2, 3, 10, 100, 1000])
@pytest.mark.parametrize("a", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("kappa_w", [1.0, 1.8, 3.0, 9.0])
def test_lemma_4_largest_eigenvalue_exceeds_one(w, a, kappa_w):
    assert grading.growth_rate(w, a, kappa_w) > 1.0


def test_synthetic_he_vectors_have_the_stated_moments():
    Y, kappa, c = grading.synthetic_he_vectors(400_000, 3, seed=1)
    est_kappa, est_c = grading.estimate_kappa_c(Y)
    # standard errors at this size are below 0.03 and 0.02: 0.15 is over 5 of them
    assert abs(est_kappa - kappa) < 0.15 and abs(est_c - c) < 0.15


def test_proposition_2_reference_transform_passes():
    grading.check_he_transform(_reference_he_transform)


def test_he_inputs_norm_moments_are_exact():
    X = grading.he_test_inputs(400_000, np.random.default_rng(0))
    R = (X**2).sum(axis=1)
    r1, r2, _ = grading.he_norm_moments()
    # R is bounded by 40: standard errors below 0.02 and 0.6
    assert abs(R.mean() - r1) < 0.12 and abs((R**2).mean() - r2) < 3.6


@pytest.mark.parametrize(
    "answer, message, silent",
    [
        (
            lambda x, gen: 2 * _reference_he_transform(x, gen),
            r"variance of entry 0 .*variance about 4(\.0\d)?;",  # no slip of the list: not named
            ["as with", "same W"],
        ),
        (
            lambda x, gen: (torch.rand(len(x), len(x), generator=gen, dtype=x.dtype) - 0.5) @ x,
            r"variance about 0\.08\d*, as with W uniform on \[-1/2, 1/2\]",
            ["He's"],
        ),
        (
            lambda x, gen: math.sqrt(2 / 5) * _reference_he_transform(x, gen),
            r"as with W scaled by He's sqrt\(2 / w\)",
            ["uniform"],
        ),
        (
            lambda x, gen: torch.randn(5, 5, generator=torch.Generator().manual_seed(0)) @ x,
            "the same W on every call",
            ["variance about"],
        ),
        (
            lambda x, gen: _reference_he_transform(x, gen).abs(),
            "mean of entry 0",
            ["same W", "variance about"],
        ),
    ],
    ids=["std-2", "uniform-variance-1/12", "he-scaled", "same-W-every-call", "not-symmetric"],
)
def test_he_transform_check_catches_and_names_mistakes(answer, message, silent):
    with pytest.raises(grading.CheckFailed) as failure:
        grading.check_he_transform(answer)
    assert re.search(message, plain(str(failure.value))), str(failure.value)
    assert not any(words in str(failure.value) for words in silent), str(failure.value)


@pytest.mark.parametrize(
    "student, check, words",
    [
        ("pairs-not-w-minus-1", "check_transition_matrix", "the pairs were counted as w^2"),
        ("recursion-row-times-matrix", "check_recursion", "multiplies by A's transpose"),
        ("growth-rate-norm", "check_growth_rate", "That is the spectral norm"),
        ("excess-kurtosis", "check_estimate_kappa_c", "excess kurtosis"),
        ("covariance-with-diagonal-pairs", "check_estimate_kappa_c", "includes the pairs i = j"),
        ("covariance-without-v-squared", "check_estimate_kappa_c", "subtracts the squared"),
    ],
)
def test_each_mistake_is_named(student, check, words):
    ns = sample_answers("kurtosis", student)
    ns.setdefault("transition_matrix", grading.transition_matrix)
    name = {
        "check_transition_matrix": "transition_matrix",
        "check_recursion": "kurtosis_recursion",
        "check_growth_rate": "growth_rate",
        "check_estimate_kappa_c": "estimate_kappa_c",
    }[check]
    with pytest.raises(grading.CheckFailed, match=re.escape(words)) as failure:
        getattr(grading, check)(ns[name])
    others = ["counted as w^2", "A's transpose", "spectral norm", "excess kurtosis", "i = j"]
    assert sum(o in str(failure.value) for o in others) <= 1, str(failure.value)


def test_diagnoses_stay_silent_for_other_wrong_answers():
    """A wrong answer that is none of the named mistakes gets no diagnosis: the conditions
    hold only for their own mistake."""
    with pytest.raises(grading.CheckFailed) as failure:
        grading.check_recursion(
            lambda k0, c0, depth, w, a, kw, v=1.0: (
                1.01 * grading.kurtosis_recursion(k0, c0, depth, w, a, kw, v)
            )
        )
    assert "transpose" not in str(failure.value)
    with pytest.raises(grading.CheckFailed) as failure:
        grading.check_growth_rate(lambda w, a, kw: 1.01 * grading.growth_rate(w, a, kw))
    assert "spectral norm" not in str(failure.value) and "constant row" not in str(failure.value)
    with pytest.raises(grading.CheckFailed) as failure:
        grading.check_estimate_kappa_c(
            lambda Y: (grading.estimate_kappa_c(Y)[0] - 1.0, grading.estimate_kappa_c(Y)[1])
        )
    assert "excess" not in str(failure.value)
