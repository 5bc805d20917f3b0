"""initlab_grading: the instructor-only side of the initlab course kit.

It holds the reference answers that hidden tests compare with, the sample submissions
that prove the graders right, nbgrader preprocessors for feedback, and the instructor's
loop. Nothing here is installed into a student's environment: nbgrader_config.py puts
this folder on the path of the kernels that nbgrader starts, and only there.
"""
