"""The course's files and the instructor's loop on the bundled sample submissions.

- ``layout``: where a course's files are: the assignments found by discovery, their
  notebooks and test cells, the nbgrader configuration and gradebook, nbgrader as a command;
- ``build`` (``python -m initlab_grading.course``): release/ and solutions/ from source/,
  the samples graded and compared with what they state;
- ``samples``: ``Sample`` and ``samples_for``; ``hostile``: hostile and broken submissions;
- ``results`` and ``report``: the gradebook's scores per test cell and the class report;
- ``records``: the committed records of full-budget runs (results/*.json);
- ``scaffold``: a new assignment's files (``python3 tasks.py new-assignment ID``).
"""
