"""Statistics the hidden tests of several assignments share: thresholds for Monte Carlo
checks with a stated false-failure probability."""

from __future__ import annotations

import functools
import math

CELL_FALSE_FAILURE = 1e-6
"""Largest probability that a correct answer fails one test cell by sampling error: a test
cell with several random comparisons splits it over them (union bound)."""


@functools.lru_cache(maxsize=256)
def skew_adjusted_z(false_failure: float, n: int, skewness: float) -> float:
    """Threshold for a studentised mean of n i.i.d. draws with skewness at most ``skewness``.

    The normal approximation understates one tail of a skewed mean. To leading order
    (self-normalised Cramer-type moderate deviations, Shao 1999; Jing, Shao and Wang 2003),
    ``P(|t| >= z) <= 2 (1 - Phi(z)) exp(|skewness| z^3 / (3 sqrt(n)))`` for
    ``z = o(n^(1/6))``. This returns the z at which that bound equals ``false_failure``
    (the plain normal quantile when the skewness is 0), and refuses sample sizes at which
    the bound has no solution below ``n^(1/6)``.
    """
    from scipy import optimize
    from scipy.stats import norm

    def excess(z: float) -> float:
        return (
            math.log(2)
            + norm.logsf(z)
            + abs(skewness) * z**3 / (3 * math.sqrt(n))
            - math.log(false_failure)
        )

    top = n ** (1 / 6)
    if excess(top) > 0:
        raise ValueError(
            f"{n} draws are too few for a false-failure probability of {false_failure:g} with "
            f"skewness {skewness:g}: use more draws"
        )
    return float(optimize.brentq(excess, 0.0, top))
