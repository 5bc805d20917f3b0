"""Checks outside the kernel (initlab_grading.grading.remote and .wire): values cross as data
and nothing else, the kernel's functions are called on the worker's arguments, the worker's
functions answer the kernel's calls, and a kernel that lies, loops or answers nonsense
costs the test its points, never the grader."""

from __future__ import annotations

import base64
import io
import json
import time

import nbformat
import numpy as np
import pytest
import torch
from nbclient import NotebookClient

from initlab_grading.grading import wire
from initlab_grading.grading.remote import KernelLink, Remote, RemoteError, run_test_cell


def _roundtrip(value):
    return wire.Decoder(lambda form: form)(json.loads(json.dumps(wire.Encoder(repr)(value))))


def test_data_crosses_as_itself():
    values = [
        None, True, 3, -2**70, 1.5, float("inf"), "text", np.float32(2.5), np.int64(7),
        np.arange(6, dtype=np.float32).reshape(2, 3), np.array(4.0), np.array([True, False]),
        [1, (2.0, "x")], {"a": [np.zeros(2)]},
    ]  # fmt: skip
    for value in values:
        got = _roundtrip(value)
        assert type(got) is type(value), value
        if isinstance(value, np.ndarray | np.generic):
            assert got.dtype == value.dtype and np.array_equal(got, value)
        elif isinstance(value, dict):
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


def test_one_object_twice_arrives_as_one_object_twice():
    row = np.zeros(2)
    got = _roundtrip([row, row, np.zeros(2)])
    assert got[0] is got[1] and got[0] is not got[2]


def test_what_is_not_data_crosses_as_a_handle():
    forms = []
    encoder = wire.Encoder(lambda obj: forms.append(obj) or {"t": "handle", "id": 1})
    encoder([len, np.array([object()]), object])
    assert len(forms) == 3


def _npy(array, allow_pickle=False):
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    return base64.b64encode(buffer.getvalue()).decode()


@pytest.mark.parametrize(
    "form",
    [
        "not a dict",
        {"t": "nd", "b": _npy(np.array([{"a": 1}], dtype=object), allow_pickle=True)},
        {"t": "nd", "b": "%%% not base64"},
        {"t": "scalar", "b": _npy(np.zeros(3))},
        {"t": "ref", "i": 5},
        {"t": "int", "v": "9" * 1000},
        {"t": "float", "v": "abc"},
        {"t": "tensor", "b": _npy(np.zeros(2)), "dtype": "Tensor"},
        {"t": "eval", "v": "__import__('os')"},
    ],
)
def test_malformed_replies_are_refused(form):
    with pytest.raises(wire.WireError):
        wire.Decoder(lambda f: f)(form)


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
    """numpy's writer replaced in the kernel: every array it sends is garbage. The test
    cell scores zero with a message; the grader is unharmed."""
    tamper = "np.save, _saved = (lambda file, arr, **k: file.write(b'garbage')), np.save"
    kernel.execute_cell(nbformat.v4.new_code_cell(tamper), 0)
    try:
        test = "assert len(rows) == 2"
        outputs = run_test_cell(_link(kernel), test, {}, "t", time.monotonic() + 30)
    finally:
        kernel.execute_cell(nbformat.v4.new_code_cell("np.save = _saved"), 0)
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
