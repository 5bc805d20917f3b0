"""Assignment 2 (backpropagation): reference answers and the checks its hidden tests run.

Instructor-only. Every value is compared with an independent oracle: float64
``torch.autograd`` for Jacobians and gradients, scipy-free closed forms for the sigmoid,
and the reference forward and backward pass.

Index convention (stated in the notebook): ``W`` has shape ``(n_out, n_in)``,
``z = W x + b`` so ``z_i = sum_k W[i, k] x[k] + b[i]``, and a Jacobian of ``y`` (shape
``(n_out,)``) with respect to an array of shape ``S`` has shape ``(n_out, *S)`` with entry
``[i, ...] = dy_i / d(that entry)``, the layout of ``torch.autograd.functional.jacobian``.
That is Part 1, one input vector ``x``. Part 2 (the MLP) takes a batch with one example per
row, as the kit's convention and ``torch.nn.Linear`` do: ``X`` of shape ``(batch, n_0)``,
``Z^(l) = A^(l-1) W^(l)^T``, ``Delta^(l) = phi'(Z^(l)) * (Delta^(l+1) W^(l+1))`` and
``grad W^(l) = Delta^(l)^T A^(l-1)`` (the shape of ``W^(l)``, summed over the batch).

Tolerances for Jacobians and gradients (unit round-off ``u`` of float32, the coarsest
type accepted). Each quantity is carried with a first-order bound on its absolute error
when a student computes it in float32 (:func:`_forward`, :func:`_backward`):

- inputs rounded to float32: ``u`` relative each;
- a dot product of length ``n`` plus a bias: ``(n + 3) u`` times the sum of the magnitudes
  of its terms, plus the propagated error of its inputs through ``|W|``;
- ``phi(z)``: ``|phi'(z)|`` times the error of ``z`` plus ``4 u |phi(z)|``;
- ``phi'(z)``: an absolute ``6 u`` (each derivative used is ``1 - tanh^2``, ``s(z) s(-z)``
  or ``s``, whose absolute round-off stays below ``6 u`` because the values are at most 1)
  plus ``max |phi''|`` times the error of ``z``; ReLU's derivative is exact as long as the
  pre-activation is farther from 0 than its error (every case asserts a margin of 0.1);
- a product ``delta * a`` or ``phi' * m``: the errors of the factors times the other
  factor's magnitude, plus ``u`` of the product.

The check allows twice that bound (the factor 2 covers the dropped second-order terms).
Part 2 bounds each example's row with the same model (row ``b`` of a batched product sums
the same terms as one example's product does) and adds the sum over the batch that each
gradient entry makes (:func:`_mlp_tolerances`).

Right values are not enough for Part 1: the activations handed to a student's Jacobian
function record where they are evaluated (``_check_chain_rule``), so a finite-difference
Jacobian, which is accurate enough to pass every value check, fails by name.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from initlab.checks import (
    CheckFailed,
    as_array,
    call_answer,
    check_finite,
    unit_roundoff,
)
from initlab_grading.checking.reveal import expected, formula

CHECKS_OUTSIDE_KERNEL = True
"""The test cells run in the grading worker, the kernel answering for the notebook's names
(initlab_grading.grading.remote)."""

U32 = unit_roundoff(np.float32)
U64 = unit_roundoff(np.float64)
RELU_MARGIN = 0.1
"""Pre-activations of ReLU cases are at least this far from the kink at 0."""


# --------------------------------------------------------------------------------------
# Activations: numpy versions handed to students' functions, torch versions for autograd


def _np_sigmoid(z: np.ndarray) -> np.ndarray:
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


@dataclass(frozen=True)
class Act:
    name: str
    f: Callable[[np.ndarray], np.ndarray]
    df: Callable[[np.ndarray], np.ndarray]
    torch_f: Callable[[torch.Tensor], torch.Tensor]
    d2_max: float  # max |phi''|
    df_err: float  # absolute round-off of phi'(z) in units of u
    kink: bool = False

    @property
    def pair(self) -> tuple[Callable, Callable]:
        return (self.f, self.df)


ACTS = {
    "tanh": Act(
        "tanh", np.tanh, lambda z: 1.0 - np.tanh(z) ** 2, torch.tanh, 4 / (3 * np.sqrt(3)), 6.0
    ),
    "sigmoid": Act(
        "sigmoid",
        _np_sigmoid,
        lambda z: _np_sigmoid(z) * _np_sigmoid(-z),
        torch.sigmoid,
        1 / (6 * np.sqrt(3)),
        6.0,
    ),
    "softplus": Act(
        "softplus",
        lambda z: np.logaddexp(0.0, z),
        _np_sigmoid,
        torch.nn.functional.softplus,
        0.25,
        6.0,
    ),
    "relu": Act(
        "relu",
        lambda z: np.maximum(z, 0.0),
        lambda z: (z > 0).astype(float),
        torch.relu,
        0.0,
        0.0,
        kink=True,
    ),
    "identity": Act("identity", lambda z: z, np.ones_like, lambda z: z, 0.0, 0.0),
}


# --------------------------------------------------------------------------------------
# Layers, forward error bounds, backward error bounds


@dataclass
class Layer:
    W: np.ndarray
    b: np.ndarray | None
    act: Act


@dataclass
class Forward:
    a: list[np.ndarray]  # a[0] = x, a[l] = phi(z[l])
    z: list[np.ndarray | None]  # z[0] = None
    d: list[np.ndarray | None]  # phi'(z[l])
    ea: list[np.ndarray]
    ez: list[np.ndarray | None]
    ed: list[np.ndarray | None]


def _forward(layers: Sequence[Layer], x: np.ndarray) -> Forward:
    u = U32
    fw = Forward([x], [None], [None], [u * np.abs(x)], [None], [None])
    for layer in layers:
        W, act = layer.W, layer.act
        b = np.zeros(W.shape[0]) if layer.b is None else layer.b
        a_prev = fw.a[-1]
        z = W @ a_prev + b
        mag = np.abs(W) @ np.abs(a_prev) + np.abs(b)
        ez = (W.shape[1] + 3) * u * mag + np.abs(W) @ fw.ea[-1]
        if act.kink:
            assert np.all(np.abs(z) - ez > RELU_MARGIN / 2), "ReLU case too close to its kink"
        a = act.f(z)
        d = act.df(z)
        fw.z.append(z)
        fw.a.append(a)
        fw.d.append(d)
        fw.ez.append(ez)
        fw.ea.append(np.abs(d) * ez + 4 * u * np.abs(a))
        fw.ed.append(act.df_err * u + act.d2_max * ez)
    return fw


@dataclass
class Backward:
    """Gradients of g . y with respect to every W, b and x, with error bounds."""

    gW: list[np.ndarray]
    egW: list[np.ndarray]
    gb: list[np.ndarray]
    egb: list[np.ndarray]
    gx: np.ndarray
    egx: np.ndarray


def _backward(layers: Sequence[Layer], fw: Forward, g: np.ndarray) -> Backward:
    u = U32
    L = len(layers)
    delta = fw.d[L] * g
    mag = np.abs(g)
    edelta = fw.ed[L] * mag + 2 * u * np.abs(fw.d[L]) * mag
    gW, egW, gb, egb = [None] * L, [None] * L, [None] * L, [None] * L
    for l in range(L, 0, -1):  # noqa: E741
        a_prev, ea_prev = fw.a[l - 1], fw.ea[l - 1]
        gW[l - 1] = np.outer(delta, a_prev)
        egW[l - 1] = (
            np.outer(edelta, np.abs(a_prev))
            + np.outer(np.abs(delta), ea_prev)
            + u * np.outer(np.abs(delta), np.abs(a_prev))
        )
        gb[l - 1], egb[l - 1] = delta, edelta
        W = layers[l - 1].W
        back = W.T @ delta
        mag = np.abs(W).T @ np.abs(delta)
        eback = (W.shape[0] + 3) * u * mag + np.abs(W).T @ edelta
        if l > 1:
            d, ed = fw.d[l - 1], fw.ed[l - 1]
            delta = d * back
            edelta = np.abs(d) * eback + ed * mag + u * np.abs(d) * mag
    return Backward(gW, egW, gb, egb, back, eback)


def _jacobian_bounds(layers: Sequence[Layer], x: np.ndarray) -> dict[str, np.ndarray]:
    """Tolerances (twice the first-order error bounds) of every Jacobian of y: keys
    ``x``, ``W<l>`` and ``b<l>`` (l = 1 for the layer next to the input)."""
    fw = _forward(layers, x)
    n_out = layers[-1].W.shape[0]
    rows: dict[str, list[np.ndarray]] = {}
    for i in range(n_out):
        bw = _backward(layers, fw, np.eye(n_out)[i])
        rows.setdefault("x", []).append(bw.egx)
        for l in range(len(layers)):  # noqa: E741
            rows.setdefault(f"W{l + 1}", []).append(bw.egW[l])
            rows.setdefault(f"b{l + 1}", []).append(bw.egb[l])
    return {k: 2.0 * np.array(v) for k, v in rows.items()}


def _torch_jacobians(layers: Sequence[Layer], x: np.ndarray) -> dict[str, np.ndarray]:
    """Float64 autograd Jacobians of y with respect to x and every W<l>, b<l>."""
    names = ["x"]
    tensors = [torch.as_tensor(x, dtype=torch.float64)]
    for l, layer in enumerate(layers, start=1):  # noqa: E741
        names += [f"W{l}", f"b{l}"]
        b = np.zeros(layer.W.shape[0]) if layer.b is None else layer.b
        tensors += [torch.as_tensor(layer.W, dtype=torch.float64), torch.as_tensor(b)]

    def net(*args: torch.Tensor) -> torch.Tensor:
        a = args[0]
        for l, layer in enumerate(layers):  # noqa: E741
            a = layer.act.torch_f(args[1 + 2 * l] @ a + args[2 + 2 * l])
        return a

    jac = torch.autograd.functional.jacobian(net, tuple(tensors))
    return {n: j.numpy() for n, j in zip(names, jac, strict=True)}


# --------------------------------------------------------------------------------------
# Part 1: Jacobians of 1-, 2- and 3-layer networks


@dataclass
class JacCase:
    """One call: ``layers`` from the input to the output; ``x`` the input."""

    layers: list[Layer]
    x: np.ndarray
    label: str


def _random_layers(
    rng: np.random.Generator, widths: Sequence[int], acts: Sequence[Act], bias: bool = True
) -> tuple[list[Layer], np.ndarray]:
    """Layers (input first) and an input; resampled until every ReLU pre-activation is at
    least RELU_MARGIN from 0."""
    for _ in range(1000):
        x = rng.normal(size=widths[0])
        layers = [
            Layer(
                rng.normal(size=(widths[i + 1], widths[i])) / np.sqrt(widths[i]),
                rng.normal(size=widths[i + 1]) * 0.5 if bias else None,
                acts[i],
            )
            for i in range(len(widths) - 1)
        ]
        fw = _forward_values(layers, x)
        if all(
            not layer.act.kink or np.all(np.abs(z) >= RELU_MARGIN)
            for layer, z in zip(layers, fw, strict=True)
        ):
            return layers, x
    raise RuntimeError("no ReLU case clear of the kink")


def _forward_values(layers: Sequence[Layer], x: np.ndarray) -> list[np.ndarray]:
    zs, a = [], x
    for layer in layers:
        b = 0.0 if layer.b is None else layer.b
        z = layer.W @ a + b
        zs.append(z)
        a = layer.act.f(z)
    return zs


_JACOBIAN_WIDTHS: dict[int, tuple[list[int] | None, ...]] = {
    1: ([4, 4], [4, 4], [1, 3], [3, 1], [2, 5], None),
    2: ([4, 4, 4], [4, 4, 4], [3, 1, 2], [2, 3, 5], [5, 4, 1], None),
    3: ([4, 4, 4, 4], [4, 4, 4, 4], [3, 1, 4, 2], [2, 3, 4, 5], [5, 2, 3, 1], None),
}
"""Widths (input first) of the Jacobian cases: square first (an index slip then gives wrong
numbers, which the check can name, instead of a shape error), then a layer of width 1,
outputs outnumbering inputs, a single output, and random widths (None: 2 to 5 each)."""


def jacobian_cases(num_layers: int, seed: int) -> list[JacCase]:
    """The hidden cases of one Jacobian function (see ``_JACOBIAN_WIDTHS``), cycling
    through tanh, sigmoid, softplus and ReLU so that no two layers of a case share one."""
    rng = np.random.default_rng(seed)
    names = ["tanh", "sigmoid", "softplus", "relu"]
    cases = []
    for k, spec in enumerate(_JACOBIAN_WIDTHS[num_layers]):
        if spec is None:
            widths = [int(w) for w in rng.integers(2, 6, size=num_layers + 1)]
        else:
            widths = list(spec)
        acts = [ACTS[names[(k + j) % 4]] for j in range(num_layers)]
        layers, x = _random_layers(rng, widths, acts)
        label = ", ".join(f"{a.name}" for a in reversed(acts))
        cases.append(JacCase(layers, x, f"widths {widths} (input first), activations {label}"))
    return cases


_ONE_KEYS = {
    "dz_dx": "x",
    "dz_dW": "W1",
    "dz_db": "b1",
    "dy_dx": "x",
    "dy_dW": "W1",
    "dy_db": "b1",
}
_TWO_KEYS = {"dy_dx": "x", "dy_dV": "W1", "dy_dc": "b1"}
_THREE_KEYS = {"dy_dx": "x", "dy_dU": "W1", "dy_dd": "b1"}


def _reference(case: JacCase, identity: bool = False) -> tuple[dict, dict]:
    layers = case.layers
    if identity:
        layers = [Layer(la.W, la.b, ACTS["identity"]) for la in layers]
    return _torch_jacobians(layers, case.x), _jacobian_bounds(layers, case.x)


Variant = tuple[str, np.ndarray, np.ndarray | None]
"""A Jacobian a common mistake produces: the message that names it, its values, and the
round-off bound of those values (None: the same bound as the right Jacobian's)."""


def _variants(case: JacCase, key: str) -> list[Variant]:
    """Jacobians that common mistakes produce, each with the message that names it."""
    out = []
    L = len(case.layers)
    names = _PHI_NAMES[L]
    for l in range(L):  # noqa: E741
        # keep the forward values: only phi' of layer l is replaced by 1
        fixed = _with_derivative(case, l, lambda z, a: np.ones_like(z))
        out.append(
            (
                f"The factor {names[l]}' (the derivative of layer {l + 1}'s activation, "
                "counting from the input) is missing from the chain rule.",
                fixed[key],
                None,
            )
        )
        at_a = _with_derivative(case, l, lambda z, a, act=case.layers[l].act: act.df(a))
        out.append(
            (
                f"{names[l]}' is evaluated at the activation {names[l]}(z) instead of at the "
                "pre-activation z"
                + formula(": evaluate the derivative at z = Wx + b of that layer")
                + ".",
                at_a[key],
                None,
            )
        )
    for l in range(1, L):  # noqa: E741 -- the weights the backward chain multiplies by
        if case.layers[l].W.shape[0] == case.layers[l].W.shape[1]:
            alt = _with_derivative(case, 0, None, transpose=l)
            out.append(
                (
                    "A wrong summation index: the chain rule multiplies by a weight matrix with "
                    "its "
                    f"indices swapped (layer {l + 1}, counting from the input)."
                    + formula(
                        " In z_i = sum_k W[i, k] a_k the sum runs over the second index, so "
                        "dz_i/da_k = W[i, k]."
                    ),
                    alt[key],
                    None,
                )
            )
    return out


_INDICATOR_TEXT = {
    "dz_db": "The factor 1[i = j] is missing"
    + formula(
        ": b_j enters z_j only, so dz_i/db_j = 1[i = j] and "
        "dz_db is the identity matrix np.eye(n_out), not a matrix of ones"
    )
    + ".",
    "dy_db": "The factor 1[i = j] is missing"
    + formula(
        ": b_j enters z_j only, so dy_i/db_j = 1[i = j] phi'(z_i) and dy_db is the diagonal "
        "matrix np.diag(phi'(z)), zero off the diagonal"
    )
    + ".",
    "dz_dW": "The factor 1[i = j] is missing"
    + formula(
        ": W[j, k] enters z_j only, so dz_i/dW[j, k] = "
        "1[i = j] x_k, zero for j != i (x_k sits only at [i, i, k])"
    )
    + ".",
    "dy_dW": "The factor 1[i = j] is missing"
    + formula(
        ": W[j, k] enters z_j only, so dy_i/dW[j, k] = 1[i = j] phi'(z_i) x_k, zero for j != i"
    )
    + ".",
}


def _indicator_variants(case: JacCase, key: str, tol: np.ndarray) -> list[Variant]:
    """One layer's Jacobians with respect to b and W without the factor 1[i = j]: every
    [i, j, ...] filled with the value of [i, i, ...] (the row's own phi'(z_i)) or of
    [j, j, ...] (``np.ones(...) * d`` broadcasts phi'(z_j) along the last axis). Each such
    entry is computed as that diagonal entry is, so its round-off bound is the diagonal
    entry's: the variants carry ``tol``, the check's bound of the right Jacobian, spread the
    same way."""
    if len(case.layers) != 1 or key not in _INDICATOR_TEXT:
        return []
    (layer,) = case.layers
    n_out = layer.W.shape[0]
    if n_out == 1:  # 1[i = j] is 1: the slip changes nothing
        return []
    z = layer.W @ case.x + layer.b
    d = layer.act.df(z) if key.startswith("dy") else np.ones(n_out)
    ones = np.ones((n_out, n_out))
    if key.endswith("_db"):
        spreads = [
            (d[:, None] * ones, (slice(None), None)),
            (d[None, :] * ones, (None, slice(None))),
        ]
        diag_tol = np.diag(tol)
    else:
        x = case.x
        spreads = [
            (d[:, None, None] * ones[:, :, None] * x, (slice(None), None)),
            (d[None, :, None] * ones[:, :, None] * x, (None, slice(None))),
        ]
        diag_tol = np.einsum("iik->ik", tol)
    return [
        (_INDICATOR_TEXT[key], wrong, np.broadcast_to(diag_tol[spread], wrong.shape))
        for wrong, spread in spreads
    ]


def _key_map(num_layers: int) -> dict[str, str]:
    return {1: _ONE_KEYS, 2: _TWO_KEYS, 3: _THREE_KEYS}[num_layers]


def _with_derivative(
    case: JacCase, layer_index: int, deriv: Callable | None, transpose: int | None = None
) -> dict[str, np.ndarray]:
    """Jacobians (numpy chain rule, forward pass unchanged) with phi' of one layer replaced
    by ``deriv(z, a)``, or with the backward chain using one layer's W transposed."""
    layers = case.layers
    zs, as_ = [], [case.x]
    for la in layers:
        z = la.W @ as_[-1] + (0.0 if la.b is None else la.b)
        zs.append(z)
        as_.append(la.act.f(z))
    ds = [la.act.df(z) for la, z in zip(layers, zs, strict=True)]
    if deriv is not None:
        ds[layer_index] = deriv(zs[layer_index], as_[layer_index + 1])
    n_out = layers[-1].W.shape[0]
    # delta[l] = d y / d z_l, shape (n_out, n_l)
    delta = np.diag(ds[-1])
    deltas = [None] * len(layers)
    deltas[-1] = delta
    for l in range(len(layers) - 1, 0, -1):  # noqa: E741
        W = layers[l].W.T if l == transpose else layers[l].W
        delta = (delta @ W) * ds[l - 1]
        deltas[l - 1] = delta
    res = {
        "dy_dx": deltas[0] @ layers[0].W,
        "dy_dW1": np.einsum("ij,k->ijk", deltas[0], case.x),
        "dy_db1": deltas[0],
    }
    _ = n_out
    m = _key_map(len(layers))
    return {k: res["dy_d" + v] for k, v in m.items() if k.startswith("dy")}


def _permutations(shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    import itertools

    return [p for p in itertools.permutations(range(len(shape))) if p != tuple(range(len(shape)))]


def _check_jacobian(
    got: Any, want: np.ndarray, tol: np.ndarray, what: str, variants: list[Variant]
) -> None:
    if got is None:
        raise CheckFailed(f"{what} is missing (None). Return every Jacobian in the dict.")
    try:
        arr = np.asarray(got, dtype=np.float64)
    except (TypeError, ValueError):
        raise CheckFailed(f"{what} could not be read as an array of numbers.") from None
    if arr.shape != want.shape:
        hint = (
            " The first axis indexes the outputs y_i; the others follow the shape of the variable."
        )
        for p in _permutations(want.shape):
            if arr.shape == tuple(want.shape[i] for i in p):
                hint = (
                    " The axes are transposed: the first axis indexes the outputs y_i, the "
                    "others the entries of the variable, in its own shape."
                )
                break
        raise CheckFailed(f"{what} has shape {arr.shape}; expected {want.shape}.{hint}")
    check_finite(arr, what)
    ok = np.abs(arr - want) <= tol
    if np.all(ok):
        return
    idx = tuple(int(i) for i in np.argwhere(~ok)[0])
    message = (
        f"{what}: entry {list(idx)} is {arr[idx]:.8g}"
        + expected(f"; expected {want[idx]:.8g} (allowed difference {tol[idx]:.3g})")
        + "."
    )
    for p in _permutations(want.shape):
        if np.all(np.abs(arr - np.transpose(want, p)) <= tol):
            raise CheckFailed(
                message
                + " The Jacobian is transposed"
                + formula(
                    ": entry [i, j, ...] must be dy_i / d(the variable's entry [j, ...]), so "
                    "the first axis indexes the outputs"
                )
                + "."
            )
    for text, wrong, wrong_tol in variants:
        bound = tol if wrong_tol is None else wrong_tol
        if wrong.shape == arr.shape and np.all(np.abs(arr - wrong) <= bound):
            raise CheckFailed(message + " " + text)
    raise CheckFailed(
        message + " Re-derive this Jacobian with the chain rule, one factor per layer."
    )


def _call_jacobians(func: Callable, args: tuple, what: str) -> dict:
    out = call_answer(
        func,
        *args,
        what=what,
        hint="Check that each summation index runs over the layer it belongs to: "
        "with non-square weight matrices a wrong summation index gives a shape error.",
    )
    if not isinstance(out, dict):
        raise CheckFailed(f"{what} returned {type(out).__name__}; return a dict of Jacobians.")
    return out


class _Traced:
    """An activation or its derivative as handed to a student's function: evaluates it
    and keeps every point it was evaluated at (as float64), so the check can tell a
    chain-rule answer from a numerical one."""

    def __init__(self, func: Callable[[np.ndarray], np.ndarray]) -> None:
        self._func = func
        self._points: list[np.ndarray] = []

    def __call__(self, z: Any) -> Any:
        try:
            self._points.append(np.array(z, dtype=np.float64).ravel())
        except Exception:  # noqa: BLE001 -- an odd argument is the function's own business
            pass
        return self._func(z)

    @property
    def points(self) -> np.ndarray:
        return np.concatenate(self._points) if self._points else np.zeros(0)


_PHI_NAMES = {1: ["phi"], 2: ["phi2", "phi1"], 3: ["phi3", "phi2", "phi1"]}
"""The notebook's names of each layer's activation, input first."""


def _args(case: JacCase) -> tuple[tuple, list[tuple[_Traced, _Traced]]]:
    """Positional arguments in the order of the notebook's signatures, with traced
    activations (input first)."""
    traced = [(_Traced(la.act.f), _Traced(la.act.df)) for la in case.layers]
    copies = [
        (la.W.copy(), la.b.copy(), pair) for la, pair in zip(case.layers, traced, strict=True)
    ]
    if len(copies) == 1:
        ((W, b, act),) = copies
        return (case.x.copy(), W, b, act), traced
    if len(copies) == 2:
        (V, c, phi2), (W, b, phi1) = copies
        return (case.x.copy(), V, c, W, b, phi2, phi1), traced
    (U, d, phi3), (V, c, phi2), (W, b, phi1) = copies
    return (case.x.copy(), U, d, V, c, W, b, phi3, phi2, phi1), traced


def _check_chain_rule(case: JacCase, traced: list[tuple[_Traced, _Traced]], what: str) -> None:
    """Right Jacobians must also come from the chain rule: each layer's phi' evaluated at
    every entry of its pre-activation z, and phi evaluated nowhere else.

    A numerical Jacobian in float64 (finite differences of phi) is accurate enough to pass
    every value check, but it never needs phi', and it evaluates phi at perturbed points
    z + h W[:, k] etc. A point counts as a pre-activation if it lies within twice the
    float32 error bound of z (``_forward``), so float32 and float64 answers pass. Not
    caught: a numerical Jacobian with a step below that bound (about 1e-6 |z|) that also
    calls phi' at z for show.
    """
    fw = _forward(case.layers, case.x)
    names = _PHI_NAMES[len(case.layers)]
    for l, (f_tr, df_tr) in enumerate(traced):  # noqa: E741
        z = fw.z[l + 1]
        tol = 2.0 * fw.ez[l + 1]
        name = names[l]
        pts = df_tr.points
        if pts.size == 0:
            raise CheckFailed(
                f"{what}: the Jacobians have the right values, but {name}[1] ({name}', the "
                f"derivative of layer {l + 1}'s activation, counting from the input) was never "
                "called. A Jacobian from the chain rule needs phi'(z) of every layer; a "
                "finite-difference (numerical) Jacobian earns no points in Part 1."
            )
        near = np.abs(pts[:, None] - z[None, :]) <= tol[None, :]
        missed = np.flatnonzero(~near.any(axis=0))
        if missed.size:
            i = int(missed[0])
            raise CheckFailed(
                f"{what}: {name}' was never evaluated at z[{i}] = {z[i]:.6g} of layer {l + 1}. "
                "The chain rule needs phi'(z) at every entry of the pre-activation "
                "z = W a + b of that layer."
            )
        pts = f_tr.points
        if pts.size:
            near = np.abs(pts[:, None] - z[None, :]) <= tol[None, :]
            stray = np.flatnonzero(~near.any(axis=1))
            if stray.size:
                v = float(pts[stray[0]])
                raise CheckFailed(
                    f"{what}: {name} was evaluated at {v:.8g}, which is not a pre-activation "
                    f"of layer {l + 1} (z = {np.round(z, 6).tolist()}): that is what a "
                    "finite-difference (numerical) Jacobian does. Part 1 grades the chain "
                    "rule: evaluate phi and phi' only at z = W a + b and build each Jacobian "
                    "from phi'(z), the weights and the inputs."
                )


_FUNC_NAMES = {1: "one_layer_jacobians", 2: "two_layer_jacobians", 3: "three_layer_jacobians"}


def check_jacobians(func: Callable, num_layers: int, seed: int = 0) -> None:
    """Hidden check of one_layer_jacobians / two_layer_jacobians / three_layer_jacobians
    against float64 autograd over the widths of ``_JACOBIAN_WIDTHS`` and four
    activations; then that the right values came from the chain rule
    (``_check_chain_rule``)."""
    keys = _key_map(num_layers)
    for case in jacobian_cases(num_layers, 100 * num_layers + seed):
        what = f"{_FUNC_NAMES[num_layers]} with {case.label}"
        args, traced = _args(case)
        out = _call_jacobians(func, args, what)
        want, tol = _reference(case)
        if num_layers == 1:
            want_z, tol_z = _reference(case, identity=True)
        variants_cache: dict[str, list] = {}
        for key, var in keys.items():
            if key.startswith("dz"):
                w, t = want_z[var], tol_z[var]
                variants: list[Variant] = []
            else:
                w, t = want[var], tol[var]
                variants = variants_cache.setdefault(key, _variants(case, key))
            variants = variants + _indicator_variants(case, key, t)
            _check_jacobian(out.get(key), w, t, f"{key} from {what}", variants)
        _check_chain_rule(case, traced, what)


# --------------------------------------------------------------------------------------
# Part 2: backpropagation through an L-layer MLP without biases, one example per row


@dataclass
class MLPCase:
    weights: list[np.ndarray]  # W^(l) of shape (n_l, n_(l-1)), as in Part 1
    X: np.ndarray  # (batch_size, n_0), one example per row
    dL_dY: np.ndarray  # (batch_size, n_L), one example per row
    act: Act
    label: str


def mlp_cases(seed: int = 7) -> list[MLPCase]:
    """Depths 1 to 5, widths 1 to 6, batch sizes 1 to 5, four activations; one square
    case first so that a wrong layer's W gives wrong numbers rather than a shape error."""
    rng = np.random.default_rng(seed)
    cases = []
    specs = [(3, [3, 3, 3, 3], 2, "tanh")]
    for k in range(8):
        depth = int(rng.integers(1, 6))
        widths = [int(w) for w in rng.integers(1, 7, size=depth + 1)]
        specs.append(
            (depth, widths, int(rng.integers(1, 6)), ["tanh", "sigmoid", "softplus", "relu"][k % 4])
        )
    for depth, widths, batch, name in specs:
        act = ACTS[name]
        for _ in range(1000):
            weights = [
                rng.normal(size=(widths[i + 1], widths[i])) / np.sqrt(widths[i]) * 1.5
                for i in range(depth)
            ]
            X = rng.normal(size=(batch, widths[0]))
            zs = _mlp_forward_ref(weights, X, act)[0][1:]
            if not act.kink or all(np.all(np.abs(z) >= RELU_MARGIN) for z in zs):
                break
        dL_dY = rng.normal(size=(batch, widths[-1]))
        cases.append(
            MLPCase(
                weights,
                X,
                dL_dY,
                act,
                f"depth {depth}, widths {widths}, batch size {batch}, {name}",
            )
        )
    return cases


def _mlp_forward_ref(weights, X, act):
    """Z = [None, Z^(1), ..., Z^(L)] and A = [X, A^(1), ..., A^(L)], one example per row:
    Z^(l) = A^(l-1) W^(l)^T."""
    Z, A = [None], [X]
    for W in weights:
        Z.append(A[-1] @ W.T)
        A.append(act.f(Z[-1]))
    return Z, A


def _mlp_grads_torch(case: MLPCase) -> list[np.ndarray]:
    Ws = [torch.tensor(W, dtype=torch.float64, requires_grad=True) for W in case.weights]
    a = torch.as_tensor(case.X, dtype=torch.float64)
    for W in Ws:
        a = case.act.torch_f(a @ W.T)
    (a * torch.as_tensor(case.dL_dY)).sum().backward()
    return [W.grad.numpy() for W in Ws]


def _per_example(case: MLPCase) -> list[tuple[Forward, Backward]]:
    """The error-bounded forward and backward pass of each example (row) on its own."""
    layers = [Layer(W, None, case.act) for W in case.weights]
    out = []
    for x, g in zip(case.X, case.dL_dY, strict=True):
        fw = _forward(layers, x)
        out.append((fw, _backward(layers, fw, g)))
    return out


def _mlp_tolerances(case: MLPCase) -> list[np.ndarray]:
    """Allowed errors of grad W^(l) = Delta^(l)^T A^(l-1), doubled (as in Part 1).

    The batched products have the same sums per entry as one example's: Z^(l)[b, i] sums
    the n_(l-1) products A^(l-1)[b, k] W^(l)[i, k], and (Delta^(l+1) W^(l+1))[b, k] the
    n_(l+1) products Delta^(l+1)[b, i] W^(l+1)[i, k], so each example's error is bounded
    by ``_forward`` and ``_backward`` on its row. Entry (i, k) of the gradient adds up the
    B = batch_size per-example terms Delta^(l)[b, i] A^(l-1)[b, k] (each term's error,
    its own product's rounding included, is ``egW``), and that sum over the batch adds at
    most B - 1 roundings (B when accumulated onto a zero array): ``(B + 1) u`` times the
    sum of the terms' magnitudes is allowed for it.
    """
    B = case.X.shape[0]
    err = [np.zeros_like(W) for W in case.weights]
    mag = [np.zeros_like(W) for W in case.weights]
    for _, bw in _per_example(case):
        for l in range(len(case.weights)):  # noqa: E741
            err[l] += bw.egW[l]
            mag[l] += np.abs(bw.gW[l])
    return [2.0 * (e + (B + 1) * U32 * m) for e, m in zip(err, mag, strict=True)]


def _mlp_variant(case: MLPCase, kind: str, layer: int | None = None) -> list[np.ndarray]:
    """The gradients a common mistake gives: ``kind`` "missing" (phi' replaced by 1) or
    "at_a" (phi' evaluated at A^(l)) at ``layer`` only (1-based) or at every layer
    (None), "wrong_layer" (Delta sent back through W^(l) instead of W^(l+1)), or "mean"
    (every gradient divided by the batch size, the mean over the examples where the loss
    sums them). An empty list when the mistake gives a shape error instead."""
    Z, A = _mlp_forward_ref(case.weights, case.X, case.act)
    L = len(case.weights)
    Ws = case.weights

    def deriv(l):  # noqa: E741
        if layer is None or l == layer:
            if kind == "missing":
                return np.ones_like(Z[l])
            if kind == "at_a":
                return case.act.df(A[l])
        return case.act.df(Z[l])

    delta = deriv(L) * case.dL_dY
    grads = [None] * L
    for l in range(L, 0, -1):  # noqa: E741
        grads[l - 1] = delta.T @ A[l - 1]
        if l > 1:
            W_back = Ws[l - 2] if kind == "wrong_layer" else Ws[l - 1]
            if W_back.shape[0] != delta.shape[1]:
                return []
            delta = deriv(l - 1) * (delta @ W_back)
            if delta.shape != Z[l - 1].shape:
                return []
    if kind == "mean":
        return [g / case.X.shape[0] for g in grads]
    return grads


BATCH_MEAN_TEXT = (
    "That is the mean over the batch, the sum divided by the batch size"
    + formula(
        ": the loss sums the examples' losses, so grad W^(l) = Delta^(l)^T A^(l-1) adds up the "
        "examples' gradients and is not divided by the batch size"
    )
    + "."
)
"""Names the batch mean; the notebook's visible test (one linear layer) names it in nearly
the same words."""

_MLP_MISTAKES = {
    "missing": "The factor phi'(Z^(l)) is missing from the recursion"
    + formula(
        ": Delta^(l) = phi'(Z^(l)) * (Delta^(l+1) W^(l+1)), and Delta^(L) = phi'(Z^(L)) * dL/dY"
    )
    + ".",
    "at_a": "phi' is evaluated at the activation A^(l) = phi(Z^(l)) instead of at the "
    "pre-activation Z^(l): use Z[l], not A[l].",
    "wrong_layer": "Delta is sent back through the wrong layer's W"
    + formula(
        ": Delta^(l) = phi'(Z^(l)) * (Delta^(l+1) W^(l+1)) uses the weights of the layer above "
        "(weights[l] in 0-based Python indexing), not W^(l)"
    )
    + ".",
    "mean": BATCH_MEAN_TEXT,
}


def _mlp_mistakes(case: MLPCase) -> list[tuple[str, list[np.ndarray]]]:
    """Each named mistake with the gradients it gives; derivative slips one layer at a
    time (named by layer) before the same slip at every layer."""
    L = len(case.weights)
    out = []
    for kind in ("missing", "at_a"):
        for layer in range(L, 0, -1):
            if kind == "missing" and layer == L:
                text = (
                    f"The factor phi'(Z^({L})) of the output layer is missing"
                    + formula(f": Delta^({L}) = phi'(Z^({L})) * dL/dY, not dL/dY itself")
                    + "."
                )
            elif kind == "missing":
                text = (
                    f"The factor phi'(Z^({layer})) is missing at layer {layer}"
                    + formula(
                        f": Delta^({layer}) = phi'(Z^({layer})) * (Delta^({layer + 1}) "
                        f"W^({layer + 1}))"
                    )
                    + "."
                )
            else:
                text = (
                    f"At layer {layer}, phi' is evaluated at the activation A^({layer}) = "
                    f"phi(Z^({layer})) instead of at the pre-activation Z^({layer}): use "
                    f"Z[{layer}], not A[{layer}]."
                )
            out.append((text, _mlp_variant(case, kind, layer)))
        out.append((_MLP_MISTAKES[kind], _mlp_variant(case, kind)))
    out.append((_MLP_MISTAKES["wrong_layer"], _mlp_variant(case, "wrong_layer")))
    if case.X.shape[0] > 1:  # a batch of one has its sum as its mean
        out.append((_MLP_MISTAKES["mean"], _mlp_variant(case, "mean")))
    return [(text, grads) for text, grads in out if grads]


def check_forward(mlp_forward: Callable) -> None:
    """Hidden check of the forward pass: Z and A of every layer, one example per row,
    against float64 values, within twice the float32 error bound of each example's row
    (``_forward``: Z^(l)[b, i] sums n_(l-1) products, as z^(l)_i of one example does)."""
    for case in mlp_cases():
        what = f"mlp_forward with {case.label}"
        out = call_answer(
            mlp_forward,
            case.X.copy(),
            [W.copy() for W in case.weights],
            case.act.f,
            what=what,
            hint="X holds one example per row, shape (batch_size, n_0): a layer computes "
            "A^(l-1) W^(l)^T (A @ W.T), not W @ A.",
        )
        if not (isinstance(out, tuple | list) and len(out) == 2):
            raise CheckFailed(f"{what} must return the pair (Z, A).")
        Z, A = out
        L = len(case.weights)
        if len(Z) != L + 1 or len(A) != L + 1:
            raise CheckFailed(
                f"{what} returned {len(Z)} pre-activations and {len(A)} activations"
                + expected(
                    f"; expected {L + 1} of each: Z = [None, Z^(1), ..., Z^(L)] and "
                    "A = [X, A^(1), ..., A^(L)]"
                )
                + "."
            )
        Zr, Ar = _mlp_forward_ref(case.weights, case.X, case.act)
        rows = [fw for fw, _ in _per_example(case)]
        for l in range(1, L + 1):  # noqa: E741
            ez = np.array([fw.ez[l] for fw in rows])
            ea = np.array([fw.ea[l] for fw in rows])
            for name, got, want, tol in (("Z", Z[l], Zr[l], 2 * ez), ("A", A[l], Ar[l], 2 * ea)):
                shape = want.shape
                if np.shape(got) == shape[::-1] and shape[0] != shape[1]:
                    raise CheckFailed(
                        f"{name}[{l}] from {what} has shape {np.shape(got)}, one example per "
                        f"column; expected {shape}"
                        + formula(
                            f": one example per row, as in X, so {name}^(l) has shape "
                            "(batch_size, n_l) (Z^(l) = A^(l-1) W^(l)^T)"
                        )
                        + "."
                    )
                arr = as_array(got, f"{name}[{l}] from {what}", shape=shape)
                bad = ~(np.abs(arr - want) <= tol)
                if np.any(bad):
                    hint = ""
                    if name == "Z" and np.allclose(arr, case.act.f(want), atol=np.max(tol)):
                        hint = (
                            " That is phi(Z)"
                            + formula(": Z[l] holds the pre-activation A^(l-1) W^(l)^T")
                            + "."
                        )
                    raise CheckFailed(
                        f"{name}[{l}] from {what} differs from the reference by up to "
                        f"{np.max(np.abs(arr - want)):.3g} (allowed {np.max(tol):.3g})."
                        + formula(
                            " Z^(l) = A^(l-1) W^(l)^T and A^(l) = phi(Z^(l)), one example per row."
                        )
                        + hint
                    )


def check_backward(mlp_backward: Callable) -> None:
    """Hidden check of the gradients of every W^(l) against float64 autograd, summed
    over the batch (rows), within ``_mlp_tolerances``, naming the common mistakes."""
    for case in mlp_cases():
        what = f"mlp_backward with {case.label}"
        Z, A = _mlp_forward_ref(case.weights, case.X, case.act)
        out = call_answer(
            mlp_backward,
            [W.copy() for W in case.weights],
            [None if z is None else z.copy() for z in Z],
            [a.copy() for a in A],
            case.dL_dY.copy(),
            case.act.df,
            what=what,
            hint="Delta^(l) has the shape of Z^(l), (batch_size, n_l) with one example per "
            "row; check which layer's W each step uses.",
        )
        L = len(case.weights)
        if not isinstance(out, tuple | list) or len(out) != L:
            raise CheckFailed(f"{what} must return a list of {L} gradients, one per weight matrix.")
        want = _mlp_grads_torch(case)
        tols = _mlp_tolerances(case)
        arrays: list[np.ndarray | None] = []
        for l in range(L):  # noqa: E741
            name = f"the gradient of W^({l + 1}) from {what}"
            shape = want[l].shape
            arr = np.asarray(out[l], dtype=np.float64) if out[l] is not None else None
            if arr is not None and arr.shape == shape[::-1] and shape[0] != shape[1]:
                raise CheckFailed(
                    f"{name} has shape {arr.shape}; expected {shape}, the shape of W^({l + 1}). "
                    "A transposed gradient"
                    + formula(": grad W^(l) = Delta^(l)^T A^(l-1), not A^(l-1)^T Delta^(l)")
                    + "."
                )
            arrays.append(as_array(out[l], name, shape=shape))
        # from the output layer down: a slip at layer k first shows in grad W^(k)
        for l in range(L - 1, -1, -1):  # noqa: E741
            name = f"the gradient of W^({l + 1}) from {what}"
            arr = arrays[l]
            shape = want[l].shape
            bad = ~(np.abs(arr - want[l]) <= tols[l])
            if not np.any(bad):
                continue
            idx = tuple(int(i) for i in np.argwhere(bad)[0])
            message = (
                f"{name}: entry {list(idx)} is {arr[idx]:.8g}"
                + expected(f"; expected {want[l][idx]:.8g} (allowed difference {tols[l][idx]:.3g})")
                + "."
            )
            if np.all(np.abs(arr - want[l].T.reshape(shape)) <= tols[l]) and shape[0] == shape[1]:
                raise CheckFailed(
                    message
                    + " A transposed gradient"
                    + formula(": grad W^(l) = Delta^(l)^T A^(l-1), not A^(l-1)^T Delta^(l)")
                    + "."
                )
            for text, wrong in _mlp_mistakes(case):
                if all(np.all(np.abs(arrays[k] - wrong[k]) <= tols[k]) for k in range(L)):
                    raise CheckFailed(message + " " + text)
            raise CheckFailed(
                message
                + formula(
                    " Check the recursion Delta^(L) = phi'(Z^(L)) * dL/dY, "
                    "Delta^(l) = phi'(Z^(l)) * (Delta^(l+1) W^(l+1)), "
                    "grad W^(l) = Delta^(l)^T A^(l-1) "
                    "summed over the batch (rows)."
                )
            )
