import pytest

from initlab import budget


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for var in ("INITLAB_BUDGET", "NBGRADER_EXECUTION", "CI"):
        monkeypatch.delenv(var, raising=False)


def test_default_on_a_laptop():
    assert budget.current() == "default"
    assert budget.pick(grade=1, default=2, full=3) == 2


@pytest.mark.parametrize("var, value", [("NBGRADER_EXECUTION", "autograde"), ("CI", "true")])
def test_grade_under_nbgrader_and_ci(monkeypatch, var, value):
    monkeypatch.setenv(var, value)
    assert budget.current() == "grade"
    assert budget.pick(grade=1, default=2, full=3) == 1


@pytest.mark.parametrize("mode", ["autograde", "validate"])
@pytest.mark.parametrize("override", [" Full ", "default", "grade", "huge"])
def test_nbgrader_always_grades_with_the_grade_budget(monkeypatch, mode, override):
    """nbgrader sets NBGRADER_EXECUTION while it autogrades or validates: an INITLAB_BUDGET
    left in the environment (even a misspelt one) must not change what grading runs."""
    monkeypatch.setenv("NBGRADER_EXECUTION", mode)
    monkeypatch.setenv("INITLAB_BUDGET", override)
    assert budget.current() == "grade"
    assert budget.pick(grade=1, default=2, full=3) == 1
    assert "'grade'" in budget.describe() and "nbgrader" in budget.describe()


@pytest.mark.parametrize("ci", [None, "true"])
def test_override_wins_outside_nbgrader(monkeypatch, ci):
    if ci:
        monkeypatch.setenv("CI", ci)
    monkeypatch.setenv("INITLAB_BUDGET", " Full ")
    assert budget.current() == "full"
    assert "'full'" in budget.describe()
    assert "INITLAB_BUDGET" in budget.describe()


def test_unknown_budget_says_what_to_do(monkeypatch):
    monkeypatch.setenv("INITLAB_BUDGET", "huge")
    with pytest.raises(budget.BudgetError, match="one of grade, default, full"):
        budget.current()


def test_explorer_draws_the_defaults_statically_when_grading(monkeypatch):
    from initlab import widgets

    monkeypatch.setenv("INITLAB_BUDGET", "grade")
    calls = []
    widgets.explore(
        lambda depth, kind: calls.append((depth, kind)), depth=([1, 2], 2), kind=(["a", "b"], "a")
    )
    assert calls == [(2, "a")]
    assert not widgets.interactive_available()
    with pytest.raises(ValueError, match="not among its choices"):
        widgets.explore(lambda depth: None, depth=([1, 2], 3))
