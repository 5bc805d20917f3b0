"""Grading kernels inside bubblewrap (initlab_grading.grading.sandbox), the default: what a
kernel can still see, write and reach, probed from inside; each probe is also run without
bubblewrap, where it succeeds, so that the test tells the two apart."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import APT_GET, REPO, make_course
from initlab_grading.course import build
from initlab_grading.course.results import collect_results
from initlab_grading.course.samples import samples_for
from initlab_grading.grading import grade, kernelspecs, sandbox
from initlab_grading.grading.options import GradingOptions

ASSIGNMENT = "gradient_descent"

# Each probe prints "name=ok" or "name=<the exception's class>".
PROBE = r"""
import json, os, socket, subprocess, sys
root, home, port, marker, tests = json.loads({ARGS!r})
def attempt(name, action):
    try:
        action()
        print(f"{name}=ok")
    except Exception as error:
        print(f"{name}={type(error).__name__}")
attempt("gradebook", lambda: open(os.path.join(root, "gradebook.db"), "rb").read())
attempt("classmates", lambda: os.listdir(os.path.join(root, "submitted")))
attempt("config", lambda: open(os.path.join(root, "nbgrader_config.py")).read())
attempt("secret", lambda: open(os.path.join(home, ".pgpass")).read())
attempt("import_tests", lambda: __import__("initlab_grading"))
attempt("hidden_tests", lambda: open(os.path.join(tests, "planted.py"), "w").write("x"))
attempt("own_folder", lambda: open("written-while-grading.txt", "w").write("x"))
attempt("network", lambda: socket.create_connection(("127.0.0.1", port), timeout=5).close())
subprocess.Popen(["env", "-i", "sleep", marker], start_new_session=True,
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print("probed")
"""
ESCAPED = {
    "gradebook": "ok",
    "classmates": "ok",
    "config": "ok",
    "secret": "ok",
    "import_tests": "ok",
    "hidden_tests": "ok",
    "own_folder": "ok",
    "network": "ok",
}
CONTAINED = {
    "gradebook": "FileNotFoundError",
    "classmates": "FileNotFoundError",
    "config": "FileNotFoundError",
    "secret": "FileNotFoundError",
    "import_tests": "ok",  # the launcher's PYTHONPATH holds autograder/ (read-only)
    "hidden_tests": "OSError",  # read-only file system
    "own_folder": "ok",
    "network": "ConnectionRefusedError",  # its own loopback, where nothing listens
}
# Grading an assignment whose checks run outside the kernel: initlab_grading is on no path
# of the kernel's, and inside bubblewrap its folder is an empty one.
ESCAPED_GRADING = {**ESCAPED, "import_tests": "ModuleNotFoundError"}
CONTAINED_GRADING = {
    **CONTAINED,
    "import_tests": "ModuleNotFoundError",
    "hidden_tests": "FileNotFoundError",
}


@pytest.fixture(scope="module", autouse=True)
def bwrap() -> str:
    """Debian's bubblewrap; installed with apt-get when missing and allowed (root)."""
    if not shutil.which("bwrap") and os.geteuid() == 0 and shutil.which("apt-get"):
        for cmd in ([*APT_GET, "update"], [*APT_GET, "install", "-y", "bubblewrap"]):
            subprocess.run(cmd, capture_output=True, check=False)
    path = shutil.which("bwrap")
    assert path, "No bwrap: install Debian's package (`apt-get install -y bubblewrap`)."
    return path


@pytest.fixture()
def listener():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield server.getsockname()[1]


def _probe(root: Path, home: Path, port: int, marker: str) -> str:
    args = [str(root), str(home), port, marker, str(PLANTED.parent)]
    return PROBE.replace("{ARGS!r}", repr(json.dumps(args)))


def _results(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line and " " not in line)


def _survivors(marker: str) -> list[int]:
    """The probe's detached sleepers still alive half a second after it (killed now, so
    that none outlives the test)."""
    time.sleep(0.5)
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                if fh.read().split(b"\0")[:2] == [b"sleep", marker.encode()]:
                    found.append(int(pid))
        except OSError:
            continue
    sandbox.kill_pids(found)
    return found


def _ipc_connection(folder: Path) -> tuple[Path, Path]:
    """A socket folder as the kernel manager makes one, and a connection file naming it."""
    sockets = folder / "initlab-sockets-probe"
    sockets.mkdir()
    connection = folder / "kernel-probe.json"
    connection.write_text(json.dumps({"transport": "ipc", "ip": str(sockets / "kernel")}))
    return sockets, connection


PLANTED = REPO / "autograder" / "initlab_grading" / "planted.py"


@pytest.fixture()
def outside_tmp():
    """A folder outside /tmp (which the sandbox hides as a whole), so that hiding the
    course root and the home is what the probes see, that any user may enter; removed
    afterwards, with anything a probe planted in the hidden tests' package."""
    base = Path(tempfile.mkdtemp(prefix="initlab-test-bubblewrap-", dir="/var/tmp"))
    base.chmod(0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)
    PLANTED.unlink(missing_ok=True)


def _course(base: Path) -> tuple[Path, Path, Path]:
    """A course root (gradebook, config, a classmate's submission), the grader's home
    with a secret in it, and a submission's folder in the course."""
    root = base / "course"
    (root / "submitted" / "classmate").mkdir(parents=True)
    (root / "gradebook.db").write_bytes(b"grades")
    (root / "nbgrader_config.py").write_text("")
    home = base / "home"
    home.mkdir()
    (home / ".pgpass").write_text("db:5432:*:grader:a-password\n")
    folder = root / "autograded" / "student" / ASSIGNMENT
    folder.mkdir(parents=True)
    return root, home, folder


@pytest.mark.parametrize("use_bwrap", [True, False], ids=["bubblewrap", "without"])
def test_the_launcher_hides_the_course_and_home_and_takes_the_network(
    tmp_path, outside_tmp, listener, use_bwrap
):
    """The sandbox launcher as grading starts kernels, with a Unix-socket connection file:
    inside bubblewrap the kernel reads and writes only its own folder, sees none of the
    course's files or the grader's home, reaches no port on the host, and no process it
    started survives it; without bubblewrap every probe succeeds."""
    root, home, folder = _course(outside_tmp)
    _, connection = _ipc_connection(tmp_path)
    marker = f"{time.time_ns() % 10**6}.5"
    env = {
        **os.environ,
        "HOME": str(home),
    }
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "autograder"), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, "-P", "-m", "initlab_grading.grading.sandbox"]
    cmd += [] if use_bwrap else ["--no-bwrap"]
    cmd += ["--", sys.executable, "-c", _probe(root, home, listener, marker), str(connection)]
    proc = subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "probed" in proc.stdout, proc.stderr
    assert _results(proc.stdout) == (CONTAINED if use_bwrap else ESCAPED)
    assert (folder / "written-while-grading.txt").exists()
    left = _survivors(marker)
    assert (left == []) == use_bwrap, left


def test_the_launcher_without_bwrap_installed_says_how_to_install_it(tmp_path, monkeypatch):
    """No bwrap on PATH: the launcher stops with what to install or which option to give,
    and the grading command's kernel check reports it before any submission is graded."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(sys.executable)
    env = {**os.environ, "PATH": str(bin_dir), "PYTHONPATH": str(REPO / "autograder")}
    cmd = [sys.executable, "-P", "-m", "initlab_grading.grading.sandbox", "--", "python", "-c", ""]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode != 0
    assert "apt-get install bubblewrap" in proc.stderr and "--no-bubblewrap" in proc.stderr
    monkeypatch.setenv("PATH", str(bin_dir))
    problem, _ = kernelspecs.check_kernel(REPO)
    assert problem.startswith("a grading kernel cannot start inside bubblewrap"), problem
    assert "apt-get install bubblewrap" in problem
    assert kernelspecs.check_kernel(REPO, bwrap=False)[0] == ""


def test_grading_contains_a_probing_submission_and_still_scores_it(
    tmp_path, outside_tmp, listener, monkeypatch
):
    """The kit's grading command with its defaults grades a submission whose answer cell
    probes the sandbox: its answer scores as the reference does, and the probes fail as
    inside bubblewrap; with --no-bubblewrap they succeed (and its sleeper is killed by the
    job token only because it kept none, so it survives: the attack bubblewrap stops)."""
    outcomes = {}
    for use_bwrap in (True, False):
        root = make_course(tmp_path / f"course-{use_bwrap}", [ASSIGNMENT])
        (root / "submitted" / "classmate").mkdir(parents=True, exist_ok=True)
        home = tmp_path / f"home-{use_bwrap}"
        home.mkdir()
        (home / ".pgpass").write_text("db:5432:*:grader:a-password\n")
        marker = f"{time.time_ns() % 10**6}.25"
        (ref,) = [s for s in samples_for(ASSIGNMENT) if s.student == "reference"]
        answer = build.reference_answers(REPO, ASSIGNMENT)["stable_step"]
        probe = _probe(root, home, listener, marker)
        sample = dataclasses.replace(
            ref, student="probe", answers={**ref.answers, "stable_step": answer + "\n" + probe}
        )
        build.write_submissions(root, ASSIGNMENT, [ref, sample])
        monkeypatch.setenv("HOME", str(home))
        results = grade.grade_class(
            root, ASSIGNMENT, GradingOptions(workers=1, bubblewrap=use_bwrap)
        )
        PLANTED.unlink(missing_ok=True)
        assert [r.status for r in results] == ["graded", "graded"], results
        scores = {r.student: r for r in collect_results(root, ASSIGNMENT, ["reference", "probe"])}
        assert scores["probe"].auto_score == scores["reference"].auto_score > 0
        text = (root / "autograded" / "probe" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb").read_text()
        nb = json.loads(text)
        printed = "".join(
            "".join(o.get("text", ""))
            for c in nb["cells"]
            for o in c.get("outputs", [])
            if o.get("name") == "stdout"
        )
        assert "probed" in printed, printed
        outcomes[use_bwrap] = (_results(printed), _survivors(marker))
    assert outcomes[True] == (CONTAINED_GRADING, [])
    contained, left = outcomes[False]
    assert contained == ESCAPED_GRADING and left, outcomes[False]


UNPRIVILEGED = 61999
"""The user id the no-root test runs the launcher as (never an account's)."""


def test_the_sandbox_needs_no_root(outside_tmp, listener):
    """bubblewrap needs no root (it makes a user namespace): the launcher started as an
    unprivileged user id, with the system's Python, contains the same probes."""
    python = sys.executable
    if os.geteuid() == 0:
        python = shutil.which(
            f"python{sys.version_info.major}.{sys.version_info.minor}", path="/usr/bin"
        )
        assert python, "no system Python that another user can run, in /usr/bin"
    root, home, folder = _course(outside_tmp)
    (home / ".pgpass").chmod(0o644)  # readable by anyone, were it not hidden
    sockets, connection = _ipc_connection(outside_tmp)
    if os.geteuid() == 0:  # what the grader gives the kernel's user id
        for path in (folder, sockets, connection):
            os.chown(path, UNPRIVILEGED, UNPRIVILEGED)
    marker = f"{time.time_ns() % 10**6}.75"
    # the launcher's package where that user can read it (the checkout may be in a
    # folder of the grader's only)
    autograder = outside_tmp / "autograder"
    shutil.copytree(
        REPO / "autograder" / "initlab_grading",
        autograder / "initlab_grading",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "PYTHONPATH": str(autograder)}

    def unprivileged() -> None:
        if os.geteuid() == 0:
            os.setgroups([])
            os.setgid(UNPRIVILEGED)
            os.setuid(UNPRIVILEGED)

    cmd = [python, "-P", "-m", "initlab_grading.grading.sandbox", "--"]
    cmd += [python, "-c", _probe(root, home, listener, marker), str(connection)]
    proc = subprocess.run(
        cmd,
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=unprivileged,
    )
    assert proc.returncode == 0 and "probed" in proc.stdout, proc.stderr
    found = _results(proc.stdout)
    # refused: read-only, not its user's, or (a checkout under /tmp) not there at all
    assert found.pop("hidden_tests") in ("OSError", "PermissionError", "FileNotFoundError")
    assert found == {k: v for k, v in CONTAINED.items() if k != "hidden_tests"}
    assert _survivors(marker) == []


@pytest.mark.parametrize("configured", [None, "", "  ", "/srv/initlab-data", "~/initlab-data "])
def test_the_sandbox_finds_the_data_folder_the_library_reads(monkeypatch, configured):
    """The launcher cannot import initlab (numpy would load into every kernel start), so it
    repeats initlab.data.data_dir's rule: both name the same folder, which the sandbox
    then puts back for MNIST and the engine's cache."""
    from initlab import data

    if configured is None:
        monkeypatch.delenv("INITLAB_DATA", raising=False)
    else:
        monkeypatch.setenv("INITLAB_DATA", configured)
    assert sandbox.data_folder(dict(os.environ), str(Path.home())) == str(data.data_dir())
