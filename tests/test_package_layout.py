"""How the modules of initlab_grading may import each other: the machinery without import
circles, and each assignment's grader on its own (shared helpers live in modules of their
own, never in another assignment's grader)."""

from __future__ import annotations

import ast
from pathlib import Path

from initlab_grading import layout

PACKAGE = Path(__file__).resolve().parents[1] / "autograder" / "initlab_grading"


def _imports() -> dict[str, set[str]]:
    """Module -> the initlab_grading modules it imports anywhere (top level or in a
    function)."""
    graph = {}
    for path in PACKAGE.glob("*.py"):
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                "initlab_grading"
            ):
                parts = node.module.split(".")
                deps |= {parts[1]} if len(parts) > 1 else {a.name for a in node.names}
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
                deps |= {n.split(".")[1] for n in names if n.startswith("initlab_grading.")}
        graph[path.stem] = deps - {path.stem}
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


def test_no_import_circles():
    graph = _imports()
    assert {"grade", "course", "distributed", "report"} <= set(graph)
    assert _cycle(graph) == [], " -> ".join(_cycle(graph))


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) == []


def test_no_grader_imports_another_assignments_grader():
    graph = _imports()
    graders = set(layout.ASSIGNMENTS)
    borrowed = {g: sorted(graph[g] & graders) for g in graders if graph[g] & graders}
    assert borrowed == {}, f"graders importing other graders: {borrowed}"
