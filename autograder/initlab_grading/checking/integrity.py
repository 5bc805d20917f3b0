"""Checks that an answer was written by the student, not borrowed from a library that
implements the graded function (torch.nn.init for the initialisers, initlab's own
modules for anything graded, initlab's check helpers for a finite-difference checker).

What is detected, statically (without running the answer):

- a module or function of a forbidden library named by the answer's code (in nested
  functions and closures too), by its default arguments, or by a helper function it calls
  from the same notebook;
- a forbidden module imported inside the answer (``import torch.nn.init as I``,
  ``from torch.nn import init``, ``from initlab import engine``);
- a forbidden module or function reached as attributes of a module, whether the module
  is a global, a closure variable or imported inside the answer
  (``torch.nn.init.xavier_normal_``, ``nn.init.normal_`` after ``from torch import nn``,
  ``t.func.grad`` after ``import torch as t``, ``torch.vmap``, which lives in
  ``torch._functorch``): the answer's bytecode is read for chains of attribute loads.

What is not: a forbidden function reached through ``getattr`` with a computed name,
``eval``, or attributes of something other than a module (an object passed in). The
initialization graders also record, while they run an answer, every call into
torch.nn.init and initlab.engine (:func:`call_own`), and the
activations grader watches for autograd and backward kernels at run time, which covers
most of those.
"""

from __future__ import annotations

import dis
import sys
from collections.abc import Callable, Iterator
from types import CodeType, ModuleType
from typing import Any

import torch

from initlab.checks import CheckFailed, call_answer

_LOAD_NAME = {
    "LOAD_GLOBAL",
    "LOAD_NAME",
    "LOAD_DEREF",
    "LOAD_CLASSDEREF",
    "LOAD_FAST",
    "LOAD_FAST_CHECK",
}
_LOAD_ATTR = {"LOAD_ATTR", "LOAD_METHOD"}
_STORE = {"STORE_FAST", "STORE_NAME", "STORE_DEREF", "STORE_GLOBAL"}


def uses_library(func: Callable, forbidden: tuple[str, ...]) -> str | None:
    """Name of the first forbidden module or function ``func`` refers to, or None.

    ``forbidden`` holds dotted module names; a module matches itself and its submodules.
    A function of a student's kernel seen from the grading worker (a ``Remote``, whose
    type has ``code_image``) is read from the kernel's description of its code.
    """
    if hasattr(type(func), "code_image"):
        func = func.code_image()  # type: ignore[attr-defined]
    return _uses(func, forbidden, set())


def _copied(code: CodeType, forbidden: tuple[str, ...]) -> str | None:
    """The forbidden module whose source file ``code`` was compiled from, or None: a
    function rebuilt from a library function's ``__code__`` (with copies of its globals)
    keeps the library's file name. A file matches a forbidden module ``a.b`` when its path
    ends in ``a/b.py`` or ``a/b/<file>.py``, or is the file of a loaded submodule."""
    parts = tuple(code.co_filename.replace("\\", "/").split("/"))
    folders, stem = parts[:-1], parts[-1].removesuffix(".py")
    loaded = _loaded_files().get(parts, "").split(".")
    prefixes = {".".join(loaded[: i + 1]) for i in range(len(loaded))}
    for module in forbidden:
        names = tuple(module.split("."))
        if (
            folders[-len(names) :] == names
            or (folders + (stem,))[-len(names) :] == names
            or module in prefixes
        ):
            return f"{module} (a copy of its {code.co_name})"
    return None


_FILES: list = [-1, {}]
"""How many modules were loaded when :func:`_loaded_files` last looked, and what it found."""


def _loaded_files() -> dict[tuple[str, ...], str]:
    """The file of every loaded module (its path's parts) with the module's name, read
    again when the number of loaded modules changes."""
    if _FILES[0] != len(sys.modules):
        table = {}
        for name, module in list(sys.modules.items()):
            path = getattr(module, "__file__", None)
            if isinstance(path, str):
                table.setdefault(tuple(path.replace("\\", "/").split("/")), name)
        _FILES[:] = [len(sys.modules), table]
    return _FILES[1]


def _matches(name: str, forbidden: tuple[str, ...]) -> str | None:
    for m in forbidden:
        if name == m or name.startswith(m + "."):
            return name
    return None


def _uses(func: Callable, forbidden: tuple[str, ...], seen: set[int]) -> str | None:
    code = getattr(func, "__code__", None)
    if not isinstance(code, CodeType) or id(code) in seen:
        return None
    seen.add(id(code))
    copied = _copied(code, forbidden)
    if copied:
        return copied
    names: set[str] = set()
    stack = [code]
    while stack:
        c = stack.pop()
        names.update(c.co_names)
        stack.extend(k for k in c.co_consts if hasattr(k, "co_names"))
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
    imported: dict[str, str] = {}  # names bound by import statements inside the answer
    for op, base, attrs in _attribute_chains(code, imported):
        local = op.startswith("LOAD_FAST") or base not in glb
        found = _chain_uses(imported.get(base) if local else glb.get(base), attrs, forbidden)
        if found:
            return found
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


def _attribute_chains(
    code: CodeType, imported: dict[str, str]
) -> Iterator[tuple[str, str, list[str]]]:
    """(load instruction, name, attribute names) for every name loaded and followed by
    attribute loads (``torch.nn.init.normal_`` is ``("LOAD_GLOBAL", "torch", ["nn",
    "init", "normal_"])``) in ``code`` and the code nested in it; ``imported`` gets the
    dotted module names that import statements bind to local names."""
    stack = [code]
    while stack:
        c = stack.pop()
        stack.extend(k for k in c.co_consts if isinstance(k, CodeType))
        chain: tuple[str, str, list[str]] | None = None
        previous: object = None  # the last constant loaded: an import's list of names
        fromlist: object = None
        module = value = ""  # the import being bound, and what the next store binds
        for ins in dis.get_instructions(c):
            op = ins.opname
            if op in _LOAD_ATTR and chain is not None:
                chain[2].append(ins.argval)
                continue
            if chain is not None and chain[2]:
                yield chain
            chain = (
                (op, ins.argval, []) if op in _LOAD_NAME and isinstance(ins.argval, str) else None
            )
            if op == "IMPORT_NAME":
                # `import a.b` binds a; `from a import b` and `import a.b as c` bind after
                # IMPORT_FROM
                module, fromlist = ins.argval, previous
                value = module if fromlist else module.split(".")[0]
            elif op == "IMPORT_FROM":
                value = f"{module}.{ins.argval}" if fromlist else f"{value}.{ins.argval}"
            elif op in _STORE and value:
                imported[ins.argval] = value
            elif op not in ("SWAP", "POP_TOP"):
                value = ""
            previous = ins.argval if op == "LOAD_CONST" else None
        if chain is not None and chain[2]:
            yield chain


def _chain_uses(base: object, attrs: list[str], forbidden: tuple[str, ...]) -> str | None:
    """The forbidden module or function that ``base.attrs[0].attrs[1]...`` reaches, when
    ``base`` is a module (or a module's dotted name), else None: the dotted name, or for a
    function that another module re-exports, the name used and where it is defined
    (``torch.vmap (torch.func.vmap)``). Attributes are looked up on modules only, so no
    code of the answer's objects runs."""
    if isinstance(base, str):
        base = sys.modules.get(base, base)
    if isinstance(base, ModuleType):
        dotted = base.__name__
    elif isinstance(base, str):
        dotted = base
    else:
        return None
    names = [dotted]
    for a in attrs:
        names.append(f"{names[-1]}.{a}")
    for name in names:
        found = _matches(name, forbidden)
        if found:
            return found
    obj: object = base
    for a, name in zip(attrs, names[1:], strict=True):
        if not isinstance(obj, ModuleType):
            break
        obj = getattr(obj, a, None)
        if obj is None:
            break
        mod = getattr(obj, "__module__", None) or getattr(obj, "__name__", None) or ""
        if isinstance(mod, str) and _matches(mod, forbidden):
            # defined in a forbidden module, reached through another (torch.enable_grad)
            own = getattr(obj, "__name__", None)
            where = mod if mod == own else f"{mod}.{own or type(obj).__name__}"
            return f"{name} ({where})"
    return None


# --------------------------------------------------------------------------------------
# Initialisation answers must be the student's own

INIT_LIBRARIES = ("torch.nn.init", "initlab")
"""Modules an initialisation answer (initialiser, gain, fans, scale) must not use:
torch.nn.init implements every graded initialiser, gain and fan computation, and initlab
(the student-visible library) has initialisation helpers of its own (``initlab.engine``)."""

_OWN_WORK = (
    "Write it yourself with math and tensor methods (tensor.normal_, tensor.uniform_ under "
    "torch.no_grad()); calling torch.nn.init or initlab inside the answer earns no points here."
)


RECORDED_MODULES = ("torch.nn.init", "initlab.engine")
"""Modules whose every function an initialisation answer's call records."""


def _recorded_modules() -> list[Any]:
    modules = [torch.nn.init]
    try:
        import initlab.engine as engine
    except ImportError:  # pragma: no cover - initlab is installed wherever this runs
        return modules
    return [*modules, engine]


class _CallRecorder:
    """While active, every function defined in torch.nn.init or initlab.engine records
    that it was called (the run-time half of the library guard: it also sees functions
    reached through getattr or aliases the static scan misses)."""

    def __init__(self) -> None:
        self.called: list[str] = []
        self._saved: list[tuple[Any, str, Callable]] = []

    def __enter__(self) -> _CallRecorder:
        for module in _recorded_modules():
            for name in dir(module):
                fn = getattr(module, name)
                if not (callable(fn) and getattr(fn, "__module__", "") == module.__name__):
                    continue
                if isinstance(fn, type):
                    continue
                self._saved.append((module, name, fn))
                qualified = f"{module.__name__}.{name}"

                def wrapper(*a: Any, _q: str = qualified, _fn: Callable = fn, **k: Any) -> Any:
                    self.called.append(_q)
                    return _fn(*a, **k)

                setattr(module, name, wrapper)
        return self

    def __exit__(self, *exc: Any) -> None:
        for module, name, fn in reversed(self._saved):
            setattr(module, name, fn)


def refuse_libraries(student: Callable, name: str) -> None:
    """Fail if the answer's code names torch.nn.init or an initlab module."""
    forbidden = uses_library(student, INIT_LIBRARIES)
    if forbidden:
        raise CheckFailed(f"Your {name} uses {forbidden}. {_OWN_WORK}")


_NO_GRAD_HINT = (
    "The tensor requires grad, like a layer's weight: fill it inside `with torch.no_grad():` "
    "(as torch.nn.init does), since autograd forbids in-place changes of such a tensor."
)


def call_own(student: Callable, *args: Any, what: str, **kwargs: Any) -> Any:
    """Call an initialisation answer with every call into torch.nn.init and initlab.engine
    recorded; fail if it made one, and explain autograd's in-place error. A function of a
    student's kernel (a ``Remote``) is recorded there, by the source files its call runs."""
    if hasattr(type(student), "calls_recorded"):
        recording = student.calls_recorded(RECORDED_MODULES)  # type: ignore[attr-defined]
    else:
        recording = _CallRecorder()
    with recording as rec:
        called = rec if isinstance(rec, list) else rec.called
        try:
            out = call_answer(student, *args, what=what, **kwargs)
        except CheckFailed as exc:
            cause = str(exc.__cause__ or "")
            if "requires grad" in cause or "leaf Variable" in cause:
                raise CheckFailed(
                    f"{what} raised RuntimeError ({cause.rstrip('.')}). {_NO_GRAD_HINT}"
                ) from exc.__cause__
            raise
    if called:
        raise CheckFailed(f"{what} called {called[0]}. {_OWN_WORK}")
    return out
