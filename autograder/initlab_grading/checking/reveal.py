"""How much a failure message reveals: the expected value, the formula, or only the
diagnosis.

A hidden check's message marks the spans that give something away::

    f"grad_f({x}) returned {got}" + expected(f"; expected {want}") + "." + diagnosis

:func:`expected` wraps a statement of the correct value (expected ..., the reference gives
...), :func:`formula` a statement of the formula or rule to implement. Everything else
(what was observed, where it goes wrong, the named mistake, what to look at) is never
marked and always shows.

The marks stay in the graded notebook, so formgrader shows the whole message with its
marks. :func:`render` applies the instructor's level when feedback is generated
(``HideHiddenTests.reveal``, initlab_grading.grading.preprocessors), and the kit's class report
and sample comparisons read messages rendered at ``"expected"``, without marks:

- ``"expected"`` (the default): everything, marks removed;
- ``"formula"``: without the expected values;
- ``"diagnosis"``: without the expected values and the formulas.

A span is written ``⟦expected⟧...⟦/expected⟧`` or ``⟦formula⟧...⟦/formula⟧`` (white square
brackets, which ordinary messages never contain). An expected span may sit inside a
formula span (``lr / sqrt(t)`` and its value); a span whose closing mark is missing (an
error message cut short) is removed to the end of its text.
"""

from __future__ import annotations

import re

LEVELS = ("expected", "formula", "diagnosis")
"""What feedback reveals, from most to least."""
KINDS = ("expected", "formula")
"""The kinds of marked span."""
_REMOVED = {"expected": (), "formula": ("expected",), "diagnosis": ("expected", "formula")}
"""The kinds of span each level removes."""

_SPAN = {kind: re.compile(rf"⟦{kind}⟧.*?(?:⟦/{kind}⟧|\Z)", re.S) for kind in KINDS}
_MARK = re.compile(r"⟦/?(?:expected|formula)⟧")
_GAP = "\ue000"
"""Stands for a removed span while the text around it is tidied (a private-use character)."""
_JOIN = re.compile(
    r"(?P<lead>[ \t]*)(?P<pre>[(,;:.]?)[ \t]*" + _GAP + r"(?:[ \t]*" + _GAP + r")*"
    r"(?P<trail>[ \t]*)(?P<post>[).,;:!?]?)(?P<after>[ \t]*)"
)
_TRAILING = re.compile(r"[ \t]+(?=\n|\Z)")


def _span(kind: str, text: str) -> str:
    return f"⟦{kind}⟧{text}⟦/{kind}⟧" if text else ""


def expected(text: str) -> str:
    """``text`` marked as stating the correct value; shown at the level "expected" only."""
    return _span("expected", text)


def formula(text: str) -> str:
    """``text`` marked as stating the formula or rule to implement; hidden at the level
    "diagnosis"."""
    return _span("formula", text)


def _join(m: re.Match) -> str:
    """What replaces a removed span and the punctuation around it, so that the sentence
    still reads: the punctuation after the span wins over the one before it, a span in
    parentheses takes them along, a line that began with a span begins with what follows."""
    text = m.string
    at_start = m.start() == 0 or text[m.start() - 1] == "\n"
    at_end = m.end() == len(text) or text[m.end()] == "\n"
    lead, pre, post, after = m["lead"], m["pre"], m["post"], m["after"]
    if at_start:
        return ""
    if pre == "(":
        return after if post == ")" else lead + "("
    if post:
        return ("." if pre == "." and post != ")" else post) + ("" if at_end else after)
    if at_end:
        return "." if pre in (",", ";", ":") else pre
    return pre + (" " if lead or m["trail"] or after or pre else "")


def render(text: str, level: str = "expected") -> str:
    """``text`` as feedback at ``level`` (one of :data:`LEVELS`): the spans that level
    hides removed, the sentence around them tidied, and no mark left."""
    if level not in LEVELS:
        raise ValueError(f"unknown level {level!r}: use one of {', '.join(LEVELS)}")
    if "⟦" not in text:
        return text
    text = text.replace(_GAP, "")
    for kind in _REMOVED[level]:
        text = _SPAN[kind].sub(_GAP, text)
    text = _MARK.sub("", text)
    if _GAP not in text:
        return text
    return _TRAILING.sub("", _JOIN.sub(_join, text))


def plain(text: str) -> str:
    """``text`` with its marks removed and nothing else: everything it says, as formgrader's
    readers and the class report see it."""
    return render(text, "expected")
