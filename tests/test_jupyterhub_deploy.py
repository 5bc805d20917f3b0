"""The JupyterHub deployment files of deploy/jupyterhub/ (docs/jupyterhub.md), checked
as far as a machine without Docker allows: the student nbgrader config is loaded by
nbgrader and works against an exchange the instructor released into; the Dockerfile
copies only the student's material and the config files to where Jupyter reads them.
The browser test (test_student_lab.py) starts JupyterLab with the same configuration."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import make_course
from initlab_grading import course

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy" / "jupyterhub"
ASSIGNMENT = "gradient_descent"


def nbgrader_as_student(home: Path, config: Path, exchange: Path, *args: str) -> str:
    """An nbgrader command as a student's server runs it: HOME and cwd the student's
    home, the image's configuration folder, no grading package on the path."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HOME=str(home), JUPYTER_CONFIG_DIR=str(config), NBGRADER_EXCHANGE=str(exchange))
    exe = str(Path(sys.executable).with_name("nbgrader"))
    proc = subprocess.run([exe, *args], cwd=home, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"nbgrader {' '.join(args)} failed:\n{proc.stdout}{proc.stderr}"
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    """An exchange the instructor released the first assignment into, with the course's
    own configuration, and a student whose configuration is deploy/jupyterhub's."""
    root = make_course(tmp_path_factory.mktemp("hub-course"), [ASSIGNMENT])
    exchange = tmp_path_factory.mktemp("exchange")
    exchange.chmod(0o777)  # as docs/jupyterhub.md prepares the shared volume
    course.nbgrader(
        root, "release_assignment", ASSIGNMENT, "--force", f"--Exchange.root={exchange}"
    )
    config = tmp_path_factory.mktemp("student-config")
    shutil.copy(DEPLOY / "nbgrader_config.py", config / "nbgrader_config.py")
    home = tmp_path_factory.mktemp("student-home")
    return {"root": root, "exchange": exchange, "config": config, "home": home}


def test_student_config_finds_the_course_in_the_shared_exchange(released):
    r = released
    listed = nbgrader_as_student(r["home"], r["config"], r["exchange"], "list")
    assert re.search(rf"initlab\s+{ASSIGNMENT}", listed), listed
    nbgrader_as_student(r["home"], r["config"], r["exchange"], "fetch_assignment", ASSIGNMENT)
    fetched = r["home"] / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"  # path_includes_course = False
    released_nb = REPO / "release" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
    assert json.loads(fetched.read_text()) == json.loads(released_nb.read_text())
    nbgrader_as_student(r["home"], r["config"], r["exchange"], "submit", ASSIGNMENT)
    inbound = r["exchange"] / "initlab" / "inbound"
    # students may write into inbound but not list it (nbgrader's own modes, as documented)
    assert stat.S_IMODE(inbound.stat().st_mode) & 0o777 == 0o733
    outbound = r["exchange"] / "initlab" / "outbound"
    assert stat.S_IMODE(outbound.stat().st_mode) & 0o555 == 0o555


def test_student_config_defaults_to_the_documented_volume():
    """Without NBGRADER_EXCHANGE the exchange is the documented mount point (the file
    loaded with traitlets' PyFileConfigLoader, as nbgrader loads nbgrader_config.py)."""
    env = dict(os.environ)
    env.pop("NBGRADER_EXCHANGE", None)
    probe = (
        "from traitlets.config.loader import PyFileConfigLoader as L; "
        f"c = L('nbgrader_config.py', {str(DEPLOY)!r}).load_config(); "
        "print(c.Exchange.root, c.CourseDirectory.course_id, c.Exchange.path_includes_course)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["/srv/nbgrader/exchange", "initlab", "False"]
    assert "/srv/nbgrader/exchange" in (REPO / "docs" / "jupyterhub.md").read_text()


def test_dockerfile_builds_from_student_material_only():
    text = (DEPLOY / "Dockerfile").read_text()
    text = text.replace("\\\n", " ")
    copies = [line.split()[1:] for line in text.splitlines() if line.startswith("COPY ")]
    sources = [w for words in copies if not words[0].startswith("--from") for w in words[:-1]]
    assert sources, "the Dockerfile copies nothing"
    for source in sources:
        assert (REPO / source).exists(), f"the Dockerfile copies {source}, which does not exist"
        top = Path(source).parts[0]
        assert top not in ("autograder", "solutions", "source", "tests", "."), source
    placed = {Path(w[0]).name: w[-1] for w in copies if w[0].startswith("deploy/")}
    assert placed == {
        "nbgrader_config.py": "/etc/jupyter/nbgrader_config.py",
        "jupyter_server_config.json": (
            "/usr/local/etc/jupyter/jupyter_server_config.d/zz-initlab-student.json"
        ),
        "page_config.json": "/usr/local/etc/jupyter/labconfig/page_config.json",
    }
    assert '[student]"' in text and "jupyterhub-singleuser" in text


def test_student_server_config_keeps_validate_and_assignment_list():
    extensions = json.loads((DEPLOY / "jupyter_server_config.json").read_text())["ServerApp"][
        "jpserver_extensions"
    ]
    assert extensions == {
        "nbgrader.server_extensions.formgrader": False,
        "nbgrader.server_extensions.course_list": False,
        "nbgrader.server_extensions.assignment_list": True,
        "nbgrader.server_extensions.validate_assignment": True,
    }
    page = json.loads((DEPLOY / "page_config.json").read_text())
    assert page["disabledExtensions"] == page["lockedExtensions"]
    assert not [p for p in page["disabledExtensions"] if "validate" in p or "assignment-list" in p]
