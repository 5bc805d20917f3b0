"""Assignment 4's references and hidden checks, tested directly (no nbgrader)."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import sample_answers
from initlab.checks import CheckFailed, check_moments
from initlab_grading import initialization as grading

KW_CASES = {
    "xavier_normal": [{}, {"gain": 5 / 3}],
    "xavier_uniform": [{}, {"gain": 5 / 3}],
    "kaiming_normal": [{}, {"a": 0.5}, {"mode": "fan_out", "nonlinearity": "relu"}],
    "kaiming_uniform": [{}, {"a": 0.5}, {"mode": "fan_out", "nonlinearity": "relu"}],
}


@pytest.mark.parametrize("kind", sorted(KW_CASES))
@pytest.mark.parametrize("shape", grading.INIT_SHAPES)
def test_reference_semantics_agree_with_torch(kind, shape):
    """target_std and fans reproduce what torch.nn.init itself draws (the oracle for the
    reference): torch's sample has the reference std within a 1e-7 CI."""
    for kw in KW_CASES[kind]:
        torch.manual_seed(0)
        t = getattr(torch.nn.init, kind + "_")(torch.empty(shape), **kw)
        std = grading.target_std(kind, shape, **kw)
        check_moments(t.numpy(), 0.0, std, 1.8 if kind.endswith("uniform") else 3.0, kind)
    assert grading.fans(shape) == torch.nn.init._calculate_fan_in_and_fan_out(torch.empty(shape))


@pytest.mark.parametrize(
    "name, param",
    [
        ("tanh", None),
        ("relu", None),
        ("leaky_relu", None),
        ("leaky_relu", 0.3),
        ("selu", None),
        ("sigmoid", None),
        ("conv2d", None),
    ],
)
def test_gains_agree_with_torch(name, param):
    assert grading.gain(name, param) == pytest.approx(torch.nn.init.calculate_gain(name, param))


def test_answers_written_another_way_pass_every_check():
    ns = sample_answers("initialization", "written-another-way")
    grading.check_forward_variances(ns["forward_variances"])
    grading.check_backward_variances(ns["backward_variances"])
    grading.check_weight_grad_variances(ns["weight_grad_variances"])
    grading.check_against_monte_carlo(ns["forward_variances"], "forward")
    grading.check_fans(ns["fan_in_and_fan_out"])
    grading.check_initializer(ns["xavier_normal_"], "xavier_normal", KW_CASES["xavier_normal"])
    grading.check_initializer(ns["xavier_uniform_"], "xavier_uniform", KW_CASES["xavier_uniform"])


@pytest.mark.parametrize("kind", ["forward", "backward", "weight_grad"])
def test_reference_formulas_agree_with_monte_carlo(kind):
    formula = {
        "forward": grading.forward_variances,
        "backward": grading.backward_variances,
        "weight_grad": grading.weight_grad_variances,
    }[kind]
    grading.check_against_monte_carlo(formula, kind)


def test_reference_passes_the_deterministic_checks():
    grading.check_var_product(grading.var_product)
    grading.check_output_second_moment(grading.output_second_moment)
    grading.check_skorski_std(grading.skorski_std)
    grading.check_gain(grading.gain)
    grading.check_fans(lambda t: grading.fans(tuple(t.shape)))


def test_variance_cases_include_depth_one_and_unequal_widths():
    cases = grading.variance_cases()
    assert any(len(c["weight_vars"]) == 1 for c in cases)
    assert any(len(set(c["widths"])) > 1 for c in cases)


def test_monte_carlo_catches_a_wrong_formula():
    with pytest.raises(CheckFailed, match="simulating 40000 random networks"):
        grading.check_against_monte_carlo(
            lambda v, n, w: 1.2 * grading.forward_variances(v, n, w), "forward"
        )


def _xavier_with(body):
    ns = {"torch": torch, "math": math}
    exec(
        "def fan_in_and_fan_out(t):\n    return t.shape[1], t.shape[0]\n"
        f"def xavier_normal_(tensor, gain=1.0):\n{body}",
        ns,
    )
    return ns["xavier_normal_"]


@pytest.mark.parametrize(
    "body",
    [
        "    return torch.nn.init.xavier_normal_(tensor, gain)\n",
        "    from torch.nn import init\n    return init.xavier_normal_(tensor, gain)\n",
        "    return helper(tensor, gain)\n",
    ],
    ids=["attribute", "imported-module", "via-helper"],
)
def test_library_initialisers_are_detected(body):
    fn = _xavier_with(body)
    fn.__globals__["helper"] = torch.nn.init.xavier_normal_
    with pytest.raises(CheckFailed, match="earns no points"):
        grading.check_initializer(fn, "xavier_normal", [{}], shapes=((64, 32),))
