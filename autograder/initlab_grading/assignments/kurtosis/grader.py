"""Assignment 5 (the kurtosis lab): references and the checks its hidden tests run.

Instructor-only. Notation follows the paper (seed 001): constant width ``w``, leaky ReLU
``phi_a``, ``y^(l) = W^(l) phi_a(y^(l-1))``, He initialization with
``Var(W) = 2 / (w (a^2 + 1))`` and weight kurtosis ``kappa_w``; ``k^(l) = [kappa_l, c_l, 1]``
with ``c_l = Cov[(y_i)^2, (y_j)^2]`` and ``var_y`` the (preserved) variance ``v`` of every entry.

Tolerances:

- Deterministic formulas: an entry of A takes at most 10 rounded operations, so ``64 u``
  relative in float32 (``u`` float32's unit round-off) bounds a correct answer. A is not
  entrywise positive (``A[1, 2] = -v^2 / w``) and ``c_l`` may be negative or cancel to
  nearly 0, so the recursion is judged against the magnitudes that enter it:
  ``M^(l) = |A|^l |k^(0)|`` (``|A|`` entrywise). Each layer multiplies by an A whose entries
  carry relative errors of at most 10 u, in a sum of 3 products (3 u), so to first order
  the computed ``k^(l)`` is within ``(13 l + 1) u M^(l)`` of the exact one, and
  repeated squaring (``matrix_power``) stays within the same bound; the check allows
  ``16 (l + 1) u M^(l)``.
- Monte Carlo comparisons: each compared statistic is a mean over independent draws whose
  standard error is estimated from the same draws, within a threshold from
  :func:`skew_adjusted_z`: the test cell's false-failure budget 1e-6 split evenly over its
  comparisons (union bound), widened for the statistic's skewness (a bound stated next to
  each check). The recursion is compared with simulated networks through conditional
  moments that average the last layer's weights out exactly
  (:func:`simulate_conditional_moments`), at layers 1 and 2 only, where their skewness
  is at most 8.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from initlab.checks import CheckFailed, as_array, call_answer, check_finite, unit_roundoff
from initlab_grading.checking.calls import call_rows
from initlab_grading.checking.reveal import expected, formula
from initlab_grading.checking.substitute import graded_with_references
from initlab_grading.checking.thresholds import CELL_FALSE_FAILURE, skew_adjusted_z

CHECKS_OUTSIDE_KERNEL = True
"""The test cells run in the grading worker, the kernel answering for the notebook's names
(initlab_grading.grading.remote)."""

# --------------------------------------------------------------------------------------
# References


def transition_matrix(w: int, a: float, kappa_w: float, var_y: float = 1.0) -> np.ndarray:
    """The matrix A of Proposition 3: k^(l+1) = A k^(l)."""
    v2 = var_y**2
    r = 2 * (a**4 + 1) / (w * (a**2 + 1) ** 2)
    return np.array(
        [
            [r * kappa_w, 3 * (w - 1) / (w * v2), 3 * (w - 1) / w],
            [r * v2, (w - 1) / w, -v2 / w],
            [0.0, 0.0, 1.0],
        ]
    )


def kurtosis_recursion(
    kappa0: float, c0: float, depth: int, w: int, a: float, kappa_w: float, var_y: float = 1.0
) -> np.ndarray:
    """Rows k^(0), ..., k^(depth), each [kappa, c, 1]."""
    A = transition_matrix(w, a, kappa_w, var_y)
    rows = [np.array([kappa0, c0, 1.0])]
    for _ in range(depth):
        rows.append(A @ rows[-1])
    return np.array(rows)


def magnitudes(
    kappa0: float, c0: float, depth: int, w: int, a: float, kappa_w: float, var_y: float = 1.0
) -> np.ndarray:
    """Rows ``|A|^l |k^(0)|``, l = 0..depth: the magnitude of the terms that add up to each
    entry of the recursion (the scale of its round-off)."""
    A = np.abs(transition_matrix(w, a, kappa_w, var_y))
    rows = [np.abs(np.array([kappa0, c0, 1.0]))]
    for _ in range(depth):
        rows.append(A @ rows[-1])
    return np.array(rows)


def growth_rate(w: int, a: float, kappa_w: float) -> float:
    """Largest eigenvalue of A (Lemma 4): the per-layer growth factor of the kurtosis."""
    return float(np.max(np.linalg.eigvals(transition_matrix(w, a, kappa_w)[:2, :2]).real))


def estimate_kappa_c(Y: np.ndarray) -> tuple[float, float]:
    """Kurtosis and covariance of squares of a He random vector from draws Y (N, w):
    pooled over entries (they are identically distributed) and over pairs."""
    Y = np.asarray(Y, dtype=np.float64)
    sq = Y**2
    v2 = sq.mean() ** 2
    kappa = float((sq**2).mean() / v2)
    w = Y.shape[1]
    row = sq.sum(axis=1)
    pairs = (row**2 - (sq**2).sum(axis=1)) / (w * (w - 1))  # mean of y_i^2 y_j^2, i != j
    return kappa, float(pairs.mean() - v2)


WEIGHT_DISTRIBUTIONS = {"bernoulli": 1.0, "uniform": 1.8, "normal": 3.0}


def sample_weights(kind: str, shape: tuple[int, ...], std: float, gen: torch.Generator):
    """i.i.d. symmetric zero-mean weights of the given std and kind."""
    if kind == "normal":
        return torch.randn(shape, generator=gen, dtype=torch.float64) * std
    if kind == "uniform":
        return (torch.rand(shape, generator=gen, dtype=torch.float64) * 2 - 1) * std * 3**0.5
    if kind == "bernoulli":
        return (torch.randint(0, 2, shape, generator=gen).double() * 2 - 1) * std
    raise ValueError(kind)


# --------------------------------------------------------------------------------------
# Checks


def _rel(got: float, want: float, ops: int) -> bool:
    return abs(got - want) <= ops * unit_roundoff() * max(abs(want), 1e-300)


TRANSITION_CASES = (
    (10, 0.0, 3.0, 1.0),
    (2, 0.0, 1.0, 1.0),
    (7, 0.2, 1.8, 2.5),
    (50, 0.5, 3.0, 0.3),
    (3, 1.0, 1.0, 1.0),
)


def check_transition_matrix(student: Callable) -> None:
    for w, a, kw, s2 in TRANSITION_CASES:
        what = f"transition_matrix(w={w}, a={a}, kappa_w={kw}, var_y={s2})"
        got = as_array(call_answer(student, w, a, kw, s2, what=what), what, shape=(3, 3))
        want = transition_matrix(w, a, kw, s2)
        tol = 64 * unit_roundoff() * np.abs(want)
        bad = ~(np.abs(got - want) <= tol)
        if np.any(bad):
            i, j = (int(v) for v in np.argwhere(bad)[0])
            hint = ""
            if i == 0 and j == 0 and _rel(got[0, 0], want[0, 0] * w, 64):
                hint = (
                    " The fourth-moment term has a factor 1/w"
                    + formula(": E[W^4] = kappa_w Var(W)^2")
                    + "."
                )
            elif abs(got[i, j] - want[j, i]) <= tol[j, i] + 1e-12 and i != j:
                hint = (
                    " The matrix looks transposed"
                    + formula(": row 1 gives kappa_(l+1), row 2 gives c_(l+1)")
                    + "."
                )
            elif (i, j) in ((0, 1), (0, 2)) and _rel(got[i, j], want[i, j] * w / (w - 1), 64):
                hint = (
                    " Here the pairs were counted as w^2"
                    + formula(
                        ": there are w (w - 1) ordered pairs i != j, so the factor is 3 (w - 1) / w"
                    )
                    + "."
                )
            elif (i, j) in ((0, 1), (1, 0), (1, 2)) and s2 != 1:
                hint = (
                    " Check the powers of var_y" + formula(": A uses its square, var_y ** 2") + "."
                )
            raise CheckFailed(
                f"{what}: entry [{i}, {j}] is {got[i, j]:.6g}"
                + expected(f"; expected {want[i, j]:.6g}")
                + f".{hint}"
            )


EARLIER_ANSWERS = {"transition_matrix": transition_matrix}
"""The earlier answer the recursion and the growth rate may call: test_transition_matrix
grades the student's own, and the later checks run with the reference in its place, so a
wrong entry of A costs that cell only."""


def _transposed_recursion(
    kappa0: float, c0: float, depth: int, w: int, a: float, kappa_w: float, var_y: float
) -> np.ndarray:
    """The recursion computed as row @ A: the slip of multiplying by A's transpose."""
    A = transition_matrix(w, a, kappa_w, var_y)
    rows = [np.array([kappa0, c0, 1.0])]
    for _ in range(depth):
        rows.append(rows[-1] @ A)
    return np.array(rows)


@graded_with_references(EARLIER_ANSWERS)
def check_recursion(student: Callable) -> None:
    for w, a, kw, s2 in TRANSITION_CASES:
        for kappa0, c0, depth in ((3.0, 0.0, 6), (6.0, 0.4, 1), (1.8, -0.2, 0)):
            what = f"kurtosis_recursion({kappa0}, {c0}, depth={depth}, w={w}, a={a}, ...)"
            got = call_answer(student, kappa0, c0, depth, w, a, kw, s2, what=what)
            want = kurtosis_recursion(kappa0, c0, depth, w, a, kw, s2)
            got = as_array(got, what, shape=(None, 3))
            if got.shape != want.shape:
                raise CheckFailed(
                    f"{what} has {len(got)} rows"
                    + expected(f"; expected depth + 1 = {depth + 1}: k^(0), the input, first")
                    + "."
                )
            tol = (
                16
                * unit_roundoff()
                * (np.arange(depth + 1)[:, None] + 1)
                * magnitudes(kappa0, c0, depth, w, a, kw, s2)
            )
            bad = ~(np.abs(got - want) <= tol)
            if np.any(bad):
                layer, col = (int(v) for v in np.argwhere(bad)[0])
                name = ["kappa", "c", "the constant 1"][col]
                hint = formula(" Each row is A times the row before it.")
                transposed = _transposed_recursion(kappa0, c0, depth, w, a, kw, s2)
                if np.all(np.abs(got - transposed) <= tol):
                    hint = (
                        formula(" Each new row is A @ k, A times the column k = [kappa, c, 1];")
                        + " k @ A (the row times A) multiplies by A's transpose."
                    )
                raise CheckFailed(
                    f"{what}: {name} at layer {layer} is {got[layer, col]:.6g}"
                    + expected(f"; expected {want[layer, col]:.6g}")
                    + f".{hint}"
                )


@graded_with_references(EARLIER_ANSWERS)
def check_growth_rate(student: Callable) -> None:
    for w, a, kw, _ in TRANSITION_CASES:
        what = f"growth_rate(w={w}, a={a}, kappa_w={kw})"
        got = float(as_array(call_answer(student, w, a, kw, what=what), what, shape=()))
        want = growth_rate(w, a, kw)
        if not _rel(got, want, 256):
            hint = ""
            block = transition_matrix(w, a, kw)[:2, :2]
            if _rel(got, 1.0, 256):
                hint = (
                    " 1 is the eigenvalue of the constant row"
                    + formula(
                        "; the growth rate is the largest eigenvalue of the top-left 2 x 2 block, "
                        "which exceeds 1 (Lemma 4)"
                    )
                    + "."
                )
            elif _rel(got, float(np.linalg.norm(block, 2)), 256):
                hint = (
                    " That is the spectral norm (largest singular value) of the 2 x 2 block. "
                    "The block is not symmetric, so it differs from the largest eigenvalue"
                    + formula(", which is the growth rate")
                    + "."
                )
            raise CheckFailed(
                f"{what} is {got:.6g}" + expected(f"; expected {want:.6g}") + f".{hint}"
            )


def he_inputs(kind: str, num_draws: int, w: int, gen: torch.Generator):
    """Draws of a He random input with variance 1 and known kurtosis and covariance of
    squares: returns (X of shape (num_draws, w), kappa0, c0).

    - ``sphere``: ``x = sqrt(w) g / |g|`` with ``g`` standard normal, uniform on the sphere of
      radius ``sqrt(w)``. ``x_i^2 / w`` is Beta(1/2, (w - 1)/2), so ``E[x_i^4] = 3w / (w + 2)``,
      and ``sum_i x_i^2 = w`` gives ``E[x_i^2 x_j^2] = w / (w + 2)``: ``kappa0 = 3w / (w + 2)``,
      ``c0 = -2 / (w + 2)`` (negative).
    - ``scale-mixture``: ``x = s e`` with ``e`` i.i.d. random signs and one scale per draw,
      ``s^2 = 1/2`` or ``3/2`` with probability 1/2: ``E[s^2] = 1``, ``E[s^4] = 5/4``, so
      ``kappa0 = 5/4`` and ``c0 = Var(s^2) = 1/4`` (positive).

    Both are bounded, so the simulated outputs have light tails compared with a Laplace
    input, and every coordinate's sign can be flipped without changing the distribution
    (what Lemma 2 needs).
    """
    if kind == "sphere":
        g = torch.randn(num_draws, w, generator=gen, dtype=torch.float64)
        return g * (math.sqrt(w) / g.norm(dim=1, keepdim=True)), 3 * w / (w + 2), -2 / (w + 2)
    if kind == "scale-mixture":
        signs = torch.randint(0, 2, (num_draws, w), generator=gen).double() * 2 - 1
        s2 = torch.randint(0, 2, (num_draws, 1), generator=gen).double() + 0.5
        return signs * s2.sqrt(), 1.25, 0.25
    raise ValueError(f"unknown input kind {kind!r}: use 'sphere' or 'scale-mixture'")


def simulate_conditional_moments(
    w: int, a: float, weight_kind: str, input_kind: str, depth: int, num_draws: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per layer l = 1..depth and per simulated network (one draw of the input and of every
    weight matrix below layer l): the fourth moment of an output and the covariance of two
    squared outputs of layer l, averaged exactly over layer l's own weights.

    Given ``phi = phi_a(y^(l-1))``, the entries of row i of ``W^(l)`` are i.i.d., zero-mean,
    symmetric, with variance ``v`` and kurtosis ``kappa_w``, so in the expansion of
    ``y_i = sum_k W_ik phi_k`` only even powers survive:

    - ``E[y_i^4 | phi] = v^2 (kappa_w sum_k phi_k^4 + 3 sum_(j != k) phi_j^2 phi_k^2)
      = v^2 ((kappa_w - 3) sum_k phi_k^4 + 3 (sum_k phi_k^2)^2)``;
    - rows i != j are independent given phi: ``E[y_i^2 y_j^2 | phi] = (v sum_k phi_k^2)^2``,
      so ``E[y_i^2 y_j^2 | phi] - 1`` (the entries' variance is 1) has mean ``c_l``.

    Their means over networks are ``kappa_l`` and ``c_l`` (tower rule), with far lighter
    tails than ``y^4`` itself: the heavy tail of the last layer is averaged out exactly.
    The layers below are simulated; for Gaussian weights ``W phi`` is drawn directly as
    i.i.d. ``N(0, v |phi|^2)`` entries (its exact distribution given phi), which is
    cheaper than drawing W.
    Returns ``[(fourth, cov), ...]``, one pair of arrays (num_draws,) per layer, and the
    input's ``(kappa0, c0)`` is available from :func:`he_inputs`.
    """
    gen = torch.Generator().manual_seed(seed)
    kappa_w = WEIGHT_DISTRIBUTIONS[weight_kind]
    v = 2 / (w * (a * a + 1))
    out = [([], []) for _ in range(depth)]
    for start in range(0, num_draws, MC_CHUNK):
        n = min(MC_CHUNK, num_draws - start)
        y, _, _ = he_inputs(input_kind, n, w, gen)
        for layer in range(depth):
            phi = torch.nn.functional.leaky_relu(y, a)
            p2 = (phi**2).sum(dim=1)
            p4 = (phi**4).sum(dim=1)
            out[layer][0].append((v * v * ((kappa_w - 3) * p4 + 3 * p2**2)).numpy())
            out[layer][1].append((v * v * p2**2 - 1.0).numpy())
            if layer + 1 >= depth:
                break
            if weight_kind == "normal":  # W phi for Gaussian W: i.i.d. N(0, v |phi|^2) entries
                g = torch.randn(n, w, generator=gen, dtype=torch.float64)
                y = g * (v * p2).sqrt().unsqueeze(1)
            else:
                W = sample_weights(weight_kind, (n, w, w), math.sqrt(v), gen)
                y = (W * phi.unsqueeze(1)).sum(dim=2)
    return [(np.concatenate(f), np.concatenate(c)) for f, c in out]


MC_CHUNK = 50_000
MC_DRAWS = 200_000
MC_CASES = (  # width, slope a, weight distribution, input, depth
    (2, 0.3, "uniform", "sphere", 2),
    (3, 0.7, "bernoulli", "sphere", 2),
    (5, 0.0, "uniform", "sphere", 2),
    (8, 0.0, "normal", "sphere", 2),
    (3, 0.7, "bernoulli", "scale-mixture", 2),
    (4, 0.0, "normal", "scale-mixture", 1),
)
MC_SKEWNESS = {1: 2.5, 2: 8.0}
"""Bounds on the skewness of the per-network statistics of :func:`simulate_conditional_moments`
at layers 1 and 2 for :data:`MC_CASES`; measured with 4,000,000 networks per case: at most
1.9 at layer 1 and 7.1 at layer 2. Deeper layers are not compared: at layer 3 the skewness
reaches 9 to 53 in these cases (the eighth moments explode with depth as the fourth do),
and the normal approximation of a mean of such draws is poor at any affordable size.
(The check this replaced compared ``y^4`` of fully simulated networks with Laplace inputs
up to layer 3, skewness about 67, and failed a correct answer for about 1 seed in 20.)"""


@graded_with_references(EARLIER_ANSWERS)
def check_recursion_against_simulation(
    student_rec: Callable,
    *,
    num_draws: int = MC_DRAWS,
    seed: int = 0,
    cases=MC_CASES,
    false_failure: float = CELL_FALSE_FAILURE,
) -> None:
    """The student's recursion against simulated networks at layers 1 and 2.

    For every case and layer, kappa_l and c_l are compared with the mean over
    ``num_draws`` simulated networks of the conditional moments of
    :func:`simulate_conditional_moments`, within ``z`` estimated standard errors; ``z``
    comes from :func:`skew_adjusted_z` with the cell's budget ``false_failure`` split
    evenly over all comparisons (union bound) and the layer's skewness bound
    :data:`MC_SKEWNESS`. A correct answer therefore fails with probability at most
    ``false_failure`` (to leading order; ``tests/test_kurtosis_grading.py`` runs the
    reference over 200 seeds). Measured calibration: over 2,000 seeds at 50,000 networks,
    the check at a nominal false-failure probability of 10 %, 1 % and 0.1 % failed the
    reference 3.8 %, 0.45 % and 0.05 % of the time (with the plain normal quantile:
    4.7 %, 0.65 %, 0.15 %).
    """
    comparisons = sum(2 * case[-1] for case in cases)
    for index, (w, a, kind, inputs, depth) in enumerate(cases):
        _, kappa0, c0 = he_inputs(inputs, 1, w, torch.Generator().manual_seed(0))
        what = f"kurtosis_recursion({kappa0:.4g}, {c0:.4g}, {depth}, w={w}, a={a}, ...)"
        rec = as_array(
            call_answer(
                student_rec, kappa0, c0, depth, w, a, WEIGHT_DISTRIBUTIONS[kind], 1.0, what=what
            ),
            what,
            shape=(depth + 1, 3),
        )
        sims = simulate_conditional_moments(
            w, a, kind, inputs, depth, num_draws, seed=seed * 1000 + index
        )
        for layer, (fourth, cov) in enumerate(sims, start=1):
            z = skew_adjusted_z(false_failure / comparisons, num_draws, MC_SKEWNESS[layer])
            for sample, predicted, name in (
                (fourth, rec[layer, 0], "kappa"),
                (cov, rec[layer, 1], "c"),
            ):
                est = float(sample.mean())
                se = float(sample.std(ddof=1)) / math.sqrt(num_draws)
                if not abs(predicted - est) <= z * se:
                    raise CheckFailed(
                        f"For width {w}, slope a = {a}, {kind} weights and inputs with kappa0 = "
                        f"{kappa0:.4g}, c0 = {c0:.4g} (variance 1), your recursion gives {name} = "
                        f"{predicted:.4g} at layer {layer}"
                        + expected(
                            f", but {num_draws} simulated networks give {est:.4g} +- {se:.2g} "
                            "(standard error)"
                        )
                        + "."
                    )


SYNTHETIC_SCALE = 1.5


def synthetic_he_vectors(num_draws: int, w: int, seed: int) -> tuple[np.ndarray, float, float]:
    """He random vectors with known kurtosis and covariance of squares: y = 1.5 s g with
    g i.i.d. standard normal and one random scale per draw, s^2 = 0.5 + Exp(mean 0.5), so
    E[s^2] = 1 and E[s^4] = 1.25. Returns (Y, kappa, c): kappa = 3 E[s^4] / E[s^2]^2 =
    3.75 and c = 1.5^4 (E[s^4] - E[s^2]^2) = 1.265625 (variance 2.25)."""
    rng = np.random.default_rng(seed)
    s2 = 0.5 + rng.exponential(0.5, size=num_draws)
    Y = SYNTHETIC_SCALE * rng.standard_normal((num_draws, w)) * np.sqrt(s2)[:, None]
    return Y, 3 * 1.25, SYNTHETIC_SCALE**4 * 0.25


def check_estimate_kappa_c(student: Callable) -> None:
    """On synthetic He vectors with known kappa and c: the mean of the student's estimates
    over 20 independent batches must lie within t standard errors of the truth, the
    standard error estimated from the spread over the batches (so any consistent
    estimator passes). The statistic is t-distributed with 19 degrees of freedom (each
    batch estimate is approximately normal by the central limit theorem, 20,000 draws)."""
    from scipy import stats

    num_batches, w = 20, 6
    t_quantile = float(stats.t.isf(CELL_FALSE_FAILURE / 4, df=num_batches - 1))
    ests = []
    for b in range(num_batches):
        Y, kappa, c = synthetic_he_vectors(20_000, w, seed=500 + b)
        got = as_array(
            call_answer(student, Y.copy(), what="estimate_kappa_c(Y)"),
            "estimate_kappa_c(Y)",
            shape=(2,),
        )
        ests.append(got)
    ests = np.array(ests)
    mean, se = ests.mean(axis=0), ests.std(axis=0, ddof=1) / math.sqrt(num_batches)
    v2 = SYNTHETIC_SCALE**4
    for idx, (name, truth) in enumerate((("kappa", kappa), ("c", c))):
        if abs(mean[idx] - truth) > t_quantile * se[idx] + 1e-12:
            hint = ""
            with_diagonal = ((w - 1) * (c + v2) + kappa * v2) / w - v2
            if name == "kappa" and abs(mean[idx] - truth * v2) < 0.05 * truth * v2:
                hint = (
                    " That is E[y^4]"
                    + formula("; the kurtosis divides it by the squared variance, v^2")
                    + "."
                )
            elif name == "kappa" and abs(mean[idx] - (truth - 3)) <= t_quantile * se[idx]:
                hint = (
                    " That is the excess kurtosis, kappa - 3 (scipy.stats.kurtosis's default, "
                    "fisher=True)"
                    + formula("; the recursion needs the kurtosis itself, E[y^4] / v^2")
                    + "."
                )
            elif name == "c" and abs(mean[idx] - with_diagonal) <= t_quantile * se[idx]:
                hint = (
                    " The average of y_i^2 y_j^2 includes the pairs i = j (the y_i^4 terms)"
                    + formula("; average over i != j only")
                    + "."
                )
            elif name == "c" and abs(mean[idx] - (truth + v2)) < 0.05 * (truth + v2):
                hint = (
                    " That is E[y_i^2 y_j^2]"
                    + formula("; the covariance subtracts the squared variance, v^2")
                    + "."
                )
            raise CheckFailed(
                f"On He vectors with known {name}"
                + expected(f" = {truth:.4g}")
                + f" (variance {SYNTHETIC_SCALE**2:g}), estimate_kappa_c gives {mean[idx]:.4g} on "
                f"average over {num_batches} batches (standard error {se[idx]:.2g}).{hint}"
            )


HE_MIX = np.array(
    [
        [1.0, 0.0, 0.0, 0.0, 0.0],
        [1.0, 1.0, 0.0, 0.0, 0.0],
        [0.5, 0.0, 2.0, 0.0, 0.0],
        [0.0, 0.0, 1.0, 1.0, 0.0],
        [1.0, 1.0, 1.0, 1.0, 1.0],
    ]
)
HE_OFFSET = np.array([1.0, -0.5, 0.0, 2.0, 0.5])
HE_P = 0.2
HE_CALLS = 60_000


def he_test_inputs(num: int, rng: np.random.Generator) -> np.ndarray:
    """Random inputs for Proposition 2: ``x = m + B e`` with ``e`` five i.i.d.
    Bernoulli(0.2) variables, a fixed mixing matrix B and offset m, so the entries of x
    are skewed, correlated and have nonzero, unequal means and variances."""
    e = (rng.random((num, 5)) < HE_P).astype(np.float64)
    return HE_OFFSET + e @ HE_MIX.T


def he_norm_moments() -> tuple[float, float, float]:
    """Exact ``E[R], E[R^2], E[R^3]`` of ``R = ||x||^2`` for :func:`he_test_inputs`, by
    summing over the 32 values of ``e``."""
    moments = np.zeros(3)
    for bits in range(32):
        e = np.array([(bits >> k) & 1 for k in range(5)], dtype=np.float64)
        prob = HE_P ** e.sum() * (1 - HE_P) ** (5 - e.sum())
        r = float(np.sum((HE_OFFSET + HE_MIX @ e) ** 2))
        moments += prob * np.array([r, r * r, r**3])
    return tuple(float(m) for m in moments)


HE_WEIGHT_VARIANCES = {
    1 / 12: "W uniform on [-1/2, 1/2] (torch.rand(...) - 0.5)",
    1 / 3: "W uniform on [-1, 1]",
    2 / 5: "W scaled by He's sqrt(2 / w), w = 5",
    1 / 5: "W scaled by 1 / sqrt(w), w = 5",
}
"""Variances of W's entries that the usual slips give, with how they arise (w = 5 inputs)."""


def _weight_variance_hint(ratio: float, allowed: float) -> str:
    """The hint for an entry whose variance is ``ratio`` E||x||^2 instead of E||x||^2: given
    x, z_i = sum_j W_ij x_j has variance E||x||^2 Var(W_ij) for i.i.d. zero-mean W (the mean
    checks, run first, passed), so ``ratio`` estimates the variance of W's entries, within
    ``allowed``; a slip of :data:`HE_WEIGHT_VARIANCES` within it is named."""
    named = next(
        (how for var, how in HE_WEIGHT_VARIANCES.items() if abs(ratio - var) <= allowed), ""
    )
    return (
        f" That is E||x||^2 times {ratio:.3g}: W's entries have variance about {ratio:.3g}"
        + (f", as with {named}" if named else "")
        + formula(
            "; they must be standard normal (variance 1, torch.randn), so that E[z_i^2] = E||x||^2"
        )
        + "."
    )


def _same_matrix_hint(X: np.ndarray, Z: np.ndarray) -> str:
    """The hint for outputs that are one fixed linear map of the inputs (the same W on every
    call), or "": the least-squares W of Z = X W^T leaves, for every call, a residual within
    the float32 round-off of a 5-term product (8 u32 times sum_j |W_ij x_j|, a factor 8 over
    gamma_5 for the fit), which a new W per call (residuals of the size of z) never does."""
    W, *_ = np.linalg.lstsq(X, Z, rcond=None)
    residual = np.abs(Z - X @ W)
    bound = 8 * unit_roundoff(np.float32) * (np.abs(X) @ np.abs(W))
    if np.all(residual <= bound):
        return (
            " Your outputs are one fixed linear map of x, the same W on every call (drawn "
            "once, or from a generator re-seeded on every call)."
        )
    return ""


def check_he_transform(student: Callable) -> None:
    """Proposition 2 with a random input: each of 60,000 calls gets a fresh float32 x from
    :func:`he_test_inputs` (skewed, correlated, nonzero mean; its entries are multiples of
    1/2 between -1/2 and 9/2, exact in float32) and the generator. For a
    correct answer z = W x (W standard normal, new on every call) every entry has mean 0,
    variance ``E||x||^2``, zero third moment, and every pair of entries zero covariance,
    although the entries are dependent (``Cov[z_i^2, z_j^2] = Var(||x||^2) > 0``).

    Each of the 25 comparisons (5 means, 5 variances, 10 covariances, 5 third moments) is
    a mean over the calls within ``z`` estimated standard errors, the cell's budget 1e-6
    split evenly (union bound). Means, covariances and third moments are means of
    symmetric variables (flip the sign of row i of W), so the normal quantile applies;
    ``z_i^2`` is skewed: given x it is ``||x||^2`` times a chi-square with 1 degree of
    freedom, so ``E[z^2] = E R``, ``E[z^4] = 3 E R^2``, ``E[z^6] = 15 E R^3`` with
    ``R = ||x||^2`` (exact, :func:`he_norm_moments`), and the threshold is
    :func:`skew_adjusted_z` with that skewness.
    """
    rng = np.random.default_rng(77)
    X = he_test_inputs(HE_CALLS, rng)
    gen = torch.Generator().manual_seed(77)
    what = "he_transform(x, generator)"
    inputs = torch.tensor(X, dtype=torch.float32)  # the visible test's dtype
    Z = np.empty_like(X)
    for i, z in enumerate(call_rows(student, inputs, gen, what=what)):
        Z[i] = as_array(z, what, shape=(5,))
    check_finite(Z, f"the outputs of {what}")
    r1, r2, r3 = he_norm_moments()
    m2, m4, m6 = r1, 3 * r2, 15 * r3
    skew_sq = (m6 - 3 * m4 * m2 + 2 * m2**3) / (m4 - m2**2) ** 1.5
    comparisons = []
    for i in range(5):
        comparisons.append((f"mean of entry {i}", Z[:, i], 0.0, 0.0))
        comparisons.append(
            (
                f"variance of entry {i}" + formula(" (should be E||x||^2)"),
                Z[:, i] ** 2,
                r1,
                skew_sq,
            )
        )
        comparisons.append(
            (f"third moment of entry {i}" + expected(" (0 by symmetry)"), Z[:, i] ** 3, 0.0, 0.0)
        )
        for j in range(i + 1, 5):
            comparisons.append((f"covariance of entries {i} and {j}", Z[:, i] * Z[:, j], 0.0, 0.0))
    per = CELL_FALSE_FAILURE / len(comparisons)
    for name, sample, want, skew in comparisons:
        z = skew_adjusted_z(per, HE_CALLS, skew)
        est, se = float(sample.mean()), float(sample.std(ddof=1)) / math.sqrt(HE_CALLS)
        if not abs(est - want) <= z * se:
            if name.startswith("variance"):
                hint = _weight_variance_hint(est / r1, z * se / r1)
            else:
                hint = _same_matrix_hint(X, Z) + formula(
                    " Draw a new W with i.i.d. standard normal entries from the generator on "
                    "every call and return W @ x."
                )
            raise CheckFailed(
                f"Over {HE_CALLS} calls of he_transform, each on a new random x (skewed, "
                "correlated, nonzero mean"
                + expected(f"; E||x||^2 = {r1:.4g}")
                + f"), the {name} is {est:.4g}"
                + expected(f"; expected {want:.4g} (standard error {se:.2g})")
                + f".{hint}"
            )
