"""Helpers the assignments' graders share: thresholds of Monte Carlo checks with a stated
false-failure probability (``thresholds``), grading a function with the references of the
earlier answers it calls (``substitute``), and whether an answer borrowed a library that
implements the graded function (``integrity``). It imports neither course/ nor grading/.
"""
