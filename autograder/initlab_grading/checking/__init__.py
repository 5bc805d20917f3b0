"""Helpers the assignments' graders share: thresholds of Monte Carlo checks with a stated
false-failure probability (``thresholds``), grading a function with the references of the
earlier answers it calls (``substitute``), whether an answer borrowed a library that
implements the graded function (``integrity``), and the marks that say how much a message
reveals (``reveal``). It imports neither course/ nor grading/.
"""
