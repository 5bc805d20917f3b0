"""What a submission's own code does that no honest answer needs, for the instructor's review.

Hidden tests run in the grading worker (docs/security.md), but a submission written against
them (importing the references from ``initlab_grading``, hooking the interpreter with
``sys.settrace``, rewriting IPython's replies, patching what the checks use, copying a
library's functions) is still worth an instructor's look: it says what its author tried, and
the checks that ask the kernel about an answer's own code rest on the kernel's report. This
screen runs on the grading side, before
the kernel starts, over the source of every code cell the student could edit (answer
cells and cells the student added; the instructor's locked cells are restored by nbgrader
before this runs): a cell that names one of these tools, changes an attribute of a
module (``np.allclose = ...``), or rebinds a module name the tests use (``checks = ...``)
gets a line in the grading report saying what. It changes no score: it tells the
instructor which notebooks to read. Code that builds these names at run time (``getattr``
with a computed string) passes the screen; the lines are a review list, not a guarantee.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Mapping

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
    (r"__globals__|__code__|__closure__|FunctionType|CodeType", "a function's code or globals"),
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


def changed_modules(source: str, modules: Mapping[str, str]) -> list[str]:
    """What ``source`` does to the modules the tests use, one phrase each, in order:
    assigning or deleting an attribute of a module (``np.allclose = ...``,
    ``setattr(stats, "kstest", ...)``), and binding a name that the instructor's setup bound
    to a module the test cells use (``modules``: name -> module, e.g.
    ``{"checks": "initlab.checks"}``), or that the cell imported from initlab, to something
    else. What ``source`` imports itself counts too, modules and names from them (``from
    scipy import stats``). Source that does not parse (IPython magics) gives nothing here."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    bound = dict(modules)
    imported: dict[str, str] = {}  # what the cell imports: a module, or a name from one
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                # `import a.b` binds a (to module a); `import a.b as c` binds c to a.b
                top = alias.name.split(".")[0]
                imported[alias.asname or top] = alias.name if alias.asname else top
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                imported[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    bound.update(imported)
    # a setup name, or one the cell imports from initlab (a setup cell whose metadata was
    # stripped is the student's cell, and rebinding its ``checks`` is what this looks for)
    protected = {**modules, **{n: m for n, m in imported.items() if m.startswith("initlab.")}}
    found: list[str] = []

    def module_path(node: ast.AST) -> str | None:
        """``np.linalg`` -> "numpy.linalg" when its first name is bound to a module."""
        parts = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if isinstance(node, ast.Name) and node.id in bound:
            return ".".join([bound[node.id], *reversed(parts)])
        return None

    def flat(target: ast.AST):
        if isinstance(target, (ast.Tuple, ast.List)):
            for element in target.elts:
                yield from flat(element)
        elif isinstance(target, ast.Starred):
            yield from flat(target.value)
        else:
            yield target

    def add(text: str) -> None:
        if text not in found:
            found.append(text)

    for node in ast.walk(tree):
        targets: list[ast.AST] = []
        verb = "deletes" if isinstance(node, ast.Delete) else "assigns"
        if isinstance(node, ast.Assign):
            targets = list(node.targets)
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        elif isinstance(node, ast.Delete):
            targets = list(node.targets)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if node.name in protected:
                add(f"rebinds {node.name} ({protected[node.name]})")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in {"setattr", "delattr"}
            and node.args
        ):
            path = module_path(node.args[0])
            if path:
                add(f"{node.func.id} on {path} (changes a module the tests use)")
        for target in (t for group in targets for t in flat(group)):
            if isinstance(target, ast.Attribute) and (path := module_path(target)):
                add(f"{verb} {path} (changes a module the tests use)")
            elif isinstance(target, ast.Name) and target.id in protected:
                add(f"rebinds {target.id} ({protected[target.id]})")
    return found


def review_notes(
    cells: list, name_of: Callable[[dict, int], str], modules: Mapping[str, str]
) -> list[str]:
    """One report line per student-editable code cell of ``cells`` that names a suspect
    (:func:`suspect_names`) or changes a module the tests use (:func:`changed_modules`):
    ``"<cell>: <what>; review this notebook"``. ``name_of(cell, index)`` gives the cell's
    name in the report (its grade id, or its position)."""
    notes = []
    for index, cell in enumerate(cells):
        if cell.get("cell_type") != "code" or cell.get("metadata", {}).get("nbgrader", {}).get(
            "locked"
        ):
            continue
        source = cell.get("source", "")
        found = [f"names {'; '.join(names)}"] if (names := suspect_names(source)) else []
        found += changed_modules(source, modules)
        if found:
            notes.append(f"{name_of(cell, index)}: {'; '.join(found)}; review this notebook")
    return notes
