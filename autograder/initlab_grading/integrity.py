"""Checks that an answer was written by the student, not borrowed from a library that
implements the graded function (torch.nn.init for the initialisers, initlab's own
check helpers for a finite-difference checker).

What is detected: a module or function of a forbidden library named by the answer's code
(in nested functions and closures too) or by a helper function it calls from the same
notebook, and
``torch.nn.init`` reached as attributes (``torch.nn.init.xavier_normal_``). What is not:
a forbidden function reached through ``getattr`` with a computed name or ``eval``.
"""

from __future__ import annotations

from collections.abc import Callable


def uses_library(func: Callable, forbidden: tuple[str, ...]) -> str | None:
    """Name of the first forbidden module or function ``func`` refers to, or None."""
    return _uses(func, forbidden, set())


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
    if "torch.nn.init" in forbidden and "init" in names and "nn" in names:
        return "torch.nn.init"
    glb = dict(getattr(func, "__globals__", {}))
    for name, cell in zip(code.co_freevars, getattr(func, "__closure__", None) or (), strict=True):
        try:
            glb[name] = cell.cell_contents
        except ValueError:  # an empty cell
            continue
        names.add(name)
    for name in names:
        obj = glb.get(name)
        mod = getattr(obj, "__module__", None) or getattr(obj, "__name__", None) or ""
        if isinstance(mod, str) and any(mod == m or mod.startswith(m + ".") for m in forbidden):
            return mod if mod == getattr(obj, "__name__", None) else f"{mod}.{obj.__name__}"
        if callable(obj) and getattr(obj, "__module__", None) == func.__module__:
            found = _uses(obj, forbidden, seen)
            if found:
                return found
    return None
