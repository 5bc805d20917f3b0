"""How the grading worker and a student's kernel exchange values, and the kernel's end.

The checks of an assignment whose grader sets ``CHECKS_OUTSIDE_KERNEL`` run in the grading
worker (initlab_grading.grading.remote); the kernel only answers requests about its own
names: the value of a name, the result of calling one of its functions on arguments the
worker chose. Everything crosses as data: JSON whose arrays are their raw bytes with a
numeric type and a shape (never pickles or objects); the kernel sends its reply as one
message whose arrays' bytes are binary parts of it, anything else puts them in the JSON in
base64. What is not data (a function, a module, a model) stays in the kernel and crosses as
a handle, a number the worker can call or read an attribute of. A function of the worker's
passed to a student's function (the bowl an optimiser descends) stays in the worker too:
the kernel gets a stand-in that asks the worker over the kernel's input channel each time
it is called. A request too long for the code of an execute request waits in the worker
until the kernel asks for it the same way (:func:`serve_pending`).

This module is sent to the kernel as source text and run there under the name
``_initlab_wire`` (it imports nothing of initlab_grading, and holds nothing secret). The
kernel can rewrite it, but that only changes the values its own functions seem to return.
"""

from __future__ import annotations

import base64
import binascii
import builtins
import contextlib
import importlib
import importlib.util
import json
import math
import sys
import types
from typing import Any

import numpy as np

PREFIX = "\x1e_initlab_wire "
"""Starts the kernel's input prompts that ask the worker something."""
MAX_DEPTH = 32
"""Containers nested deeper than this cross as handles."""
KEYS = (str, int, float, bool)
"""Types of the keys of a dictionary that crosses as data."""


class WireError(ValueError):
    """A reply that is not well-formed data of this format."""


def _pack(array: np.ndarray, buffers: list | None = None) -> dict:
    """An array's bytes, numpy type and shape; the bytes go to the end of ``buffers`` (the
    form names their place) or, without a list, into the form in base64."""
    form: dict[str, Any] = {"np": array.dtype.str, "shape": list(array.shape)}
    if buffers is None:
        form["b"] = base64.b64encode(array.tobytes(order="C")).decode("ascii")
    else:
        form["buf"] = len(buffers)
        buffers.append(array.tobytes(order="C"))
    return form


def _unpack(form: dict, buffers: Any = ()) -> np.ndarray:
    """The array :func:`_pack` describes: numbers only (no objects, no records), its bytes
    (base64 in the form, or the form's place in ``buffers``) exactly as many as its type and
    shape need."""
    kind, shape, text, place = form.get("np"), form.get("shape"), form.get("b"), form.get("buf")
    if not (
        isinstance(kind, str)
        and len(kind) <= 8
        and (isinstance(text, str) or type(place) is int and 0 <= place < len(buffers))
        and isinstance(shape, list)
        and len(shape) <= 32
        and all(type(n) is int and n >= 0 for n in shape)
    ):
        raise WireError("an array of unknown form")
    try:
        dtype = np.dtype(kind)
    except TypeError:
        raise WireError("an array of unknown type") from None
    if dtype.kind not in "biufc" or dtype.fields is not None or dtype.subdtype is not None:
        raise WireError("an array of objects")
    if isinstance(text, str):
        try:
            raw: Any = base64.b64decode(text, validate=True)
        except binascii.Error:
            raise WireError("unreadable array bytes") from None
    else:
        raw = buffers[place]
    if len(raw) != dtype.itemsize * math.prod(shape):
        raise WireError("an array whose bytes do not fit its shape")
    return np.frombuffer(bytearray(raw), dtype=dtype).reshape(shape)


class Encoder:
    """Turns values into the wire's JSON-ready form. ``handle(obj)`` gives the form of an
    object that is not data (each side supplies its own); repeated objects cross once and
    then as references, so a list that holds one array twice arrives holding one array
    twice. With ``buffers``, arrays' bytes go there instead of into the JSON."""

    def __init__(self, handle: Any, buffers: list | None = None) -> None:
        self.handle = handle
        self.buffers = buffers
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
            return {"t": "scalar", **_pack(np.asarray(value), self.buffers)}
        key = id(value)
        if key in self.seen:
            return {"t": "ref", "i": self.seen[key]}
        if isinstance(value, np.ndarray) and value.dtype.kind in "biufc":
            self._remember(value)
            return {"t": "nd", **_pack(np.asarray(value), self.buffers)}
        torch = sys.modules.get("torch")
        if torch is not None and isinstance(value, torch.Tensor) and not value.is_complex():
            self._remember(value)
            data = value.detach().cpu()
            kind = str(data.dtype).removeprefix("torch.")
            if data.dtype in (torch.float16, torch.bfloat16):
                data = data.float()
            return {
                "t": "tensor",
                **_pack(data.numpy(), self.buffers),
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
        if depth < MAX_DEPTH and type(value) is dict and all(type(k) in KEYS for k in value):
            self._remember(value)  # numbers as keys: {0.8: [...], 1.0: [...]}
            return {"t": "items", "v": [[self(k), self(v, depth + 1)] for k, v in value.items()]}
        if torch is not None and type(value) is torch.Generator and value.device.type == "cpu":
            self._remember(value)
            return {"t": "generator", **_pack(value.get_state().numpy(), self.buffers)}
        return self.handle(value)

    def _remember(self, value: Any) -> None:
        self.seen[id(value)] = len(self.seen)
        self.keep.append(value)


class Decoder:
    """Reads the wire's form back; ``handle(form)`` makes the object a handle stands
    for; ``buffers``, the binary parts of the message the form came in. Anything malformed
    raises :class:`WireError`."""

    def __init__(self, handle: Any, buffers: Any = ()) -> None:
        self.handle = handle
        self.buffers = buffers
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
            array = _unpack(form, self.buffers)
            if array.shape != () or array.dtype.kind not in "biufc":
                raise WireError("a scalar that is not one")
            return array[()]
        if kind == "ref":
            index = form.get("i")
            if type(index) is not int or not 0 <= index < len(self.objects):
                raise WireError("a reference to nothing")
            return self.objects[index]
        if kind == "nd":
            array = _unpack(form, self.buffers)
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
        if kind == "items" and isinstance(v, list):
            table: dict[Any, Any] = {}
            self.objects.append(table)
            for pair in v:
                if not (isinstance(pair, list) and len(pair) == 2):
                    raise WireError("a table entry that is not a pair")
                key = self(pair[0], depth + 1)
                if type(key) not in KEYS:
                    raise WireError("a table key that is not a number or text")
                table[key] = self(pair[1], depth + 1)
            return table
        if kind == "generator":
            return self._generator(form)
        if kind in ("handle", "obj", "callback"):
            return self.handle(form)
        raise WireError(f"a value of unknown form {kind!r}")

    def _generator(self, form: dict) -> Any:
        import torch

        state = _unpack(form, self.buffers)
        if state.dtype != np.uint8 or state.ndim != 1:
            raise WireError("a random generator's state of unknown form")
        generator = torch.Generator()
        try:
            generator.set_state(torch.from_numpy(state.copy()))
        except RuntimeError:
            raise WireError("a random generator's state that is not one") from None
        self.objects.append(generator)
        return generator

    def _tensor(self, form: dict) -> Any:
        import torch

        array = _unpack(form, self.buffers)
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


def _ask(request: dict) -> Any:
    """Ask the worker over the kernel's input channel; its answer, or what it raised."""
    answer = json.loads(builtins.input(PREFIX + json.dumps(request)))
    if "raise" in answer:
        name, message = answer["raise"]
        kind = getattr(builtins, name, None)
        if not (isinstance(kind, type) and issubclass(kind, Exception)):
            kind = type(name, (Exception,), {})
        raise kind(message)
    return Decoder(_stand_in)(answer["ok"])


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
        inputs = grad_leaves([args, kwargs])
        result = _ask(request)
        if inputs and _is_tensor(result) and result.requires_grad:  # differentiable here too
            return _bridge().apply(number, result, *inputs)
        return result

    return callback


def _is_tensor(value: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def grad_leaves(value: Any, found: dict | None = None, depth: int = 0) -> list:
    """The tensors that require grad in ``value`` and the lists, tuples and dicts in it,
    each once, in a fixed order: both ends walk a call's arguments with it, so that the
    n-th gradient the worker sends belongs to the n-th tensor here."""
    found = {} if found is None else found
    if _is_tensor(value) and value.requires_grad:
        found.setdefault(id(value), value)
    elif depth < MAX_DEPTH and isinstance(value, list | tuple):
        for item in value:
            grad_leaves(item, found, depth + 1)
    elif depth < MAX_DEPTH and isinstance(value, dict):
        for item in value.values():
            grad_leaves(item, found, depth + 1)
    return list(found.values())


_BRIDGE: list = []


def _bridge() -> Any:
    """An autograd function whose forward is a value the worker computed and whose backward
    asks the worker for the gradients of that call's inputs (made once, when first used)."""
    if _BRIDGE:
        return _BRIDGE[0]
    import torch

    class Bridge(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, number: int, result: Any, *inputs: Any) -> Any:
            ctx.number, ctx.count = number, len(inputs)
            return result.clone()

        @staticmethod
        def backward(ctx: Any, grad: Any) -> Any:
            grads = _ask({"vjp": ctx.number, "grad": Encoder(_handle)(grad)})
            if not isinstance(grads, list) or len(grads) != ctx.count:
                raise WireError("gradients of unknown form")
            return (None, None, *grads)

    _BRIDGE.append(Bridge)
    return Bridge


def _run(request: dict, namespace: dict, extra: dict, buffers: list) -> dict:
    op = request["op"]
    if op == "get":
        name = request["name"]
        if name not in namespace:
            return {"missing": True}
        return {"ok": Encoder(_handle, buffers)(namespace[name])}
    target = _objects[request["id"]]
    if op == "getattr":
        return {"ok": Encoder(_handle, buffers)(getattr(target, request["name"]))}
    if op == "describe":
        return {"ok": _describe(target)}
    if op == "rows":  # one call per row of an array, the other arguments shared
        decode = Decoder(_stand_in)
        rows, shared = decode(request["rows"]), decode(request["shared"])
        results = [target(row.copy() if isinstance(row, np.ndarray) else row.clone(), *shared)
                   for row in rows]  # fmt: skip
        return {"ok": Encoder(_handle, buffers)(_stacked(results))}
    if op != "call":
        raise WireError(f"unknown request {op!r}")
    decode = Decoder(_stand_in)
    args = decode(request["args"])
    kwargs = decode(request["kwargs"])
    bound = decode(request.get("bind", {"t": "dict", "v": {}}))
    watched = [getattr(_objects.get(i), "__code__", None) for i in request.get("watch", [])]
    counts = [0] * len(watched)
    recorded: list[str] = []
    files = _module_files([m for m in request.get("record", []) if isinstance(m, str)])

    def profiler(frame: Any, event: str, arg: Any) -> None:  # noqa: ARG001
        if event == "call":
            for k, code in enumerate(watched):
                if frame.f_code is code:
                    counts[k] += 1
            if files and len(recorded) < 20:
                module = files.get(frame.f_code.co_filename)
                if module is not None:
                    recorded.append(f"{module}.{frame.f_code.co_name}")

    names = getattr(target, "__globals__", None)
    saved: dict[str, Any] = {}
    if isinstance(names, dict) and isinstance(bound, dict):
        for name, value in bound.items():
            if name in names:
                saved[name] = names[name]
                names[name] = value
    probe = request.get("probe")
    previous = sys.getprofile()
    try:
        with contextlib.ExitStack() as stack:
            report = None
            if probe:  # [module, context manager, its arguments]
                make = getattr(sys.modules[probe[0]], probe[1])
                report = stack.enter_context(make(*decode(probe[2])))
            if watched or files:
                stack.callback(sys.setprofile, previous)
                sys.setprofile(profiler)
            try:
                result = target(*args, **kwargs)
            finally:
                extra["calls"] = counts
                extra["recorded"] = recorded
                if report is not None:
                    extra["probe"] = Encoder(_handle, buffers)(report())
    finally:
        if isinstance(names, dict):
            names.update(saved)
    encode = Encoder(_handle, buffers)
    return {
        "ok": encode(result),
        "after": [encode(a) if _is_array(a) else None for a in args],
    }


def _module_files(modules: list[str]) -> dict[str, str]:
    """The source files of ``modules`` (imported here if they are not yet), each with the
    module's name."""
    files = {}
    for name in modules:
        try:
            module = importlib.import_module(name)
        except Exception:  # a module this kernel cannot have called
            continue
        path = getattr(module, "__file__", None)
        if isinstance(path, str):
            files[path] = name
    return files


MAX_FUNCTIONS = 256
"""A description of an answer's code holds at most this many of the notebook's functions."""


def _describe(root: Any) -> dict:
    """What the grader's static checks read of a function: its code (bytecode, names,
    constants), and for every name the code uses, what the name holds - a module's name,
    another function of the notebook (described in turn), or any other object's
    ``__module__`` and ``__name__``."""
    home = getattr(root, "__module__", None)
    functions: list[dict] = []
    numbers: dict[int, int] = {}
    keep: list[Any] = []

    def value(obj: Any) -> dict:
        if isinstance(obj, types.ModuleType):
            return {"k": "module", "name": str(obj.__name__)}
        same = isinstance(obj, types.FunctionType) and obj.__module__ == home
        if same and (id(obj) in numbers or len(functions) < MAX_FUNCTIONS):
            return {"k": "fn", "i": function(obj)}
        module, name = getattr(obj, "__module__", None), getattr(obj, "__name__", None)
        return {
            "k": "other",
            "module": module if isinstance(module, str) else None,
            "name": name if isinstance(name, str) else None,
            "call": callable(obj),
        }

    def function(fn: types.FunctionType) -> int:
        if id(fn) in numbers:
            return numbers[id(fn)]
        number = numbers[id(fn)] = len(functions)
        keep.append(fn)
        form: dict[str, Any] = {}
        functions.append(form)
        code, used, stack = fn.__code__, set(), [fn.__code__]
        while stack:
            c = stack.pop()
            used.update(c.co_names)
            stack.extend(k for k in c.co_consts if isinstance(k, types.CodeType))
        glb = fn.__globals__
        closure = {}
        for name, cell in zip(code.co_freevars, fn.__closure__ or (), strict=False):
            try:
                closure[name] = value(cell.cell_contents)
            except ValueError:  # an empty cell
                continue
        form.update(
            code=_code(code),
            module=fn.__module__ if isinstance(fn.__module__, str) else None,
            name=str(fn.__name__),
            globals={n: value(glb[n]) for n in sorted(used) if n in glb},
            closure=closure,
            defaults=[value(v) for v in fn.__defaults__ or ()],
            kwdefaults={str(k): value(v) for k, v in (fn.__kwdefaults__ or {}).items()},
        )
        return number

    if isinstance(root, types.FunctionType):
        function(root)
    return {"magic": importlib.util.MAGIC_NUMBER.hex(), "functions": functions}


def _code(code: types.CodeType) -> dict:
    return {
        "bytes": base64.b64encode(code.co_code).decode("ascii"),
        "consts": [_const(k) for k in code.co_consts],
        **{k: list(getattr(code, "co_" + k)) for k in CODE_NAMES},
        **{k: getattr(code, "co_" + k) for k in CODE_NUMBERS},
        **{k: str(getattr(code, "co_" + k)) for k in CODE_TEXTS},
    }


CODE_NAMES = ("names", "varnames", "freevars", "cellvars")
CODE_NUMBERS = ("argcount", "posonlyargcount", "kwonlyargcount", "nlocals", "stacksize", "flags")
CODE_TEXTS = ("name", "qualname", "filename")


def _const(k: Any) -> dict:
    if isinstance(k, types.CodeType):
        return {"code": _code(k)}
    if k is None or type(k) in (bool, int, str) or (type(k) is float and k == k):
        return {"v": k if type(k) is not int or abs(k) < 2**53 else None}
    if type(k) is tuple:
        return {"tuple": [_const(x) for x in k]}
    return {"v": None}  # bytes, frozensets, ...: no check reads them


def _stacked(results: list) -> Any:
    """Results of one shape and type as one array (tensors as one tensor), else the list."""
    torch = sys.modules.get("torch")
    for kind in (np.ndarray, getattr(torch, "Tensor", None)):
        if kind is None or not results or not all(isinstance(r, kind) for r in results):
            continue
        first = results[0]
        if all(r.shape == first.shape and r.dtype == first.dtype for r in results):
            if kind is np.ndarray:
                return {"stacked": np.stack(results)}
            return {"stacked": torch.stack([r.detach() for r in results])}
    return results


def _is_array(value: Any) -> bool:
    """Whether a call's argument may have changed in place and crosses back: an array, a
    tensor or a random generator (whose state the call advanced)."""
    torch = sys.modules.get("torch")
    if isinstance(value, np.ndarray):
        return True
    return torch is not None and isinstance(value, torch.Tensor | torch.Generator)


def serve_pending() -> None:
    """:func:`serve` for a request too long to travel in the code of an execute request:
    the worker sends it over the input channel."""
    serve(builtins.input(PREFIX + json.dumps({"pending": True})))


REPLY = "initlab_wire_reply"
"""The type of the message that carries the kernel's reply to a request."""


def serve(text: str) -> None:
    """Run one request (JSON) against the kernel's user namespace and send the reply: one
    message on the kernel's output channel, the arrays' bytes its binary parts."""
    shell = sys.modules["IPython"].get_ipython()
    extra: dict = {}
    buffers: list = []
    try:
        reply = _run(json.loads(text), shell.user_ns, extra, buffers)
    except Exception as exc:  # the student's code raised: the worker names the error
        reply = {"raised": [type(exc).__name__[:80], str(exc)[:2000]]}
    reply.update(extra)
    sys.stdout.flush()  # what the call printed comes first
    kernel = shell.kernel
    parent = kernel.get_parent("shell")
    kernel.session.send(kernel.iopub_socket, REPLY, reply, parent, buffers=buffers)
