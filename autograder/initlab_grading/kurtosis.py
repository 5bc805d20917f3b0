"""Assignment 5 (the kurtosis lab): references and the checks its hidden tests run.

Instructor-only. Notation follows the paper (seed 001): constant width ``w``, leaky ReLU
``phi_a``, ``y^(l) = W^(l) phi_a(y^(l-1))``, He initialization with
``Var(W) = 2 / (w (a^2 + 1))`` and weight kurtosis ``kappa_w``; ``k^(l) = [kappa_l, c_l, 1]``
with ``c_l = Cov[(y_i)^2, (y_j)^2]`` and ``sigma2`` the (preserved) variance of every entry.

Tolerances:

- Deterministic formulas: a few dozen rounded operations, so ``64 u`` relative in float32
  (with ``u`` float32's unit round-off) bounds a correct answer; the recursion compounds
  ``depth`` matrix products whose entries are positive, so it gets ``64 u (depth + 1)``.
- Monte Carlo comparisons: every compared statistic is a plain mean over independent draws
  (``E[y^4]``, ``E[y_i^2 y_j^2]``, a sample variance's square deviation) whose standard error
  is estimated from the same draws; each allows ``z_score(p)`` standard errors with ``p``
  the test cell's false-failure budget 1e-6 divided by its number of comparisons
  (union bound; asymptotic, at least 50,000 draws).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from initlab.checks import CheckFailed, as_array, call_answer, unit_roundoff, z_score

CELL_FALSE_FAILURE = 1e-6

# --------------------------------------------------------------------------------------
# References


def transition_matrix(w: int, a: float, kappa_w: float, sigma2: float = 1.0) -> np.ndarray:
    """The matrix A of Proposition 3: k^(l+1) = A k^(l)."""
    s4 = sigma2**2
    r = 2 * (a**4 + 1) / (w * (a**2 + 1) ** 2)
    return np.array(
        [
            [r * kappa_w, 3 * (w - 1) / (w * s4), 3 * (w - 1) / w],
            [r * s4, (w - 1) / w, -s4 / w],
            [0.0, 0.0, 1.0],
        ]
    )


def kurtosis_recursion(
    kappa0: float, c0: float, depth: int, w: int, a: float, kappa_w: float, sigma2: float = 1.0
) -> np.ndarray:
    """Rows k^(0), ..., k^(depth), each [kappa, c, 1]."""
    A = transition_matrix(w, a, kappa_w, sigma2)
    rows = [np.array([kappa0, c0, 1.0])]
    for _ in range(depth):
        rows.append(A @ rows[-1])
    return np.array(rows)


def growth_rate(w: int, a: float, kappa_w: float) -> float:
    """Largest eigenvalue of A (Lemma 4): the per-layer growth factor of the kurtosis."""
    return float(np.max(np.linalg.eigvals(transition_matrix(w, a, kappa_w)[:2, :2]).real))


def var_sample_variance(kappa: float, sigma2: float, n: int) -> float:
    """Var[S_n^2] of the unbiased sample variance of n i.i.d. draws."""
    return (kappa - (n - 3) / (n - 1)) * sigma2**2 / n


def estimate_kappa_c(Y: np.ndarray) -> tuple[float, float]:
    """Kurtosis and covariance of squares of a He random vector from draws Y (N, w):
    pooled over entries (they are identically distributed) and over pairs."""
    Y = np.asarray(Y, dtype=np.float64)
    sq = Y**2
    s4 = sq.mean() ** 2
    kappa = float((sq**2).mean() / s4)
    w = Y.shape[1]
    row = sq.sum(axis=1)
    pairs = (row**2 - (sq**2).sum(axis=1)) / (w * (w - 1))  # mean of y_i^2 y_j^2, i != j
    return kappa, float(pairs.mean() - s4)


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


def simulate_network(
    w: int, a: float, weight_kind: str, depth: int, num_draws: int, seed: int
) -> list[np.ndarray]:
    """Outputs y^(0..depth) over independent draws of a He random input (i.i.d. Laplace
    entries, variance 1, kurtosis 6, c = 0) and of He-initialized weights."""
    gen = torch.Generator().manual_seed(seed)
    u = torch.rand(num_draws, w, generator=gen, dtype=torch.float64) - 0.5
    y = -torch.sign(u) * torch.log1p(-2 * u.abs()) / 2**0.5  # Laplace, variance 1
    std = math.sqrt(2 / (w * (a * a + 1)))
    outs = [y.numpy()]
    for _ in range(depth):
        W = sample_weights(weight_kind, (num_draws, w, w), std, gen)
        y = (W @ torch.nn.functional.leaky_relu(y, a).unsqueeze(-1)).squeeze(-1)
        outs.append(y.numpy())
    return outs


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
        what = f"transition_matrix(w={w}, a={a}, kappa_w={kw}, sigma2={s2})"
        got = as_array(call_answer(student, w, a, kw, s2, what=what), what, shape=(3, 3))
        want = transition_matrix(w, a, kw, s2)
        tol = 64 * unit_roundoff() * np.abs(want)
        bad = ~(np.abs(got - want) <= tol)
        if np.any(bad):
            i, j = (int(v) for v in np.argwhere(bad)[0])
            hint = ""
            if i == 0 and j == 0 and _rel(got[0, 0], want[0, 0] * w, 64):
                hint = " The fourth-moment term has a factor 1/w: E[W^4] = kappa_w Var(W)^2."
            elif abs(got[i, j] - want[j, i]) <= tol[j, i] + 1e-12 and i != j:
                hint = " The matrix looks transposed: row 1 gives kappa_(l+1), row 2 gives c_(l+1)."
            elif (i, j) in ((0, 1), (1, 0), (1, 2)) and s2 != 1:
                hint = " Check the powers of sigma2 (sigma^4 = sigma2 ** 2)."
            raise CheckFailed(
                f"{what}: entry [{i}, {j}] is {got[i, j]:.6g}; expected {want[i, j]:.6g}.{hint}"
            )


def check_recursion(student: Callable) -> None:
    for w, a, kw, s2 in TRANSITION_CASES:
        for kappa0, c0, depth in ((3.0, 0.0, 6), (6.0, 0.4, 1), (1.8, -0.2, 0)):
            what = f"kurtosis_recursion({kappa0}, {c0}, depth={depth}, w={w}, a={a}, ...)"
            got = call_answer(student, kappa0, c0, depth, w, a, kw, s2, what=what)
            want = kurtosis_recursion(kappa0, c0, depth, w, a, kw, s2)
            got = as_array(got, what, shape=(None, 3))
            if got.shape != want.shape:
                raise CheckFailed(
                    f"{what} has {len(got)} rows; expected depth + 1 = {depth + 1}: k^(0), the "
                    "input, first."
                )
            tol = 64 * (depth + 1) * unit_roundoff() * (np.abs(want) + np.abs(want).max())
            bad = ~(np.abs(got - want) <= tol)
            if np.any(bad):
                layer, col = (int(v) for v in np.argwhere(bad)[0])
                name = ["kappa", "c", "the constant 1"][col]
                raise CheckFailed(
                    f"{what}: {name} at layer {layer} is {got[layer, col]:.6g}; expected "
                    f"{want[layer, col]:.6g}. Each row is A times the row before it."
                )


def check_growth_rate(student: Callable) -> None:
    for w, a, kw, _ in TRANSITION_CASES:
        what = f"growth_rate(w={w}, a={a}, kappa_w={kw})"
        got = float(as_array(call_answer(student, w, a, kw, what=what), what, shape=()))
        want = growth_rate(w, a, kw)
        if not _rel(got, want, 256):
            hint = ""
            if _rel(got, 1.0, 256):
                hint = (
                    " 1 is the eigenvalue of the constant row; the growth rate is the largest "
                    "eigenvalue of the top-left 2 x 2 block, which exceeds 1 (Lemma 4)."
                )
            raise CheckFailed(f"{what} is {got:.6g}; expected {want:.6g}.{hint}")


def check_var_sample_variance(student: Callable) -> None:
    for kappa, s2, n in ((3.0, 1.0, 10), (1.8, 2.0, 4), (9.0, 0.5, 1000), (1.0, 1.0, 2)):
        what = f"var_sample_variance(kappa={kappa}, sigma2={s2}, n={n})"
        got = float(as_array(call_answer(student, kappa, s2, n, what=what), what, shape=()))
        want = var_sample_variance(kappa, s2, n)
        if not abs(got - want) <= 32 * unit_roundoff() * (kappa + 1) * s2**2 / n:
            hint = ""
            if _rel(got, (kappa - 1) * s2**2 / n, 64):
                hint = (
                    " That is the large-n limit (kappa - 1) sigma^4 / n; keep the exact "
                    "(n - 3) / (n - 1)."
                )
            raise CheckFailed(f"{what} is {got:.6g}; expected {want:.6g}.{hint}")


def _sample_variances(dist: str, n: int, reps: int, rng: np.random.Generator) -> np.ndarray:
    """Unbiased sample variances of ``reps`` samples of size n from a unit-variance
    distribution: uniform (kurtosis 1.8), normal (3) or Laplace (6)."""
    if dist == "uniform":
        X = rng.uniform(-(3**0.5), 3**0.5, size=(reps, n))
    elif dist == "normal":
        X = rng.standard_normal((reps, n))
    else:
        X = rng.laplace(0.0, 2**-0.5, size=(reps, n))
    return X.var(axis=1, ddof=1)


VAR_MC_CASES = (("uniform", 1.8, 5), ("normal", 3.0, 10), ("laplace", 6.0, 4), ("normal", 3.0, 2))


def check_var_sample_variance_by_simulation(student: Callable) -> None:
    """The formula against simulation: per case, 20 batches of 5,000 samples each give 20
    independent estimates of Var[S_n^2]; the student's value must lie within the t quantile
    (19 degrees of freedom, false failure 1e-6 per cell split over the cases) of their
    mean, in units of their standard error."""
    from scipy import stats

    rng = np.random.default_rng(2024)
    t_q = float(stats.t.isf(CELL_FALSE_FAILURE / (2 * len(VAR_MC_CASES)), df=19))
    for dist, kappa, n in VAR_MC_CASES:
        est = np.array([_sample_variances(dist, n, 5_000, rng).var(ddof=1) for _ in range(20)])
        mean, se = est.mean(), est.std(ddof=1) / math.sqrt(len(est))
        what = f"var_sample_variance(kappa={kappa}, sigma2=1.0, n={n})"
        got = float(as_array(call_answer(student, kappa, 1.0, n, what=what), what, shape=()))
        if abs(got - mean) > t_q * se:
            raise CheckFailed(
                f"{what} is {got:.4g}, but simulating samples of size {n} from a {dist} "
                f"distribution gives {mean:.4g} +- {se:.2g} (standard error)."
            )


def _mc_cell(student_rec: Callable, cases) -> None:
    """Recursion against simulated networks: E[y^4] / sigma^4 and the covariance of
    squares at every layer, each a mean over draws with its estimated standard error."""
    comparisons = sum(2 * depth for *_, depth in cases)
    z = z_score(CELL_FALSE_FAILURE / comparisons)
    for w, a, kind, depth in cases:
        outs = simulate_network(w, a, kind, depth, num_draws=60_000, seed=w * 31 + depth)
        rec = as_array(
            call_answer(
                student_rec,
                6.0,
                0.0,
                depth,
                w,
                a,
                WEIGHT_DISTRIBUTIONS[kind],
                1.0,
                what="kurtosis_recursion",
            ),
            "kurtosis_recursion",
            shape=(depth + 1, 3),
        )
        for layer in range(1, depth + 1):
            y = outs[layer]
            fourth = (y[:, 0] ** 4, rec[layer, 0])
            cross = (y[:, 0] ** 2 * y[:, 1] ** 2 - 1.0, rec[layer, 1])
            for (sample, predicted), name in ((fourth, "kurtosis"), (cross, "c")):
                est = sample.mean()
                se = sample.std(ddof=1) / math.sqrt(len(sample))
                if abs(predicted - est) > z * se:
                    raise CheckFailed(
                        f"For width {w}, slope a={a} and {kind} weights, your recursion gives "
                        f"{name} = {predicted:.4g} at layer {layer}, but simulating {len(sample)} "
                        f"networks gives {est:.4g} +- {se:.2g} (standard error)."
                    )


MC_CASES = ((4, 0.0, "normal", 3), (3, 0.7, "bernoulli", 2), (5, 0.0, "uniform", 2))


def check_recursion_against_simulation(student_rec: Callable) -> None:
    _mc_cell(student_rec, MC_CASES)


def check_zero_init(student: Callable) -> None:
    for w in (1, 4, 10):
        t = torch.full((w, w), float("nan"))
        what = f"zero_init_(torch.empty({w}, {w}))"
        out = call_answer(student, t, what=what)
        if out is not t:
            raise CheckFailed(f"{what} must fill the tensor in place and return it.")
        if not torch.equal(t, torch.eye(w)):
            raise CheckFailed(
                f"{what} did not write the identity; ZerO initializes a square layer to "
                "the identity matrix (ones on the diagonal, zeros elsewhere)."
            )
    try:
        student(torch.empty(3, 5))
    except (ValueError, AssertionError, RuntimeError):
        return
    raise CheckFailed(
        "zero_init_(torch.empty(3, 5)) did not raise: ZerO at constant width needs a square "
        "weight; raise a ValueError that says so for any other shape."
    )


SYNTHETIC_SCALE = 1.5


def synthetic_he_vectors(num_draws: int, w: int, seed: int) -> tuple[np.ndarray, float, float]:
    """He random vectors with known kurtosis and covariance of squares: y = 1.5 s g with
    g i.i.d. standard normal and one random scale per draw, s^2 = 0.5 + Exp(mean 0.5), so
    E[s^2] = 1 and E[s^4] = 1.25. Returns (Y, kappa, c): kappa = 3 E[s^4] / E[s^2]^2 =
    3.75 and c = 1.5^4 (E[s^4] - E[s^2]^2) = 1.265625 (sigma^2 = 2.25)."""
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

    num_batches = 20
    t_quantile = float(stats.t.isf(CELL_FALSE_FAILURE / 4, df=num_batches - 1))
    ests = []
    for b in range(num_batches):
        Y, kappa, c = synthetic_he_vectors(20_000, 6, seed=500 + b)
        got = as_array(
            call_answer(student, Y.copy(), what="estimate_kappa_c(Y)"),
            "estimate_kappa_c(Y)",
            shape=(2,),
        )
        ests.append(got)
    ests = np.array(ests)
    mean, se = ests.mean(axis=0), ests.std(axis=0, ddof=1) / math.sqrt(num_batches)
    sigma4 = SYNTHETIC_SCALE**4
    for idx, (name, truth) in enumerate((("kappa", kappa), ("c", c))):
        if abs(mean[idx] - truth) > t_quantile * se[idx] + 1e-12:
            hint = ""
            if name == "kappa" and abs(mean[idx] - truth * sigma4) < 0.05 * truth * sigma4:
                hint = " That is E[y^4]; the kurtosis divides it by sigma^4."
            elif name == "c" and abs(mean[idx] - (truth + sigma4)) < 0.05 * (truth + sigma4):
                hint = " That is E[y_i^2 y_j^2]; the covariance subtracts sigma^4."
            raise CheckFailed(
                f"On He vectors with known {name} = {truth:.4g} (sigma^2 = "
                f"{SYNTHETIC_SCALE**2:g}), estimate_kappa_c gives {mean[idx]:.4g} on average "
                f"over {num_batches} batches (standard error {se[idx]:.2g}).{hint}"
            )


def check_he_transform(student: Callable) -> None:
    """Proposition 2: z = W x with a fresh random square W per call turns a fixed,
    correlated, skewed, nonzero-mean x into a He random vector. Over 40,000 calls the
    entries must have mean 0, equal variances ||x||^2 (W entries of variance 1), zero
    covariance and zero third moment, each within z standard errors."""
    x = torch.tensor([3.0, -1.0, 0.5, 2.0, 2.0])
    num_calls = 40_000
    gen = torch.Generator().manual_seed(77)
    Z = np.stack(
        [
            as_array(
                call_answer(student, x.clone(), gen, what="he_transform(x, generator)"),
                "he_transform(x, generator)",
                shape=(5,),
            )
            for _ in range(num_calls)
        ]
    )
    norm2 = float(x @ x)
    checks_ = {
        "mean of an entry": (Z[:, 0], 0.0),
        "variance of an entry (should be ||x||^2)": (Z[:, 1] ** 2, norm2),
        "covariance of two entries": (Z[:, 0] * Z[:, 2], 0.0),
        "third moment of an entry (symmetry)": (Z[:, 3] ** 3, 0.0),
    }
    z = z_score(CELL_FALSE_FAILURE / len(checks_))
    for name, (sample, want) in checks_.items():
        est, se = sample.mean(), sample.std(ddof=1) / math.sqrt(num_calls)
        if abs(est - want) > z * se:
            raise CheckFailed(
                f"Over {num_calls} calls of he_transform on a fixed x, the {name} is "
                f"{est:.4g}; expected {want:.4g} (standard error {se:.2g}). Draw a new W with "
                "i.i.d. standard normal entries from the generator on every call and return "
                "W @ x."
            )
