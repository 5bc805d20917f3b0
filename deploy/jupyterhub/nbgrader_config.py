"""nbgrader configuration of a student's single-user server (installed as
/etc/jupyter/nbgrader_config.py in the image): the course and the shared exchange.

The exchange is one folder on a volume mounted into every single-user server and into the
instructor's server at the same path; see docs/jupyterhub.md for its permissions.
NBGRADER_EXCHANGE overrides the path (the tests point it at a temporary folder)."""

import os

c = get_config()  # noqa: F821 (provided by nbgrader when it loads this file)

c.CourseDirectory.course_id = "initlab"
c.Exchange.root = os.environ.get("NBGRADER_EXCHANGE", "/srv/nbgrader/exchange")
# Fetched assignments land in <home>/<assignment>/, as the released notebooks expect.
c.Exchange.path_includes_course = False
