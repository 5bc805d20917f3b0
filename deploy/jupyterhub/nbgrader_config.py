"""nbgrader configuration of a student's environment: the course, the shared exchange, and
Validate made to judge a notebook as grading does.

install_config.py puts it in <prefix>/etc/jupyter/ of the environment: the single-user
image's (/usr/local) and the one `python3 tasks.py student` builds. nbgrader reads it there
for `nbgrader validate`, the Validate button and the assignment list.

The exchange is one folder on a volume mounted into every single-user server and into the
instructor's server at the same path; see docs/jupyterhub.md for its permissions.
NBGRADER_EXCHANGE overrides the path (the tests point it at a temporary folder)."""

import os

from nbgrader.preprocessors import IgnorePattern
from nbgrader.validator import Validator

c = get_config()  # noqa: F821 (provided by nbgrader when it loads this file)

c.CourseDirectory.course_id = "initlab"
c.Exchange.root = os.environ.get("NBGRADER_EXCHANGE", "/srv/nbgrader/exchange")
# Fetched assignments land in <home>/<assignment>/, as the released notebooks expect.
c.Exchange.path_includes_course = False

# Validate as grading does (the course's nbgrader_config.py; tests/test_jupyterhub_deploy.py
# checks that the values agree):
# - the same time limit per cell (nbgrader's default for Validate is 30 s);
c.Execute.timeout = 300
# - output on stderr (a warning, a progress bar) never fails a test cell. Grading runs
#   IgnorePattern after executing; nbgrader 0.9.6's Validator runs only CheckCellMetadata,
#   ClearOutput and Execute, and its preprocessor list is not a configurable option, so
#   IgnorePattern is added after its execution step here. This file is read again for
#   every Validate, hence the guard against adding it twice.
c.IgnorePattern.pattern = r"[\s\S]"
c.IgnorePattern.enabled = True

if not getattr(Validator._preprocess, "ignores_stderr_as_grading_does", False):
    _execute_and_check = Validator._preprocess

    def _preprocess(self, nb):
        nb = _execute_and_check(self, nb)
        nb, _ = IgnorePattern(parent=self).preprocess(nb, {})
        return nb

    _preprocess.__wrapped__ = _execute_and_check
    _preprocess.ignores_stderr_as_grading_does = True
    Validator._preprocess = _preprocess
