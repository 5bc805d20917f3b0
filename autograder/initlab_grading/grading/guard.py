"""Runs inside the grading kernel: notices when a submission replaced what the tests rely on.

Hidden tests run in the student's own interpreter, after the student's code, so a notebook
can replace ``numpy.allclose``, a builtin, a torch function, a check helper or IPython's
error display, and the checks would see the replacement. The ``GuardedExecute``
preprocessor (initlab_grading.grading.preprocessors) adds two things while grading, neither of
which the submitted notebook contains:

- a first cell, run before any cell of the notebook, that calls ``snapshot``: it records
  the objects of builtins, math, numpy, initlab.checks and IPython's shell (identity, and
  for Python functions their code and defaults) and keeps a per-run secret;
- a last line in every graded test cell that calls ``finished``: it compares what the
  tests rely on with the snapshot (modules imported later, such as torch and
  initlab_grading, by where their functions' code lives on disk: in a notebook cell or
  in a file of the submission's own folder or the kernel's home is not theirs; a module
  of these packages loaded from such a file is reported too), raises
  ``GradingIntegrityError`` naming what was replaced, and otherwise prints a marker made
  from the secret. The preprocessor scores zero any test cell whose marker is missing, so a
  test that stopped early without showing an error (error display switched off, results
  rewritten by an IPython hook) gains nothing.

It also watches, through a Python audit hook (which Python code cannot remove), which
files of the course root outside the submission's own folder and autograder/ the notebook
opens or removes; ``files`` reports them after the last cell, with whether the kernel's
user may actually read or write them (refused when grading with --isolate).

This is detection in the student's interpreter, not a sandbox: code written against this
module (reading its secret, replacing ``finished``) can still defeat it. See docs/security.md.
"""

from __future__ import annotations

import builtins
import hashlib
import os
import sys
import types
import warnings
from typing import Any

# Modules recorded object by object before the notebook runs.
SNAPSHOT_MODULES = (
    "builtins",
    "math",
    "numpy",
    "numpy.linalg",
    "numpy.random",
    "numpy.testing",
    "initlab.checks",
)
# Modules imported later (by the notebook or the hidden tests): their Python functions
# must be defined in files of their own package.
PROVENANCE_PACKAGES = ("torch", "initlab_grading", "initlab")
# IPython shell methods that decide what an error looks like and whether a cell failed.
SHELL_METHODS = (
    "run_cell",
    "run_cell_async",
    "run_code",
    "run_ast_nodes",
    "showtraceback",
    "_showtraceback",
    "showsyntaxerror",
    "transform_cell",
    "get_exception_only",
)
# Top-level packages whose modules must never come from the submission's folder.
_WATCHED_TOPS = {name.split(".")[0] for name in SNAPSHOT_MODULES} | set(PROVENANCE_PACKAGES)
_WATCHED_TOPS |= {"IPython", "ipykernel", "scipy", "matplotlib"}
# Event callbacks that IPython's own machinery registers (matplotlib's inline backend).
_OWN_CALLBACK_MODULES = ("IPython", "ipykernel", "matplotlib", "matplotlib_inline")


# Builtins that ipykernel itself swaps around every execution (stdin forwarding).
_KERNEL_SWAPS = ("input", "raw_input", "getpass")


class GradingIntegrityError(Exception):
    """The notebook replaced something the tests rely on."""


_state: dict[str, Any] = {}


def _fingerprint(obj: Any) -> tuple:
    if isinstance(obj, types.FunctionType):
        return (id(obj), obj.__code__, obj.__defaults__, obj.__kwdefaults__)
    return (id(obj),)


def _record(namespace: dict[str, Any]) -> dict[str, tuple]:
    rec = {}
    for name, obj in namespace.items():
        rec[name] = _fingerprint(obj)
        if isinstance(obj, type) and obj.__module__.startswith("initlab"):
            for attr, value in vars(obj).items():
                rec[f"{name}.{attr}"] = _fingerprint(value)
    return rec


def _current(namespace: dict[str, Any], name: str) -> Any:
    if "." in name:
        cls, attr = name.split(".", 1)
        return vars(namespace.get(cls, object)).get(attr)
    return namespace.get(name)


def _shell() -> Any:
    get = getattr(builtins, "get_ipython", None)
    return get() if get else None


def _hooks(shell: Any) -> dict[str, list]:
    if shell is None:
        return {}
    hooks = {
        "input transformers": list(shell.input_transformers_post),
        "cleanup transformers": list(shell.input_transformers_cleanup),
        "AST transformers": list(shell.ast_transformers),
    }
    for event, callbacks in shell.events.callbacks.items():
        hooks[f"{event} callbacks"] = [
            cb
            for cb in callbacks
            if not str(getattr(cb, "__module__", "") or "").startswith(_OWN_CALLBACK_MODULES)
        ]
    return hooks


def _shell_methods(shell: Any) -> dict[str, tuple]:
    if shell is None:
        return {}
    return {
        name: (_fingerprint(vars(type(shell)).get(name)), _fingerprint(vars(shell).get(name)))
        for name in SHELL_METHODS
    }


def _write_access(mode: Any, flags: Any) -> bool:
    if isinstance(mode, str):
        return any(c in mode for c in "wax+")
    if isinstance(flags, int):
        return bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC))
    return False


def _watch_files() -> None:
    """Record opens and removals of the course's files outside this submission's folder
    (the kernel runs in autograded/<student>/<assignment>/) and autograder/."""
    own = os.getcwd()
    root = os.path.dirname(os.path.dirname(os.path.dirname(own)))
    allowed = (own, os.path.join(root, "autograder"))
    touched: dict[str, set[str]] = {}
    _state["touched"] = touched
    _state["root"] = root

    def hook(event: str, args: tuple) -> None:
        if event == "open":
            path, write = args[0], _write_access(args[1], args[2])
        elif event in ("os.remove", "os.rename", "os.rmdir", "os.truncate"):
            path, write = args[0], True
        else:
            return
        if isinstance(path, int):
            return
        try:
            full = os.path.abspath(os.fsdecode(path))
        except (TypeError, ValueError):
            return
        if not full.startswith(root + os.sep):
            return
        if any(full == a or full.startswith(a + os.sep) for a in allowed):
            return
        touched.setdefault(full, set()).add("write" if write else "read")

    sys.addaudithook(hook)


def files(nonce: str) -> None:
    """After the last cell: print the marker for "files" and, as JSON, each course file
    the notebook opened outside its folder, how, and whether the kernel's user may."""
    import json

    found = {}
    for path, how in sorted(_state.get("touched", {}).items()):
        write = "write" in how
        if os.path.exists(path):
            may = os.access(path, os.W_OK if write else os.R_OK)
        else:
            may = write and os.access(os.path.dirname(path), os.W_OK)
        found[os.path.relpath(path, _state["root"])] = ["/".join(sorted(how)), may]
    print(marker(nonce, "files") + json.dumps(found))


def snapshot(nonce: str) -> None:
    """Record what the tests rely on; called once, before the notebook's first cell."""
    import math  # noqa: F401

    import numpy  # noqa: F401

    import initlab.checks  # noqa: F401

    _state["nonce"] = nonce
    _state["own"] = os.getcwd()
    _state["modules"] = {
        name: (sys.modules[name], _record(vars(sys.modules[name])))
        for name in SNAPSHOT_MODULES
        if name in sys.modules
    }
    shell = _shell()
    _state["shell"] = shell
    _state["shell_methods"] = _shell_methods(shell)
    _state["hooks"] = _hooks(shell)
    _state["sys_hooks"] = (sys.excepthook, sys.displayhook)
    _watch_files()


def _package_dir(package: str) -> str | None:
    mod = sys.modules.get(package)
    files = getattr(mod, "__path__", None)
    return os.path.realpath(list(files)[0]) if files else None


def _untrusted_folders() -> tuple[str, ...]:
    """Folders whose files the notebook could have written: the submission's own folder
    (the kernel's working folder) and, with --isolate, the kernel's private home."""
    folders = [_state.get("own") or os.getcwd()]
    home = os.environ.get("HOME", "")
    if os.path.basename(home).startswith("initlab-kernel-"):
        folders.append(home)
    return tuple(os.path.realpath(f) for f in folders)


def _written_by_notebook(path: str) -> bool:
    """``path`` is a file in a folder the notebook could write (a relative path is taken
    from the kernel's working folder; torch names some modules' files "_classes.py")."""
    real = os.path.realpath(path)
    inside = any(real == f or real.startswith(f + os.sep) for f in _untrusted_folders())
    return inside and os.path.isfile(real)


def _misplaced(value: Any, method: str = "") -> bool:
    """A Python function compiled from a notebook cell (or from no file at all, or from a
    file the notebook could have written), where the module should hold a function of some
    installed file (dataclasses compile their dunder methods from "<string>"; frozen
    standard modules report "<frozen NAME>")."""
    if not isinstance(value, types.FunctionType):
        return False
    where = value.__code__.co_filename
    if where == "<string>" and method.startswith("__"):
        return False
    if where.startswith("<frozen "):  # the standard library's frozen modules (abc, os, ...)
        return False
    return "ipykernel_" in where or not _installed_file(where)


def _installed_file(path: str) -> bool:
    """``path`` is an existing file outside the folders the notebook could write. A yes for
    an absolute path is remembered for the rest of the run (torch's functions come from a
    few hundred files, and each test cell looks at tens of thousands of functions)."""
    known = _state.setdefault("installed_files", set())
    if path in known:
        return True
    ok = os.path.isfile(path) and not _written_by_notebook(path)
    if ok and os.path.isabs(path):
        known.add(path)
    return ok


def _replaced_functions() -> list[str]:
    """Functions of torch, initlab and initlab_grading that notebook code replaced."""
    found = []
    for package in PROVENANCE_PACKAGES:
        if _package_dir(package) is None:
            continue
        for modname, module in list(sys.modules.items()):
            if not (modname == package or modname.startswith(package + ".")) or module is None:
                continue
            try:
                items = list(vars(module).items())
            except TypeError:
                continue
            for name, value in items:
                if _misplaced(value):
                    found.append(f"{modname}.{name} was replaced by notebook code")
                elif isinstance(value, type) and value.__module__ == modname:
                    found += [
                        f"{modname}.{name}.{attr} was replaced by notebook code"
                        for attr, v in list(vars(value).items())
                        if _misplaced(v, attr)
                    ]
    return found


def problems(names: dict[str, str] | None = None) -> list[str]:
    """What differs from the snapshot, in words ("numpy.allclose was replaced")."""
    if "nonce" not in _state:
        return [
            "the grading snapshot is missing (the notebook reloaded initlab_grading.grading.guard)"
        ]
    found = []
    for modname, (module, rec) in _state["modules"].items():
        if sys.modules.get(modname) is not module:
            found.append(f"sys.modules[{modname!r}] was replaced")
            continue
        namespace = vars(module)
        for name, fingerprint in rec.items():
            if modname == "builtins" and name in _KERNEL_SWAPS:
                continue
            if _fingerprint(_current(namespace, name)) != fingerprint:
                found.append(f"{modname}.{name} was replaced")
    for modname, module in list(sys.modules.items()):
        top = modname.split(".")[0]
        if top in _WATCHED_TOPS and isinstance(getattr(module, "__file__", None), str):
            if not _installed_file(module.__file__) and _written_by_notebook(module.__file__):
                found.append(f"the module {modname} was loaded from the submission's folder")
    with warnings.catch_warnings():  # reading deprecated attributes (torch's) warns
        warnings.simplefilter("ignore")
        found += _replaced_functions()
    shell = _state.get("shell")
    if shell is not None:
        now = _shell_methods(shell)
        found += [
            f"IPython's {name} was replaced"
            for name, fingerprint in _state["shell_methods"].items()
            if now[name] != fingerprint
        ]
        for hook, before in _state["hooks"].items():
            now = _hooks(shell).get(hook, [])
            if [id(h) for h in now] != [id(h) for h in before]:
                found.append(f"IPython's {hook} were changed")
    if (sys.excepthook, sys.displayhook) != _state["sys_hooks"]:
        found.append("sys.excepthook or sys.displayhook was replaced")
    main = sys.modules.get("__main__")
    for name, modname in (names or {}).items():
        if modname in sys.modules and getattr(main, name, None) is not sys.modules[modname]:
            found.append(f"the name {name!r} no longer refers to the module {modname}")
    return sorted(set(found))


def marker(nonce: str, grade_id: str) -> str:
    """What ``finished`` prints for a test cell that ran to its end."""
    return hashlib.sha256(f"{nonce}:{grade_id}".encode()).hexdigest()[:32]


def finished(grade_id: str, names: dict[str, str] | None = None) -> None:
    """The last line of a graded test cell: fail if anything was replaced, else print the
    cell's marker. ``names`` maps names the test cell uses to the modules they must be."""
    found = problems(names)
    if found:
        more = f" (and {len(found) - 3} more)" if len(found) > 3 else ""
        raise GradingIntegrityError(
            "This test cannot be trusted, so it scores zero: your notebook changed what the "
            f"tests rely on: {'; '.join(found[:3])}{more}. Remove the code that replaces "
            "library functions, builtins or IPython's machinery, and submit again."
        )
    print(marker(_state["nonce"], grade_id))
