"""How the modules of initlab_grading may import each other: no import circles; each
assignment's subpackage (assignments/<id>/: grader and samples) on its own, found by
discovery (shared helpers live in checking/, never in another assignment's modules); the
machinery (checking/, course/, grading/) reaches the assignments through discovery only
(importlib), never by an import statement; checking/ imports neither course/ nor grading/;
grading/ builds on course/ (the course's files, results, the class report), and of course/
only the instructor's loop (course/build.py, which grades the samples) imports grading/;
and no subpackage's __init__ imports anything, so that importing one module of a
subpackage never loads another subpackage."""

from __future__ import annotations

import ast
from pathlib import Path

from initlab_grading.course import layout

PACKAGE = Path(__file__).resolve().parents[1] / "autograder" / "initlab_grading"
ASSIGNMENTS = "initlab_grading.assignments"
MACHINERY = ("checking", "course", "grading")
LOOP = "initlab_grading.course.build"
"""The instructor's loop: the one module of course/ that grades, so imports grading/."""


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


def _subpackage(module: str) -> str | None:
    """The subpackage of initlab_grading that holds ``module`` (None for the package)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def _machinery_importing_assignments(graph: dict[str, set[str]]) -> dict[str, list[str]]:
    """Modules of the machinery -> the assignments' modules they import by statement."""
    found = {}
    for module, deps in graph.items():
        if _subpackage(module) in MACHINERY:
            reached = sorted(d for d in deps if _subpackage(d) == "assignments")
            if reached:
                found[module] = reached
    return found


def _checking_reaching_out(graph: dict[str, set[str]]) -> dict[str, list[str]]:
    """Modules of checking/ -> the modules of course/ or grading/ they import."""
    found = {}
    for module, deps in graph.items():
        if _subpackage(module) == "checking":
            reached = sorted(d for d in deps if _subpackage(d) in ("course", "grading"))
            if reached:
                found[module] = reached
    return found


def _course_reaching_grading(graph: dict[str, set[str]]) -> dict[str, list[str]]:
    """Modules of course/ other than the loop -> the modules of grading/ they import."""
    found = {}
    for module, deps in graph.items():
        if _subpackage(module) == "course" and module != LOOP:
            reached = sorted(d for d in deps if _subpackage(d) == "grading")
            if reached:
                found[module] = reached
    return found


def _importing_inits(package: Path = PACKAGE) -> list[str]:
    """The package's and subpackages' __init__ files that import something."""
    found = []
    for path in sorted(package.rglob("__init__.py")):
        tree = ast.parse(path.read_text())
        if any(isinstance(n, ast.Import | ast.ImportFrom) for n in ast.walk(tree)):
            found.append(str(path.relative_to(package.parent)))
    return found


def test_no_import_circles():
    graph = _imports()
    assert {"initlab_grading.grading.grade", "initlab_grading.course.build"} <= set(graph)
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
        f"{ASSIGNMENTS}.b.grader": {
            f"{ASSIGNMENTS}.a.grader",
            "initlab_grading.checking.thresholds",
        },
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


def test_the_machinery_lives_in_subpackages():
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert top == ["__init__.py"], f"modules outside the subpackages: {top}"
    subpackages = sorted(p.parent.name for p in PACKAGE.glob("*/__init__.py"))
    assert subpackages == sorted(["assignments", *MACHINERY])


def test_the_machinery_reaches_assignments_through_discovery_only():
    graph = _imports()
    found = _machinery_importing_assignments(graph)
    assert found == {}, f"machinery importing assignments' modules: {found}"


def test_a_machinery_module_importing_an_assignment_is_found():
    graph = {
        "initlab_grading.course.build": {"initlab_grading.course.layout"},
        "initlab_grading.grading.evidence": {f"{ASSIGNMENTS}.a.grader"},
        "initlab_grading.checking.thresholds": {f"{ASSIGNMENTS}.a"},
        f"{ASSIGNMENTS}.a.grader": {"initlab_grading.checking.thresholds"},
    }
    assert _machinery_importing_assignments(graph) == {
        "initlab_grading.checking.thresholds": [f"{ASSIGNMENTS}.a"],
        "initlab_grading.grading.evidence": [f"{ASSIGNMENTS}.a.grader"],
    }


def test_checking_imports_neither_course_nor_grading():
    graph = _imports()
    assert any(_subpackage(m) == "checking" for m in graph)
    found = _checking_reaching_out(graph)
    assert found == {}, f"checking/ importing course/ or grading/: {found}"


def test_checking_importing_course_or_grading_is_found():
    graph = {
        "initlab_grading.checking.integrity": {"initlab_grading.checking.thresholds"},
        "initlab_grading.checking.substitute": {
            "initlab_grading.grading.guard",
            "initlab_grading.course.layout",
        },
        "initlab_grading.grading.grade": {"initlab_grading.course.layout"},
    }
    assert _checking_reaching_out(graph) == {
        "initlab_grading.checking.substitute": [
            "initlab_grading.course.layout",
            "initlab_grading.grading.guard",
        ]
    }


def test_course_reaches_grading_only_from_the_loop():
    graph = _imports()
    assert any(d.startswith("initlab_grading.grading.") for d in graph[LOOP])
    found = _course_reaching_grading(graph)
    assert found == {}, f"course/ modules other than {LOOP} importing grading/: {found}"


def test_a_course_module_importing_grading_is_found():
    graph = {
        LOOP: {"initlab_grading.grading.grade"},
        "initlab_grading.course.results": {"initlab_grading.grading.preprocessors"},
        "initlab_grading.grading.grade": {"initlab_grading.course.layout"},
    }
    assert _course_reaching_grading(graph) == {
        "initlab_grading.course.results": ["initlab_grading.grading.preprocessors"]
    }


def test_no_init_imports_anything():
    assert _importing_inits() == []


def test_an_importing_init_is_found(tmp_path):
    pkg = tmp_path / "initlab_grading"
    (pkg / "course").mkdir(parents=True)
    (pkg / "__init__.py").write_text('"""A package."""\n')
    (pkg / "course" / "__init__.py").write_text("from initlab_grading.course.build import main\n")
    assert _importing_inits(pkg) == ["initlab_grading/course/__init__.py"]
