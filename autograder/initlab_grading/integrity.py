"""Checks that an answer was written by the student, not borrowed from a library that
implements the graded function (torch.nn.init for the initialisers, initlab's own
modules for anything graded, initlab's check helpers for a finite-difference checker).

What is detected, statically (without running the answer):

- a module or function of a forbidden library named by the answer's code (in nested
  functions and closures too), by its default arguments, or by a helper function it calls
  from the same notebook;
- a forbidden module imported inside the answer (``import torch.nn.init as I``,
  ``from torch.nn import init``, ``from initlab import engine``);
- ``torch.nn.init`` reached as attributes (``torch.nn.init.xavier_normal_``).

What is not: a forbidden function reached through ``getattr`` with a computed name or
``eval``. The initialization grader also records, while it runs an answer, every call
into torch.nn.init and initlab.engine (``initlab_grading.initialization``), which covers
most of those.
"""

from __future__ import annotations

from collections.abc import Callable


def uses_library(func: Callable, forbidden: tuple[str, ...]) -> str | None:
    """Name of the first forbidden module or function ``func`` refers to, or None.

    ``forbidden`` holds dotted module names; a module matches itself and its submodules.
    """
    return _uses(func, forbidden, set())


def _matches(name: str, forbidden: tuple[str, ...]) -> str | None:
    for m in forbidden:
        if name == m or name.startswith(m + "."):
            return name
    return None


def _uses(func: Callable, forbidden: tuple[str, ...], seen: set[int]) -> str | None:
    code = getattr(func, "__code__", None)
    if code is None or id(code) in seen:
        return None
    seen.add(id(code))
    names: set[str] = set()
    stack = [code]
    while stack:
        c = stack.pop()
        names.update(c.co_names)
        stack.extend(k for k in c.co_consts if hasattr(k, "co_names"))
    if "torch.nn.init" in forbidden and "init" in names and ("nn" in names or "torch.nn" in names):
        return "torch.nn.init"
    for name in sorted(names):  # dotted names are the modules an import statement loads
        if "." in name or name in forbidden:
            found = _matches(name, forbidden)
            if found:
                return found
    glb = dict(getattr(func, "__globals__", {}))
    for name, cell in zip(code.co_freevars, getattr(func, "__closure__", None) or (), strict=True):
        try:
            glb[name] = cell.cell_contents
        except ValueError:  # an empty cell
            continue
        names.add(name)
    defaults = list(getattr(func, "__defaults__", None) or ())
    defaults += list((getattr(func, "__kwdefaults__", None) or {}).values())
    for i, value in enumerate(defaults):
        glb[f" default {i}"] = value
        names.add(f" default {i}")
    for name in sorted(names):
        obj = glb.get(name)
        mod = getattr(obj, "__module__", None) or getattr(obj, "__name__", None) or ""
        if isinstance(mod, str) and _matches(mod, forbidden):
            own = getattr(obj, "__name__", None)
            return mod if mod == own else f"{mod}.{own or type(obj).__name__}"
        if callable(obj) and getattr(obj, "__module__", None) == func.__module__:
            found = _uses(obj, forbidden, seen)
            if found:
                return found
    return None
