import re

import numpy as np
import pytest

from initlab import checks


def test_rel_error():
    assert checks.rel_error([1.0, 2.0], [1.0, 2.0]) == 0.0
    assert checks.rel_error(1.0, 1.1) == pytest.approx(0.1 / 2.1)


def test_check_close_names_the_worst_entry_and_hint():
    with pytest.raises(checks.CheckFailed, match=r"x is 3 at index \(1,\); expected 2.*Look"):
        checks.check_close([1.0, 3.0], [1.0, 2.0], 0.5, "x", "Look again.")
    checks.check_close([1.0, 2.4], [1.0, 2.0], 0.5, "x")


def test_check_close_and_check_moments_mark_only_the_expected_value():
    """With ``mark_expected`` the part of the message that states the expected value is
    wrapped by it; the rest, and the whole text, stay as without it."""

    def mark(text):
        return "<" + text + ">"

    with pytest.raises(checks.CheckFailed) as failure:
        checks.check_close([1.0, 3.0], [1.0, 2.0], 0.5, "x", "Look again.", mark_expected=mark)
    assert str(failure.value) == (
        "x is 3 at index (1,)<; expected 2 (allowed difference 0.5)>. Look again."
    )
    rng = np.random.default_rng(3)
    sample = rng.normal(0, 0.5, 50_000)
    with pytest.raises(checks.CheckFailed) as failure:
        checks.check_moments(sample, 0.0, 0.45, 3.0, "w", hint="Hint.", mark_expected=mark)
    text = str(failure.value)
    assert text.startswith("The entries of w have standard deviation 0.498")
    assert "<; expected 0.45 (variance allowed within " in text
    assert text.endswith(" samples)>. Hint.")
    with pytest.raises(checks.CheckFailed) as failure:
        checks.check_moments(sample + 0.1, 0.0, 0.5, 3.0, "w", mark_expected=mark)
    assert re.search(r"have mean 0\.10\d*<; expected 0 \(allowed ", str(failure.value))
    assert str(failure.value).endswith(" samples)>.")


def test_check_close_rejects_nan():
    with pytest.raises(checks.CheckFailed):
        checks.check_close([np.nan], [0.0], 1.0, "x")


def test_as_array_messages():
    with pytest.raises(checks.CheckFailed, match="forget to `return`"):
        checks.as_array(None, "grad_f(x)")
    with pytest.raises(checks.CheckFailed, match=r"has shape \(2,\); expected \(any, 2\)"):
        checks.as_array([1.0, 2.0], "traj", shape=(None, 2))
    with pytest.raises(checks.CheckFailed, match="could not be read"):
        checks.as_array("abc", "x")


def test_call_answer_wraps_exceptions_with_a_hint():
    def broken(x):
        raise ValueError("too many values to unpack")

    with pytest.raises(checks.CheckFailed, match="broken\\(1\\) raised ValueError.*Use grad"):
        checks.call_answer(broken, 1, what="broken(1)", hint="Use grad.")

    def todo():
        raise NotImplementedError

    with pytest.raises(checks.CheckFailed, match="not implemented yet"):
        checks.call_answer(todo, what="todo()")
    assert checks.call_answer(lambda a, b=0: a + b, 1, b=2, what="add") == 3


def test_no_graded_answer_in_the_library():
    """Part 2 of the backprop deep dive grades a centred finite-difference gradient, so the
    student-visible library must not offer one."""
    assert not hasattr(checks, "numerical_gradient")
    assert not hasattr(checks, "check_gradient")
    assert set(checks.__all__) <= set(dir(checks))


def test_roundoff_bound_uses_float32_by_default():
    assert checks.roundoff_bound(2.0, 3) == pytest.approx(3 * 2.0 * np.finfo(np.float32).eps / 2)
    assert checks.roundoff_bound(1.0, 1, np.float64) == np.finfo(np.float64).eps / 2
    with pytest.raises(ValueError):
        checks.roundoff_bound(1.0, 0)


def test_z_score_is_the_two_sided_normal_quantile():
    assert checks.z_score(0.05) == pytest.approx(1.959964, abs=1e-6)
    assert checks.z_score(1e-7) == pytest.approx(5.326724, abs=1e-6)
    with pytest.raises(ValueError):
        checks.z_score(0.0)


def test_check_moments_accepts_the_right_distribution_and_names_the_std():
    rng = np.random.default_rng(3)
    checks.check_moments(rng.normal(0, 0.5, 50_000), 0.0, 0.5, 3.0, "w")
    checks.check_moments(rng.uniform(-1, 1, 50_000), 0.0, 1 / np.sqrt(3), 1.8, "w")
    with pytest.raises(checks.CheckFailed, match="standard deviation 0.5.*expected 0.45.*Hint"):
        checks.check_moments(rng.normal(0, 0.5, 50_000), 0.0, 0.45, 3.0, "w", hint="Hint.")
    with pytest.raises(checks.CheckFailed, match="mean"):
        checks.check_moments(rng.normal(0.1, 0.5, 50_000), 0.0, 0.5, 3.0, "w")
    with pytest.raises(ValueError, match="at least 1000"):
        checks.check_moments(np.zeros(10), 0.0, 1.0, 3.0, "w")
