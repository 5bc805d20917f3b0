"""initlab: the shared library of the initlab course kit.

Notebooks import what they use but do not grade from here:

- :mod:`initlab.budget`: how heavy experiments run (``grade``, ``default``, ``full``);
- :mod:`initlab.checks`: checking utilities reused by visible tests (relative error,
  centred finite differences, tolerances derived from floating-point round-off);
- :mod:`initlab.plotting`: one plotting helper per view;
- :mod:`initlab.data`: MNIST through torchvision, from whichever source works, verified;
- :mod:`initlab.engine`: trains many small MLP configurations at once (import it
  explicitly; it imports torch).

Graded answers are never here: the references used by hidden tests are instructor-only.
"""

from initlab import budget, checks, plotting

__all__ = ["budget", "checks", "plotting"]
__version__ = "0.1.0"
