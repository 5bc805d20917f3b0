"""initlab_grading: the instructor-only side of the initlab course kit.

- ``assignments``: one subpackage per assignment, found by discovery: its grader (the
  reference answers and the checks its hidden tests run) and its sample submissions;
- ``checking``: helpers the graders share;
- ``course``: the course's files, the instructor's loop and the sample round trip;
- ``grading``: grading a class with the real nbgrader (workers, kernels, preprocessors).

Layers: ``grading`` builds on ``course`` (the course's files, results, the class report);
of ``course``, only the instructor's loop (``course.build``) grades, so imports ``grading``.
Of this package, the graders import ``checking`` only.

Nothing here is installed into a student's environment: nbgrader_config.py puts this folder
on the path of the kernels that nbgrader starts, and only there.
"""
