"""Assignment 4's references and hidden checks, tested directly (no nbgrader)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conftest import sample_answers
from initlab.checks import CheckFailed, check_moments
from initlab_grading.assignments.initialization import grader as grading

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
    grading.check_gain(grading.gain)
    grading.check_fans(lambda t: grading.fans(tuple(t.shape)))


def test_variance_cases_include_depth_one_and_unequal_widths():
    cases = grading.variance_cases()
    assert any(len(c["weight_vars"]) == 1 for c in cases)
    assert any(len(set(c["widths"])) > 1 for c in cases)


def test_monte_carlo_never_fails_the_reference_over_many_seeds():
    """The reference formulas through the Monte Carlo check with 30 other seeds, at half
    the hidden test's 200,000 networks per case: a correct answer must pass every time."""
    formulas = {
        "forward": grading.forward_variances,
        "backward": grading.backward_variances,
        "weight_grad": grading.weight_grad_variances,
    }
    failures = []
    for seed in range(1, 31):
        for kind, formula in formulas.items():
            try:
                grading.check_against_monte_carlo(formula, kind, num_draws=100_000, seed=seed)
            except CheckFailed as exc:
                failures.append((seed, kind, str(exc)))
        grading._simulation.cache_clear()
    assert not failures, failures[:3]


def test_monte_carlo_catches_a_wrong_formula():
    with pytest.raises(CheckFailed, match="simulating 200000 random networks"):
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


def _define(source: str, **extra):
    """The functions a notebook cell with this source defines (math, torch, np imported)."""
    ns = {"torch": torch, "math": math, "np": np, **extra}
    exec(source, ns)
    return ns


_OWN_FANS = """
def fan_in_and_fan_out(tensor):
    receptive = math.prod(tensor.shape[2:])
    return tensor.shape[1] * receptive, tensor.shape[0] * receptive
"""


@pytest.mark.parametrize(
    "check, source, name",
    [
        (
            grading.check_gain,
            "def calculate_gain(nonlinearity, param=None):\n"
            "    return torch.nn.init.calculate_gain(nonlinearity, param)\n",
            "calculate_gain",
        ),
        (
            grading.check_gain,
            "from torch.nn.init import calculate_gain as library_gain\n"
            "def calculate_gain(nonlinearity, param=None):\n"
            "    return library_gain(nonlinearity, param)\n",
            "calculate_gain",
        ),
        (
            grading.check_gain,
            "def calculate_gain(nonlinearity, param=None):\n"
            "    module = getattr(torch.nn, 'in' + 'it')\n"
            "    return module.calculate_gain(nonlinearity, param)\n",
            "calculate_gain",
        ),
        (
            grading.check_fans,
            "def fan_in_and_fan_out(tensor):\n"
            "    return torch.nn.init._calculate_fan_in_and_fan_out(tensor)\n",
            "fan_in_and_fan_out",
        ),
    ],
    ids=["gain-attribute", "gain-imported", "gain-getattr", "fans-private"],
)
def test_library_gains_fans_and_scales_earn_no_points(check, source, name):
    with pytest.raises(CheckFailed, match="earns no points"):
        check(_define(source)[name])


def test_initlab_engine_inside_an_initialiser_is_refused():
    from initlab import engine

    ns = _define(
        _OWN_FANS + "def xavier_normal_(tensor, gain=1.0):\n"
        "    fan_in, fan_out = fan_in_and_fan_out(tensor)\n"
        "    with torch.no_grad():\n"
        "        return tensor.normal_(0.0, gain * engine.init_std('xavier', fan_in, fan_out))\n",
        engine=engine,
    )
    with pytest.raises(CheckFailed, match="initlab.engine"):
        grading.check_initializer(ns["xavier_normal_"], "xavier_normal", [{}], shapes=((64, 32),))


_KAIMING = (
    _OWN_FANS
    + """
def calculate_gain(nonlinearity, param=None):
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else param
        return math.sqrt(2.0 / (1 + slope**2))
    return {"tanh": 5.0 / 3.0, "selu": 0.75}.get(nonlinearity, 1.0)


def kaiming_normal_(tensor, a=0, mode="fan_in", nonlinearity="leaky_relu"):
    fan_in, fan_out = fan_in_and_fan_out(tensor)
    fan = FAN
    with torch.no_grad():
        return tensor.normal_(0.0, calculate_gain(nonlinearity, a) / math.sqrt(fan))
"""
)


def test_initialisers_built_on_the_students_own_helpers_pass_the_guard():
    ns = _define(_KAIMING.replace("FAN", 'fan_in if mode == "fan_in" else fan_out'))
    grading.check_gain(ns["calculate_gain"])
    grading.check_fans(ns["fan_in_and_fan_out"])
    grading.check_initializer(ns["kaiming_normal_"], "kaiming_normal", [{}], shapes=((64, 32),))


@pytest.mark.parametrize(
    "kind, source, name, calls, message",
    [
        (
            "kaiming_normal",
            _KAIMING.replace("FAN", "fan_in"),
            "kaiming_normal_",
            [{"mode": "fan_out", "nonlinearity": "relu"}],
            "the other fan \\(fan_in\\) instead of fan_out",
        ),
        (
            "xavier_normal",
            _OWN_FANS + "def xavier_normal_(tensor, gain=1.0):\n"
            "    fan_in, fan_out = fan_in_and_fan_out(tensor)\n"
            "    with torch.no_grad():\n"
            "        return tensor.normal_(0.0, math.sqrt(2.0 / (fan_in + fan_out)))\n",
            "xavier_normal_",
            [{"gain": 5 / 3}],
            "the gain not applied",
        ),
        (
            "xavier_uniform",
            _OWN_FANS + "def xavier_uniform_(tensor, gain=1.0):\n"
            "    fan_in, fan_out = fan_in_and_fan_out(tensor)\n"
            "    with torch.no_grad():\n"
            "        return tensor.normal_(0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)))\n",
            "xavier_uniform_",
            [{}],
            "They look normal",
        ),
        (
            "kaiming_uniform",
            _OWN_FANS
            + "def kaiming_uniform_(tensor, a=0, mode='fan_in', nonlinearity='leaky_relu'):\n"
            "    fan_in, fan_out = fan_in_and_fan_out(tensor)\n"
            "    return tensor.uniform_(-math.sqrt(6 / fan_in), math.sqrt(6 / fan_in))\n",
            "kaiming_uniform_",
            [{}],
            "requires grad, like a layer.s weight",
        ),
    ],
    ids=["kaiming-mode-ignored", "xavier-without-gain", "normal-in-uniform", "no-grad-missing"],
)
def test_initialiser_mistakes_are_named(kind, source, name, calls, message):
    with pytest.raises(CheckFailed, match=message):
        grading.check_initializer(_define(source)[name], kind, calls)


def test_backward_variances_with_the_fan_in_are_named():
    def own_width(var_grad_out, widths, weight_vars):
        n = np.asarray(widths, float)
        v = np.asarray(weight_vars, float)
        return var_grad_out * np.append(np.cumprod((n[:-1] * v)[::-1])[::-1][1:], 1.0)

    with pytest.raises(CheckFailed, match="runs over the n_k outputs of W"):
        grading.check_backward_variances(own_width)


def _kaiming_average(scale):
    def kaiming_average_normal_(tensor):
        fan_in, fan_out = grading.fans(tuple(tensor.shape))
        with torch.no_grad():
            return tensor.normal_(0.0, scale / math.sqrt((fan_in + fan_out) / 2))

    return kaiming_average_normal_


def test_kaiming_average_passes_and_a_missing_gain_is_named():
    grading.check_initializer(_kaiming_average(math.sqrt(2)), "kaiming_average_normal", [{}])
    with pytest.raises(CheckFailed, match="gain sqrt\\(2\\) is missing"):
        grading.check_initializer(_kaiming_average(1.0), "kaiming_average_normal", [{}])


def test_initialisers_are_graded_with_the_reference_fans_and_gain():
    """An initialiser built on a wrong fan_in_and_fan_out and calculate_gain of the
    student's passes (those slips cost their own cells), and the student's helpers are
    back in the namespace afterwards."""
    namespace = {"math": math, "torch": torch}
    exec(
        "def fan_in_and_fan_out(tensor):\n"
        "    return tensor.shape[1], tensor.shape[0]\n"  # no receptive field
        "def calculate_gain(nonlinearity, param=None):\n"
        "    return math.sqrt(2.0)\n"  # the leaky slope ignored
        "def kaiming_normal_(tensor, a=0, mode='fan_in', nonlinearity='leaky_relu'):\n"
        "    fan_in, fan_out = fan_in_and_fan_out(tensor)\n"
        "    fan = fan_in if mode == 'fan_in' else fan_out\n"
        "    with torch.no_grad():\n"
        "        return tensor.normal_(0.0, calculate_gain(nonlinearity, a) / math.sqrt(fan))\n",
        namespace,
    )
    own = namespace["fan_in_and_fan_out"], namespace["calculate_gain"]
    grading.check_initializer(namespace["kaiming_normal_"], "kaiming_normal", [{"a": 0.5}])
    assert (namespace["fan_in_and_fan_out"], namespace["calculate_gain"]) == own
