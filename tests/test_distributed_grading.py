"""Class grading beyond one machine: the Dask engine (initlab_grading.grading.distributed) and a
PostgreSQL gradebook (nbgrader's CourseDirectory.db_url).

A real `dask scheduler` and two `dask worker` processes run on 127.0.0.1, and a private
PostgreSQL server (Debian's postgresql, installed with apt-get when missing; its absence
fails these tests, except without root, where they are skipped) runs from a temporary
folder for this module. The Dask engine grading into PostgreSQL must score six
samples of every kind exactly as they state (as the local engine grading into sqlite does in
test_autograde_roundtrip); two graders writing into one
PostgreSQL gradebook at once, on overlapping classes, must leave exactly one graded
submission per student and one grade per cell."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import APT_GET, REPO, make_course
from initlab_grading.course import build, layout
from initlab_grading.course.results import collect_results
from initlab_grading.course.samples import samples_for
from initlab_grading.grading import grade
from initlab_grading.grading.distributed import worker_problems
from initlab_grading.grading.options import GradingOptions

ASSIGNMENT = "gradient_descent"
# Six of the assignment's twelve samples, one of each kind of outcome: full marks, nothing,
# a right answer written another way, deleted test cells restored, and two mistakes caught
# by different hidden checks. (Each nbgrader process costs about 7 CPU seconds; all twelve
# samples through both engines would take this module past its CI budget;
# test_autograde_roundtrip grades all twelve with the local engine.)
ENGINE_SAMPLES = (
    "reference",
    "blank",
    "float32-vectorised",
    "deleted-failing-tests",
    "gradient-sign",
    "stop-drops-last-step",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --------------------------------------------------------------------------------------
# A private PostgreSQL server


def _postgres_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    return found[-1].parent if found else None


def _install_postgres() -> Path:
    """Debian's postgresql, installed with apt-get once per machine. The PostgreSQL tests
    are required: where root can install it and does not manage to, they fail (as a
    missing Chromium fails the browser test); only without root are they skipped."""
    if _postgres_bin() is None:
        if os.geteuid() != 0:
            pytest.skip(
                "PostgreSQL is not installed and installing it needs root: run "
                "`sudo apt-get install -y postgresql` (these tests then run)"
            )
        if shutil.which("apt-get") is None:
            pytest.fail(
                "PostgreSQL is not installed and there is no apt-get to install it: install "
                "a PostgreSQL server whose initdb lies in /usr/lib/postgresql/<version>/bin/"
            )
        for cmd in ([*APT_GET, "update"], [*APT_GET, "install", "-y", "postgresql"]):
            proc = subprocess.run(
                cmd,
                capture_output=True,
                text=True,
                env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
            )
            if proc.returncode != 0:
                pytest.fail(
                    f"PostgreSQL is required and `{' '.join(cmd)}` failed (exit status "
                    f"{proc.returncode}); fix the package source or install postgresql by "
                    f"hand:\n{proc.stderr[-800:]}"
                )
    bin_dir = _postgres_bin()
    assert bin_dir is not None, "apt-get installed postgresql but no initdb is in /usr/lib"
    return bin_dir


class PostgresServer:
    """initdb + pg_ctl in a temporary folder, listening on 127.0.0.1 and a socket there.
    The server runs as the `postgres` OS user when the tests run as root (postgres refuses
    root). Trust authentication and fsync=off: a throw-away server for tests only."""

    def __init__(self) -> None:
        self.bin = _install_postgres()
        self.base = Path(tempfile.mkdtemp(prefix="initlab-pg-"))
        self.data = self.base / "data"
        self.port = _free_port()
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.base, "postgres", "postgres")
            self.as_user = ["runuser", "-u", "postgres", "--"]

    def _run(self, *args: str) -> None:
        proc = subprocess.run([*self.as_user, *args], capture_output=True, text=True)
        if proc.returncode != 0:
            log = self.base / "server.log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{args[0]} failed:\n{proc.stdout}{proc.stderr}\n{tail}")

    def start(self) -> None:
        self._run(
            str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres",
            "-A", "trust", "-E", "UTF8", "--no-sync",
        )  # fmt: skip
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.base} "
            "-c fsync=off -c max_connections=100"
        )
        self._run(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.base / "server.log"),
            "-o", options, "-w", "-t", "60", "start",
        )  # fmt: skip

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")
        shutil.rmtree(self.base, ignore_errors=True)

    def create_database(self, name: str) -> str:
        """A new empty database; its URL as nbgrader's db_url wants it."""
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres")
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{name}"


@pytest.fixture(scope="module")
def postgres():
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.stop()


# --------------------------------------------------------------------------------------
# A Dask cluster on loopback


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory):
    """`dask scheduler` and two `dask worker` processes with one thread each."""
    from distributed import Client

    dask = str(Path(sys.executable).with_name("dask"))
    logs = tmp_path_factory.mktemp("dask")
    address = f"tcp://127.0.0.1:{_free_port()}"
    env = dict(os.environ)
    # workers import initlab_grading to run the grading tasks (see distributed.py)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO / "autograder"), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    )
    layout.ensure_tools_on_path()
    procs = []

    def spawn(name: str, *args: str) -> None:
        log = open(logs / f"{name}.log", "w")
        procs.append(subprocess.Popen([dask, *args], env=env, stdout=log, stderr=subprocess.STDOUT))

    try:
        port = address.rsplit(":", 1)[1]
        spawn("scheduler", "scheduler", "--host", "127.0.0.1", "--port", port, "--no-dashboard")
        for i in (1, 2):
            spawn(
                f"worker{i}", "worker", address, "--name", f"w{i}", "--nthreads", "1",
                "--host", "127.0.0.1", "--no-dashboard", "--local-directory", str(logs),
            )  # fmt: skip
        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=90)
        yield address
    finally:
        for proc in reversed(procs):
            _stop(proc)


# --------------------------------------------------------------------------------------
# Courses


@pytest.fixture(scope="module")
def base_course(tmp_path_factory) -> Path:
    """The assignment released in a course whose gradebook is the default sqlite file."""
    return make_course(tmp_path_factory.mktemp("dist-course"), [ASSIGNMENT])


def copy_course(base: Path, dest: Path, db_url: str | None) -> Path:
    """A copy of a released course without submissions. With ``db_url``, that database
    becomes its gradebook (instead of the copied sqlite file) and generate_assignment
    enters the assignment into it."""
    shutil.copytree(base, dest, symlinks=True, ignore=shutil.ignore_patterns("submitted"))
    if db_url:
        (dest / "gradebook.db").unlink(missing_ok=True)
        with open(dest / "nbgrader_config.py", "a") as f:
            f.write(f"\nc.CourseDirectory.db_url = {db_url!r}\n")
        layout.nbgrader(dest, "generate_assignment", ASSIGNMENT, "--force")
    return dest


# --------------------------------------------------------------------------------------
# Tests


def test_dask_into_postgresql_scores_what_the_samples_state(
    base_course, postgres, scheduler, tmp_path
):
    """Cell for cell the scores each sample states, which is what the local engine gives
    them in sqlite (test_autograde_roundtrip grades every sample that way), so the engines
    agree without grading the samples twice here."""
    from distributed import Client

    samples = [s for s in samples_for(ASSIGNMENT) if s.student in ENGINE_SAMPLES]
    students = sorted(s.student for s in samples)
    assert len(students) == len(ENGINE_SAMPLES)
    pg_root = copy_course(base_course, tmp_path / "pg", postgres.create_database("engines"))
    assert layout.gradebook_url(pg_root).startswith("postgresql+psycopg2://postgres@127.0.0.1:")
    build.write_submissions(pg_root, ASSIGNMENT, samples)

    with Client(scheduler) as client:
        before = client.run(lambda dask_worker: dask_worker.state.executed_count)
    lines: list[str] = []
    options = GradingOptions(
        timeout=300, engine="dask", scheduler=scheduler,
        kernel_python=sys.executable,  # passed through to the kernels
    )  # fmt: skip
    on_dask = grade.grade_class(pg_root, ASSIGNMENT, options, progress=lines.append)
    with Client(scheduler) as client:
        after = client.run(lambda dask_worker: dask_worker.state.executed_count)

    assert [(r.student, r.status) for r in on_dask] == [(s, "graded") for s in students]
    assert lines[0] == f"{len(students)} submissions on 2 Dask workers (2 threads)"
    assert lines[-1].startswith(f"[{len(students)}/{len(students)}] ")
    ran = {w: after[w] - before[w] for w in after}
    assert sum(ran.values()) == len(students) and all(ran.values()), ran  # both workers graded

    results = collect_results(pg_root, ASSIGNMENT, students)
    tests = layout.test_cell_ids(pg_root, ASSIGNMENT)
    assert build.compare_with_samples(results, samples, tests) == []


def test_concurrent_graders_lose_and_duplicate_nothing(base_course, postgres, scheduler, tmp_path):
    """Two graders with their own course folders and one PostgreSQL gradebook grade at the
    same time, one with the local engine and one on Dask. Each grades its two students at
    once, so both write the student in both classes at the same time (a race nbgrader loses
    on a new student or submission; the retry finds the row)."""
    from nbgrader.api import Grade, Gradebook, SubmittedAssignment

    url = postgres.create_database("concurrent")
    root_a = copy_course(base_course, tmp_path / "grader-a", url)
    root_b = copy_course(root_a, tmp_path / "grader-b", None)  # same config, same db_url
    by_name = {s.student: s for s in samples_for(ASSIGNMENT)}

    def renamed(sample: str, student: str):
        return dataclasses.replace(by_name[sample], student=student)

    class_a = [renamed("reference", "s0-both"), renamed("gradient-sign", "s1-a")]
    class_b = [renamed("reference", "s0-both"), renamed("hessian-halved", "s2-b")]
    build.write_submissions(root_a, ASSIGNMENT, class_a)
    build.write_submissions(root_b, ASSIGNMENT, class_b)

    def run(root: Path, *args: str) -> subprocess.Popen:
        cmd = [sys.executable, "-m", "initlab_grading.grading", ASSIGNMENT, "--root", str(root)]
        cmd += ["--timeout", "300", "--report", str(root / "report.json"), *args]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, sys.path))}
        return subprocess.Popen(
            cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )

    graders = [run(root_a, "--workers", "2"), run(root_b, "--engine", "dask",
                                                    "--scheduler", scheduler)]  # fmt: skip
    logs = [p.communicate(timeout=400)[0] for p in graders]
    print(*logs, sep="\n")
    assert [p.returncode for p in graders] == [0, 0], logs
    for root, klass in ((root_a, class_a), (root_b, class_b)):
        report = json.loads((root / "report.json").read_text())
        assert {r["student"]: r["status"] for r in report} == {
            s.student: "graded" for s in klass
        }, logs

    everyone = sorted({s.student for s in class_a + class_b})
    with Gradebook(url, "initlab") as gb:
        cells = {c.name for c in gb.find_notebook(ASSIGNMENT, ASSIGNMENT).grade_cells}
        assert len(cells) > 5
        submissions = gb.db.query(SubmittedAssignment).all()
        assert sorted(s.student.id for s in submissions) == everyone  # once each
        assert gb.db.query(Grade).count() == len(everyone) * len(cells)
        for student in everyone:
            nb = gb.find_submission_notebook(ASSIGNMENT, ASSIGNMENT, student)
            names = [g.name for g in nb.grades]
            assert sorted(names) == sorted(cells), student  # every cell, once
            assert all(g.auto_score is not None for g in nb.grades if g.cell.cell_type == "code")

    tests = layout.test_cell_ids(root_a, ASSIGNMENT)
    for root, klass in ((root_a, class_a), (root_b, class_b)):
        results = collect_results(root, ASSIGNMENT, [s.student for s in klass])
        assert build.compare_with_samples(results, klass, tests) == []


def test_the_dask_engine_refuses_what_cannot_work(tmp_path):
    root = tmp_path / "course"
    ok = {"host": "grader1", "course": True, "submitted": True, "kit": True,
          "nbgrader": True, "driver": ""}  # fmt: skip
    sqlite = f"sqlite:///{root / 'gradebook.db'}"
    postgresql = "postgresql+psycopg2://grader@dbhost/initlab"
    # every worker on this machine: sqlite works (its lock is retried), PostgreSQL too
    assert worker_problems({"tcp://a:1": ok}, root, sqlite, "grader1") == []
    # workers on other machines: PostgreSQL yes, sqlite no, and the message says what to set
    remote = {"tcp://a:1": ok, "tcp://b:1": {**ok, "host": "grader2"}}
    assert worker_problems(remote, root, postgresql, "grader1") == []
    (problem,) = worker_problems(remote, root, sqlite, "grader1")
    assert "grader2" in problem and "c.CourseDirectory.db_url" in problem
    # a worker that does not see the course folder or cannot import the kit
    blind = {
        "tcp://b:1": {
            **ok,
            "course": False,
            "kit": False,
            "driver": "ModuleNotFoundError: No module named 'psycopg2'",
        }
    }
    problems = worker_problems(blind, root, postgresql, "grader1")
    assert f"mount the shared course folder at {root}" in problems[0]
    assert f"PYTHONPATH={root / 'autograder'}" in problems[1]
    assert "pip install psycopg2-binary" in problems[2]
    assert "no workers" in worker_problems({}, root, postgresql, "grader1")[0]


def test_dask_engine_refuses_a_kernel_python_a_worker_lacks(base_course, scheduler, tmp_path):
    from initlab_grading.grading.distributed import ClusterError

    root = copy_course(base_course, tmp_path / "no-python", None)
    (sample,) = [s for s in samples_for(ASSIGNMENT) if s.student == "reference"]
    build.write_submissions(root, ASSIGNMENT, [sample])
    missing = str(tmp_path / "no-such-python")
    with pytest.raises(ClusterError, match="is not an executable on workers") as refused:
        options = GradingOptions(engine="dask", scheduler=scheduler, kernel_python=missing)
        grade.grade_class(root, ASSIGNMENT, options)
    assert missing in str(refused.value)


def test_dask_engine_needs_a_scheduler_address(capsys, monkeypatch):
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    with pytest.raises(SystemExit) as stop:
        grade.main([ASSIGNMENT, "--engine", "dask"])
    assert stop.value.code == 2
    assert "--engine dask needs --scheduler" in capsys.readouterr().err
