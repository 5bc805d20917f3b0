"""Names in a submission's own code that no honest answer needs, for the instructor's review.

Hidden tests still run in the student's interpreter (docs/security.md), so a submission
written against them (importing the references from ``initlab_grading``, hooking the
interpreter with ``sys.settrace``, rewriting IPython's replies) can gain points that the
guard in the kernel does not always notice. This screen runs on the grading side, before
the kernel starts, over the source of every code cell the student could edit (answer
cells and cells the student added; the instructor's locked cells are restored by nbgrader
before this runs): a cell that names one of these tools gets a line in the grading report
saying which and why. It changes no score: it tells the instructor which notebooks to
read. Code that builds these names at run time (``getattr`` with a computed string)
passes the screen; the lines are a review list, not a guarantee.
"""

from __future__ import annotations

import re

SUSPECT_NAMES: tuple[tuple[str, str], ...] = (
    (r"initlab_grading", "the hidden tests' own package"),
    (r"settrace|setprofile", "a tracing hook, which can read and change a test's variables"),
    (r"sys\.modules", "Python's table of loaded modules"),
    (r"__import__|importlib", "an import by computed name"),
    (r"__builtins__|builtins", "Python's builtins, which every test uses"),
    (r"get_ipython", "the kernel's shell: its hooks, history and error display"),
    (r"_getframe|inspect\.stack|linecache", "the frames or source of the code calling it"),
    (r"gc\.get_(?:objects|referrers|referents)", "objects reached through the garbage collector"),
    (r"ctypes", "raw memory access"),
)
"""(regular expression, why it is listed): names matched as whole words in a cell's source."""

_PATTERNS = [(re.compile(rf"(?<!\w)(?:{p})(?!\w)"), why) for p, why in SUSPECT_NAMES]


def suspect_names(source: str) -> list[str]:
    """What ``source`` names of ``SUSPECT_NAMES``, one ``"name (why)"`` per kind, in order."""
    found = []
    for pattern, why in _PATTERNS:
        match = pattern.search(source)
        if match:
            found.append(f"{match.group(0)} ({why})")
    return found


def review_notes(cells: list, name_of) -> list[str]:
    """One report line per student-editable code cell of ``cells`` that names a suspect:
    ``"<cell>: names <what>; review this notebook"``. ``name_of(cell, index)`` gives the
    cell's name in the report (its grade id, or its position)."""
    notes = []
    for index, cell in enumerate(cells):
        if cell.get("cell_type") != "code" or cell.get("metadata", {}).get("nbgrader", {}).get(
            "locked"
        ):
            continue
        found = suspect_names(cell.get("source", ""))
        if found:
            notes.append(f"{name_of(cell, index)}: names {'; '.join(found)}; review this notebook")
    return notes
