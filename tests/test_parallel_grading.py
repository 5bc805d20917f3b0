"""The kit's parallel grading command (initlab_grading.grade). The round-trip tests grade
every sample submission through it and check each score; here: a broken notebook is
reported and not retried, a runaway submission is stopped with its kernel, progress
lines and the JSON report."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import make_course
from initlab_grading import course, grade
from initlab_grading.samples import Sample, samples_for

ASSIGNMENT = "gradient_descent"


@pytest.fixture(scope="module")
def small_class(tmp_path_factory):
    """The reference submission and a notebook that is not JSON at all."""
    root = make_course(tmp_path_factory.mktemp("parallel-course"), [ASSIGNMENT])
    (sample,) = [s for s in samples_for(ASSIGNMENT) if s.student == "reference"]
    course.write_submissions(root, ASSIGNMENT, [sample])
    broken = root / "submitted" / "broken-json" / ASSIGNMENT
    broken.mkdir(parents=True)
    (broken / f"{ASSIGNMENT}.ipynb").write_text("{ this is not a notebook")
    return root


def test_main_reports_progress_failures_and_writes_a_report(small_class, capsys):
    report = small_class / "report.json"
    code = grade.main(
        [ASSIGNMENT, "--root", str(small_class), "--workers", "2", "--report", str(report)]
    )
    out = capsys.readouterr().out
    assert code == 1  # broken-json cannot be graded
    rows = {r["student"]: r for r in json.loads(report.read_text())}
    assert rows["reference"]["status"] == "graded"
    # rejected when the submission is inspected, before nbgrader runs: never retried
    assert rows["broken-json"]["status"] == "failed" and rows["broken-json"]["attempts"] == 0
    assert "is not a valid notebook" in rows["broken-json"]["detail"]
    assert "broken-json: failed" in out and "reference: graded" in out
    assert "2 submissions in" in out and "1 failed, 1 graded" in out
    tests = course.test_cell_ids(small_class, ASSIGNMENT)
    (ref,) = course.collect_results(small_class, ASSIGNMENT, ["reference"])
    assert ref.auto_score == ref.auto_max(tests)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_time_limit_stops_grading(small_class):
    # nbgrader alone takes seconds to start, so half a second always runs out
    res = grade.grade_one(small_class, ASSIGNMENT, "reference", timeout=0.5, retries=0)
    assert res.status == "timed out" and "stopped after 0.5 s" in res.detail


def test_stopping_kills_the_kernel_of_an_infinite_loop(small_class):
    """An answer that never returns: once its kernel runs, stopping the grading process
    leaves no process of it alive (the kernel runs in a session of its own)."""
    loop = Sample("infinite-loop", "", answers={"f_and_grad": "while True:\n    pass"})
    course.write_submissions(small_class, ASSIGNMENT, [loop])
    course.ensure_tools_on_path()
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("nbgrader")),
            "autograde",
            ASSIGNMENT,
            "--student=infinite-loop",
            "--force",
        ],
        cwd=small_class,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    tree: list[int] = []
    while time.monotonic() < deadline and not any("ipykernel" in _cmdline(pid) for pid in tree):
        time.sleep(0.2)
        tree = grade.descendants(proc.pid)
    assert any("ipykernel" in _cmdline(pid) for pid in tree), "no kernel started in 120 s"
    grade._kill_tree(proc)
    time.sleep(0.2)
    assert [pid for pid in [proc.pid, *tree] if _alive(pid)] == []


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""


def test_workers_are_replaced_after_a_runaway_or_a_killed_worker(small_class):
    """The local engine grades in long-lived workers. One worker grades, in this order, a
    submission that kills the worker (its kernel's parent: retried once, then reported), an
    answer that never returns (stopped at the time limit with its worker and kernel), and
    the reference, which a fresh worker grades in full. Nothing of them is left running."""
    killer = Sample(
        "a-kills-grader",
        "",
        answers={"f_and_grad": "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)"},
    )
    loop = Sample("b-infinite-loop", "", answers={"f_and_grad": "while True:\n    pass"})
    (ref,) = [s for s in samples_for(ASSIGNMENT) if s.student == "reference"]
    c_ref = Sample("c-reference", "", answers=ref.answers)
    class_root = make_course(small_class.parent / "worker-class", [ASSIGNMENT])
    course.write_submissions(class_root, ASSIGNMENT, [killer, loop, c_ref])
    results = {
        r.student: r
        for r in grade.grade_class(
            class_root, ASSIGNMENT, workers=1, timeout=20, retries=1, progress=lambda _: None
        )
    }
    assert results["a-kills-grader"].status == "failed"
    assert results["a-kills-grader"].attempts == 2
    assert grade.WORKER_STOPPED in results["a-kills-grader"].detail
    assert results["b-infinite-loop"].status == "timed out"
    assert results["c-reference"].status == "graded", results["c-reference"].detail
    tests = course.test_cell_ids(class_root, ASSIGNMENT)
    (graded,) = course.collect_results(class_root, ASSIGNMENT, ["c-reference"])
    assert graded.auto_score == graded.auto_max(tests)
    time.sleep(1.5)  # a kernel whose worker died exits within a second (ipykernel's poller)
    left = [
        pid
        for pid in map(int, (p.name for p in Path("/proc").glob("[0-9]*")))
        if str(class_root) in _cwd(pid) and _alive(pid)
    ]
    assert left == [], [_cmdline(pid) for pid in left]


def _cwd(pid: int) -> str:
    try:
        return str(Path(f"/proc/{pid}/cwd").resolve())
    except OSError:
        return ""
