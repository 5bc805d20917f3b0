"""Assignment 2's references and hidden checks, tested directly (no nbgrader)."""

import numpy as np
import pytest
import torch

from conftest import sample_answers
from initlab.checks import CheckFailed
from initlab_grading import backprop as grading


def test_sigmoid_oracle_agrees_with_torch_where_both_are_normal():
    x = np.linspace(-700, 700, 2001)
    np.testing.assert_allclose(
        grading.sigmoid_ref(x), torch.sigmoid(torch.as_tensor(x)).numpy(), rtol=8 * grading.U64
    )


def test_numpy_chain_rule_agrees_with_autograd():
    """The numpy chain rule used for the mistake variants is the autograd Jacobian when
    nothing is changed, so a variant differs from the reference only by its mistake."""
    for num_layers in (1, 2, 3):
        for case in grading.jacobian_cases(num_layers, 100 * num_layers):
            want, tol = grading._reference(case)
            mine = grading._with_derivative(case, 0, None)
            for key, var in grading._key_map(num_layers).items():
                if key.startswith("dy"):
                    assert np.all(np.abs(mine[key] - want[var]) <= tol[var])


def test_every_relu_case_keeps_its_margin():
    for num_layers in (1, 2, 3):
        for case in grading.jacobian_cases(num_layers, 100 * num_layers):
            grading._forward(case.layers, case.x)  # asserts the margin exceeds the error
    for case in grading.mlp_cases():
        zs = grading._mlp_forward_ref(case.weights, case.X, case.act)[0][1:]
        if case.act.kink:
            assert all(np.all(np.abs(z) >= grading.RELU_MARGIN) for z in zs)


def test_float32_answers_pass_every_check():
    ns = sample_answers("backprop", "float32-loops")
    grading.check_sigmoid(ns["sigmoid"], ns["sigmoid_prime"])
    for n, name in grading._FUNC_NAMES.items():
        grading.check_jacobians(ns[name], n)
    grading.check_forward(ns["mlp_forward"])
    grading.check_backward(ns["mlp_backward"])
    grading.check_centred_difference(ns["centred_difference"])
    grading.check_relative_error(ns["relative_error"])
    grading.check_steps(ns["h_float64"], ns["h_float32"])
    grading.check_moments_reference(ns["grad_weight_moments"])
    grading.check_moments_monte_carlo(ns["grad_weight_moments"])


def test_reference_moments_pass_the_monte_carlo_check():
    grading.check_moments_monte_carlo(grading.grad_weight_moments)


def test_a_gradient_off_by_more_than_the_bound_fails():
    def nudged(weights, Z, A, dL_dY, dphi):
        grads = [g.copy() for g in grading._mlp_grads_torch(case)]
        grads[0][0, 0] += 1e-3
        return grads

    case = grading.mlp_cases()[0]
    with pytest.raises(CheckFailed, match="gradient of W"):
        grading.check_backward(nudged)
