"""Assignment 3 (activation functions): references and the checks its hidden tests run.

Instructor-only. Every check compares a student's answer with an independent oracle
under a tolerance derived from round-off:

- Part 1 (a ReLU net for x^2): ``d_hidden`` must equal the length of W1, b1 and W2; then
  the exact sup error of the student's own piecewise-linear net, found at its
  breakpoints, the interval's ends and the tangent points of each linear piece (see
  :func:`sup_error`), evaluated in float64 from the parameters as given. Allowed: 0.04
  plus the float32 round-off bound of evaluating the net (the seed's construction has
  error exactly 0.04, and its parameters 0.2, 0.6, ... are not float32 numbers).
- Part 2 (activations and derivatives): torch.autograd in float64 on the same inputs is
  the oracle, and an answer passes where ``|got - f| <= N u (|f| + c(x)) + N lam m(x)``
  (:func:`tolerance`): a relative bound, an absolute one for the terms a correct formula
  cancels, and one for underflow, so that a small value wrong by a large relative error
  fails even where it is tiny in absolute terms. Derivatives must be written by hand (see
  ``FORBIDDEN_IN_DERIVATIVES`` for where the line is drawn). At large |x| every answer
  must be finite, and the values of those right on -10..10 are compared again (one
  mistake costs points once: see :func:`check_large_inputs`).
- Part 3 (the split): exact index sets.
- Part 4 (the network and its loop): against the engine's float64 trajectory (:data:`LOOP_RTOL`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from initlab.checks import CheckFailed, as_array, call_answer, check_finite, unit_roundoff
from initlab_grading.checking.calls import inside
from initlab_grading.checking.integrity import uses_library
from initlab_grading.checking.reveal import expected, formula

CHECKS_OUTSIDE_KERNEL = True
"""The test cells run in the grading worker, the kernel answering for the notebook's names
(initlab_grading.grading.remote)."""

EVIDENCE = {"observations": ["train_six"]}
"""Written answers and the code cells (grade_ids) whose submitted outputs they discuss:
formgrader and the feedback show those outputs beside the answer
(initlab_grading.grading.evidence)."""

# --------------------------------------------------------------------------------------
# Part 1: a ReLU net for x^2 on [0, 1]

TARGET_SUP = 0.04
SEED_W1 = np.array([0.2, 0.6, 0.8])
SEED_B1 = np.array([0.0, -0.12, -0.48])
SEED_W2 = np.array([1.0, 1.0, 1.0])
SEED_B2 = 0.0
MAX_HIDDEN = 2_000
"""Widest net graded: the exact sup error costs O(d'^2) operations (the net at each of its
d' + 2 breakpoints and d' + 1 tangent points), about a second at this width on one core;
a wider net is refused with a message instead of running for minutes. Three hinges
suffice (the seed's construction)."""
GRID_WORK = 20_000_000
"""Entries of ``relu(W1 x + b1)`` spent on the cross-check grid: 100,001 points up to
d' = 200, fewer (at least 1,001) for wider nets."""
_CHUNK = 1 << 20
"""Entries of one block of ``relu(W1 x + b1)`` (8 MB in float64): memory is bounded
whatever the width."""


def relu_net(x: np.ndarray, W1, b1, W2, b2) -> np.ndarray:
    """g(x) = sum_i W2_i relu(W1_i x + b1_i) + b2 in float64, a block of x at a time."""
    x = np.asarray(x, dtype=np.float64).ravel()
    W1, b1, W2 = (np.asarray(a, dtype=np.float64).ravel() for a in (W1, b1, W2))
    rows = max(1, _CHUNK // max(1, len(W1)))
    out = np.empty_like(x)
    for start in range(0, len(x), rows):
        block = x[start : start + rows, None]
        out[start : start + rows] = np.maximum(block * W1 + b1, 0.0) @ W2 + b2
    return out


def sup_error(W1, b1, W2, b2) -> tuple[float, float]:
    """(sup over [0, 1] of |g(x) - x^2|, where it is attained).

    g is linear between its breakpoints -b1_i / W1_i, so on each piece x^2 - g is convex
    (its maximum lies at the piece's ends) and g - x^2 is concave (its maximum lies at
    the piece's end or where 2x equals the piece's slope). Checking the breakpoints, 0,
    1 and those tangent points therefore finds the exact sup; a uniform grid (100,001
    points for d' <= 200) is added as a cross-check."""
    W1, b1, W2 = (np.asarray(a, dtype=np.float64) for a in (W1, b1, W2))
    with np.errstate(divide="ignore", invalid="ignore"):
        kinks = -b1 / W1
    kinks = kinks[np.isfinite(kinks) & (kinks > 0) & (kinks < 1)]
    ends = np.unique(np.concatenate([[0.0, 1.0], kinks]))
    values = relu_net(ends, W1, b1, W2, b2)
    slopes = np.diff(values) / np.diff(ends)
    tangents = np.clip(slopes / 2, ends[:-1], ends[1:])
    grid = np.linspace(0.0, 1.0, min(100_001, max(1_001, GRID_WORK // max(1, len(W1)))))
    xs = np.concatenate([ends, tangents, grid])
    err = np.abs(relu_net(xs, W1, b1, W2, b2) - xs**2)
    worst = int(np.argmax(err))
    return float(err[worst]), float(xs[worst])


def interpolation_width(W1, b1, W2, b2) -> float | None:
    """The widest piece of a net that interpolates x^2 (equals it, to within
    :func:`net_roundoff`, at its breakpoints in (0, 1) and at 0 and 1), or None. Such a net is
    the chord of x^2 on every piece, so its sup error is exactly (widest piece)^2 / 4."""
    W1, b1, W2 = (np.asarray(a, dtype=np.float64) for a in (W1, b1, W2))
    with np.errstate(divide="ignore", invalid="ignore"):
        kinks = -b1 / W1
    kinks = kinks[np.isfinite(kinks) & (kinks > 0) & (kinks < 1)]
    ends = np.unique(np.concatenate([[0.0, 1.0], kinks]))
    gap = np.abs(relu_net(ends, W1, b1, W2, b2) - ends**2)
    if np.all(gap <= net_roundoff(W1, b1, W2, b2)):
        return float(np.max(np.diff(ends)))
    return None


def net_roundoff(W1, b1, W2, b2) -> float:
    """Float32 round-off bound of evaluating the net and x^2 on [0, 1] (and of rounding
    its parameters to float32): ``(d' + 8) u32`` times the largest sum of the terms'
    magnitudes, ``sum |W2_i| (|W1_i| + |b1_i|) + |b2| + 1``."""
    W1, b1, W2 = (np.abs(np.asarray(a, dtype=np.float64)) for a in (W1, b1, W2))
    magnitude = float(W2 @ (W1 + b1) + abs(float(b2)) + 1.0)
    return (len(W1) + 8) * unit_roundoff(np.float32) * magnitude


def _width(d_hidden: Any) -> int:
    """d' as an int, or a message saying what d_hidden must be."""
    arr = as_array(d_hidden, "d_hidden")
    if arr.size != 1 or not float(arr.ravel()[0]).is_integer() or arr.ravel()[0] < 1:
        raise CheckFailed(
            f"d_hidden is {d_hidden!r}; it is d', the number of hidden units: a whole "
            "number, at least 1."
        )
    return int(arr.ravel()[0])


def check_relu_net(d_hidden: Any, W1: Any, b1: Any, W2: Any, b2: Any) -> None:
    """Hidden check: d' hidden ReLUs whose sup error on [0, 1] is <= 0.04."""
    width = _width(d_hidden)
    w1 = as_array(W1, "W1").ravel()
    n = len(w1)
    bias = as_array(b1, "b1").ravel()
    w2 = as_array(W2, "W2").ravel()
    c = as_array(b2, "b2")
    if c.size != 1:
        raise CheckFailed(f"b2 has {c.size} entries; the output is one number, so b2 is one.")
    if len(bias) != n or len(w2) != n:
        raise CheckFailed(
            f"W1 has {n} entries, b1 {len(bias)} and W2 {len(w2)}: each of the d' hidden "
            "units has one weight in W1, one bias in b1 and one output weight in W2."
        )
    if width != n:
        raise CheckFailed(
            f"d_hidden is {width} but W1, b1 and W2 have {n} entries each: d_hidden is d', "
            "the number of hidden units, so it equals their length."
        )
    if n > MAX_HIDDEN:
        raise CheckFailed(
            f"The net has {n} hidden units; the grader evaluates nets of at most "
            f"{MAX_HIDDEN:,} (a handful suffice: three hinges, placed well, reach 0.04)."
        )
    for arr, what in ((w1, "W1"), (bias, "b1"), (w2, "W2"), (c, "b2")):
        check_finite(arr, what)
    err, where = sup_error(w1, bias, w2, float(c.ravel()[0]))
    allowed = TARGET_SUP + net_roundoff(w1, bias, w2, float(c.ravel()[0]))
    if err <= allowed:
        return
    hint = ""
    flipped, _ = sup_error(w1, -bias, w2, float(c.ravel()[0]))
    if flipped <= TARGET_SUP + net_roundoff(w1, -bias, w2, float(c.ravel()[0])):
        hint = (
            " With the signs of b1 flipped the net would pass"
            + formula(
                ": a unit with slope a whose kink sits at x = beta is relu(a (x - beta)) = "
                "relu(a x - a beta), so its bias is -a * beta"
            )
            + "."
        )
    else:
        width = interpolation_width(w1, bias, w2, float(c.ravel()[0]))
        if width is not None:
            hint = (
                f" Your net equals x^2 at its breakpoints and at 0 and 1: on a piece of width "
                f"h between them it is the chord of x^2, which lies up to h^2/4 above x^2 (in "
                f"the middle), here {width**2 / 4:.6f} on a piece of width {width:.4g}."
                + formula(
                    " Use pieces at most 0.4 wide (0.4^2/4 = 0.04), or shift the net down so "
                    "that its error is split between above and below."
                )
            )
    raise CheckFailed(
        f"The net's largest error on [0, 1] is {err:.6f}, at x = {where:.4f}; it must be "
        f"at most 0.04 everywhere (checked at every breakpoint of your net)." + hint
    )


# --------------------------------------------------------------------------------------
# Part 2: activation functions and their derivatives


def _swish(x: torch.Tensor, beta: float) -> torch.Tensor:
    return x * torch.sigmoid(beta * x)


REFERENCES: dict[str, Callable[..., torch.Tensor]] = {
    "relu": F.relu,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "swish": _swish,
    "mish": F.mish,
}
"""The oracle functions (torch's own), differentiated by autograd in float64."""

N_OPS = 32
BETAS = (1.0, 0.5, 2.0)

MODERATE = np.concatenate([np.linspace(-10, 10, 401), [-1e-3, 1e-3, 0.25, -0.75]])
LARGE = np.array(
    [-1000.0, -300.0, -100.0, -90.0, -50.0, -30.0, -25.0, -20.0]
    + [20.0, 50.0, 90.0, 100.0, 300.0, 1000.0]
)
"""-20, -25 and -30 lie below -16.6, where exp(x) < u32 = 6e-8 and 1 + exp(x) is 1 in
float32: a mish, swish or sigmoid that adds its small value to 1 returns 0 there."""


SOFTPLUS_THRESHOLD = 20.0
"""torch.nn.functional.softplus(y) returns y itself for y > 20 (its default threshold),
dropping log1p(exp(-y)) < exp(-y): below float32's round-off, not below float64's."""


def _expit(z: np.ndarray) -> np.ndarray:
    """The logistic sigmoid in float64 without overflow (for the magnitudes below)."""
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1 / (1 + e), e / (1 + e))


def _cancelled(name: str, derivative: bool, x: np.ndarray, beta: float) -> np.ndarray:
    """c(x): the magnitudes of the terms that a correct formula for the function subtracts
    from one another (0 where it subtracts nothing), in units of the result."""
    zero = np.zeros_like(x)
    if name == "relu":
        return zero  # max(x, 0) and the step are exact
    if name == "tanh":
        # the textbook (e^2x - 1) / (e^2x + 1), or 2 sigma(2x) - 1, subtracts terms of size 1
        # near 0; the slope 1 - tanh^2 subtracts 1 and tanh^2
        return 1 + np.tanh(x) ** 2 if derivative else 1 + zero
    if name == "sigmoid":
        s = _expit(x)
        return s * (1 + s) if derivative else zero  # s (1 - s): 1 - s for large x
    if name == "swish":
        s = _expit(beta * x)
        # s + beta x s (1 - s): the two terms, and 1 - s for large beta x
        return s + np.abs(beta * x) * s * (1 + s) if derivative else zero
    if name == "mish":
        t = np.tanh(np.logaddexp(0.0, x))
        # t + x (1 - t^2) sigma(x): the two terms, and 1 - t^2 for large x
        return np.abs(t) + np.abs(x) * _expit(x) * (1 + t**2) if derivative else zero
    raise KeyError(name)


def tolerance(
    name: str, derivative: bool, x: np.ndarray, want: np.ndarray, beta: float, dtype
) -> np.ndarray:
    """Largest difference allowed between an answer computed in ``dtype`` and the float64
    oracle ``want`` at the (``dtype``-representable) inputs ``x``:
    ``N (u + t(x)) (|f| + c(x)) + N lam (1 + max(1, beta) |x|)``, an absolute bound plus a
    relative one, ``N u |f|``, so that a small value wrong by a large relative error fails
    even where it is tiny in absolute terms.

    Derivation, with ``u`` the unit round-off of ``dtype`` and ``lam`` its smallest normal
    number:

    - Relative part, ``N u |f|`` with ``N = 32``. Each formula of the course written with
      torch's building blocks (torch.sigmoid, torch.tanh, torch.exp, torch.log1p,
      F.softplus) takes at most 8 operations; each returns its exact result times ``1 + d``
      with ``|d| <= 2u`` (one ulp; tests/ measures torch's float32 and float64 results at a
      quarter of the bound or less). Their exponentials and sigmoids get exact arguments (x,
      -x, beta x with beta a power of 2), and the other steps (log1p(y) at y >= 0, tanh,
      products, quotients, sums of terms of one sign) have relative condition numbers at
      most 1, so each error reaches the result amplified by at most 2: ``8 x 2u x 2 = 32u``.
    - Cancellation, ``N u c(x)``. A subtraction of rounded terms is off relative to the
      terms, not to their difference: ``c`` is the terms' magnitudes (:func:`_cancelled`: 0
      for relu, sigmoid, swish and mish, whose formulas subtract nothing; 1 for tanh, whose
      textbook formula (e^2x - 1) / (e^2x + 1) or 2 sigma(2x) - 1 subtracts terms of size 1
      near 0, and for tanh' = 1 - tanh^2; ``s (1 + s)`` for sigma' = s (1 - s); the terms of
      swish' and mish' with their own ``1 - s`` and ``1 - t^2``).
    - Softplus' threshold, ``t(x)``: F.softplus(y) returns y for y > 20, off by less than
      exp(-y) (:data:`SOFTPLUS_THRESHOLD`), a relative error ``exp(-|x|)`` for |x| > 20 in
      whatever uses it (the sigmoid as exp(-softplus(-x)), say); below u32, not below u64.
    - Underflow, ``N lam (1 + max(1, beta) |x|)``: far in the tails exp(x) or the sigmoid
      may fall below ``lam``; each operation is then off by at most ``lam`` in absolute
      terms (flush-to-zero included), carried to the result by at most ``1 + max(1, beta) |x|``.

    A formula that adds a tiny number to 1 is not among the correct ones: log(1 + exp(x))
    keeps only the digits of exp(x) above 1's precision (none in float32 once x < -16.6),
    so its mish is wrong relative to |f| for negative x, by 100 % below -16.6."""
    u = unit_roundoff(dtype)
    lam = float(np.finfo(dtype).tiny)
    threshold = np.where(np.abs(x) > SOFTPLUS_THRESHOLD, np.exp(-np.abs(x)), 0.0)
    magnitude = np.abs(want) + _cancelled(name, derivative, x, beta)
    return N_OPS * (u + threshold) * magnitude + N_OPS * lam * (1 + max(1.0, beta) * np.abs(x))


def reference(name: str, x: np.ndarray, beta: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(f(x), f'(x)) from torch and autograd in float64."""
    with torch.enable_grad():  # whatever grad mode an answer left behind
        t = torch.tensor(x, dtype=torch.float64, requires_grad=True)
        args = (beta,) if name == "swish" else ()
        y = REFERENCES[name](t, *args)
        (g,) = torch.autograd.grad(y.sum(), t)
    return y.detach().numpy(), g.numpy()


_MISTAKES: dict[str, tuple[tuple[str, Callable[..., np.ndarray]], ...]] = {
    "sigmoid": (
        (
            "That is sigma(x) itself" + formula("; the slope is sigma(x) * (1 - sigma(x))") + ".",
            lambda x, b: 1 / (1 + np.exp(-x)),
        ),
    ),
    "tanh": (
        (
            "That is 1 - tanh(x)" + formula("; the slope is 1 - tanh(x)**2") + ".",
            lambda x, b: 1 - np.tanh(x),
        ),
    ),
    "swish": (
        (
            "The factor beta is missing from the second term"
            + formula(
                ": d/dx [x sigma(beta x)] = sigma(beta x) + beta x sigma(beta x)(1 - sigma(beta x))"
            )
            + ".",
            lambda x, b: (s := 1 / (1 + np.exp(-b * x))) + x * s * (1 - s),
        ),
    ),
    "mish": (
        (
            "Only the first term is there"
            + formula(
                ": by the product rule mish'(x) = tanh(softplus(x)) "
                "+ x (1 - tanh(softplus(x))**2) sigma(x)"
            )
            + ".",
            lambda x, b: np.tanh(np.log1p(np.exp(x))),
        ),
    ),
}

# --- "by hand": what a derivative answer may not use ---------------------------------
#
# Allowed: every torch function that computes a value (torch.sigmoid, torch.tanh,
# torch.exp, torch.log1p, torch.where, Tensor methods, and torch.nn.functional, whose
# activations - softplus, sigmoid, silu, mish, relu - are function values, never
# derivatives; softplus' = sigmoid is for the student to know, not for torch to say).
# Forbidden: whatever differentiates for the student -
#   * torch.autograd (grad, backward, functional.jacobian, forward_ad) and torch.func /
#     functorch (grad, vjp, jvp, jacrev, jacfwd): automatic differentiation;
#   * torch.ops (raw ATen operators): the only reason to reach for them here is a
#     backward kernel such as aten.sigmoid_backward, which is the derivative itself;
#   * initlab, any module: the engine's activation backward helpers are derivatives too.
# Two layers enforce this. Statically, integrity.uses_library finds those modules named
# by the answer's code or by a helper it calls from the notebook. At run time the answer
# is called under torch.no_grad() with a torch-function mode and saved-tensor hooks that
# record any backward kernel or .backward() call, dual numbers (forward mode), autograd
# switched back on, or a graph being recorded; torch.func refuses to run under saved-tensor
# hooks and says so. The run-time layer also catches names reached through attributes
# (torch.autograd.grad, torch.ops.aten.tanh_backward) or getattr.

FORBIDDEN_IN_DERIVATIVES = (
    "torch.autograd",
    "torch.func",
    "torch._functorch",
    "functorch",
    "torch.ops",
    "torch._ops",
    "initlab",
)
_BY_HAND = (
    "Part 2 asks for the derivative by hand: write the formula with torch operations on x "
    "(torch.sigmoid, torch.tanh, torch.exp, torch.nn.functional.softplus ... for the "
    "values you need); automatic differentiation and backward kernels earn no points here."
)


def _forbidden_module(func: Callable) -> str | None:
    used = uses_library(func, FORBIDDEN_IN_DERIVATIVES)
    if used is None:
        return None
    for private, public in (("torch._ops.", ""), ("torch._functorch", "torch.func")):
        if used.startswith(private):
            used = public + used[len(private) :]
    return used


def _call_by_hand(func: Callable, args: tuple, label: str) -> Any:
    """``func(*args)`` under no_grad, refusing any differentiation by torch."""
    with inside(func, "autograd_watch") as evidence:
        try:
            out = call_answer(func, *args, what=label, hint=_BY_HAND)
        except CheckFailed as exc:
            if "saved tensor hooks" in str(exc.__cause__ or ""):
                raise CheckFailed(f"{label} uses torch.func to differentiate. {_BY_HAND}") from None
            if evidence() is not None:  # e.g. torch.autograd.grad on a tensor without a graph
                raise CheckFailed(
                    f"{label} differentiates with torch: {evidence()}. {_BY_HAND}"
                ) from exc
            raise
        if evidence() is not None:
            raise CheckFailed(f"{label} differentiates with torch: {evidence()}. {_BY_HAND}")
    return out


def _call(
    func: Callable,
    x: torch.Tensor,
    name: str,
    beta: float | None,
    what: str,
    by_hand: bool,
    strict: bool = True,
) -> np.ndarray:
    """The answer's output as float64. ``strict`` requires a tensor of x's shape and dtype;
    without it (a finiteness check of an answer whose values already failed, and with them
    its dtype) any numeric output of x's shape is read as it is."""
    args = (x, beta) if name == "swish" else (x,)
    label = f"{what}(x{', beta=' + str(beta) if name == 'swish' else ''}) for {x.dtype} x"
    if by_hand:
        out = _call_by_hand(func, args, label)
    else:  # as the notebook calls it (a value, or a derivative whose values are not graded)
        with torch.set_grad_enabled(torch.is_grad_enabled()):  # restored if the answer flips it
            out = call_answer(func, *args, what=label)
    if not isinstance(out, torch.Tensor):
        raise CheckFailed(f"{label} returned {type(out).__name__}; return a torch tensor.")
    if out.shape != x.shape:
        raise CheckFailed(f"{label} has shape {tuple(out.shape)}; expected {tuple(x.shape)}.")
    if out.dtype != x.dtype and strict:
        raise CheckFailed(
            f"{label} returned {out.dtype}; keep the input's dtype (a float32 input gives "
            "a float32 output)."
        )
    return out.detach().double().numpy()


def _compare(
    name: str,
    got: np.ndarray,
    want: np.ndarray | None,
    xs: np.ndarray,
    beta: float,
    dtype,
    what: str,
) -> None:
    """Finite everywhere, and (unless ``want`` is None) within round-off of ``want``."""
    label = f"{what}{'' if name != 'swish' else f' (beta={beta})'} in {np.dtype(dtype).name}"
    if not np.all(np.isfinite(got)):
        i = int(np.argmax(~np.isfinite(got)))
        raise CheckFailed(
            f"{label} is {got[i]} at x = {xs[i]:g}; it must be finite for every x. An "
            "exponential overflows (exp(89) is inf in float32, exp(710) in float64): "
            "rewrite the formula so that every exp has a non-positive argument, or use "
            "torch.sigmoid / torch.nn.functional.softplus, which are stable."
        )
    if want is None:
        return
    derivative = what.endswith("_grad")
    tol = tolerance(name, derivative, xs, want, beta, dtype)
    bad = ~(np.abs(got - want) <= tol)
    if name == "relu" and derivative:
        bad &= xs != 0  # the slope at the kink may be 0 or 1
    if not np.any(bad):
        return
    i = int(np.argmax(bad))
    hint = ""
    if derivative:
        for message, wrong in _MISTAKES.get(name, ()):
            with np.errstate(all="ignore"):
                w = wrong(xs, beta)
            if np.all(np.abs(got - w) <= tol + 1e-12):
                hint = " " + message
                break
    if not hint:
        hint = _small_values_lost(name, derivative, got, want, xs, beta, dtype, bad)
    # enough digits to show the difference
    digits = 10 if abs(got[i] - want[i]) > 1e-8 * abs(want[i]) else 17
    raise CheckFailed(
        f"{label} is {got[i]:.{digits}g} at x = {xs[i]:g}"
        + expected(f"; expected {want[i]:.{digits}g} (autograd; allowed difference {tol[i]:.3g})")
        + "."
        + hint
    )


SMALL_VALUES_LOST = (
    "Your values are right in absolute terms (within {absolute:.2g}) but not relative to "
    "their size where they are small"
    + expected(
        ": at x = {x:g} yours is off by {error:.2g}, {relative:.2g} of the value {want:.4g} "
        "(allowed: {allowed:.2g} of it)"
    )
    + ". Somewhere the formula loses the digits of a small number: it adds it to 1, subtracts "
    "two nearly equal numbers, or sets it to 0."
)
SMALL_VALUES_FIX = (
    " Compute small values directly: torch.sigmoid, torch.nn.functional.softplus, torch.log1p "
    "and torch.expm1 keep them exact."
)
NAIVE_SOFTPLUS = (
    " It happens when softplus is computed as log(1 + exp(x)): 1 + exp(x) keeps only the digits "
    "of exp(x) above 1's precision, none at all once x is below about -17 in float32 (-37 in "
    "float64), where log(1 + exp(x)) is 0 and mish(x) comes out 0 instead of about x e^x. "
    "Compute softplus with "
    "a form that is exact for very negative x, such as torch.nn.functional.softplus or "
    "torch.log1p(torch.exp(x)), and its tanh with torch.tanh."
)


def _small_values_lost(
    name: str,
    derivative: bool,
    got: np.ndarray,
    want: np.ndarray,
    xs: np.ndarray,
    beta: float,
    dtype,
    bad: np.ndarray,
) -> str:
    """The diagnosis of an answer right in absolute terms but not relative to its small
    values, or "".

    Its condition: every value lies within ``N u (|f| + 1 + max(1, beta) |x|)`` (plus
    underflow) of the oracle, the round-off of a formula whose terms are as large as 1 and
    |beta x| (the absolute tolerance this check used to apply), so the answer fails only the
    relative part of :func:`tolerance`. Such an answer lost a small number's digits (the
    message says how that happens); for mish (and its slope) the message adds how
    softplus computed as log(1 + exp(x)) does it, the usual way."""
    u = unit_roundoff(dtype)
    lam = float(np.finfo(dtype).tiny)
    scale = 1 + max(1.0, beta) * np.abs(xs)
    absolute = N_OPS * u * (np.abs(want) + scale) + N_OPS * lam * scale
    if not np.all(np.abs(got - want) <= absolute):
        return ""
    error = np.abs(got - want)
    with np.errstate(divide="ignore", invalid="ignore"):
        relative = np.where(bad, error / np.abs(want), 0.0)
    k = int(np.nanargmax(relative))
    words = SMALL_VALUES_LOST.format(
        absolute=float(np.max(N_OPS * u * scale)),
        x=xs[k],
        error=error[k],
        relative=relative[k],
        want=want[k],
        allowed=N_OPS * u,
    )
    return " " + words + (NAIVE_SOFTPLUS if name == "mish" else SMALL_VALUES_FIX)


def _check_one(
    name: str, func: Callable, xs_all: np.ndarray, derivative: bool, values: bool = True
) -> None:
    """One function (or derivative) on ``xs_all`` for each beta, in float64 and float32:
    finite, and with ``values`` within round-off of torch; a derivative must be written by
    hand (checked only with ``values``: without, its values are not graded)."""
    what = f"{name}_grad" if derivative else name
    by_hand = derivative and values
    if by_hand:
        used = _forbidden_module(func)
        if used:
            raise CheckFailed(f"Your {what} uses {used}. {_BY_HAND}")
    for beta in BETAS if name == "swish" else (1.0,):
        for dtype in (np.float64, np.float32):
            tdtype = torch.float64 if dtype is np.float64 else torch.float32
            x = torch.tensor(xs_all, dtype=tdtype)
            xs = x.double().numpy()  # the values the student's function received
            got = _call(func, x.clone(), name, beta, what, by_hand, strict=values)
            want = None
            if values:
                want_f, want_df = reference(name, xs, beta)
                want = want_df if derivative else want_f
            _compare(name, got, want, xs, beta, dtype, what)


def _check(
    funcs: dict[str, tuple[Callable, Callable]], xs_all: np.ndarray, derivative: bool
) -> None:
    for name, (f, df) in funcs.items():
        _check_one(name, df if derivative else f, xs_all, derivative)


def check_functions(funcs: dict[str, tuple[Callable, Callable]]) -> None:
    """Hidden check: each activation on -10..10 in float64 and float32."""
    _check(funcs, MODERATE, derivative=False)


def check_derivatives(funcs: dict[str, tuple[Callable, Callable]]) -> None:
    """Hidden check: each derivative on -10..10 in float64 and float32, written by hand."""
    _check(funcs, MODERATE, derivative=True)


def check_large_inputs(funcs: dict[str, tuple[Callable, Callable]]) -> None:
    """Hidden check at |x| from 20 to 1000: every function and derivative is finite, and
    each one that passes its check on -10..10 also agrees with torch there.

    The values of a function that is wrong (or, for a derivative, not written by hand) on
    -10..10 already cost its points in check_functions / check_derivatives; here only its
    finiteness counts, so one mistake is not charged twice. A formula right on -10..10 but
    wrong far out (an input clamped to avoid overflow, say) loses this point only."""
    for name, (f, df) in funcs.items():
        for func, derivative in ((f, False), (df, True)):
            try:
                _check_one(name, func, MODERATE, derivative)
            except CheckFailed:
                right = False
            else:
                right = True
            _check_one(name, func, LARGE, derivative, values=right)


# --------------------------------------------------------------------------------------
# Part 3: the split

NUM_USED, VAL_FRACTION = 12_000, 0.2
TRAIN_IDX = np.arange(9_600)
VAL_IDX = np.arange(9_600, 12_000)


def _indices(value: Any, what: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.cpu().numpy()
    arr = np.asarray(value)
    if arr.dtype == bool:
        raise CheckFailed(f"{what} is a boolean mask; give the indices (e.g. np.arange(...)).")
    arr = as_array(arr, what).ravel()
    if not np.all(arr == np.round(arr)):
        raise CheckFailed(f"{what} holds non-integers; give integer indices into the 60,000.")
    return arr.astype(np.int64)


def check_split(train_idx: Any, val_idx: Any) -> None:
    """Hidden check: exactly the first 9,600 for training and the next 2,400 for
    validation (the last 20 % of the first 12,000 training images), each index once."""
    tr, va = _indices(train_idx, "train_idx"), _indices(val_idx, "val_idx")
    for arr, want, what in ((tr, TRAIN_IDX, "train_idx"), (va, VAL_IDX, "val_idx")):
        if len(np.unique(arr)) != len(arr):
            raise CheckFailed(f"{what} repeats some indices; each image belongs to it once.")
        if arr.size and arr.max() >= NUM_USED:
            raise CheckFailed(
                f"{what} contains index {int(arr.max())}: only the first 12,000 training "
                "images are used, indices 0 to 11,999."
            )
        if len(arr) != len(want):
            raise CheckFailed(
                f"{what} has {len(arr)} indices" + expected(f"; expected {len(want)}") + "."
            )
    if set(tr.tolist()) & set(va.tolist()):
        raise CheckFailed("train_idx and val_idx share images; they must be disjoint.")
    if not np.array_equal(np.sort(va), VAL_IDX):
        sorted_va = np.sort(va)
        if np.array_equal(sorted_va, np.arange(len(VAL_IDX))):
            how = "it is the first 2,400 (indices 0 to 2,399)"
        elif np.all(np.diff(sorted_va) == 1):
            how = f"it is a block from index {int(sorted_va[0]):,} to {int(sorted_va[-1]):,}"
        else:
            how = "its indices are spread over the 12,000, like a random sample"
        raise CheckFailed(
            f"val_idx is not the last 20 % of the first 12,000 images; {how}."
            + expected(
                " The validation images are the last 2,400 of the 12,000: indices 9,600 to 11,999."
            )
        )


# --------------------------------------------------------------------------------------
# Part 4: the student's network and training loop, against the engine

LOOP_LAYERS = (784, 200, 64, 10)
LOOP_BATCH, LOOP_STEPS, LOOP_LR = 16, 4, 0.05
LOOP_RTOL = 1e-9
"""Relative tolerance on the losses and the trained weights (float64 throughout). Round-off:
u = 1.1e-16; a step is 9 matrix products of inner dimension at most 785 (forward, the input
gradients and the weight gradients of three layers), each within gamma_785 = 785 u = 8.7e-14
of the sum of its terms' magnitudes whatever the summation order (Higham, Thm 3.5); four
steps at lr 0.05 compound it by the step map's Lipschitz factor, at most 1 + lr ||H|| < 1.5
on this data (tests/ measures it), so the bound is 4 x 9 x 8.7e-14 x 1.5^4, about 1.6e-11
relative: 1e-9 is 60 times that. Every wrong variant in :data:`LOOP_VARIANTS` moves the
losses by more than 1e-4 relative."""

FLOAT32_WORDS = (
    "it returns float32 tensors, but the tensors you are given are float64: keep their dtype "
    "(no .float(), and no torch.tensor(..., dtype=torch.float32))."
)

Params = list[tuple[torch.Tensor, torch.Tensor]]


def loop_data(seed: int) -> tuple[torch.Tensor, torch.Tensor, Params]:
    """Pixel-like inputs in [0, 1], labels, and initial (W, b) from torch's default
    initialisation U(+-1/sqrt(fan_in)), all float64, drawn from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    n = LOOP_BATCH * LOOP_STEPS
    X = torch.rand(n, LOOP_LAYERS[0], generator=g, dtype=torch.float64)
    y = torch.randint(0, LOOP_LAYERS[-1], (n,), generator=g)
    params = []
    for fan_in, fan_out in zip(LOOP_LAYERS[:-1], LOOP_LAYERS[1:], strict=True):
        bound = fan_in**-0.5
        W = (torch.rand(fan_out, fan_in, generator=g, dtype=torch.float64) * 2 - 1) * bound
        b = (torch.rand(fan_out, generator=g, dtype=torch.float64) * 2 - 1) * bound
        params.append((W, b))
    return X, y, params


def reference_forward(X: torch.Tensor, params: Params, phi: Callable) -> torch.Tensor:
    """Logits: phi after every layer but the last; X holds one example per row."""
    h = X
    for k, (W, b) in enumerate(params):
        h = h @ W.T + b
        if k < len(params) - 1:
            h = phi(h)
    return h


def reference_loop(
    params: Params,
    batches: list[tuple[torch.Tensor, torch.Tensor]],
    forward: Callable,
    lr: float,
    *,
    reduction: str = "mean",
    accumulate: bool = False,
    after: bool = False,
) -> tuple[list[float], Params]:
    """Plain mini-batch SGD on the cross-entropy; the keyword arguments make the classic
    mistakes of :data:`LOOP_VARIANTS`. Returns the losses and the trained (W, b)."""
    leaves = [t.detach().clone().requires_grad_(True) for pair in params for t in pair]
    pairs = [(leaves[i], leaves[i + 1]) for i in range(0, len(leaves), 2)]
    losses = []
    for X, y in batches:
        loss = F.cross_entropy(forward(X, pairs), y, reduction=reduction)
        if not accumulate:
            for t in leaves:
                t.grad = None
        loss.backward()
        with torch.no_grad():
            for t in leaves:
                t -= lr * t.grad
            if after:
                loss = F.cross_entropy(forward(X, pairs), y, reduction=reduction)
        losses.append(float(loss.detach()))
    return losses, [(W.detach(), b.detach()) for W, b in pairs]


LOOP_VARIANTS: dict[str, tuple[dict[str, Any], str]] = {
    "sum": (
        {"reduction": "sum"},
        "your losses match the cross-entropy summed over each batch"
        + formula(
            "; the course minimises the mean over the batch (so a step does not grow with the "
            "batch size): use F.cross_entropy's default reduction='mean'"
        ),
    ),
    "accumulate": (
        {"accumulate": True},
        "your first loss is right and the later ones match SGD whose gradients add up from step "
        "to step" + formula(": set every .grad to None (or zero it) before each backward pass"),
    ),
    "after": (
        {"after": True},
        "your losses are each batch's loss after its update"
        + formula("; record the loss you differentiate, before the step"),
    ),
}
"""The classic mistakes of a training loop, with the diagnosis given when a student's
losses match one of them (within :data:`LOOP_RTOL`)."""

FORWARD_VARIANTS: dict[str, Callable[[Params, torch.Tensor, Callable], torch.Tensor]] = {
    "phi is applied to the output layer too"
    + formula(": the last layer returns logits, without phi"): (
        lambda X, p, phi: phi(reference_forward(X, p, phi))
    ),
    "phi is missing between the layers" + formula(": apply it after each hidden layer"): (
        lambda X, p, phi: reference_forward(X, p, lambda h: h)
    ),
    "the biases are missing" + formula(": add b after each product"): (
        lambda X, p, phi: reference_forward(X, [(W, torch.zeros_like(b)) for W, b in p], phi)
    ),
}
"""Wrong forward passes, each with its diagnosis."""


def _close(got: Any, want: Any) -> bool:
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    return got.shape == want.shape and bool(np.all(np.abs(got - want) <= LOOP_RTOL * np.abs(want)))


def forward_bound(X: torch.Tensor, params: Params) -> np.ndarray:
    """Bound on the round-off of one float64 forward pass, per logit: each product of inner
    dimension n (plus its bias) is within gamma_{n+1} of its terms' magnitudes, phi (1-Lipschitz,
    phi(0) = 0, within 2 ulp) passes errors and magnitudes on unchanged."""
    u = unit_roundoff(np.float64)
    mag, err = X.abs(), torch.zeros_like(X)
    for k, (W, b) in enumerate(params):
        n = W.shape[1] + 1
        mag = mag @ W.abs().T + b.abs()
        err = err @ W.abs().T + n * u / (1 - n * u) * mag
        if k < len(params) - 1:
            err = err + 2 * u * mag
    return err.numpy()


def check_forward(mlp_forward: Callable) -> None:
    """Hidden check: the student's logits against the reference, for ReLU and tanh, on a
    batch of 8 in float64, within twice :func:`forward_bound` (both sides round)."""
    X, _, params = loop_data(11)
    X = X[:8]
    tol = 2 * forward_bound(X, params)
    for name, phi in (("relu", torch.relu), ("tanh", torch.tanh)):
        what = f"mlp_forward(X, params, torch.{name})"
        given = [(W.clone(), b.clone()) for W, b in params]
        raw = call_answer(mlp_forward, X.clone(), given, phi, what=what)
        if getattr(raw, "dtype", None) == torch.float32:
            raise CheckFailed(f"{what}: {FLOAT32_WORDS}")
        got = as_array(raw, what)
        want = reference_forward(X, params, phi).numpy()
        if got.shape != want.shape:
            raise CheckFailed(
                f"{what} has shape {got.shape}; expected {want.shape}: one row of 10 logits "
                "for each row of X (X holds one example per row)."
            )
        bad = np.abs(got - want) > tol
        if not bad.any():
            continue
        for words, variant in FORWARD_VARIANTS.items():
            if np.all(np.abs(got - variant(X, params, phi).numpy()) <= tol):
                raise CheckFailed(f"{what}: {words}.")
        i, j = (int(v) for v in np.argwhere(bad)[0])
        raise CheckFailed(
            f"{what} gives logit [{i}, {j}] = {got[i, j]:.10g}"
            + expected(f"; expected {want[i, j]:.10g}")
            + "."
            + formula(" Each layer computes h @ W.T + b, with phi after every layer but the last.")
        )


def engine_trajectory(name: str, seed: int) -> tuple[Any, Params, list]:
    """The engine's SGD run on :func:`loop_data` (float64): its result, the starting (W, b)
    and the batches in the engine's order (the first permutation of its batch generator)."""
    from initlab import engine

    X, y, params = loop_data(seed)
    (run,) = engine.train(
        [engine.Config(name, lr=LOOP_LR, seed=seed)],
        (X, y),
        num_steps=LOOP_STEPS,
        log_every=1,
        batch_size=LOOP_BATCH,
        layer_sizes=LOOP_LAYERS,
        init_fn=lambda config, sizes, generator: params,
        dtype=torch.float64,
        cache=False,
        progress=False,
    )
    order = torch.randperm(len(X), generator=engine.batch_generator(seed))
    return run, params, [(X[idx], y[idx]) for idx in order.split(LOOP_BATCH)]


def _check_loop_run(sgd_train: Callable, name: str, phi: Callable, seed: int) -> None:
    run, params, batches = engine_trajectory(name, seed)

    def forward(X: torch.Tensor, p: Params) -> torch.Tensor:
        return reference_forward(X, p, phi)

    given = [(W.clone(), b.clone()) for W, b in params]
    what = f"sgd_train(params, batches, forward, lr={LOOP_LR}) with {name}"
    copies = [(X.clone(), y.clone()) for X, y in batches]
    out = call_answer(sgd_train, given, copies, forward, LOOP_LR, what=what)
    for (W, b), (W0, b0) in zip(given, params, strict=True):
        if not (torch.equal(W, W0) and torch.equal(b, b0)):
            raise CheckFailed(
                f"{what} changed the weights it was given. Train copies (W.clone()) and return "
                "them: the caller's starting weights must stay as they were."
            )
    if not (isinstance(out, tuple) and len(out) == 2):
        raise CheckFailed(f"{what} must return (losses, params): the losses and the trained pairs.")
    losses = as_array(out[0], f"the losses of {what}").ravel()
    try:
        pairs = [(W, b) for W, b in out[1]]
    except (TypeError, ValueError):
        pairs = []
    if len(pairs) != len(params):
        raise CheckFailed(f"{what} must return the trained weights as a list of (W, b) pairs.")
    want = run.history["train_loss"]
    if len(losses) != LOOP_STEPS:
        raise CheckFailed(
            f"{what} returned {len(losses)} losses for {LOOP_STEPS} batches: one step and one "
            "loss per batch."
        )
    if not _close(losses, want):
        for kwargs, words in LOOP_VARIANTS.values():
            if _close(losses, reference_loop(params, batches, forward, LOOP_LR, **kwargs)[0]):
                raise CheckFailed(f"{what}: {words}.")
        if any(getattr(t, "dtype", None) == torch.float32 for pair in pairs for t in pair):
            raise CheckFailed(f"{what}: {FLOAT32_WORDS}")
        k = int(np.argmax(~(np.abs(losses - want) <= LOOP_RTOL * np.abs(want))))
        where = (
            "the earlier ones match: look at the update"
            if k
            else "the first batch already differs: look at the loss, the mean cross-entropy of "
            "forward(X, params) against y"
        )
        raise CheckFailed(
            f"{what}: the loss of batch {k + 1} is {losses[k]:.10g}"
            + expected(f"; the engine's is {want[k]:.10g}")
            + f" ({where})."
        )
    for k, (W, b) in enumerate(pairs, start=1):
        for got, key in ((W, f"W{k}"), (b, f"b{k}")):
            got_arr, want_arr = as_array(got, f"the returned {key}"), run.params[key]
            # against the matrix's largest entry: round-off is relative to the magnitudes
            # summed, not to each (possibly tiny) entry
            if got_arr.shape != want_arr.shape or not np.all(
                np.abs(got_arr - want_arr) <= LOOP_RTOL * np.abs(want_arr).max()
            ):
                raise CheckFailed(
                    f"{what}: the losses match the engine's but the returned {key} does not: "
                    "return the weights after the last step, every layer's W and b updated."
                )


def check_training_loop(sgd_train: Callable) -> None:
    """Hidden check: the student's loop, given the reference forward pass, the starting
    weights and the batches, against ``initlab.engine``'s SGD trajectory (float64), for ReLU
    and tanh: the same losses and final weights within :data:`LOOP_RTOL`."""
    for name, phi, seed in (("relu", torch.relu, 3), ("tanh", torch.tanh, 4)):
        _check_loop_run(sgd_train, name, phi, seed)
