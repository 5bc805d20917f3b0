"""Grading a class with the real nbgrader.

- ``grade`` (``python -m initlab_grading.grading ASSIGNMENT``): a class, in parallel,
  under ``options.GradingOptions`` (the limits and the engine);
- ``attempts``: one submission's inspection, attempts and retries; ``worker_pool`` and
  ``worker``: long-lived grading workers; ``distributed``: the Dask engine;
- ``kernels``, ``kernelspecs`` and ``sandbox``: how a grading kernel starts and its limits;
- ``preprocessors``, ``guard`` and ``evidence``: what nbgrader runs on each notebook;
  ``remote``, ``wire`` and ``code_image``: test cells run outside the kernel, the kernel
  answering for its names and describing its functions' code; ``screen``: the cells listed
  for the instructor's review.
"""
