"""How the grading worker and a student's kernel exchange values, and the kernel's end.

The checks of an assignment whose grader sets ``CHECKS_OUTSIDE_KERNEL`` run in the grading
worker (initlab_grading.grading.remote); the kernel only answers requests about its own
names: the value of a name, the result of calling one of its functions on arguments the
worker chose. Everything crosses as data: JSON whose arrays are ``.npy`` bytes in base64,
read back with ``allow_pickle=False``. What is not data (a function, a module, a model)
stays in the kernel and crosses as a handle, a number the worker can call or read an
attribute of. A function of the worker's passed to a student's function (the bowl an
optimiser descends) stays in the worker too: the kernel gets a stand-in that asks the
worker over the kernel's input channel each time it is called.

This module is sent to the kernel as source text and run there under the name
``_initlab_wire`` (it imports nothing of initlab_grading, and holds nothing secret). The
kernel can rewrite it, but that only changes the values its own functions seem to return.
"""

from __future__ import annotations

import base64
import builtins
import io
import json
import sys
from typing import Any

import numpy as np

PREFIX = "\x1e_initlab_wire "
"""Starts the line that carries the kernel's reply to a request."""
MAX_DEPTH = 32
"""Containers nested deeper than this cross as handles."""


class WireError(ValueError):
    """A reply that is not well-formed data of this format."""


def _npy(array: np.ndarray) -> str:
    buffer = io.BytesIO()
    np.save(buffer, np.array(array, order="C", copy=True), allow_pickle=False)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _from_npy(text: Any) -> np.ndarray:
    if not isinstance(text, str):
        raise WireError("array bytes are not text")
    try:
        return np.load(io.BytesIO(base64.b64decode(text, validate=True)), allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise WireError(f"unreadable array ({err})") from None


class Encoder:
    """Turns values into the wire's JSON-ready form. ``handle(obj)`` gives the form of an
    object that is not data (each side supplies its own); repeated objects cross once and
    then as references, so a list that holds one array twice arrives holding one array
    twice."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle
        self.seen: dict[int, int] = {}
        self.keep: list[Any] = []  # ids stay unique while encoding

    def __call__(self, value: Any, depth: int = 0) -> dict:
        if value is None:
            return {"t": "none"}
        if isinstance(value, bool):
            return {"t": "bool", "v": value}
        if type(value) is int:
            return {"t": "int", "v": str(value)}
        if type(value) is float:
            return {"t": "float", "v": repr(value)}
        if type(value) is str:
            return {"t": "str", "v": value}
        if isinstance(value, np.generic) and value.dtype.kind in "biufc":
            return {"t": "scalar", "b": _npy(np.asarray(value))}
        key = id(value)
        if key in self.seen:
            return {"t": "ref", "i": self.seen[key]}
        if isinstance(value, np.ndarray) and value.dtype.kind in "biufc":
            self._remember(value)
            return {"t": "nd", "b": _npy(np.asarray(value))}
        torch = sys.modules.get("torch")
        if torch is not None and isinstance(value, torch.Tensor) and not value.is_complex():
            self._remember(value)
            data = value.detach().cpu()
            kind = str(data.dtype).removeprefix("torch.")
            if data.dtype in (torch.float16, torch.bfloat16):
                data = data.float()
            return {
                "t": "tensor",
                "b": _npy(data.numpy()),
                "dtype": kind,
                "grad": bool(value.requires_grad),
            }
        if depth < MAX_DEPTH and type(value) in (list, tuple):
            self._remember(value)
            items = [self(v, depth + 1) for v in value]
            return {"t": type(value).__name__, "v": items}
        if depth < MAX_DEPTH and type(value) is dict and all(type(k) is str for k in value):
            self._remember(value)
            return {"t": "dict", "v": {k: self(v, depth + 1) for k, v in value.items()}}
        return self.handle(value)

    def _remember(self, value: Any) -> None:
        self.seen[id(value)] = len(self.seen)
        self.keep.append(value)


class Decoder:
    """Reads the wire's form back; ``handle(form)`` makes the object a handle stands
    for. Anything malformed raises :class:`WireError`."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle
        self.objects: list[Any] = []

    def __call__(self, form: Any, depth: int = 0) -> Any:
        if not isinstance(form, dict) or not isinstance(form.get("t"), str):
            raise WireError("a value without a type")
        if depth > MAX_DEPTH + 1:
            raise WireError("values nested too deeply")
        kind, v = form["t"], form.get("v")
        if kind == "none":
            return None
        if kind == "bool" and isinstance(v, bool):
            return v
        if kind == "int" and isinstance(v, str) and len(v) <= 400:
            try:
                return int(v)
            except ValueError:
                raise WireError("an integer that is not one") from None
        if kind == "float" and isinstance(v, str) and len(v) <= 40:
            try:
                return float(v)
            except ValueError:
                raise WireError("a float that is not one") from None
        if kind == "str" and isinstance(v, str):
            return v
        if kind == "scalar":
            array = _from_npy(form.get("b"))
            if array.shape != () or array.dtype.kind not in "biufc":
                raise WireError("a scalar that is not one")
            return array[()]
        if kind == "ref":
            index = form.get("i")
            if type(index) is not int or not 0 <= index < len(self.objects):
                raise WireError("a reference to nothing")
            return self.objects[index]
        if kind == "nd":
            array = _from_npy(form.get("b"))
            if array.dtype.kind not in "biufc":
                raise WireError("an array of objects")
            self.objects.append(array)
            return array
        if kind == "tensor":
            return self._tensor(form)
        if kind in ("list", "tuple") and isinstance(v, list):
            if kind == "tuple":
                slot = len(self.objects)
                self.objects.append(None)  # a tuple cannot hold itself
                value = tuple(self(item, depth + 1) for item in v)
                self.objects[slot] = value
                return value
            out: list[Any] = []
            self.objects.append(out)
            out.extend(self(item, depth + 1) for item in v)
            return out
        if kind == "dict" and isinstance(v, dict):
            result: dict[str, Any] = {}
            self.objects.append(result)
            for key, item in v.items():
                result[key] = self(item, depth + 1)
            return result
        if kind in ("handle", "obj", "callback"):
            return self.handle(form)
        raise WireError(f"a value of unknown form {kind!r}")

    def _tensor(self, form: dict) -> Any:
        import torch

        array = _from_npy(form.get("b"))
        if array.dtype.kind not in "biuf":
            raise WireError("a tensor of objects")
        dtype = getattr(torch, str(form.get("dtype")), None)
        if not isinstance(dtype, torch.dtype):
            raise WireError("a tensor of unknown type")
        tensor = torch.from_numpy(array.copy()).to(dtype)
        if form.get("grad") is True and tensor.is_floating_point():
            tensor.requires_grad_(True)
        self.objects.append(tensor)
        return tensor


# --------------------------------------------------------------------------------------
# The kernel's end: run a request, print the reply on one line


_objects: dict[int, Any] = {}
"""Objects of the kernel the worker holds a handle to (until the wire is loaded again)."""


def _handle(obj: Any) -> dict:
    key = id(obj)
    _objects[key] = obj
    return {
        "t": "handle",
        "id": key,
        "type": type(obj).__name__[:80],
        "call": callable(obj),
    }


def _stand_in(form: dict) -> Any:
    if form["t"] == "obj":
        try:
            return _objects[form.get("id")]
        except (KeyError, TypeError):
            raise WireError("a handle the kernel does not hold") from None
    number = form.get("id")

    def callback(*args: Any, **kwargs: Any) -> Any:
        request = {"cb": number, "args": Encoder(_handle)(list(args))}
        request["kwargs"] = Encoder(_handle)(dict(kwargs))
        answer = json.loads(builtins.input(PREFIX + json.dumps(request)))
        if "raise" in answer:
            name, message = answer["raise"]
            kind = getattr(builtins, name, None)
            if not (isinstance(kind, type) and issubclass(kind, Exception)):
                kind = type(name, (Exception,), {})
            raise kind(message)
        return Decoder(_stand_in)(answer["ok"])

    return callback


def _run(request: dict, namespace: dict) -> dict:
    op = request["op"]
    if op == "get":
        name = request["name"]
        if name not in namespace:
            return {"missing": True}
        return {"ok": Encoder(_handle)(namespace[name])}
    target = _objects[request["id"]]
    if op == "getattr":
        return {"ok": Encoder(_handle)(getattr(target, request["name"]))}
    if op != "call":
        raise WireError(f"unknown request {op!r}")
    decode = Decoder(_stand_in)
    args = decode(request["args"])
    kwargs = decode(request["kwargs"])
    watched = [getattr(_objects.get(i), "__code__", None) for i in request.get("watch", [])]
    counts = [0] * len(watched)

    def profiler(frame: Any, event: str, arg: Any) -> None:  # noqa: ARG001
        if event == "call":
            for k, code in enumerate(watched):
                if frame.f_code is code:
                    counts[k] += 1

    previous = sys.getprofile()
    if watched:
        sys.setprofile(profiler)
    try:
        result = target(*args, **kwargs)
    finally:
        if watched:
            sys.setprofile(previous)
    encode = Encoder(_handle)
    return {
        "ok": encode(result),
        "after": [encode(a) if _is_array(a) else None for a in args],
        "calls": counts,
    }


def _is_array(value: Any) -> bool:
    torch = sys.modules.get("torch")
    return isinstance(value, np.ndarray) or (torch is not None and isinstance(value, torch.Tensor))


def serve(text: str) -> None:
    """Run one request (JSON) against the kernel's user namespace and print the reply."""
    shell = sys.modules["IPython"].get_ipython()
    try:
        reply = _run(json.loads(text), shell.user_ns)
    except Exception as exc:  # the student's code raised: the worker names the error
        reply = {"raised": [type(exc).__name__[:80], str(exc)[:2000]]}
    sys.stdout.write("\n" + PREFIX + json.dumps(reply) + "\n")
    sys.stdout.flush()
