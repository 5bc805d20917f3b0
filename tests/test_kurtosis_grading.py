"""Assignment 5's references and hidden checks, tested directly (no nbgrader)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from initlab_grading import kurtosis as grading


def test_reference_passes_every_check():
    grading.check_transition_matrix(grading.transition_matrix)
    grading.check_recursion(grading.kurtosis_recursion)
    grading.check_growth_rate(grading.growth_rate)
    grading.check_var_sample_variance(grading.var_sample_variance)
    grading.check_estimate_kappa_c(grading.estimate_kappa_c)


def test_recursion_agrees_with_simulated_networks():
    """Proposition 3 against simulation, the check students' answers also face."""
    grading.check_recursion_against_simulation(grading.kurtosis_recursion)


def test_var_of_sample_variance_agrees_with_simulation():
    grading.check_var_sample_variance_by_simulation(grading.var_sample_variance)


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
    grading.check_he_transform(
        lambda x, gen: torch.randn(len(x), len(x), generator=gen, dtype=x.dtype) @ x
    )


def test_zero_init_check_accepts_identity_and_rejects_copies():
    def zero_(t):
        if t.shape[0] != t.shape[1]:
            raise ValueError("square only")
        with torch.no_grad():
            return t.copy_(torch.eye(t.shape[0]))

    grading.check_zero_init(zero_)
    with pytest.raises(grading.CheckFailed, match="in place"):
        grading.check_zero_init(lambda t: torch.eye(t.shape[0]))


def test_simulated_input_is_laplace_with_unit_variance():
    (y0,) = grading.simulate_network(4, 0.0, "normal", 0, num_draws=200_000, seed=0)
    assert abs(np.var(y0) - 1.0) < 0.02
    assert abs(np.mean(y0**4) / np.var(y0) ** 2 - 6.0) < 0.3
