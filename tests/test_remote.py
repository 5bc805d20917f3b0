"""Checks outside the kernel (initlab_grading.grading.remote and .wire): values cross as data
and nothing else, the kernel's functions are called on the worker's arguments, the worker's
functions answer the kernel's calls, and a kernel that lies, loops or answers nonsense
costs the test its points, never the grader."""

from __future__ import annotations

import base64
import json
import time

import nbformat
import numpy as np
import pytest
import torch
from nbclient import NotebookClient

from initlab_grading.grading import remote, wire
from initlab_grading.grading.remote import KernelLink, Remote, RemoteError, run_test_cell


def _roundtrip(value):
    return wire.Decoder(lambda form: form)(json.loads(json.dumps(wire.Encoder(repr)(value))))


def test_data_crosses_as_itself():
    values = [
        None, True, 3, -2**70, 1.5, float("inf"), "text", np.float32(2.5), np.int64(7),
        np.arange(6, dtype=np.float32).reshape(2, 3), np.array(4.0), np.array([True, False]),
        [1, (2.0, "x")], {"a": [np.zeros(2)]}, {0.8: [1.0], 2: "x"},
    ]  # fmt: skip
    for value in values:
        got = _roundtrip(value)
        assert type(got) is type(value), value
        if isinstance(value, np.ndarray | np.generic):
            assert got.dtype == value.dtype and np.array_equal(got, value)
        elif isinstance(value, dict) and "a" in value:
            assert np.array_equal(got["a"][0], value["a"][0])
        else:
            assert got == value or (got != got and value != value)


def test_tensors_keep_their_type_and_gradient_flag():
    for tensor in (torch.ones(2, 3), torch.arange(4), torch.zeros(2, dtype=torch.float64)):
        got = _roundtrip(tensor)
        assert isinstance(got, torch.Tensor) and got.dtype == tensor.dtype
        assert torch.equal(got, tensor)
    assert _roundtrip(torch.ones(2, requires_grad=True)).requires_grad
    assert _roundtrip(torch.ones(2, dtype=torch.bfloat16)).dtype == torch.bfloat16


def test_a_random_generator_crosses_with_its_state():
    generator = torch.Generator().manual_seed(5)
    copy = _roundtrip(generator)
    assert torch.equal(torch.randn(3, generator=copy), torch.randn(3, generator=generator))


def test_one_object_twice_arrives_as_one_object_twice():
    row = np.zeros(2)
    got = _roundtrip([row, row, np.zeros(2)])
    assert got[0] is got[1] and got[0] is not got[2]


def test_what_is_not_data_crosses_as_a_handle():
    forms = []
    encoder = wire.Encoder(lambda obj: forms.append(obj) or {"t": "handle", "id": 1})
    encoder([len, np.array([object()]), object])
    assert len(forms) == 3


def _raw(array, kind=None):
    return {"b": base64.b64encode(array.tobytes()).decode(), "np": kind or array.dtype.str,
            "shape": list(array.shape)}  # fmt: skip


@pytest.mark.parametrize(
    "form",
    [
        "not a dict",
        {"t": "nd", **_raw(np.zeros(2), "O")},
        {"t": "nd", **_raw(np.zeros(2), "V16")},
        {"t": "nd", **_raw(np.zeros(2), "f8,f8")},
        {"t": "nd", **{**_raw(np.zeros(3)), "shape": [4]}},
        {"t": "nd", **{**_raw(np.zeros(2)), "b": "%%% not base64"}},
        {"t": "nd", **{**_raw(np.zeros(2)), "shape": [-2, -1]}},
        {"t": "scalar", **_raw(np.zeros(3))},
        {"t": "ref", "i": 5},
        {"t": "generator", **_raw(np.zeros(3, dtype=np.uint8))},
        {"t": "items", "v": [[{"t": "list", "v": []}, {"t": "none"}]]},
        {"t": "int", "v": "9" * 1000},
        {"t": "float", "v": "abc"},
        {"t": "tensor", **_raw(np.zeros(2)), "dtype": "Tensor"},
        {"t": "eval", "v": "__import__('os')"},
        {"t": "nd", "np": "<f8", "shape": [2], "buf": 1},  # no such part
        {"t": "nd", "np": "<f8", "shape": [2], "buf": "0"},
        {"t": "nd", "np": "<f8", "shape": [3], "buf": 0},  # 16 bytes for 24
    ],
)
def test_malformed_replies_are_refused(form):
    with pytest.raises(wire.WireError):
        wire.Decoder(lambda f: f, [memoryview(bytes(16))])(form)


def test_arrays_cross_as_binary_parts_of_a_message():
    buffers: list = []
    value = [np.arange(6.0).reshape(2, 3), torch.ones(2, dtype=torch.int64), np.float32(2.5)]
    form = json.loads(json.dumps(wire.Encoder(repr, buffers)(value)))
    assert len(buffers) == 3 and '"b"' not in json.dumps(form)
    got = wire.Decoder(lambda f: f, [memoryview(b) for b in buffers])(form)
    assert np.array_equal(got[0], value[0]) and torch.equal(got[1], value[1])
    assert got[2] == np.float32(2.5) and got[2].dtype == np.float32


# -- against a real kernel ----------------------------------------------------------------

NOTEBOOK = """
import numpy as np

def f(x):
    print("f ran")
    return float(x[0] ** 2)

def scale_in_place(x, k):
    x *= k
    return None

def descend(x0, func, grad, steps):
    x = np.array(x0, dtype=float)
    for _ in range(steps):
        x = x - 0.5 * grad(x)
    return x, func(x)

def uses_f(x):
    return f(x) + f(x)

def not_done(x):
    raise NotImplementedError

class Mistake(Exception):
    pass

def broken(x):
    raise Mistake("wrong sign")

def forever(x):
    while True:
        pass

rows = [np.zeros(2)] * 2

import types
import torch
from torch.nn import init as I

def draw(t):
    return I.normal_(t)

def init_by_helper(t):
    return draw(t)

def init_by_getattr(t):
    return getattr(torch.nn, "in" + "it").normal_(t)

def init_own(t, scale=2.0):
    with torch.no_grad():
        return t.normal_().mul_(scale)

def earlier(t):
    return 0

def later(t):
    return earlier(t) + 1

_normal = torch.nn.init.normal_
copied = types.FunctionType(
    _normal.__code__, dict(_normal.__globals__, __name__="__main__"), "copied",
    _normal.__defaults__,
)

def derivative_by_autograd(x):
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        (g,) = torch.autograd.grad(torch.tanh(x).sum(), x)
    return g

def derivative_by_hand(x):
    return 1 - torch.tanh(x) ** 2
"""


@pytest.fixture(scope="module")
def kernel():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(NOTEBOOK)])
    client = NotebookClient(nb, kernel_name="python3", timeout=60)
    with client.setup_kernel():
        client.execute_cell(nb.cells[0], 0)
        yield client


def _link(kernel, seconds=30.0):
    link = KernelLink(kernel, time.monotonic() + seconds)
    link.install()
    return link


def test_names_come_back_as_values_or_handles(kernel):
    link = _link(kernel)
    found, rows = link.get("rows")
    assert found and rows[0] is rows[1]
    found, f = link.get("f")
    assert found and isinstance(f, Remote) and f(np.array([3.0, 1.0])) == 9.0
    assert link.get("no_such_name") == (False, None)


def test_calls_write_back_arrays_and_answer_the_kernels_calls(kernel):
    link = _link(kernel)
    x = np.array([1.0, 2.0])
    link.get("scale_in_place")[1](x, 3.0)
    assert x.tolist() == [3.0, 6.0]
    seen = []

    def grad(point):  # the worker's function, called by the student's code
        seen.append(point.copy())
        return 2 * point

    end, value = link.get("descend")[1]([4.0, -2.0], lambda p: float(p @ p), grad, 3)
    assert len(seen) == 3 and np.allclose(end, 0.0) and value == 0.0


def test_a_long_request_travels_over_the_input_channel(kernel):
    """A request with arrays is not put into the code the kernel executes (ipykernel hashes
    that in pure Python); the kernel fetches it, and gets it once."""
    link = _link(kernel)
    sent = []
    execute = link._execute
    link._execute = lambda code, *a: sent.append(code) or execute(code, *a)
    x = np.arange(100_000, dtype=float)
    link.get("scale_in_place")[1](x, 2.0)
    assert np.array_equal(x, 2 * np.arange(100_000)) and link.pending == ""
    assert max(map(len, sent)) < remote.MAX_INLINE_REQUEST
    assert link._answer(wire.PREFIX + '{"pending": true}') == ""


def test_the_kernel_counts_calls_of_a_watched_function(kernel):
    link = _link(kernel)
    counts: list[int] = []
    uses_f, f = link.get("uses_f")[1], link.get("f")[1]
    assert uses_f.watching(f, counts)(np.array([2.0])) == 8.0
    assert counts == [2]


def test_errors_keep_their_name(kernel):
    link = _link(kernel)
    with pytest.raises(NotImplementedError):
        link.get("not_done")[1](1)
    with pytest.raises(RemoteError, match="wrong sign") as info:
        link.get("broken")[1](1)
    assert type(info.value).__name__ == "Mistake"


def test_an_endless_call_is_interrupted_and_the_kernel_goes_on(kernel):
    link = _link(kernel, seconds=3.0)
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        link.get("forever")[1](1)
    assert time.monotonic() - start < 15
    assert _link(kernel).get("f")[1]([2.0]) == 4.0


def test_a_test_cell_runs_here_with_the_kernels_names(kernel):
    source = (
        "assert f(np.array([2.0])) == 4.0\n"
        "print('visible passed', len(rows))\n"
        "assert f(np.array([1.0])) == 2.0, 'f(1) should be 2'\n"
    )
    outputs = run_test_cell(_link(kernel), source, {"np": "numpy"}, "t", time.monotonic() + 30)
    assert outputs[0]["text"] == "f ran\nvisible passed 2\nf ran\n"
    assert outputs[-1]["ename"] == "AssertionError" and outputs[-1]["evalue"] == "f(1) should be 2"
    missing = run_test_cell(_link(kernel), "g(1)", {}, "t", time.monotonic() + 30)
    assert missing[-1]["ename"] == "NameError"


def test_a_kernel_that_answers_nonsense_scores_zero(kernel):
    """The kernel's message sender replaced: every array it sends is garbage. The test
    cell scores zero with a message; the grader is unharmed."""
    tamper = (
        "_session = get_ipython().kernel.session\n"
        "_saved = _session.send\n"
        "def _garbage(*args, buffers=None, **kwargs):\n"
        "    return _saved(*args, buffers=[b'garbage!' for _ in buffers or []], **kwargs)\n"
        "_session.send = _garbage\n"
    )
    kernel.execute_cell(nbformat.v4.new_code_cell(tamper), 0)
    try:
        test = "assert len(rows) == 2"
        outputs = run_test_cell(_link(kernel), test, {}, "t", time.monotonic() + 30)
    finally:
        kernel.execute_cell(nbformat.v4.new_code_cell("_session.send = _saved"), 0)
    assert outputs[-1]["ename"] == "GradingIntegrityError"
    assert "unreadable" in outputs[-1]["evalue"]


def test_an_array_returned_and_changed_in_place_comes_back_once(kernel):
    """An in-place initialiser returns its tensor: the call returns the worker's own
    tensor, filled."""
    fill = "def fill_(t):\n    t.fill_(2.0)\n    return t"
    kernel.execute_cell(nbformat.v4.new_code_cell(fill), 0)
    weight = torch.zeros(2, 3)
    out = _link(kernel).get("fill_")[1](weight)
    assert out is weight and torch.equal(weight, torch.full((2, 3), 2.0))


def test_the_static_checks_read_the_kernels_functions(kernel):
    """integrity.uses_library on a kernel's function reads the kernel's description of
    its code: a module named through a helper, a copy of a library function, and an
    answer of the student's own."""
    from initlab_grading.checking.integrity import INIT_LIBRARIES, uses_library

    link = _link(kernel)
    assert uses_library(link.get("init_by_helper")[1], INIT_LIBRARIES) == "torch.nn.init"
    assert "a copy of its normal_" in uses_library(link.get("copied")[1], INIT_LIBRARIES)
    assert uses_library(link.get("init_own")[1], INIT_LIBRARIES) is None
    assert uses_library(link.get("init_by_getattr")[1], INIT_LIBRARIES) is None  # run time


def test_library_calls_are_recorded_in_the_kernel(kernel):
    from initlab.checks import CheckFailed
    from initlab_grading.checking.integrity import call_own

    link = _link(kernel)
    weight = torch.zeros(3, 4)
    with pytest.raises(CheckFailed, match="called torch.nn.init.normal_"):
        call_own(link.get("init_by_getattr")[1], weight, what="init_by_getattr(w)")
    assert call_own(link.get("init_own")[1], weight, what="init_own(w)") is weight
    assert float(weight.abs().sum()) > 0


def test_references_are_bound_in_the_kernel_during_a_call(kernel):
    from initlab_grading.checking.substitute import earlier_answers_as_references

    link = _link(kernel)
    later, earlier = link.get("later")[1], link.get("earlier")[1]
    seen = []
    with earlier_answers_as_references(later, {"earlier": lambda t: seen.append(t) or 41}):
        assert later(np.ones(2)) == 42
    assert len(seen) == 1 and later(np.ones(2)) == 1 and earlier(1) == 0


def test_a_probe_watches_the_call_in_the_kernel(kernel):
    from initlab_grading.checking.calls import inside

    link = _link(kernel)
    x = torch.linspace(-1, 1, 5)
    for name, by_hand in (("derivative_by_autograd", False), ("derivative_by_hand", True)):
        derivative = link.get(name)[1]
        with inside(derivative, "autograd_watch") as evidence:
            out = derivative(x)
        assert torch.allclose(out, 1 - torch.tanh(x) ** 2)
        assert (evidence() is None) == by_hand
    draw = link.get("init_own")[1]
    drawn = []
    for _ in range(2):
        with inside(draw, "torch_seeded", 7):
            drawn.append(draw(torch.zeros(3)))
    with inside(draw, "torch_seeded", 8):
        drawn.append(draw(torch.zeros(3)))
    assert torch.equal(drawn[0], drawn[1]) and not torch.equal(drawn[0], drawn[2])
    square = link.get("f")[1]
    with pytest.raises(FloatingPointError), inside(square, "float_errors_raised"):
        square(np.array([1e200]))


def test_many_calls_go_in_one_request_and_share_a_generator(kernel):
    """call_rows on a kernel's function: the generator the calls share advances from call
    to call there as it does here, and results of one shape come back one per row."""
    from initlab_grading.checking.calls import call_rows

    source = "import torch\ndef noise(x, g):\n    return x + torch.randn(2, generator=g)"
    kernel.execute_cell(nbformat.v4.new_code_cell(source), 0)
    ours: dict = {}
    exec(source, ours)
    inputs = torch.arange(8.0).reshape(4, 2)
    results = []
    for noise in (_link(kernel).get("noise")[1], ours["noise"]):
        generator = torch.Generator().manual_seed(3)
        results.append(call_rows(noise, inputs, generator, what="noise(x, g)"))
    got, want = results
    assert len(got) == 4 and all(torch.equal(a, b) for a, b in zip(got, want, strict=True))
    assert not torch.equal(want[0], want[1] - 2)  # a new draw on every call


def test_the_kernel_differentiates_through_a_function_of_the_worker(kernel):
    """A training step in the kernel whose forward pass is the worker's: the kernel's
    backward pass asks the worker for the gradients, which arrive as autograd computes
    them here."""
    step = (
        "def step(W, X, forward):\n"
        "    W = W.clone().requires_grad_(True)\n"
        "    forward(X, [W]).pow(2).sum().backward()\n"
        "    return W.grad\n"
    )
    kernel.execute_cell(nbformat.v4.new_code_cell(step), 0)

    def forward(X, params):
        return torch.tanh(X @ params[0].T)

    W, X = torch.randn(3, 4, dtype=torch.float64), torch.randn(5, 4, dtype=torch.float64)
    got = _link(kernel).get("step")[1](W, X, forward)
    leaf = W.clone().requires_grad_(True)
    forward(X, [leaf]).pow(2).sum().backward()
    assert torch.allclose(got, leaf.grad)
