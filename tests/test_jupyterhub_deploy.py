"""The JupyterHub deployment files of deploy/jupyterhub/ (docs/jupyterhub.md), checked as
far as a machine without Docker allows:

- the exchange prepared by make_exchange.sh works for nbgrader (the instructor releases, a
  student lists, fetches and submits, with the student configuration) and its modes stop
  the tampering they are meant to stop: another student acts under a uid of her own, with
  the system's python3 (the test environment's interpreter may live where other users
  cannot read it); skipped unless the tests run as root;
- what the modes do not stop, as docs/jupyterhub.md says: a submission forged in a
  classmate's name is collected as the classmate's;
- the student nbgrader configuration makes Validate judge as grading does (stderr, time
  limit), where nbgrader's defaults do not;
- install_config.py puts the configuration where Jupyter reads it; the Dockerfile copies
  only the student's material and runs install_config.py.

The browser test (test_student_lab.py) runs JupyterLab from the student environment, which
has the same configuration installed."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import nbformat
import pytest
from test_student_env import clean_env, nbgrader_validate, stderr_notebook

from conftest import make_course
from initlab_grading.course import layout

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy" / "jupyterhub"
ASSIGNMENT = "gradient_descent"
NOTEBOOK = f"{ASSIGNMENT}.ipynb"
ROOT_USER = os.geteuid() == 0
# another student's uid (no passwd entry needed) and an interpreter she can run
MALLORY = 63002
SYSTEM_PYTHON = Path("/usr/bin/python3")
needs_root = pytest.mark.skipif(
    not ROOT_USER or not SYSTEM_PYTHON.exists(),
    reason="acting as another user needs root and the system's /usr/bin/python3",
)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def as_mallory(script: str, *args: str) -> str:
    """A Python script run as another student: her own uid and group, no other groups."""
    out = subprocess.run(
        [str(SYSTEM_PYTHON), "-I", "-c", script, *args],
        env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"},
        capture_output=True,
        text=True,
        user=MALLORY,
        group=MALLORY,
        extra_groups=[],
        umask=0o022,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def install_student_config(prefix: Path) -> Path:
    """install_config.py into prefix (created); returns prefix/etc/jupyter."""
    prefix.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, str(DEPLOY / "install_config.py"), "--prefix", str(prefix)],
        check=True,
        capture_output=True,
    )
    return prefix / "etc" / "jupyter"


def make_exchange(root: Path, owner: str = f"{os.getuid()}:{os.getgid()}") -> None:
    out = subprocess.run(
        ["sh", str(DEPLOY / "make_exchange.sh"), str(root), owner, "initlab"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def nbgrader_as_student(hub: dict, student: str, *args: str) -> str:
    """An nbgrader command as a student's server runs it: HOME and cwd their home, the
    student configuration, no grading package on the path."""
    home, exe = hub["homes"][student], str(Path(sys.executable).with_name("nbgrader"))
    env = clean_env(
        HOME=str(home),
        JUPYTER_CONFIG_DIR=str(hub["config"]),
        NBGRADER_EXCHANGE=str(hub["exchange"]),
    )
    proc = subprocess.run([exe, *args], cwd=home, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"nbgrader {' '.join(args)} failed:\n{proc.stdout}{proc.stderr}"
    return proc.stdout + proc.stderr


TAMPER = """
import json, os, sys
course, alice = sys.argv[1], sys.argv[2]
inbound = os.path.join(course, "inbound")
def attempt(action):
    try:
        action()
        return "done"
    except OSError as error:
        return type(error).__name__
print(json.dumps({
    "rename the course folder": attempt(lambda: os.rename(course, course + "-moved")),
    "publish an assignment": attempt(lambda: os.mkdir(os.path.join(course, "outbound", "quiz"))),
    "replace a released notebook": attempt(lambda: open(os.path.join(
        course, "outbound", "gradient_descent", "gradient_descent.ipynb"), "w").close()),
    "list the submissions": attempt(lambda: os.listdir(inbound)),
    "rename a classmate's submission": attempt(lambda: os.rename(
        os.path.join(inbound, alice), os.path.join(inbound, "x"))),
    "submit her own": attempt(lambda: os.mkdir(os.path.join(inbound, "mallory+quiz+0"))),
}))
"""


def tamper(course_dir: Path, victim_submission: str) -> dict:
    """What mallory (another student) manages to do to the exchange."""
    return json.loads(as_mallory(TAMPER, str(course_dir), victim_submission))


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """An exchange made by make_exchange.sh in a folder other users can reach, the first
    assignment released into it by the instructor (this user) with the course's own
    configuration; the student configuration installed by install_config.py; Alice's
    home."""
    base = Path(tempfile.mkdtemp(prefix="initlab-hub-"))
    base.chmod(0o755)
    try:
        exchange = base / "exchange"
        make_exchange(exchange)
        root = make_course(tmp_path_factory.mktemp("hub-course"), [ASSIGNMENT])
        layout.nbgrader(
            root, "release_assignment", ASSIGNMENT, "--force", f"--Exchange.root={exchange}"
        )
        homes = {"alice": base / "home-alice"}
        homes["alice"].mkdir()
        config = install_student_config(base / "student-prefix")
        yield {"root": root, "exchange": exchange, "config": config, "homes": homes}
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def alice_submission(hub) -> str:
    """Alice fetches the released assignment and submits it through the exchange; the
    name of her submission's folder in inbound/. A fixture, so that each test that needs
    the submission also runs alone."""
    nbgrader_as_student(hub, "alice", "fetch_assignment", ASSIGNMENT)
    # in the image the OS user is jovyan and nbgrader names the submission after
    # JUPYTERHUB_USER; any other OS user's name is taken instead, so it is given here
    nbgrader_as_student(hub, "alice", "submit", ASSIGNMENT, "--student=alice")
    (submission,) = (hub["exchange"] / "initlab" / "inbound").glob(f"alice+{ASSIGNMENT}+*")
    return submission.name


def test_student_lists_fetches_and_submits_through_the_prepared_exchange(hub, alice_submission):
    listed = nbgrader_as_student(hub, "alice", "list")
    assert re.search(rf"initlab\s+{ASSIGNMENT}", listed), listed
    fetched = hub["homes"]["alice"] / ASSIGNMENT / NOTEBOOK  # path_includes_course = False
    released_nb = REPO / "release" / ASSIGNMENT / NOTEBOOK
    assert json.loads(fetched.read_text()) == json.loads(released_nb.read_text())
    course_dir = hub["exchange"] / "initlab"
    assert (course_dir / "inbound" / alice_submission).is_dir()
    # nbgrader kept the modes make_exchange.sh set (release_assignment resets the root
    # to 0777 unless its permission bits are rwx for all, which 1777's are)
    assert mode(hub["exchange"]) == 0o1777
    assert mode(course_dir) == mode(course_dir / "outbound") == 0o755
    assert mode(course_dir / "inbound") == 0o3733


@needs_root
def test_exchange_modes_stop_another_student_tampering(hub, alice_submission):
    """Mallory, another student, can submit but cannot move the course folder, publish or
    replace notebooks, list the submissions, or rename Alice's (even knowing it). Without
    make_exchange.sh (a 0777 root, nbgrader creating the course folder on the first
    release) she can move the course folder away and put her own in its place."""
    done = tamper(hub["exchange"] / "initlab", alice_submission)
    assert done.pop("submit her own") == "done"
    assert set(done.values()) == {"PermissionError"}, done

    plain = Path(tempfile.mkdtemp(prefix="initlab-plain-exchange-"))
    try:
        plain.chmod(0o755)
        (plain / "exchange").mkdir()
        (plain / "exchange").chmod(0o777)
        layout.nbgrader(
            hub["root"], "release_assignment", ASSIGNMENT, f"--Exchange.root={plain / 'exchange'}"
        )
        done = tamper(plain / "exchange" / "initlab", "none")
    finally:
        shutil.rmtree(plain, ignore_errors=True)
    assert done["rename the course folder"] == "done", done


def test_a_submission_forged_in_a_classmates_name_is_collected_as_theirs(hub, alice_submission):
    """The risk docs/jupyterhub.md states: inbound/ must be writable by every student, and
    nbgrader's collect takes the student from the folder's name and the latest timestamp
    in it, so Mallory's folder named after Alice, dated later, is collected as Alice's
    (collect only warns when the folder's owner has another user name). As root, the
    forgery is written by another uid; otherwise by this user."""
    forged = f"alice+{ASSIGNMENT}+2999-01-01 00:00:00.000000 UTC+forged"
    nb = nbformat.read(REPO / "release" / ASSIGNMENT / NOTEBOOK, as_version=4)
    nb.cells[0].source = "Forged by mallory"
    script = (
        "import os, sys; d = os.path.join(sys.argv[1], sys.argv[2]); os.mkdir(d); "
        "open(os.path.join(d, 'timestamp.txt'), 'w').write('2999-01-01 00:00:00.000000 UTC'); "
        f"open(os.path.join(d, {NOTEBOOK!r}), 'w').write(sys.argv[3])"
    )
    args = [str(hub["exchange"] / "initlab" / "inbound"), forged, nbformat.writes(nb)]
    if ROOT_USER and SYSTEM_PYTHON.exists():
        as_mallory(script, *args)
    else:
        subprocess.run([sys.executable, "-c", script, *args], check=True)
    log = layout.nbgrader(
        hub["root"], "collect", ASSIGNMENT, "--update", f"--Exchange.root={hub['exchange']}"
    )
    collected = hub["root"] / "submitted" / "alice" / ASSIGNMENT / NOTEBOOK
    assert nbformat.read(collected, as_version=4).cells[0].source == "Forged by mallory"
    # a warning in the log, nothing more (it names the owner's user name, if any)
    assert f"{forged} claims to be submitted by alice" in " ".join(log.split()), log


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
    docs = (REPO / "docs" / "jupyterhub.md").read_text()
    assert "/srv/nbgrader/exchange" in docs and "make_exchange.sh" in docs


SETTINGS = """
import json, sys
from traitlets.config.loader import PyFileConfigLoader
def settings(folder):
    c = PyFileConfigLoader("nbgrader_config.py", folder).load_config()
    return [c.Execute.timeout, c.IgnorePattern.pattern, c.IgnorePattern.enabled]
print(json.dumps([settings(folder) for folder in sys.argv[1:]]))
"""


def test_student_validate_settings_are_the_course_grading_settings():
    """The per-cell time limit and the stderr pattern of Validate are grading's."""
    out = subprocess.run(
        [sys.executable, "-c", SETTINGS, str(REPO), str(DEPLOY)],
        capture_output=True,
        text=True,
        check=True,
        env=dict(os.environ, PYTHONPATH=str(REPO / "autograder")),
    )
    grading, student = json.loads(out.stdout)
    assert grading[0] and grading[1] and grading[2] is True, grading
    assert student == grading


def test_student_config_read_again_adds_the_stderr_step_once():
    """nbgrader reads the configuration again for every Validate in a running server."""
    probe = (
        "from traitlets.config.loader import PyFileConfigLoader as L\n"
        "from nbgrader.validator import Validator\n"
        "original = Validator._preprocess\n"
        f"for _ in range(3): L('nbgrader_config.py', {str(DEPLOY)!r}).load_config()\n"
        "print(Validator._preprocess.__wrapped__ is original)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert out.stdout.strip() == "True", out.stdout + out.stderr


def test_validate_judges_stderr_as_grading_only_with_the_student_config(tmp_path):
    """nbgrader 0.9.6's Validate fails a test cell that wrote to stderr (here: a correct
    answer that warns) unless the student configuration is installed."""
    nbgrader = Path(sys.executable).with_name("nbgrader")
    home = tmp_path / "home"
    home.mkdir()
    notebook = stderr_notebook(tmp_path / "work" / "warns.ipynb")
    plain = nbgrader_validate(nbgrader, notebook, home, tmp_path / "no-config")
    assert "VALIDATION FAILED ON 1 CELL(S)!" in plain and "UserWarning" in plain, plain
    config = install_student_config(tmp_path / "prefix")
    student = nbgrader_validate(nbgrader, notebook, home, config)
    assert "Success! Your notebook passes all the tests." in student, student


def test_install_config_places_the_files_where_jupyter_reads_them(tmp_path):
    prefix = tmp_path / "prefix"
    labconfig = prefix / "etc" / "jupyter" / "labconfig"
    labconfig.mkdir(parents=True)
    # a page_config.json already there (another package's) keeps its settings
    (labconfig / "page_config.json").write_text(
        json.dumps({"disabledExtensions": {"other:plugin": True}, "other": 1})
    )
    config = install_student_config(prefix)
    assert (config / "nbgrader_config.py").read_bytes() == (
        DEPLOY / "nbgrader_config.py"
    ).read_bytes()
    server = json.loads(
        (config / "jupyter_server_config.d" / "zz-initlab-student.json").read_text()
    )
    assert server == json.loads((DEPLOY / "jupyter_server_config.json").read_text())
    page = json.loads((labconfig / "page_config.json").read_text())
    ours = json.loads((DEPLOY / "page_config.json").read_text())
    assert page["other"] == 1
    assert page["disabledExtensions"] == {"other:plugin": True, **ours["disabledExtensions"]}
    assert page["lockedExtensions"] == ours["lockedExtensions"]

    (labconfig / "page_config.json").write_text("{not json")
    out = subprocess.run(
        [sys.executable, str(DEPLOY / "install_config.py"), "--prefix", str(prefix)],
        capture_output=True,
        text=True,
    )
    assert out.returncode != 0 and "is not valid JSON" in out.stderr, out.stderr


def test_make_exchange_refuses_bad_arguments(tmp_path):
    for args in ([], [str(tmp_path / "x")], [str(tmp_path / "x"), "0", "a/b"]):
        out = subprocess.run(
            ["sh", str(DEPLOY / "make_exchange.sh"), *args], capture_output=True, text=True
        )
        assert out.returncode == 2 and ("usage" in out.stderr or "plain folder" in out.stderr)
    assert not (tmp_path / "x").exists()


def test_dockerfile_builds_from_student_material_only():
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    copies = [line.split()[1:] for line in text.splitlines() if line.startswith("COPY ")]
    sources = [w for words in copies if not words[0].startswith("--from") for w in words[:-1]]
    assert sources, "the Dockerfile copies nothing"
    for source in sources:
        assert (REPO / source).exists(), f"the Dockerfile copies {source}, which does not exist"
        top = Path(source).parts[0]
        assert top not in ("autograder", "solutions", "source", "tests", "."), source
    spec = importlib.util.spec_from_file_location("install_config", DEPLOY / "install_config.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    (config_copy,) = [w for w in copies if "deploy/jupyterhub/install_config.py" in w]
    copied = {Path(w).name for w in config_copy[:-1]}
    assert copied == {"install_config.py", *module.FILES}, copied
    assert f"RUN python {config_copy[-1]}install_config.py" in text
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
