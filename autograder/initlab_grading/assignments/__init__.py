"""The course's assignments, one subpackage each, found by discovery (layout.assignments):
a folder source/<id>/ with the notebook <id>.ipynb and a subpackage <id> here with

- ``grader.py``: the reference answers and the checks its hidden tests run (the hidden
  test cells import it), and ``EVIDENCE``, the code cells its written answers discuss;
- ``samples.py``: ``SAMPLES``, the sample submissions that prove the grader right.

Adding an assignment adds a folder here and touches no list; one assignment's modules
never import another's.
"""
