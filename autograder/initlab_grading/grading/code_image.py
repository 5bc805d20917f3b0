"""Functions of a student's kernel rebuilt in the grading worker for the static checks.

initlab_grading.checking.integrity reads an answer's bytecode, the names it uses and what
those names hold. When checks run outside the kernel the answer is a
:class:`~initlab_grading.grading.remote.Remote`; the kernel describes it as data
(initlab_grading.grading.wire, ``describe``) and :func:`rebuild` turns the description into
stand-ins with the attributes the checks read: ``__code__`` (a real code object with the
answer's bytecode, never run), ``__globals__``, ``__closure__``, ``__defaults__``,
``__kwdefaults__``, ``__module__`` and ``__name__``. A module the answer names is this
process's module of that name when it is loaded here, else an empty module of that name;
nothing is imported on the kernel's word. Anything malformed is a WireError.
"""

from __future__ import annotations

import base64
import binascii
import dis
import importlib.util
import sys
import types
from typing import Any

from initlab_grading.grading.wire import CODE_NAMES, CODE_NUMBERS, CODE_TEXTS, WireError

MAX_CODE_BYTES = 1_000_000
"""Bytecode of one code object, at most (an answer's is a few hundred bytes)."""
_TEMPLATE = compile("pass", "<image>", "exec")


class FunctionImage:
    """A function of the notebook, as the static checks see it; calling it is an error."""

    def __init__(self, module: str | None, name: str) -> None:
        self.__module__ = module  # type: ignore[assignment]
        self.__name__ = name
        self.__code__: types.CodeType = _TEMPLATE
        self.__globals__: dict[str, Any] = {}
        self.__closure__: tuple[types.CellType, ...] | None = None
        self.__defaults__: tuple[Any, ...] | None = None
        self.__kwdefaults__: dict[str, Any] | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("the image of a notebook's function cannot be called")

    def __repr__(self) -> str:
        return f"<image of {self.__name__}>"


class ObjectImage:
    """Any other object a name of the answer holds: its ``__module__`` and ``__name__``."""

    def __init__(self, module: str | None, name: str | None) -> None:
        self.__module__ = module  # type: ignore[assignment]
        self.__name__ = name


class CallableImage(ObjectImage):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("the image of a notebook's object cannot be called")


def rebuild(description: Any, bound: dict[str, Any] | None = None) -> FunctionImage | None:
    """The first function of a kernel's description, with the functions it reaches; None
    when the kernel described no function (the answer is some other callable). ``bound``:
    names of the notebook's namespace that hold these values instead while the checks run
    (``Remote.globals_bound``), as they would in the kernel."""
    if not isinstance(description, dict) or not isinstance(description.get("functions"), list):
        raise WireError("a description of code of unknown form")
    if description.get("magic") != importlib.util.MAGIC_NUMBER.hex():
        raise WireError("bytecode of another Python version than the grader's")
    forms = description["functions"]
    if not forms:
        return None
    if not all(isinstance(f, dict) for f in forms):
        raise WireError("a function described in an unknown form")
    images = [FunctionImage(_text(f.get("module"), True), _text(f.get("name"))) for f in forms]
    for image, form in zip(images, forms, strict=True):
        image.__code__ = _code(form.get("code"), 0)
        image.__globals__ = {
            _text(k): _value(v, images) for k, v in _mapping(form.get("globals")).items()
        }
        image.__globals__.update((k, v) for k, v in (bound or {}).items() if k in image.__globals__)
        cells = _mapping(form.get("closure"))
        image.__closure__ = tuple(
            types.CellType(_value(cells[n], images)) if n in cells else types.CellType()
            for n in image.__code__.co_freevars
        )
        defaults = form.get("defaults")
        if not isinstance(defaults, list):
            raise WireError("defaults of unknown form")
        image.__defaults__ = tuple(_value(v, images) for v in defaults) or None
        kwdefaults = _mapping(form.get("kwdefaults"))
        image.__kwdefaults__ = {_text(k): _value(v, images) for k, v in kwdefaults.items()}
    return images[0]


def _text(value: Any, optional: bool = False) -> Any:
    if value is None and optional:
        return None
    if not isinstance(value, str) or len(value) > 1000:
        raise WireError("a name that is not text")
    return value


def _mapping(value: Any) -> dict:
    if not isinstance(value, dict):
        raise WireError("a table of names of unknown form")
    return value


def _value(form: Any, images: list[FunctionImage]) -> Any:
    kind = form.get("k") if isinstance(form, dict) else None
    if kind == "module":
        name = _text(form.get("name"))
        loaded = sys.modules.get(name)
        return loaded if isinstance(loaded, types.ModuleType) else types.ModuleType(name)
    if kind == "fn":
        index = form.get("i")
        if type(index) is not int or not 0 <= index < len(images):
            raise WireError("a reference to a function not described")
        return images[index]
    if kind == "other":
        module, name = _text(form.get("module"), True), _text(form.get("name"), True)
        kind_of = CallableImage if form.get("call") is True else ObjectImage
        return kind_of(module, name)
    raise WireError("a value of unknown form in a description of code")


def _code(form: Any, depth: int) -> types.CodeType:
    if not isinstance(form, dict) or depth > 32:
        raise WireError("code of unknown form")
    try:
        raw = base64.b64decode(_text_bytes(form.get("bytes")), validate=True)
    except binascii.Error:
        raise WireError("bytecode that is not base64") from None
    if len(raw) > MAX_CODE_BYTES:
        raise WireError("bytecode too long")
    fields: dict[str, Any] = {"co_code": raw, "co_linetable": b"", "co_exceptiontable": b""}
    for key in CODE_NAMES:
        names = form.get(key)
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise WireError("names of unknown form")
        fields["co_" + key] = tuple(names)
    for key in CODE_NUMBERS:
        number = form.get(key)
        if type(number) is not int or not 0 <= number < 2**31:
            raise WireError("a code attribute that is not a number")
        fields["co_" + key] = number
    for key in CODE_TEXTS:
        fields["co_" + key] = _text(form.get(key))
    consts = form.get("consts")
    if not isinstance(consts, list):
        raise WireError("constants of unknown form")
    fields["co_consts"] = tuple(_const(k, depth) for k in consts)
    try:
        code = _TEMPLATE.replace(**fields)
        list(dis.get_instructions(code))  # the checks read it this way: it must read
    except Exception as exc:
        raise WireError(f"unreadable bytecode ({type(exc).__name__})") from None
    return code


def _text_bytes(value: Any) -> str:
    if not isinstance(value, str):
        raise WireError("bytecode that is not text")
    return value


def _const(form: Any, depth: int) -> Any:
    if not isinstance(form, dict) or depth > 32:
        raise WireError("a constant of unknown form")
    if "code" in form:
        return _code(form["code"], depth + 1)
    if "tuple" in form and isinstance(form["tuple"], list):
        return tuple(_const(k, depth + 1) for k in form["tuple"])
    value = form.get("v")
    if value is None or type(value) in (bool, int, float, str):
        return value
    raise WireError("a constant of unknown form")
