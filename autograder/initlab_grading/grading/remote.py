"""Test cells run in the grading worker, with the student's kernel answering for its names.

For an assignment whose grader sets ``CHECKS_OUTSIDE_KERNEL = True``, GuardedExecute does
not send test cells to the kernel. It runs each one here, from the gradebook's copy of its
source (never the submitted notebook's), in a namespace that holds the setup cell's modules
imported in this process and takes every other name from the kernel
(initlab_grading.grading.wire): data arrives as values, functions and other objects as
:class:`Remote` handles that call into the kernel. The references and the checks stay in
this process, which the submission cannot reach; the kernel can influence only what its own
functions return.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import importlib
import io
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import zmq
import zmq.asyncio
from nbclient.util import run_sync
from nbformat.notebooknode import NotebookNode

from initlab_grading.grading import wire

WIRE_SOURCE = Path(wire.__file__).read_text(encoding="utf-8")
MAX_REPLY_BYTES = 64_000_000
"""A request's reply (its message and what the call printed) may not exceed this; past it,
the call fails and the rest is not kept."""
MAX_PRINTED_CHARS = 100_000
"""Characters of a test cell's printed output kept (its own and the kernel's, each)."""
MAX_MESSAGE_CHARS = 2_000
"""Characters kept of the message of an error the kernel's code raised."""
MAX_INLINE_REQUEST = 4_096
"""Characters of a request sent in the code of an execute request; a longer one (arrays)
is sent over the kernel's input channel when the kernel asks for it, because ipykernel
hashes every executed code in pure Python (about 0.25 s a megabyte)."""


class KernelGone(RuntimeError):
    """The kernel died while answering."""


class RemoteError(Exception):
    """The base of the errors a kernel's call raised, re-raised under the kernel's name
    (a builtin's own class when the name is a builtin exception)."""


def _raised(name: Any, message: Any) -> Exception:
    name = str(name)[:80] if str(name)[:80].isidentifier() else "Exception"
    message = str(message)[:MAX_MESSAGE_CHARS]
    kind = getattr(builtins, name, None)
    if isinstance(kind, type) and issubclass(kind, Exception):
        return kind(message)
    return type(name, (RemoteError,), {})(message)


class Remote:
    """An object that stays in the kernel: calling it calls it there.

    The static checks of initlab_grading.checking read it through :meth:`code_image`; a
    check that must change or watch what the call does in the kernel wraps the calls in
    :meth:`globals_bound`, :meth:`calls_recorded` or :meth:`probed`."""

    __slots__ = ("_link", "_id", "_type", "_callable", "_options")

    def __init__(self, link: KernelLink, number: int, kind: str, is_callable: bool) -> None:
        self._link, self._id, self._type, self._callable = link, number, kind, is_callable
        self._options: dict[str, Any] = {}

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not self._callable:
            raise TypeError(f"'{self._type}' object is not callable")
        options, report = self._options, {}
        record = options.get("record", ((), []))
        probe = options.get("probe", (None, []))
        try:
            return self._link.call(
                self,
                args,
                kwargs,
                bind=options.get("bind"),
                record=record[0],
                probe=probe[0],
                report=report,
            )
        finally:
            record[1].extend(report.get("recorded", ()))
            if "probe" in report:
                probe[1].append(report["probe"])

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return self._link.getattr(self, name)

    def __repr__(self) -> str:
        return f"<{self._type} of the notebook>"

    def watching(self, watched: Remote, counts: list[int]) -> Callable[..., Any]:
        """This function, as a function that also appends to ``counts`` how many times
        the code of ``watched`` (another function of the notebook's) ran during the call."""

        def call(*args: Any, **kwargs: Any) -> Any:
            report: dict[str, Any] = {}
            result = self._link.call(self, args, kwargs, watch=[watched], report=report)
            counts.append(report["calls"][0] if report.get("calls") else 0)
            return result

        return call

    def rows(self, rows: Any, shared: tuple) -> list[Any]:
        """``[self(row, *shared) for row in rows]`` (each row a copy) in one request;
        ``rows`` an array or tensor, ``shared`` arguments of every call, crossing once
        (one random generator advances from call to call). Results of one shape come back
        as one array, split here."""
        encode = wire.Encoder(self._link._out_handle)
        request = {"op": "rows", "id": self._id, "rows": encode(rows)}
        request["shared"] = encode(list(shared))
        results = self._link.decode(self._link._request(request)["ok"])
        if isinstance(results, dict) and set(results) == {"stacked"}:
            results = list(results["stacked"])
        if not isinstance(results, list) or len(results) != len(rows):
            raise wire.WireError("results of unknown form")
        return results

    def code_image(self) -> Any:
        """This function as initlab_grading.grading.code_image rebuilds it from the
        kernel's description (None when it is not a Python function), with the names
        :meth:`globals_bound` binds holding their values."""
        from initlab_grading.grading import code_image

        return code_image.rebuild(self._link.describe(self), self._options.get("bind"))

    @contextlib.contextmanager
    def globals_bound(self, values: dict[str, Any]) -> Iterator[None]:
        """While active, each call binds the names of ``values`` that the function's
        namespace (the notebook's) defines to those values, this side's functions as
        stand-ins, and restores the notebook's own afterwards."""
        with self._option("bind", dict(values)):
            yield

    @contextlib.contextmanager
    def calls_recorded(self, modules: tuple[str, ...]) -> Iterator[list[str]]:
        """While active, each call records (``module.function``) the functions it ran
        whose code lies in the source file of one of ``modules``, whatever name or copy
        reached them; yields the list they are appended to."""
        called: list[str] = []
        with self._option("record", (tuple(modules), called)):
            yield called

    @contextlib.contextmanager
    def probed(self, module: ModuleType, probe: str, *args: Any) -> Iterator[list[Any]]:
        """While active, each call runs in the kernel inside ``module.<probe>(*args)``, a
        context manager of a module that imports nothing of the grader's (loaded into the
        kernel as text; ``args`` are data): it yields a function whose result (data) is
        appended to the list yielded here after every call, whether the call returned or
        raised."""
        name = self._link.load_probe(module)
        reports: list[Any] = []
        with self._option("probe", ([name, probe, list(args)], reports)):
            yield reports

    @contextlib.contextmanager
    def _option(self, key: str, value: Any) -> Iterator[None]:
        saved = self._options.get(key)
        self._options[key] = value
        try:
            yield
        finally:
            if saved is None:
                self._options.pop(key, None)
            else:
                self._options[key] = saved


class KernelLink:
    """Requests to one kernel, through the kernel client of a running nbclient."""

    def __init__(self, client: Any, deadline: float) -> None:
        self.client = client
        self.kc = client.kc
        self.deadline = deadline
        self.callbacks: dict[int, Callable[..., Any]] = {}
        self.probes: set[str] = set()
        self.graphs: dict[int, tuple[Any, list]] = {}
        """The last call's result and tensor inputs of each of this side's functions whose
        result requires grad, kept for the kernel's backward pass."""
        self.stdout: Callable[[str], Any] = lambda text: None
        """Where what the notebook's code prints during a call goes (and ``stderr``)."""
        self.stderr: Callable[[str], Any] = lambda text: None
        self.pending = ""
        """A request too long for the code of an execute request, until the kernel asks."""
        self.buffers: Any = ()
        """The binary parts of the kernel's last reply, which its arrays' forms refer to."""

    # the wire's two handle kinds, seen from this side
    def _out_handle(self, obj: Any) -> dict:
        if isinstance(obj, Remote):
            if obj._link is not self:
                raise ValueError("a handle of another kernel")
            return {"t": "obj", "id": obj._id}
        if callable(obj):
            number = len(self.callbacks)
            self.callbacks[number] = obj
            return {"t": "callback", "id": number}
        raise TypeError(f"a {type(obj).__name__} cannot be passed to the notebook's code")

    def _in_handle(self, form: dict) -> Remote:
        number, kind = form.get("id"), form.get("type")
        if form.get("t") != "handle" or type(number) is not int or not isinstance(kind, str):
            raise wire.WireError("a handle of unknown form")
        return Remote(self, number, kind[:80], form.get("call") is True)

    def decode(self, form: Any) -> Any:
        """A value of the kernel's last reply (or of its current question)."""
        return wire.Decoder(self._in_handle, self.buffers)(form)

    def install(self) -> None:
        """(Re)load the kernel's end of the wire; the kernel forgets earlier handles."""
        self.load("_initlab_wire", WIRE_SOURCE)

    def load(self, name: str, source: str) -> None:
        """Run ``source`` in the kernel as the module ``name`` (in ``sys.modules``), out
        of the kernel's input history."""
        code = (
            f"_m = __import__('types').ModuleType({name!r})\n"
            f"exec(compile({source!r}, '<{name}>', 'exec'), _m.__dict__)\n"
            f"__import__('sys').modules[{name!r}] = _m\n"
            "del _m\n"
        )
        self._execute(code, expect_reply=False)

    def get(self, name: str) -> tuple[bool, Any]:
        reply = self._request({"op": "get", "name": name})
        if reply.get("missing") is True:
            return False, None
        return True, self.decode(reply.get("ok"))

    def getattr(self, target: Remote, name: str) -> Any:
        return self.decode(self._request({"op": "getattr", "id": target._id, "name": name})["ok"])

    def describe(self, target: Remote) -> Any:
        """The kernel's description of a function's code (see code_image)."""
        reply = self._request({"op": "describe", "id": target._id})
        return reply["ok"]

    def load_probe(self, probe: ModuleType) -> str:
        """Load ``probe``'s source into the kernel once; its name there."""
        name = "_initlab_probe_" + probe.__name__.replace(".", "_")
        if name not in self.probes:
            self.load(name, Path(str(probe.__file__)).read_text(encoding="utf-8"))
            self.probes.add(name)
        return name

    def call(
        self,
        target: Remote,
        args: tuple,
        kwargs: dict,
        *,
        watch: list[Remote] = (),
        bind: dict[str, Any] | None = None,
        record: tuple[str, ...] = (),
        probe: list | None = None,
        report: dict[str, Any] | None = None,
    ) -> Any:
        """The result of ``target(*args, **kwargs)`` in the kernel. Arrays among ``args``
        are updated in place with what the call left in them. ``bind``: names of the
        function's namespace bound for the call; ``record``: modules whose functions'
        runs are recorded; ``probe``: [module, context manager, arguments] of a loaded
        module that the call runs inside. What the kernel reports of the call, returned or
        raised, goes into ``report``: ``calls``, how many times each watched function's code
        ran; ``recorded``, the recorded functions; ``probe``, the probe's result."""
        encode = wire.Encoder(self._out_handle)
        request = {
            "op": "call",
            "id": target._id,
            "args": encode(list(args)),
            "kwargs": encode(dict(kwargs)),
            "watch": [w._id for w in watch],
            "bind": encode(dict(bind or {})),
            "record": list(record),
            "probe": [probe[0], probe[1], encode(probe[2])] if probe else None,
        }
        reply = self._request(request, raising=False)
        decode = wire.Decoder(self._in_handle, self.buffers)  # one for the reply: it may refer back
        if report is not None:
            calls, recorded = reply.get("calls"), reply.get("recorded")
            if isinstance(calls, list):
                report["calls"] = [c for c in calls if type(c) is int]
            if isinstance(recorded, list):
                report["recorded"] = [str(r)[:200] for r in recorded[:20]]
            if "probe" in reply:  # encoded apart from the result: a decoder of its own
                report["probe"] = self.decode(reply["probe"])
        self._raise(reply)
        result = decode(reply.get("ok"))
        after = reply.get("after")
        if isinstance(after, list) and len(after) == len(args):
            for arg, form in zip(args, after, strict=True):
                if form is not None:
                    new = decode(form)
                    _write_back(arg, new)
                    if new is result:  # the call returned this argument itself
                        result = arg
        return result

    def _request(self, request: dict, raising: bool = True) -> dict:
        text = json.dumps(request)
        serve = "__import__('sys').modules['_initlab_wire'].serve"
        if len(text) > MAX_INLINE_REQUEST:
            self.pending = text
            code = f"{serve}_pending()"
        else:
            code = f"{serve}({text!r})"
        try:
            reply = self._execute(code)
        finally:
            self.pending = ""
        if raising:
            self._raise(reply)
        return reply

    @staticmethod
    def _raise(reply: dict) -> None:
        """Raise what the kernel's code raised, or a WireError for a reply without a
        result."""
        if "raised" in reply:
            name, message = (list(reply["raised"]) + ["", ""])[:2]
            raise _raised(name, message)
        if "ok" not in reply and "missing" not in reply:
            raise wire.WireError("a reply without a result")

    def _execute(self, code: str, expect_reply: bool = True) -> dict:
        return run_sync(self._async_execute)(code, expect_reply)

    async def _async_execute(self, code: str, expect_reply: bool) -> dict:
        kc = self.kc
        msg_id = kc.execute(code, silent=True, store_history=False, allow_stdin=True)
        poller = zmq.asyncio.Poller()
        channels = {
            kc.iopub_channel.socket: kc.iopub_channel,
            kc.stdin_channel.socket: kc.stdin_channel,
            kc.shell_channel.socket: kc.shell_channel,
        }
        for socket in channels:
            poller.register(socket, zmq.POLLIN)
        printed: list[str] = []
        size = 0
        idle = replied = interrupted = False
        error: dict | None = None
        reply: Any = None
        self.buffers = ()
        while not (idle and replied):
            left = self.deadline - time.monotonic()
            if left <= 0 and not interrupted:
                await self.client.km.interrupt_kernel()
                interrupted = True
                self.deadline = time.monotonic() + 10
                continue
            if left <= 0:
                raise KernelGone("the kernel did not stop after an interrupt")
            ready = dict(await poller.poll(min(left, 1.0) * 1000))
            if not ready and not await self.client.km.is_alive():
                raise KernelGone("the kernel died")
            for socket in ready:
                channel = channels[socket]
                msg = await channel.get_msg(timeout=0)
                if msg.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                kind = msg["msg_type"]
                content = msg.get("content", {})
                if channel is kc.stdin_channel and kind == "input_request":
                    kc.input(self._answer(str(content.get("prompt", ""))))
                elif kind == "stream":
                    text = str(content.get("text", ""))
                    size += len(text)
                    if size > MAX_REPLY_BYTES:
                        raise wire.WireError(f"a reply of more than {MAX_REPLY_BYTES} bytes")
                    if content.get("name") == "stdout":
                        printed.append(text)
                    else:
                        self.stderr(text)
                elif kind == wire.REPLY and channel is kc.iopub_channel:
                    buffers = [memoryview(b).cast("B") for b in msg.get("buffers", [])]
                    size += len(json.dumps(content)) + sum(len(b) for b in buffers)
                    if size > MAX_REPLY_BYTES:
                        raise wire.WireError(f"a reply of more than {MAX_REPLY_BYTES} bytes")
                    reply, self.buffers = content, buffers
                elif kind == "error":
                    error = content
                elif kind == "status" and content.get("execution_state") == "idle":
                    idle = True
                elif kind == "execute_reply":
                    replied = True
        self.stdout("".join(printed))
        if interrupted:
            raise TimeoutError("it did not finish within the time limit of the test")
        if error is not None:
            raise _raised(error.get("ename", "Exception"), error.get("evalue", ""))
        if not expect_reply:
            return {}
        if reply is None:
            raise wire.WireError("no reply")
        if not isinstance(reply, dict):
            raise wire.WireError("a reply that is not an object")
        return reply

    def _answer(self, prompt: str) -> str:
        """The reply to the kernel's input request: the pending request, the result of one
        of this side's functions called on the kernel's arguments, or the gradients of the
        tensor inputs of its last call given the gradient of its result, when the kernel
        differentiates through it (any other prompt gets an empty line)."""
        if not prompt.startswith(wire.PREFIX):
            return ""
        try:
            request = json.loads(prompt[len(wire.PREFIX) :])
            if "pending" in request:  # the request itself, once
                text, self.pending = self.pending, ""
                return text
            if "vjp" in request:
                return json.dumps({"ok": wire.Encoder(self._out_handle)(self._vjp(request))})
            number = request["cb"]
            function = self.callbacks[number]
            args = self.decode(request["args"])
            kwargs = self.decode(request["kwargs"])
            if not isinstance(args, list) or not isinstance(kwargs, dict):
                raise wire.WireError("arguments of unknown form")
            inputs = wire.grad_leaves([args, kwargs])
            result = function(*args, **kwargs)
            if inputs and getattr(result, "requires_grad", False) is True:
                self.graphs[number] = (result, inputs)  # for the kernel's backward pass
            return json.dumps({"ok": wire.Encoder(self._out_handle)(result)})
        except Exception as exc:  # raised in the notebook's call, where it came from
            return json.dumps({"raise": [type(exc).__name__, str(exc)]})

    def _vjp(self, request: dict) -> list:
        """The gradients of the inputs of a function's last call, given its result's (None
        for an input the result does not depend on)."""
        import torch

        result, inputs = self.graphs.pop(request["vjp"])
        grad = self.decode(request["grad"])
        if not (isinstance(grad, torch.Tensor) and grad.shape == result.shape):
            raise wire.WireError("a gradient of unknown form")
        grads = torch.autograd.grad(result, inputs, grad.to(result.dtype), allow_unused=True)
        return [None if g is None else g.detach() for g in grads]


def _write_back(arg: Any, new: Any) -> None:
    """Copy what a call left in an array, tensor or generator argument into this side's."""
    import numpy as np

    if isinstance(arg, np.ndarray) and isinstance(new, np.ndarray) and new.shape == arg.shape:
        if arg.flags.writeable:
            np.copyto(arg, new, casting="unsafe")
        return
    torch = __import__("sys").modules.get("torch")
    if torch is None:
        return
    if isinstance(arg, torch.Tensor) and isinstance(new, torch.Tensor):
        if new.shape == arg.shape:
            with torch.no_grad():
                arg.copy_(new)
    elif isinstance(arg, torch.Generator) and isinstance(new, torch.Generator):
        arg.set_state(new.get_state())  # the draws the call made


class KernelNamespace(dict):
    """A test cell's globals: its own names, the setup's modules, the builtins, and
    otherwise the kernel's value of the name (a NameError if the kernel has none)."""

    def __init__(self, link: KernelLink, modules: dict[str, str]) -> None:
        super().__init__(__builtins__=builtins, __name__="__test_cell__")
        self.link = link
        self.missing: set[str] = set()
        for name, module in modules.items():
            self[name] = importlib.import_module(module)

    def __missing__(self, name: str) -> Any:
        if hasattr(builtins, name) or name in self.missing:
            raise KeyError(name)
        found, value = self.link.get(name)
        if not found:
            self.missing.add(name)  # Python looks a name up twice before NameError
            raise KeyError(name)
        self[name] = value
        return value


def error_output(ename: str, evalue: str) -> NotebookNode:
    """A notebook error output whose traceback is its one line."""
    return NotebookNode(
        output_type="error", ename=ename, evalue=evalue, traceback=[f"{ename}: {evalue}"]
    )


def _capped(buffer: io.StringIO) -> Callable[[str], None]:
    """Writes to ``buffer`` until it holds a little more than MAX_PRINTED_CHARS."""

    def write(text: str) -> None:
        if buffer.tell() <= MAX_PRINTED_CHARS:
            buffer.write(text[: MAX_PRINTED_CHARS + 1])

    return write


def run_test_cell(
    link: KernelLink, source: str, modules: dict[str, str], name: str, deadline: float
) -> list[NotebookNode]:
    """Run a test cell's source here, its names answered through ``link`` (installed);
    its outputs: what it printed, and its error."""
    link.deadline, link.callbacks, link.graphs = deadline, {}, {}
    namespace = KernelNamespace(link, modules)
    printed, warned = io.StringIO(), io.StringIO()
    link.stdout, link.stderr = _capped(printed), _capped(warned)
    outputs: list[NotebookNode] = []
    error: NotebookNode | None = None
    try:
        with contextlib.redirect_stdout(printed):
            exec(compile(source, f"<{name}>", "exec"), namespace)
    except (KernelGone, asyncio.CancelledError):
        raise
    except wire.WireError as exc:
        error = error_output(
            "GradingIntegrityError",
            f"The notebook's kernel answered the test with something unreadable ({exc}); "
            "the test scores zero.",
        )
    except Exception as exc:
        error = error_output(type(exc).__name__, str(exc))
    for stream, buffer in (("stdout", printed), ("stderr", warned)):
        text = buffer.getvalue()
        if len(text) > MAX_PRINTED_CHARS:
            text = text[:MAX_PRINTED_CHARS] + "\n[Output truncated.]\n"
        if text:
            outputs.append(NotebookNode(output_type="stream", name=stream, text=text))
    if error is not None:
        outputs.append(error)
    return outputs
