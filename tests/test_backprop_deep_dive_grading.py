"""Assignment 2b's references and hidden checks, tested directly (no nbgrader)."""

import re

import numpy as np
import pytest
import torch

from conftest import sample_answers
from initlab.checks import CheckFailed
from initlab_grading.assignments.backprop_deep_dive import grader as grading


def test_sigmoid_oracle_agrees_with_torch_where_both_are_normal():
    x = np.linspace(-700, 700, 2001)
    np.testing.assert_allclose(
        grading.sigmoid_ref(x), torch.sigmoid(torch.as_tensor(x)).numpy(), rtol=8 * grading.U64
    )


def test_float32_answers_pass_every_check():
    ns = sample_answers("backprop_deep_dive", "float32-loops")
    grading.check_sigmoid(ns["sigmoid"], ns["sigmoid_grad"])
    grading.check_centred_difference(ns["centred_difference"])
    grading.check_relative_error(ns["relative_error"])
    grading.check_steps(ns["h_float64"], ns["h_float32"])
    grading.check_moments_reference(ns["grad_weight_moments"])
    grading.check_moments_monte_carlo(ns["grad_weight_moments"])


def test_reference_moments_pass_the_monte_carlo_check():
    grading.check_moments_monte_carlo(grading.grad_weight_moments)


# -- Part 2: float32 bounds, one-sided differences, borrowed checkers --------------------


def test_one_sided_differences_are_far_outside_the_centred_tolerance():
    for x in grading.centred_difference_points():
        tol = grading.centred_difference_tolerance(x)
        exact = np.exp(x) + x
        for sign in (1.0, -1.0):
            off = np.abs(grading._one_sided(x, grading.CD_STEP, sign) - exact)
            assert np.min(off / tol) > 40


def test_one_sided_and_borrowed_checkers_are_named():
    ns = sample_answers("backprop_deep_dive", "one-sided-difference")
    with pytest.raises(CheckFailed, match="one-sided difference"):
        grading.check_centred_difference(ns["centred_difference"])
    ns = sample_answers("backprop_deep_dive", "borrowed-checker")
    with pytest.raises(CheckFailed, match="uses scipy"):
        grading.check_centred_difference(ns["centred_difference"])
    with pytest.raises(CheckFailed, match="uses initlab"):
        grading.check_relative_error(ns["relative_error"])


def test_float32_relative_error_with_cancellation_passes_and_a_wrong_scale_fails():
    def in_float32(a, b):
        a, b = np.float32(a), np.float32(b)
        scale = max(np.linalg.norm(a), np.linalg.norm(b))
        return 0.0 if scale == 0 else np.linalg.norm(a - b) / scale

    grading.check_relative_error(in_float32)

    def sum_of_norms(a, b):
        scale = np.linalg.norm(a) + np.linalg.norm(b)
        return 0.0 if scale == 0 else np.linalg.norm(np.subtract(a, b)) / scale

    with pytest.raises(CheckFailed, match="max\\(\\|\\|a\\|\\|, \\|\\|b\\|\\|\\)"):
        grading.check_relative_error(sum_of_norms)


# -- Part 3: the Monte Carlo check's false-failure bound ----------------------------------


def test_model_moments_agree_with_the_reference_and_hand_derived_fourth_moments():
    for case in grading.MOMENT_CASES:
        mean, var = grading.grad_weight_moments(**case.moments())
        exact = grading.model_moments(case)
        np.testing.assert_allclose([e["mean"] for e in exact], mean, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose([e["second"] for e in exact], var + mean**2, rtol=1e-12)
    # sigma' = 1, Var W = 1, g ~ N(0, 1), a = U(0, 1) (E a^4 = 1/5), widths [1, 1, 2, 1]:
    # delta3 = g (E 3), delta2_k = W_k g (E[delta^4] = 3 * 3 = 9), and given delta2,
    # delta1 ~ N(0, S) with S = W_1^2 g^2 + W_2^2 g^2, E[S^2] = E[(chi^2_2)^2] E[g^4] = 8 * 3
    # = 24, so E[delta1^4] = 3 * 24 = 72.
    case = grading.MomentCase([1, 1, 2, 1], [1.0, 1.0, 1.0], [1.0] * 3, [1.0] * 3,
                              "uniform01", 0.0, 1.0)  # fmt: skip
    fourth = [e["fourth"] for e in grading.model_moments(case)]
    np.testing.assert_allclose(fourth, [72 / 5, 9 / 5, 3 / 5])


def test_median_of_means_plan_meets_its_false_failure_probability():
    from scipy.stats import binom

    p = grading.MC_FALSE_FAILURE / 18
    k, q = grading.median_of_means_plan(p)
    assert k % 2 == 1 and 0 < q < 0.5
    assert k == 31  # the number of groups the notebook states
    assert binom.sf((k - 1) // 2, k, q) <= p


def test_the_zero_mean_slip_fails_the_monte_carlo_check():
    ns = sample_answers("backprop_deep_dive", "zero-mean-phi-grad")
    with pytest.raises(CheckFailed, match="does not have zero mean"):
        grading.check_moments_monte_carlo(ns["grad_weight_moments"])


def _gradcheck_cells() -> tuple[dict, dict]:
    """The backprop deep dive's cells by id, and a namespace with the reference answers of
    the cells the gradient check builds on."""
    import nbformat

    from conftest import REPO

    nb = nbformat.read(
        REPO / "source" / "backprop_deep_dive" / "backprop_deep_dive.ipynb", as_version=4
    )
    cells = {
        c.id: c.source.replace("### BEGIN SOLUTION", "").replace("### END SOLUTION", "")
        for c in nb.cells
    }
    ref: dict = {"np": np}
    for cid in ("mlp", "gradcheck", "steps"):
        exec(cells[cid], ref)
    return cells, ref


def test_the_notebooks_derived_gradient_check_threshold_passes_right_and_fails_wrong(capsys):
    """Part 2's MLP gradient check (cells gradcheck-bounds and gradcheck-mlp) with the
    reference answers, the float32 sample and a backprop bug: only the bug lands above the
    derived bound."""
    cells, ref = _gradcheck_cells()
    for assignment, student, verdict in (
        (None, None, "below"),
        ("backprop_deep_dive", "float32-loops", "below"),
        ("backprop", "phi-grad-at-activation", "ABOVE"),
    ):
        ns = dict(ref) if student is None else {**ref, **sample_answers(assignment, student)}
        exec(cells["gradcheck-bounds"], ns)
        exec(cells["gradcheck-mlp"], ns)
        lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("W")]
        assert len(lines) == 3 and all(ln.endswith(verdict) for ln in lines), (student, lines)


# -- Part 1: sigma' accurate relative to itself ---------------------------------------------

_STABLE_SIGMOID = """
def sigmoid(x):
    x = np.asarray(x)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))
"""
_SIGMOID_GRAD_FORMS = {
    "sigma(x) sigma(-x)": "return sigmoid(x) * sigmoid(-np.asarray(x))",
    "e / (1 + e)^2": "e = np.exp(-np.abs(x))\n    return e / (1 + e) ** 2",
    "s (1 - s), s = sigma(-|x|)": "s = sigmoid(-np.abs(x))\n    return s * (1 - s)",
}


def _sigmoid_answers(sigmoid_grad_source: str) -> dict:
    ns: dict = {"np": np}
    exec(_STABLE_SIGMOID + "\n" + sigmoid_grad_source, ns)
    return ns


@pytest.mark.parametrize("form", list(_SIGMOID_GRAD_FORMS))
def test_cancellation_free_sigmoid_grad_forms_stay_within_their_derived_units(form):
    """Each form the tolerance derivation names stays within SIGMA_PRIME_REL_UNITS u of
    50-digit values, in float32 and float64 (wherever sigma' is a normal number), and
    passes the hidden check."""
    from decimal import Decimal, localcontext

    ns = _sigmoid_answers("def sigmoid_grad(x):\n    " + _SIGMOID_GRAD_FORMS[form])
    rng = np.random.default_rng(0)
    with localcontext() as ctx:
        ctx.prec = 50
        for dtype in (np.float32, np.float64):
            x = np.concatenate([rng.uniform(-40, 40, 1500), rng.uniform(-700, 700, 500)]).astype(
                dtype
            )
            got = ns["sigmoid_grad"](x)
            assert got.dtype == dtype
            e = [Decimal(-abs(float(v))).exp() for v in x]
            exact = np.array([float(t / (1 + t) ** 2) for t in e])
            normal = exact >= np.finfo(dtype).tiny
            units = (
                np.abs(got[normal] - exact[normal]) / exact[normal] / grading.unit_roundoff(dtype)
            )
            assert units.max() <= grading.SIGMA_PRIME_REL_UNITS, (
                form,
                np.dtype(dtype).name,
                units.max(),
            )
    grading.check_sigmoid(ns["sigmoid"], ns["sigmoid_grad"])


def test_the_cancelling_sigmoid_grad_fails_by_name_in_the_hidden_and_the_visible_test():
    import nbformat

    from conftest import REPO
    from initlab import checks

    ns = sample_answers("backprop_deep_dive", "sigmoid-grad-cancels")
    with pytest.raises(CheckFailed, match="1 - sigmoid\\(x\\) cancels"):
        grading.check_sigmoid(ns["sigmoid"], ns["sigmoid_grad"])
    nb = nbformat.read(
        REPO / "source" / "backprop_deep_dive" / "backprop_deep_dive.ipynb", as_version=4
    )
    visible = {c.id: c.source for c in nb.cells}["test-sigmoid"].split("### BEGIN HIDDEN TESTS")[0]
    with pytest.raises(CheckFailed, match="1 - sigmoid\\(x\\) cancels"):
        exec(visible, {**ns, "checks": checks})
    reference: dict = {"np": np}
    exec({c.id: c.source for c in nb.cells}["sigmoid"], reference)
    exec(visible, {**reference, "checks": checks})


def test_sigmoid_grad_in_float32_for_float64_input_is_named_float32_sized():
    ns = _sigmoid_answers(
        "def sigmoid_grad(x):\n    x = np.asarray(x, dtype=np.float32)\n"
        "    return sigmoid(x) * sigmoid(-x)"
    )
    with pytest.raises(CheckFailed, match="float32-sized") as info:
        grading.check_sigmoid(ns["sigmoid"], ns["sigmoid_grad"])
    assert "cancels" not in str(info.value)


def test_the_planted_bug_hunt_does_not_need_a_working_backward(capsys):
    """A student whose mlp_backward fails (shapes that do not match) still gets the gradient
    check, u and h, and the reference hunt flags W1 and W2 only: one slip costs once."""
    cells, ref = _gradcheck_cells()
    ns = {**ref, **sample_answers("backprop", "wrong-layer-weights")}
    exec(cells["gradcheck-bounds"], ns)
    with pytest.raises(ValueError):
        exec(cells["gradcheck-mlp"], ns)
    capsys.readouterr()
    exec(cells["backward-to-debug"], ns)
    exec(cells["planted-bug"], ns)
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("W")]
    assert [ln.split(": ")[-1] for ln in lines] == ["ABOVE", "ABOVE", "below"], lines
    assert ns["bug_line"] == "d"


def test_a_checker_that_does_not_restore_x_fails():
    """Right values on the separable test function, but x[i] is never put back: named from
    the points g was evaluated at."""
    ns = sample_answers("backprop_deep_dive", "checker-not-restoring")
    with pytest.raises(grading.CheckFailed, match="several entries"):
        grading.check_centred_difference(ns["centred_difference"])


def test_a_checker_that_changes_the_x_it_was_given_fails():
    ns: dict = {"np": np}
    exec(
        """
def centred_difference(f, x, h):
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        x[i] += h
        up = f(x)
        x[i] -= 2 * h
        grad[i] = (up - f(x)) / (2 * h)
        x[i] += h
    x[0] += h
    return grad
""",
        ns,
    )
    with pytest.raises(grading.CheckFailed, match="changed the x it was given"):
        grading.check_centred_difference(ns["centred_difference"])


# -- Part 3: each variance slip named only where its formula gives the answer -------------

_SLIP_TEXTS = {
    "zero-mean-phi-grad": "Var\\[phi'\\] where E\\[phi'\\^2\\] belongs",
    "squared-mean-phi-grad": "E\\[phi'\\]\\^2 where E\\[phi'\\^2\\] belongs",
    "fan-in-width": "not n\\^\\(l\\) = widths\\[l\\]",
}


@pytest.mark.parametrize("student", list(_SLIP_TEXTS))
def test_each_variance_slip_is_named_by_both_checks_and_no_other_slip_is(student):
    func = sample_answers("backprop_deep_dive", student)["grad_weight_moments"]
    for check in (grading.check_moments_reference, grading.check_moments_monte_carlo):
        with pytest.raises(CheckFailed, match=_SLIP_TEXTS[student]) as info:
            check(func)
        others = [t for s, t in _SLIP_TEXTS.items() if s != student]
        assert not any(re.search(t, str(info.value)) for t in others)


def test_the_squared_mean_and_the_zero_mean_slips_are_told_apart_across_the_cases():
    """phi' of 0 or 1 with probability 1/2 each has Var[phi'] = E[phi']^2 = 1/4: the first
    case cannot tell the two slips apart, the second one can."""
    first, second = (case.moments() for case in grading.MOMENT_CASES[:2])
    for m, same in ((first, True), (second, False)):
        zero = grading.grad_weight_moments(**grading._zero_mean_slip(m))[1]
        squared = grading.grad_weight_moments(**grading._squared_mean_slip(m))[1]
        assert np.allclose(zero, squared, rtol=0, atol=0) == same


def test_no_slip_is_named_for_a_right_or_an_unrelated_wrong_variance():
    assert grading._variance_slip(grading.grad_weight_moments) == ""

    def doubled(*args, **kwargs):
        mean, var = grading.grad_weight_moments(*args, **kwargs)
        return mean, 2 * var

    for check in (grading.check_moments_reference, grading.check_moments_monte_carlo):
        with pytest.raises(CheckFailed, match="E\\[\\(delta\\^\\(l\\)\\)\\^2\\] = ") as info:
            check(doubled)
        assert not any(re.search(t, str(info.value)) for t in _SLIP_TEXTS.values())


# -- Part 2: steps far below eps^(1/3) -------------------------------------------------------


def test_a_step_far_too_small_is_named_and_only_then():
    ns = sample_answers("backprop_deep_dive", "tiny-step")
    with pytest.raises(CheckFailed, match="h_float64 = 1e-12.*not a more accurate one"):
        grading.check_steps(ns["h_float64"], ns["h_float32"])
    ok64, ok32 = grading.optimal_step(np.float64), grading.optimal_step(np.float32)
    with pytest.raises(CheckFailed, match="h_float32 = 1e-06.*not a more accurate one"):
        grading.check_steps(ok64, 1e-6)
    grading.check_steps(ok64, ok32)
    for h64 in (0.5, np.sqrt(np.finfo(np.float64).eps)):  # too large; one-sided's sqrt(eps)
        with pytest.raises(CheckFailed, match="far from the bottom of the V") as info:
            grading.check_steps(h64, ok32)
        assert "not a more accurate one" not in str(info.value)
