"""Checking utilities used by the visible tests of every notebook, with tolerances that
follow from floating-point round-off instead of being tuned by hand.

Nothing here computes an answer that a notebook grades: a finite-difference gradient, for
one, is what the backprop notebook asks students to write, so it lives only with the
instructors' hidden tests.

Every check raises :class:`CheckFailed` with a sentence a student can act on, and returns
``None`` on success: nbgrader gives partial credit to a test cell whose last value is a
number, so a check must never return one.

Round-off model used throughout: an operation in floating point with unit round-off
``u = eps / 2`` returns ``x (1 + d)`` with ``|d| <= u``. A sum of ``n`` terms computed in
any order is off by at most ``(n - 1) u`` times the sum of the terms' magnitudes (to first
order), and rounding each input to the working type adds ``u`` relative per input.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = [
    "CheckFailed",
    "as_array",
    "call_answer",
    "check_close",
    "check_finite",
    "check_moments",
    "rel_error",
    "roundoff_bound",
    "unit_roundoff",
    "z_score",
]


class CheckFailed(AssertionError):
    """A check found a wrong answer; the message says what is wrong and what to look at."""


def _unmarked(text: str) -> str:
    return text


def call_answer(
    func: Callable[..., Any], *args: Any, what: str, hint: str = "", **kwargs: Any
) -> Any:
    """Call a student's function; turn an exception into a :class:`CheckFailed` that
    says which call failed and adds ``hint`` (the original exception stays chained, so
    the traceback still shows the failing line)."""
    try:
        return func(*args, **kwargs)
    except NotImplementedError:
        raise CheckFailed(
            f"{what} is not implemented yet (it raised NotImplementedError)."
        ) from None
    except CheckFailed:
        raise
    except Exception as exc:
        raise CheckFailed(
            f"{what} raised {type(exc).__name__}: {exc}." + (" " + hint if hint else "")
        ) from exc


def unit_roundoff(dtype: Any = np.float32) -> float:
    """Unit round-off ``u = eps / 2`` of a floating type (float32 by default, the
    coarsest type a correct answer may use)."""
    return float(np.finfo(dtype).eps) / 2.0


def roundoff_bound(magnitude: Any, num_ops: int, dtype: Any = np.float32) -> np.ndarray:
    """Bound on the absolute round-off of a result computed with ``num_ops`` rounded
    operations (inputs' rounding included) from terms whose magnitudes add up to
    ``magnitude``: ``num_ops * u * magnitude`` (the first-order bound ``gamma_n``)."""
    if num_ops < 1:
        raise ValueError(f"num_ops must be at least 1, got {num_ops}")
    return num_ops * unit_roundoff(dtype) * np.abs(np.asarray(magnitude, dtype=np.float64))


def rel_error(x: Any, y: Any) -> float:
    """Largest relative error ``|x - y| / max(1e-8, |x| + |y|)`` over all entries."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    return float(np.max(np.abs(x - y) / np.maximum(1e-8, np.abs(x) + np.abs(y))))


def as_array(
    value: Any,
    what: str,
    shape: Sequence[int | None] | None = None,
) -> np.ndarray:
    """Convert an answer to a float64 array, or fail with a message naming ``what``.

    ``shape`` may contain ``None`` for an axis of any length.
    """
    if value is None:
        raise CheckFailed(f"{what} is None. Did the function forget to `return` its result?")
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise CheckFailed(
            f"{what} could not be read as an array of numbers ({exc}). "
            "Return a numpy array (or a list of numbers)."
        ) from None
    if shape is not None:
        ok = arr.ndim == len(shape) and all(
            want is None or got == want for got, want in zip(arr.shape, shape, strict=True)
        )
        if not ok:
            pretty = "(" + ", ".join("any" if s is None else str(s) for s in shape) + ")"
            raise CheckFailed(f"{what} has shape {arr.shape}; expected {pretty}.")
    return arr


def check_finite(value: Any, what: str) -> None:
    """Fail if any entry is nan or infinite."""
    arr = np.asarray(value, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        bad = np.argwhere(~np.isfinite(arr))[0]
        raise CheckFailed(
            f"{what} contains {arr[tuple(bad)]} at index {tuple(int(i) for i in bad)}; "
            "every entry must be a finite number."
        )


def check_close(
    got: Any,
    expected: Any,
    tolerance: Any,
    what: str,
    hint: str = "",
    mark_expected: Callable[[str], str] | None = None,
) -> None:
    """Fail unless ``|got - expected| <= tolerance`` entrywise.

    ``tolerance`` is an absolute bound (scalar or broadcastable array) that the caller
    derives from the numerics; the message names the worst entry and adds ``hint``.
    ``mark_expected``, when given, wraps the part of the message that states the expected
    value (the instructors' hidden checks mark it so that feedback can leave it out).
    """
    got_arr = as_array(got, what, shape=np.shape(expected))
    want = np.asarray(expected, dtype=np.float64)
    tol = np.broadcast_to(np.asarray(tolerance, dtype=np.float64), want.shape)
    err = np.abs(got_arr - want)
    bad = ~(err <= tol)  # also catches nan
    if np.any(bad):
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        where = f" at index {idx}" if want.ndim else ""
        mark = mark_expected or _unmarked
        message = (
            f"{what} is {got_arr[idx]:.10g}{where}"
            + mark(f"; expected {want[idx]:.10g} (allowed difference {tol[idx]:.3g})")
            + "."
        )
        raise CheckFailed(message + (" " + hint if hint else ""))


def z_score(false_failure: float) -> float:
    """Two-sided normal quantile: a correct answer's statistic lands farther than
    ``z_score(p)`` standard errors from its expectation with probability ``p``."""
    from scipy.stats import norm

    if not 0 < false_failure < 1:
        raise ValueError(f"false_failure must lie in (0, 1), got {false_failure}")
    return float(norm.isf(false_failure / 2))


def check_moments(
    sample: Any,
    mean: float,
    std: float,
    kurtosis: float,
    what: str,
    false_failure: float = 1e-7,
    hint: str = "",
    mark_expected: Callable[[str], str] | None = None,
) -> None:
    """Fail unless the sample's mean and standard deviation agree with a distribution of
    the given mean, std and kurtosis (3 for a normal, 1.8 for a uniform).

    Under that distribution and for a large sample (the central limit theorem), the sample
    mean has standard error ``std / sqrt(N)`` and the sample variance
    ``std**2 * sqrt((kurtosis - 1) / N)``. Each check allows ``z_score(false_failure)``
    standard errors, so a correct answer fails one of the two with probability at most
    ``2 * false_failure`` (union bound). ``mark_expected`` as in :func:`check_close`.
    """
    mark = mark_expected or _unmarked
    x = np.asarray(sample, dtype=np.float64).ravel()
    n = x.size
    if n < 1000:
        raise ValueError(f"check_moments needs at least 1000 samples for its CLT bound, got {n}")
    check_finite(x, what)
    z = z_score(false_failure)
    se_mean = std / np.sqrt(n)
    if abs(x.mean() - mean) > z * se_mean:
        raise CheckFailed(
            f"The entries of {what} have mean {x.mean():.4g}"
            + mark(f"; expected {mean:.4g} (allowed {z * se_mean:.2g} for {n} samples)")
            + "."
            + (" " + hint if hint else "")
        )
    var = x.var()
    se_var = std**2 * np.sqrt((kurtosis - 1) / n)
    if abs(var - std**2) > z * se_var:
        raise CheckFailed(
            f"The entries of {what} have standard deviation {np.sqrt(var):.4g}"
            + mark(
                f"; expected {std:.4g} (variance allowed within {z * se_var:.2g} of "
                f"{std**2:.4g} for {n} samples)"
            )
            + "."
            + (" " + hint if hint else "")
        )
