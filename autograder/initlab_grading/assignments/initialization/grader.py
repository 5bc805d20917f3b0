"""Assignment 4 (initialization): references and the checks its hidden tests run.

Instructor-only. Conventions (stated in the notebook too): a network has widths
``[n_0, n_1, ..., n_L]``; layer ``l`` (1-based) has weights ``W^(l)`` of shape
``(n_l, n_(l-1))`` with i.i.d. zero-mean entries of variance ``v_l``; in the linear regime
``z^(l) = W^(l) z^(l-1)`` with ``z^(0) = x``; ``delta^(l) = dL/dz^(l)``, so
``delta^(l-1) = W^(l)^T delta^(l)``; the weight gradient is ``delta^(l)_i z^(l-1)_j``.
Arrays returned by the variance functions hold one entry per layer, layer 1 first.

Tolerances:

- Deterministic formulas are products of at most ``2L + 2`` rounded factors: a float32
  answer is within ``(2L + 3) u`` relative of the exact value (u: float32 unit round-off).
- Monte Carlo comparisons use the estimated standard error of a mean of squares, and a
  threshold widened for the squares' skewness (``skew_adjusted_z``, bounds in
  :data:`MC_SKEWNESS`): a test cell's budget of 1e-6 split over its 4 comparisons (union
  bound; to leading order, 200,000 draws).
- Answers of Parts 3 and 4 must not use torch.nn.init or initlab
  (``initlab_grading.checking.integrity.INIT_LIBRARIES``), checked statically and by recording calls
  while they run (``initlab_grading.checking.integrity.call_own``).
- Initialisers are checked on the distribution they write: mean and variance within
  ``z_score(1e-7)`` standard errors (``check_moments``), a Kolmogorov-Smirnov test against
  the exact target distribution at level 1e-7, and for uniform ones every entry within
  the bound. A test cell splits its false-failure budget of 1e-6 evenly over its
  comparisons (union bound).
- The notebook's visible initialiser checks (``check_initializer_basics``: a 512 x 512
  weight, sample mean and standard deviation through ``initlab.checks.check_moments``)
  each fail a correct answer with probability 1e-7; the notebook does not say so, as
  students see that cell.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from scipy import stats

from initlab.checks import (
    CheckFailed,
    as_array,
    call_answer,
    check_moments,
    unit_roundoff,
    z_score,
)
from initlab_grading.checking.calls import inside
from initlab_grading.checking.integrity import call_own, refuse_libraries
from initlab_grading.checking.reveal import expected, formula
from initlab_grading.checking.substitute import graded_with_references
from initlab_grading.checking.thresholds import CELL_FALSE_FAILURE, skew_adjusted_z

CHECKS_OUTSIDE_KERNEL = True
"""The test cells run in the grading worker, the kernel answering for the notebook's names
(initlab_grading.grading.remote)."""

# --------------------------------------------------------------------------------------
# Variance formulas (references)


def forward_variances(var_x: float, widths: Any, weight_vars: Any) -> np.ndarray:
    """Var(z^(l)) = Var(x) prod_{k<=l} n_(k-1) v_k, for l = 1..L."""
    n = np.asarray(widths, dtype=np.float64)
    v = np.asarray(weight_vars, dtype=np.float64)
    return var_x * np.cumprod(n[:-1] * v)


def backward_variances(var_grad_out: float, widths: Any, weight_vars: Any) -> np.ndarray:
    """Var(delta^(l)) = Var(delta^(L)) prod_{k=l+1..L} n_k v_k, for l = 1..L."""
    n = np.asarray(widths, dtype=np.float64)
    v = np.asarray(weight_vars, dtype=np.float64)
    factors = n[1:] * v  # factor k (1-based) = n_k v_k
    tail = np.cumprod(factors[::-1])[::-1]  # tail[l-1] = prod_{k>=l} n_k v_k
    return var_grad_out * np.append(tail[1:], 1.0)


def weight_grad_variances(
    var_x: float, var_grad_out: float, widths: Any, weight_vars: Any
) -> np.ndarray:
    """Var(dL/dW^(l)_ij) = Var(delta^(l)) Var(z^(l-1)), for l = 1..L."""
    fwd = np.concatenate([[var_x], forward_variances(var_x, widths, weight_vars)[:-1]])
    return backward_variances(var_grad_out, widths, weight_vars) * fwd


# --------------------------------------------------------------------------------------
# Initialisers (references: torch.nn.init's documented semantics)


def fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """(fan_in, fan_out) of a weight of this shape, as torch.nn.init computes them."""
    if len(shape) < 2:
        raise ValueError("fans need at least two dimensions")
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


GAINS = {
    "linear": 1.0,
    "conv1d": 1.0,
    "conv2d": 1.0,
    "conv3d": 1.0,
    "sigmoid": 1.0,
    "tanh": 5.0 / 3.0,
    "relu": math.sqrt(2.0),
    "selu": 0.75,
}


def gain(nonlinearity: str, param: float | None = None) -> float:
    if nonlinearity == "leaky_relu":
        a = 0.01 if param is None else param
        return math.sqrt(2.0 / (1 + a * a))
    return GAINS[nonlinearity]


def target_std(kind: str, shape: tuple[int, ...], **kw: Any) -> float:
    """Standard deviation that ``kind`` (xavier_normal, xavier_uniform, kaiming_normal,
    kaiming_uniform, kaiming_average_normal) must give a tensor of ``shape``."""
    fan_in, fan_out = fans(shape)
    if kind.startswith("xavier"):
        return kw.get("gain", 1.0) * math.sqrt(2.0 / (fan_in + fan_out))
    if kind == "kaiming_average_normal":  # ReLU's gain over the average of the two fans
        return gain("relu") / math.sqrt((fan_in + fan_out) / 2)
    fan = fan_in if kw.get("mode", "fan_in") == "fan_in" else fan_out
    return gain(kw.get("nonlinearity", "leaky_relu"), kw.get("a", 0)) / math.sqrt(fan)


# --------------------------------------------------------------------------------------
# Checks: variance formulas


def _rel_tol(depth: int) -> float:
    return (2 * depth + 3) * unit_roundoff()


def variance_cases(seed: int = 7, num: int = 12) -> list[dict[str, Any]]:
    """Random widths and variances, depth 1 included, widths unequal."""
    rng = np.random.default_rng(seed)
    cases = [
        {"widths": [5, 3], "weight_vars": [0.4], "var_x": 2.0, "var_grad_out": 0.5},
        {"widths": [10, 10, 10], "weight_vars": [0.1, 0.1], "var_x": 1.0, "var_grad_out": 1.0},
    ]
    for _ in range(num - len(cases)):
        depth = int(rng.integers(1, 7))
        cases.append(
            {
                "widths": [int(w) for w in rng.integers(1, 60, size=depth + 1)],
                "weight_vars": [float(v) for v in np.exp(rng.normal(-2.5, 1.0, size=depth))],
                "var_x": float(np.exp(rng.normal())),
                "var_grad_out": float(np.exp(rng.normal())),
            }
        )
    return cases


def _compare_per_layer(got: Any, want: np.ndarray, what: str, hint: str) -> None:
    arr = as_array(got, what, shape=want.shape)
    tol = _rel_tol(len(want)) * np.abs(want)
    bad = ~(np.abs(arr - want) <= tol)
    if np.any(bad):
        layer = int(np.argmax(bad)) + 1
        raise CheckFailed(
            f"{what}: layer {layer} is {arr[layer - 1]:.6g}"
            + expected(f"; expected {want[layer - 1]:.6g}")
            + ". "
            + hint
        )


def _same(got: np.ndarray, want: np.ndarray) -> bool:
    return got.shape == want.shape and bool(
        np.all(np.abs(got - want) <= _rel_tol(len(want)) * np.abs(want))
    )


def check_forward_variances(student: Callable) -> None:
    for case in variance_cases():
        n, v = case["widths"], case["weight_vars"]
        what = f"forward_variances({case['var_x']:.3g}, widths={n}, weight_vars=...)"
        got = call_answer(student, case["var_x"], n, v, what=what)
        want = forward_variances(case["var_x"], n, v)
        arr = as_array(got, what, shape=(None,))
        if arr.shape != want.shape:
            raise CheckFailed(
                f"{what} has {arr.size} entries"
                + expected(
                    f"; expected one per layer ({want.size}), layer 1 first (do not include the "
                    "input)"
                )
                + "."
            )
        hint = formula("Var(z^(l)) = Var(x) * prod over k = 1..l of n_(k-1) * v_k.")
        shifted = case["var_x"] * np.cumprod(np.asarray(n[1:], float) * np.asarray(v))
        if _same(arr, shifted) and not _same(want, shifted):
            hint = (
                "Each layer used its own width n_l"
                + formula("; the sum behind z^(l) runs over the n_(l-1) inputs of the layer")
                + "."
            )
        _compare_per_layer(arr, want, what, hint)


def check_backward_variances(student: Callable) -> None:
    for case in variance_cases():
        n, v = case["widths"], case["weight_vars"]
        what = f"backward_variances({case['var_grad_out']:.3g}, widths={n}, weight_vars=...)"
        got = call_answer(student, case["var_grad_out"], n, v, what=what)
        want = backward_variances(case["var_grad_out"], n, v)
        arr = as_array(got, what, shape=(None,))
        if arr.shape != want.shape:
            raise CheckFailed(
                f"{what} has {arr.size} entries"
                + expected(
                    f"; expected one per layer ({want.size}), layer 1 first; the last entry is "
                    "Var(delta^(L)) itself"
                )
                + "."
            )
        hint = formula("Var(delta^(l)) = Var(delta^(L)) * prod over k = l+1..L of n_k * v_k.")
        if _same(arr[::-1], want) and not _same(want[::-1], want):
            hint = "The entries are in reverse order: layer 1 comes first."
        else:
            nn_ = np.asarray(n, float)
            vv = np.asarray(v, float)
            wrong_width = case["var_grad_out"] * np.append(
                np.cumprod((nn_[:-1] * vv)[::-1])[::-1][1:], 1.0
            )
            if _same(arr, wrong_width) and not _same(want, wrong_width):
                hint = (
                    "The factor of layer k is n_(k-1) v_k"
                    + formula(
                        ": the backward sum behind delta^(k-1) = W^(k)^T delta^(k) runs over the "
                        "n_k outputs of W^(k), so the factor is n_k v_k"
                    )
                    + "."
                )
        _compare_per_layer(arr, want, what, hint)


def check_weight_grad_variances(student: Callable) -> None:
    for case in variance_cases():
        n, v = case["widths"], case["weight_vars"]
        what = f"weight_grad_variances(widths={n}, ...)"
        got = call_answer(student, case["var_x"], case["var_grad_out"], n, v, what=what)
        want = weight_grad_variances(case["var_x"], case["var_grad_out"], n, v)
        _compare_per_layer(
            got,
            want,
            what,
            formula(
                "Var(dL/dW^(l)) = Var(delta^(l)) * Var(z^(l-1)): the input of layer l is z^(l-1)."
            ),
        )


@functools.lru_cache(maxsize=8)
def _simulation(case_index: int, num_draws: int, seed: int) -> dict[str, np.ndarray]:
    case = MC_CASES[case_index]
    parts = [
        simulate_linear_net(
            list(case["widths"]),
            list(case["weight_vars"]),
            case["var_x"],
            case["var_grad_out"],
            num_draws=min(MC_CHUNK, num_draws - start),
            seed=seed * 1000 + 100 + case_index + start,
        )
        for start in range(0, num_draws, MC_CHUNK)
    ]
    return {kind: np.concatenate([p[kind] for p in parts]) for kind in parts[0]}


def simulate_linear_net(
    widths: list[int],
    weight_vars: list[float],
    var_x: float,
    var_grad_out: float,
    num_draws: int,
    seed: int,
) -> dict[str, np.ndarray]:
    """Monte Carlo over draws of x, the weights and delta^(L) (all Gaussian, zero mean):
    per layer, the squares of unit 0's z^(l), delta^(l) and dL/dW^(l)_00, one row per draw."""
    g = torch.Generator().manual_seed(seed)
    L = len(weight_vars)
    x = torch.randn(num_draws, widths[0], 1, generator=g, dtype=torch.float64) * var_x**0.5
    Ws = [
        torch.randn(num_draws, widths[k + 1], widths[k], generator=g, dtype=torch.float64)
        * weight_vars[k] ** 0.5
        for k in range(L)
    ]
    zs = [x]
    for W in Ws:
        zs.append(W @ zs[-1])
    deltas = [
        torch.randn(num_draws, widths[-1], 1, generator=g, dtype=torch.float64) * var_grad_out**0.5
    ]
    for W in reversed(Ws[1:]):
        deltas.insert(0, W.transpose(1, 2) @ deltas[0])
    z_sq = torch.stack([z[:, 0, 0] ** 2 for z in zs[1:]], dim=1)
    d_sq = torch.stack([d[:, 0, 0] ** 2 for d in deltas], dim=1)
    g_sq = torch.stack([(deltas[k][:, 0, 0] * zs[k][:, 0, 0]) ** 2 for k in range(L)], dim=1)
    return {"forward": z_sq.numpy(), "backward": d_sq.numpy(), "weight_grad": g_sq.numpy()}


MC_CASES = (
    {"widths": [6, 9, 4, 7], "weight_vars": [0.15, 0.3, 0.1], "var_x": 1.5, "var_grad_out": 0.8},
    {"widths": [12, 5], "weight_vars": [0.2], "var_x": 0.7, "var_grad_out": 2.0},
)
MC_DRAWS = 200_000
MC_CHUNK = 50_000
MC_SKEWNESS = {"forward": 13.0, "backward": 9.0, "weight_grad": 25.0}
"""Bounds on the skewness of the simulated squares for :data:`MC_CASES`, per kind;
measured with 1,000,000 draws per case: at most 10.0 (forward, layer 3), 7.0 (backward)
and 19.3 (weight gradients), each bound about 30 % above. Squares of products of Gaussians
are strongly skewed, so the plain normal quantile would understate the false-failure
probability (by a factor of up to about 100 at the 40,000 draws used before)."""


def check_against_monte_carlo(
    student: Callable,
    kind: str,
    *,
    num_draws: int = MC_DRAWS,
    seed: int = 0,
    false_failure: float = CELL_FALSE_FAILURE,
) -> None:
    """Compare the student's formula (kind: forward, backward, weight_grad) with a Monte
    Carlo estimate: each layer's mean of squares within ``z`` estimated standard errors,
    ``z`` from :func:`initlab_grading.checking.thresholds.skew_adjusted_z` with the skewness
    bound of :data:`MC_SKEWNESS` and the cell's budget 1e-6 split over its 4 comparisons (3 layers
    and 1 layer; union bound). A correct answer fails with probability at most 1e-6, to
    leading order. Measured calibration: over 400 seeds at 100,000 draws, at a nominal
    10 % the reference failed 7 %, 7.5 % and 8 % of the time (forward, backward, weight
    gradients), at a nominal 1 %: 0.5 %, 1.25 % and 0.25 %."""
    comparisons = sum(len(case["weight_vars"]) for case in MC_CASES)
    z = skew_adjusted_z(false_failure / comparisons, num_draws, MC_SKEWNESS[kind])
    for i, case in enumerate(MC_CASES):
        sim = _simulation(i, num_draws, seed)[kind]
        n, v = case["widths"], case["weight_vars"]
        if kind == "forward":
            got = call_answer(student, case["var_x"], n, v, what="forward_variances")
        elif kind == "backward":
            got = call_answer(student, case["var_grad_out"], n, v, what="backward_variances")
        else:
            got = call_answer(
                student, case["var_x"], case["var_grad_out"], n, v, what="weight_grad_variances"
            )
        arr = as_array(got, f"{kind} variances", shape=(len(v),))
        est = sim.mean(axis=0)
        se = sim.std(axis=0, ddof=1) / np.sqrt(sim.shape[0])
        for layer in range(len(v)):
            if not abs(arr[layer] - est[layer]) <= z * se[layer]:
                raise CheckFailed(
                    f"For widths {n} and weight variances {v}, your {kind} variance of layer "
                    f"{layer + 1} is {arr[layer]:.4g}"
                    + expected(
                        f", but simulating {num_draws} random networks gives {est[layer]:.4g} "
                        f"+- {se[layer]:.2g} (standard error)"
                    )
                    + "."
                )


# --------------------------------------------------------------------------------------
# Checks: fans, gains, initialisers


def check_fans(student: Callable) -> None:
    refuse_libraries(student, "fan_in_and_fan_out")
    for shape in [(3, 5), (64, 16, 5, 5), (10, 4, 3), (8, 2, 3, 3, 3), (1, 1)]:
        what = f"fan_in_and_fan_out(torch.empty{shape})"
        got = call_own(student, torch.empty(shape), what=what)
        got = tuple(int(v) for v in as_array(got, what, shape=(2,)))
        want = fans(shape)
        if got != want:
            hint = formula(
                " fan_in = size(1) * receptive field, fan_out = size(0) * receptive field."
            )
            if got == want[::-1]:
                hint = (
                    " The two are swapped"
                    + formula(": a weight of shape (out, in, ...) has fan_in from size(1)")
                    + "."
                )
            elif len(shape) > 2 and got == (shape[1], shape[0]):
                hint = (
                    " The receptive field (the product of the kernel sizes, shape[2:]) is missing."
                )
            raise CheckFailed(f"{what} is {got}" + expected(f"; expected {want}") + f".{hint}")


def check_gain(student: Callable) -> None:
    cases = [
        ("linear", None),
        ("sigmoid", None),
        ("tanh", None),
        ("relu", None),
        ("leaky_relu", 0.2),
        ("leaky_relu", None),
        ("conv2d", None),
        ("selu", None),
    ]
    refuse_libraries(student, "calculate_gain")
    for name, param in cases:
        what = f"calculate_gain({name!r}, {param})"
        got = float(as_array(call_own(student, name, param, what=what), what))
        want = gain(name, param)
        if abs(got - want) > 4 * unit_roundoff() * want:
            hint = ""
            if name == "leaky_relu" and abs(got - math.sqrt(2)) < 1e-6:
                hint = (
                    " The negative slope a is ignored"
                    + formula(": the gain is sqrt(2 / (1 + a^2))")
                    + "."
                )
            if name == "leaky_relu" and param is None and abs(got - gain(name, 0.0)) < 1e-6:
                hint = " torch's default slope for leaky_relu is 0.01 when param is None."
            raise CheckFailed(
                f"{what} is {got:.6g}" + expected(f"; expected {want:.6g}") + f".{hint}"
            )


INIT_SHAPES = ((256, 1024), (64, 16, 5, 5), (700, 300))


def _candidates(kind: str, shape: tuple[int, ...], kw: dict[str, Any]) -> dict[str, float]:
    """Standard deviations that common mistakes would give, with their names."""
    fan_in, fan_out = fans(shape)
    right = target_std(kind, shape, **kw)
    g = kw.get("gain", 1.0)
    out: dict[str, float] = {}
    if kind.startswith("xavier"):
        out["the variance 2 / (fan_in + fan_out) used as the standard deviation"] = (
            g * 2.0 / (fan_in + fan_out)
        )
        out[
            "a bound sqrt(3 / fan_in) (variance 1 / fan_in)"
            + formula(" instead of sqrt(6 / (fan_in + fan_out))")
            if kind.endswith("uniform")
            else "fan_in alone" + formula(" instead of the average of fan_in and fan_out")
        ] = g / math.sqrt(fan_in)
        out["fan_out alone" + formula(" instead of the average of fan_in and fan_out")] = (
            g / math.sqrt(fan_out)
        )
        out["2 / fan_in" + formula(" instead of 2 / (fan_in + fan_out)")] = g * math.sqrt(
            2.0 / fan_in
        )
        if len(shape) > 2:
            out["fans without the receptive field of the kernel"] = g * math.sqrt(
                2.0 / (shape[0] + shape[1])
            )
        if g != 1.0:
            out["the gain applied twice"] = g * right
            out["the gain not applied"] = right / g
    elif kind == "kaiming_average_normal":
        avg = (fan_in + fan_out) / 2
        out["fan_in alone" + formula(" instead of the average of the fans")] = math.sqrt(
            2.0 / fan_in
        )
        out["fan_out alone" + formula(" instead of the average of the fans")] = math.sqrt(
            2.0 / fan_out
        )
        out["the variance used as the standard deviation"] = 2.0 / avg
        out["Xavier's variance 2 / (fan_in + fan_out): ReLU's gain sqrt(2) is missing"] = (
            1.0 / math.sqrt(avg)
        )
        if len(shape) > 2:
            out["fans without the receptive field of the kernel"] = math.sqrt(
                4.0 / (shape[0] + shape[1])
            )
    else:
        mode = kw.get("mode", "fan_in")
        fan = fan_in if mode == "fan_in" else fan_out
        other = fan_out if mode == "fan_in" else fan_in
        gn = gain(kw.get("nonlinearity", "leaky_relu"), kw.get("a", 0))
        out["the variance used as the standard deviation"] = gn**2 / fan
        out[f"the other fan ({'fan_out' if mode == 'fan_in' else 'fan_in'}) instead of {mode}"] = (
            gn / math.sqrt(other)
        )
        out["the average fan (fan_in + fan_out) / 2 instead of " + mode] = gn / math.sqrt(
            (fan_in + fan_out) / 2
        )
        out["no gain (the ReLU factor 2 is missing)"] = 1.0 / math.sqrt(fan)
        out["the gain applied twice"] = gn**2 / math.sqrt(fan)
        if kw.get("nonlinearity", "leaky_relu") == "leaky_relu" and kw.get("a", 0):
            out["the leaky slope a ignored (gain sqrt(2))"] = math.sqrt(2.0 / fan)
        if len(shape) > 2:
            f0 = shape[1] if mode == "fan_in" else shape[0]
            out["fans without the receptive field of the kernel"] = gn / math.sqrt(f0)
    return out


def _diagnose_std(observed: float, right: float, candidates: dict[str, float], rel: float) -> str:
    """Name the mistake whose standard deviation the sample matches, among those that the
    sample can tell apart from the right one (more than 2 rel away)."""
    for name, std in candidates.items():
        if abs(std - right) > 2 * rel * right and abs(observed - std) <= rel * std:
            return f"It matches {name}."
    return ""


EARLIER_ANSWERS: dict[str, Callable] = {
    "fan_in_and_fan_out": lambda tensor: fans(tuple(tensor.shape)),
    "calculate_gain": lambda nonlinearity, param=None: gain(nonlinearity, param),
}
"""Answers that the initialisers may call, with their references: test_fans and test_gain
grade the student's own, so while an initialiser is checked these names are bound to the
references in the student's namespace, and a slip in them costs their own cell only."""


@graded_with_references(EARLIER_ANSWERS)
def check_initializer(
    student: Callable, kind: str, calls: list[dict[str, Any]], shapes=INIT_SHAPES
) -> None:
    """Hidden check of one initialiser: in-place semantics, no torch.nn.init, and the
    distribution it writes, for every keyword set in ``calls`` and every shape. The
    student's fan_in_and_fan_out and calculate_gain are replaced by the references while
    it runs (:data:`EARLIER_ANSWERS`)."""
    refuse_libraries(student, f"{kind}_")
    # three statistical comparisons per call (mean, variance, KS): split the cell's
    # false-failure budget of 1e-6 evenly (union bound)
    per_check = CELL_FALSE_FAILURE / (3 * len(calls) * len(shapes))
    z = z_score(per_check)
    for kw in calls:
        for shape in shapes:
            tensor = torch.full(shape, float("nan"), dtype=torch.float32, requires_grad=True)
            ptr = tensor.data_ptr()
            what = f"{kind}_(torch.empty{shape}{''.join(f', {k}={v!r}' for k, v in kw.items())})"
            with inside(student, "torch_seeded", 1234):  # in the kernel, for one there
                out = call_own(student, tensor, what=what, **kw)
            if out is not tensor or tensor.data_ptr() != ptr:
                raise CheckFailed(
                    f"{what} must fill the tensor it is given in place and return that same "
                    "tensor (like torch.nn.init); it returned a new one. Use "
                    "tensor.normal_(...) or tensor.uniform_(...) inside torch.no_grad()."
                )
            if tuple(tensor.shape) != shape or tensor.dtype != torch.float32:
                raise CheckFailed(f"{what} changed the tensor's shape or dtype.")
            sample = tensor.detach().numpy().astype(np.float64).ravel()
            std = target_std(kind, shape, **kw)
            uniform = kind.endswith("uniform")
            bound = math.sqrt(3.0) * std
            # relative resolution of the sample std: half the variance's relative CI
            rel = z * math.sqrt(((1.8 if uniform else 3.0) - 1) / sample.size) / 2
            hint = _diagnose_std(float(sample.std()), std, _candidates(kind, shape, kw), rel)
            check_moments(
                sample,
                0.0,
                std,
                1.8 if uniform else 3.0,
                what,
                false_failure=per_check,
                hint=hint,
                mark_expected=expected,
            )
            if uniform:
                if np.abs(sample).max() > bound * (1 + unit_roundoff()):
                    raise CheckFailed(
                        f"{what} wrote {np.abs(sample).max():.4g}, outside the bound"
                        + expected(f" {bound:.4g} of U(-{bound:.4g}, {bound:.4g})")
                        + "."
                        + _shape_hint(sample, uniform=True)
                    )
                dist = stats.uniform(loc=-bound, scale=2 * bound)
            else:
                dist = stats.norm(scale=std)
            # the asymptotic Kolmogorov distribution is accurate for these sample sizes
            # (>= 25,600) and far cheaper than the exact one
            p = stats.kstest(sample, dist.cdf, method="asymp").pvalue
            if p < per_check:
                raise CheckFailed(
                    f"The values written by {what} do not follow the "
                    f"{'uniform' if uniform else 'normal'} distribution"
                    + expected(f" with standard deviation {std:.4g}")
                    + f" (Kolmogorov-Smirnov p = {p:.2g})."
                    + _shape_hint(sample, uniform)
                )


def _shape_hint(sample: np.ndarray, uniform: bool) -> str:
    """Name the family the sample looks like when it is the other one. The excess
    kurtosis is 0 for a normal and -1.2 for a uniform; with at least 25,600 values its
    standard error is below sqrt(24 / 25,600) = 0.031 (normal), so the midpoint -0.6 is
    about 19 standard errors from either."""
    excess = float(stats.kurtosis(sample))
    if uniform and excess > -0.6:
        return " They look normal; this initialiser draws from a uniform."
    if not uniform and excess < -0.6:
        return " They look uniform; this initialiser draws from a normal."
    return ""
