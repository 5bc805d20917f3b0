"""How the modules of initlab_grading may import each other: no import circles, and each
assignment's subpackage (assignments/<id>/: grader and samples) on its own, found by
discovery (shared helpers live in modules of their own, never in another assignment's)."""

from __future__ import annotations

import ast
from pathlib import Path

from initlab_grading import layout

PACKAGE = Path(__file__).resolve().parents[1] / "autograder" / "initlab_grading"
ASSIGNMENTS = "initlab_grading.assignments"


def _modules(package: Path = PACKAGE) -> dict[str, Path]:
    """Dotted name -> file of every module of the package (a subpackage by its __init__)."""
    modules = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _imports(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the modules of the package it imports anywhere (top level or in a
    function), by their dotted names: ``from initlab_grading.x import y`` is the module x.y
    when there is one, else x."""
    modules = _modules(package)
    graph = {}
    for name, path in modules.items():
        here = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                deps |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = here.split(".")[: len(here.split(".")) - node.level + 1]
                    base = ".".join([*anchor, *filter(None, [base])])
                deps |= {f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                         for a in node.names}  # fmt: skip
        graph[name] = {d for d in deps if d in modules} - {name}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle, or [] when there is none (depth-first search)."""
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> list[str]:
        state[node] = 1
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return path[path.index(dep) :] + [dep]
            if dep not in state and (found := visit(dep, path + [dep])):
                return found
        state[node] = 2
        return []

    for node in sorted(graph):
        if node not in state and (found := visit(node, [node])):
            return found
    return []


def _assignment_of(module: str) -> str | None:
    """The assignment whose subpackage holds ``module`` (None outside assignments/)."""
    if not module.startswith(ASSIGNMENTS + "."):
        return None
    return module.removeprefix(ASSIGNMENTS + ".").split(".")[0]


def _borrowed(graph: dict[str, set[str]]) -> dict[str, list[str]]:
    """Modules of an assignment -> the modules of other assignments they import."""
    found = {}
    for module, deps in graph.items():
        own = _assignment_of(module)
        if own is None:
            continue
        other = sorted(d for d in deps if _assignment_of(d) not in (None, own))
        if other:
            found[module] = other
    return found


def test_no_import_circles():
    graph = _imports()
    assert {"initlab_grading.grade", "initlab_grading.course"} <= set(graph)
    assert _cycle(graph) == [], " -> ".join(_cycle(graph))


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) == []


def test_no_assignment_imports_another_assignment():
    graph = _imports()
    assert {f"{ASSIGNMENTS}.{a}.grader" for a in layout.ASSIGNMENTS} <= set(graph)
    assert _borrowed(graph) == {}, f"assignments importing other assignments: {_borrowed(graph)}"


def test_a_borrowing_assignment_is_found():
    graph = {
        f"{ASSIGNMENTS}.b.grader": {f"{ASSIGNMENTS}.a.grader", "initlab_grading.thresholds"},
        f"{ASSIGNMENTS}.b.samples": {f"{ASSIGNMENTS}.b.grader"},
        f"{ASSIGNMENTS}.a.grader": set(),
    }
    assert _borrowed(graph) == {f"{ASSIGNMENTS}.b.grader": [f"{ASSIGNMENTS}.a.grader"]}


def test_the_import_graph_resolves_modules_and_relative_imports(tmp_path):
    pkg = tmp_path / "initlab_grading"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "a.py").write_text("from . import b\nfrom initlab_grading.sub import c\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    import initlab_grading.top\n")
    (pkg / "sub" / "c.py").write_text("from ..top import x\nimport json\n")
    (pkg / "top.py").write_text("x = 1\n")
    graph = _imports(pkg)
    assert graph["initlab_grading.sub.a"] == {"initlab_grading.sub.b", "initlab_grading.sub.c"}
    assert graph["initlab_grading.sub.b"] == {"initlab_grading.top"}
    assert graph["initlab_grading.sub.c"] == {"initlab_grading.top"}


def test_every_assignment_is_a_subpackage_found_by_discovery():
    folders = sorted(p for p in (PACKAGE / "assignments").iterdir() if p.is_dir()
                     and p.name != "__pycache__")  # fmt: skip
    assert sorted(p.name for p in folders) == sorted(layout.ASSIGNMENTS)
    for folder in folders:
        files = {p.name for p in folder.glob("*.py")}
        assert {"__init__.py", "grader.py", "samples.py"} <= files, folder
