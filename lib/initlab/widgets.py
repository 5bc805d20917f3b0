"""Interactive explorers that degrade to a static figure where no widget front end runs.

Under nbgrader and CI (the ``grade`` budget) a widget would render nothing useful, and its
model ids change on every run, so :func:`explore` draws the view once with the default
values instead. In JupyterLab with ipywidgets (the ``default`` and ``full`` budgets) it
shows sliders and menus; a notebook tags such a cell ``nbval-ignore-output``, since nbval
(which re-runs the solutions at the ``default`` budget) has no widget front end.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from initlab import budget

__all__ = ["explore", "interactive_available"]


def interactive_available() -> bool:
    """True when sliders can be shown: ipywidgets is installed and the budget is not
    ``grade`` (grading, CI)."""
    if budget.current() == "grade":
        return False
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    return True


def explore(view: Callable[..., Any], **controls: tuple[Sequence[Any], Any]) -> None:
    """Show ``view`` with one control per keyword: ``name=(choices, default)``.

    ``choices`` is a list of allowed values (a slider for numbers, a menu otherwise); the
    static fallback calls ``view(**defaults)`` once.
    """
    defaults = {name: default for name, (_, default) in controls.items()}
    for name, (choices, default) in controls.items():
        if default not in choices:
            raise ValueError(f"default {default!r} of {name!r} is not among its choices")
    if not interactive_available():
        view(**defaults)
        return
    import ipywidgets as widgets

    def control(name: str, choices: Sequence[Any], default: Any) -> Any:
        if all(isinstance(c, int | float) for c in choices):
            return widgets.SelectionSlider(options=list(choices), value=default, description=name)
        return widgets.Dropdown(options=list(choices), value=default, description=name)

    widgets.interact(view, **{name: control(name, *spec) for name, spec in controls.items()})
