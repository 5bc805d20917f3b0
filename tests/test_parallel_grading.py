"""The kit's parallel grading command (initlab_grading.grading.grade). The round-trip tests grade
every sample submission through it and check each score; here: it grades exactly as plain
`nbgrader autograde` does, a broken notebook is reported and not retried, an internal
error fails one submission only, a runaway submission is stopped with its kernel, a
killed worker is replaced, the worker protocol refuses lines it did not send, bad options
and a memory limit too small for torch are refused before grading, Ctrl-C writes a partial
report, one worker grades many submissions without its open files or memory growing,
progress lines and the JSON report."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, make_course
from initlab_grading.course import build, layout
from initlab_grading.course.layout import grade_id
from initlab_grading.course.results import collect_results
from initlab_grading.course.samples import Sample, samples_for
from initlab_grading.grading import attempts, distributed, grade, worker_pool
from initlab_grading.grading.options import GradingOptions

ASSIGNMENT = "gradient_descent"


# Samples graded by both plain nbgrader and the kit: full marks, a hidden check's failure,
# deleted test cells restored.
COMPARED = ("reference", "gradient-sign", "deleted-failing-tests")


@pytest.fixture(scope="module")
def small_class(tmp_path_factory):
    """COMPARED's samples, a notebook that is not JSON at all, and a copy of the
    reference that meets an internal error of the kit's."""
    root = make_course(tmp_path_factory.mktemp("parallel-course"), [ASSIGNMENT])
    samples = [s for s in samples_for(ASSIGNMENT) if s.student in COMPARED]
    build.write_submissions(root, ASSIGNMENT, samples)
    (ref,) = [s for s in samples if s.student == "reference"]
    build.write_submissions(root, ASSIGNMENT, [dataclasses.replace(ref, student="internal")])
    broken = root / "submitted" / "broken-json" / ASSIGNMENT
    broken.mkdir(parents=True)
    (broken / f"{ASSIGNMENT}.ipynb").write_text("{ this is not a notebook")
    return root


def test_main_reports_progress_failures_and_writes_a_report(small_class, capsys, monkeypatch):
    inspect = attempts.inspect_submission

    def faulty(root, assignment, student):
        if student == "internal":
            raise RuntimeError("a fault of the kit's")
        return inspect(root, assignment, student)

    monkeypatch.setattr(attempts, "inspect_submission", faulty)
    report = small_class / "report.json"
    code = grade.main(
        [ASSIGNMENT, "--root", str(small_class), "--workers", "2", "--report", str(report)]
    )
    out = capsys.readouterr().out
    assert code == 1  # broken-json cannot be graded
    rows = {r["student"]: r for r in json.loads(report.read_text())}
    assert {s: rows[s]["status"] for s in COMPARED} == {s: "graded" for s in COMPARED}
    # rejected when the submission is inspected, before nbgrader runs: never retried
    assert rows["broken-json"]["status"] == "failed" and rows["broken-json"]["attempts"] == 0
    assert "is not a valid notebook" in rows["broken-json"]["detail"]
    assert (
        "has no submission of gradient_descent by broken-json" in rows["broken-json"]["gradebook"]
    )
    # one submission's internal error fails that submission only
    assert rows["internal"]["status"] == "failed"
    assert "internal error: RuntimeError: a fault of the kit's" in rows["internal"]["detail"]
    assert "broken-json: failed" in out and "reference: graded" in out
    assert "5 submissions in" in out and "2 failed, 3 graded" in out
    assert re.search(r"\[1/5\] .*; 4 left, about \d+ (s|min \d+ s) to go", out), out
    assert re.search(r"\[5/5\] [^;]*\n", out), out  # nothing left: no time to go
    problems = build.compare_with_samples(
        collect_results(small_class, ASSIGNMENT, list(COMPARED)),
        [s for s in samples_for(ASSIGNMENT) if s.student in COMPARED],
        layout.test_cell_ids(small_class, ASSIGNMENT),
    )
    assert problems == []


def _grades(root: Path, students: tuple[str, ...]) -> dict[str, dict]:
    from nbgrader.api import Gradebook

    with Gradebook(layout.gradebook_url(root)) as gb:
        return {
            s: {
                g.name: (g.auto_score, g.needs_manual_grade, g.max_score)
                for g in gb.find_submission_notebook(ASSIGNMENT, ASSIGNMENT, s).grades
            }
            for s in students
        }


def test_plain_nbgrader_grades_exactly_as_the_kit(small_class, tmp_path):
    """The same submissions graded by plain `nbgrader autograde` (one process, one after
    another) in a copy of the course: every cell's score, maximum and manual-grading flag
    equal what the kit wrote (the test above graded small_class; run alone, this test has
    the kit grade them first)."""
    if not (small_class / "autograded" / "reference").exists():
        for student in COMPARED:
            res = distributed.grade_one(small_class, ASSIGNMENT, student, 600, 1)
            assert res.status == "graded"
    plain = tmp_path / "plain"
    shutil.copytree(small_class, plain, symlinks=True, ignore=shutil.ignore_patterns(
        "autograded", "gradebook.db", "report.json", "broken-json", "internal"))  # fmt: skip
    layout.nbgrader(plain, "generate_assignment", ASSIGNMENT, "--force")
    layout.nbgrader(plain, "autograde", ASSIGNMENT, "--force")
    kit, by_nbgrader = _grades(small_class, COMPARED), _grades(plain, COMPARED)
    assert kit == by_nbgrader
    assert any(flag for cells in kit.values() for _, flag, _ in cells.values())  # manual ones
    assert {score for cells in kit.values() for score, _, _ in cells.values()} > {0.0}


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_time_limit_stops_grading(small_class):
    # nbgrader alone takes seconds to start, so half a second always runs out
    res = distributed.grade_one(small_class, ASSIGNMENT, "reference", timeout=0.5, retries=0)
    assert res.status == "timed out" and "stopped after 0.5 s" in res.detail


def test_stopping_kills_the_kernel_of_an_infinite_loop(small_class):
    """An answer that never returns: once its kernel runs, stopping the grading process
    leaves no process of it alive (the kernel runs in a session of its own)."""
    loop = Sample("infinite-loop", "", answers={"f_and_grad": "while True:\n    pass"})
    build.write_submissions(small_class, ASSIGNMENT, [loop])
    layout.ensure_tools_on_path()
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
        tree = attempts.descendants(proc.pid)
    assert any("ipykernel" in _cmdline(pid) for pid in tree), "no kernel started in 120 s"
    attempts._kill_tree(proc)
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
    the reference, which a fresh worker grades in full. Nothing of them is left running.
    Graded without bubblewrap: inside it the kernel's parent is the sandbox's own init,
    which no signal from inside can kill (tests/test_bubblewrap.py), so the worker would
    survive; this is the machinery for workers that die of other causes."""
    killer = Sample(
        "a-kills-grader",
        "",
        answers={"f_and_grad": "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)"},
    )
    loop = Sample("b-infinite-loop", "", answers={"f_and_grad": "while True:\n    pass"})
    (ref,) = [s for s in samples_for(ASSIGNMENT) if s.student == "reference"]
    c_ref = Sample("c-reference", "", answers=ref.answers)
    class_root = make_course(small_class.parent / "worker-class", [ASSIGNMENT])
    build.write_submissions(class_root, ASSIGNMENT, [killer, loop, c_ref])
    results = {
        r.student: r
        for r in grade.grade_class(
            class_root,
            ASSIGNMENT,
            GradingOptions(workers=1, timeout=10, retries=1, bubblewrap=False),
            progress=lambda _: None,
        )
    }
    assert results["a-kills-grader"].status == "failed"
    assert results["a-kills-grader"].attempts == 2
    assert attempts.WORKER_STOPPED in results["a-kills-grader"].detail
    assert "died each time this notebook was graded (2 times)" in " ".join(
        results["a-kills-grader"].notes
    )
    loop_result = results["b-infinite-loop"]
    assert loop_result.status == "timed out"
    # the report says what the gradebook holds, and it does: a submission without scores
    assert "without scores" in loop_result.gradebook, loop_result.gradebook
    assert _grades(class_root, ("b-infinite-loop",))["b-infinite-loop"]
    assert all(
        score is None
        for score, _, _ in _grades(class_root, ("b-infinite-loop",))["b-infinite-loop"].values()
    )
    assert not (class_root / "autograded" / "b-infinite-loop" / ASSIGNMENT).exists()
    assert results["c-reference"].status == "graded", results["c-reference"].detail
    tests = layout.test_cell_ids(class_root, ASSIGNMENT)
    (graded,) = collect_results(class_root, ASSIGNMENT, ["c-reference"])
    assert graded.auto_score == graded.auto_max(tests)
    time.sleep(1.5)  # a kernel whose worker died exits within a second (ipykernel's poller)
    left = [
        pid
        for pid in map(int, (p.name for p in Path("/proc").glob("[0-9]*")))
        if str(class_root) in _cwd(pid) and _alive(pid)
    ]
    assert left == [], [_cmdline(pid) for pid in left]


def test_a_kernel_that_does_not_answer_at_start_up_is_graded_again(small_class):
    """A kernel start that times out (jupyter_client's "Kernel didn't respond in 60
    seconds", before any of the student's code runs) is the machine's fault: the
    submission is graded again, not failed."""
    startup = (
        "RuntimeError: Kernel didn't respond in 60 seconds\n"
        "[ERROR] There was an error processing assignment 'gradient_descent' for student "
        "'reference'"
    )
    runs = iter([attempts.Attempt(startup, ok=False), attempts.Attempt("", ok=True)])
    result = attempts._grade_attempts(
        small_class, ASSIGNMENT, "reference", 60, 1, lambda: next(runs),
        layout.gradebook_url(small_class),
    )  # fmt: skip
    assert (result.status, result.attempts) == ("graded", 2), result
    # without a retry left it fails and says why
    runs = iter([attempts.Attempt(startup, ok=False)])
    result = attempts._grade_attempts(
        small_class, ASSIGNMENT, "reference", 60, 0, lambda: next(runs),
        layout.gradebook_url(small_class),
    )  # fmt: skip
    assert result.status == "failed" and "infrastructure: Kernel didn't respond in" in result.detail


def _cwd(pid: int) -> str:
    try:
        return str(Path(f"/proc/{pid}/cwd").resolve())
    except OSError:
        return ""


def test_the_worker_protocol_refuses_lines_it_did_not_send(small_class):
    """Without --isolate a kernel can open its worker's pipes through /proc. A line in the
    worker's input without the worker's key stops the worker (it is replaced), and an
    answer line without it (or for another job) is refused: the submission is not taken as
    graded on its word."""
    kernel = worker_pool.KernelOptions()
    worker = worker_pool.GradingWorker(small_class, ASSIGNMENT, kernel, None)
    try:
        # what a kernel would write into its parent's answer pipe, through /proc
        with open(f"/proc/self/fd/{worker.proc.stdout.fileno()}", "w") as pipe:
            pipe.write(json.dumps({"student": "reference", "success": True, "job": 1}) + "\n")
        with pytest.raises(worker_pool.WorkerFailure, match="not for this job") as failure:
            worker.grade("reference", None, 120, "token")
        assert failure.value.kind == "protocol"
        assert worker.proc.poll() is not None  # killed: it cannot be trusted any more
    finally:
        worker.stop()
    worker = worker_pool.GradingWorker(small_class, ASSIGNMENT, kernel, None)
    try:
        worker.proc.stdin.write(json.dumps({"student": "reference"}) + "\n")  # no key
        worker.proc.stdin.flush()
        assert worker.proc.wait(timeout=60) == 3
        with pytest.raises(worker_pool.WorkerFailure, match="grading worker stopped") as failure:
            worker.grade("reference", None, 120, "token")
        worker.stderr.seek(0)
        assert b"without this worker's key" in worker.stderr.read()
    finally:
        worker.stop()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--cell-timeout", "0"], "--cell-timeout: 0 is not a positive number of seconds"),
        (["--workers", "-1"], "--workers: -1 is not a number of workers"),
        (["--workers", "0"], "--workers: 0 is not a number of workers"),
        (["--memory-limit", "-1"], "--memory-limit: -1 is not 0 (no limit)"),
        (["--timeout", "0"], "--timeout: 0 is not a positive number of seconds"),
        (["--retries", "-2"], "--retries: -2 is not 0 or more"),
    ],
)
def test_bad_options_are_refused_before_grading(args, message, capsys):
    with pytest.raises(SystemExit) as stop:
        grade.main([ASSIGNMENT, *args])
    assert stop.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"workers": 0}, "workers must be at least 1, not 0"),
        ({"timeout": 0}, "timeout must be a positive number of seconds, not 0"),
        ({"retries": -1}, "retries must be 0 or more, not -1"),
        ({"memory_limit": -1}, "memory_limit must be 0 (none) or a positive GiB, not -1"),
        ({"file_limit": -1}, "file_limit must be 0 (none) or a positive GiB, not -1"),
        ({"cell_timeout": 0}, "cell_timeout must be a positive number of seconds, not 0"),
        ({"engine": "slurm"}, "engine must be 'local' or 'dask', not 'slurm'"),
    ],
)
def test_grading_options_out_of_range_are_refused(fields, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        GradingOptions(**fields)
    GradingOptions(memory_limit=None, file_limit=0, cell_timeout=None)  # no limits


def test_a_memory_limit_too_small_for_torch_is_refused_before_grading(small_class):
    with pytest.raises(SystemExit) as stop:
        grade.grade_class(small_class, ASSIGNMENT, GradingOptions(workers=1, memory_limit=0.25))
    assert "cannot import numpy and torch" in str(stop.value), stop.value
    assert "raise --memory-limit" in str(stop.value)


def _pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").glob("[0-9]*")]


def _tiny_course(root: Path, students: int) -> Path:
    """A course whose one assignment has one answer cell and one test cell, so that a
    submission takes about a second to grade."""
    import nbformat
    from nbformat import v4

    (root / "source" / "tiny").mkdir(parents=True)
    shutil.copy(REPO / "nbgrader_config.py", root / "nbgrader_config.py")
    (root / "autograder").symlink_to(REPO / "autograder", target_is_directory=True)

    def meta(**kw):
        return {"nbgrader": {"schema_version": 3, "locked": False, "points": 0,
                             "grade": False, "solution": False, **kw}}  # fmt: skip

    nb = v4.new_notebook(cells=[
        v4.new_code_cell("import numpy as np", metadata=meta(grade_id="setup", locked=True)),
        v4.new_code_cell("### BEGIN SOLUTION\nanswer = 42\n### END SOLUTION",
                         metadata=meta(grade_id="answer", solution=True)),
        v4.new_code_cell('assert answer == 42\nprint("Visible tests passed.")',
                         metadata=meta(grade_id="test", grade=True, locked=True, points=1)),
    ])  # fmt: skip
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}  # fmt: skip
    nbformat.write(nb, root / "source" / "tiny" / "tiny.ipynb")
    layout.nbgrader(root, "generate_assignment", "tiny", "--force")
    release = nbformat.read(root / "release" / "tiny" / "tiny.ipynb", 4)
    release.cells[1].source = "answer = 42"
    for i in range(students):
        folder = root / "submitted" / f"s{i:02d}" / "tiny"
        folder.mkdir(parents=True)
        nbformat.write(release, folder / "tiny.ipynb")
    return root


SOAK = 8


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return _tiny_course(tmp_path_factory.mktemp("tiny-course"), SOAK)


def test_one_worker_grades_many_submissions_without_growing(tiny):
    """Soak: one worker grades SOAK tiny submissions; its open file descriptors do not
    grow from the second submission on and its resident memory grows by less than 64 MiB."""
    seen: list[dict[str, int]] = []
    results = grade.grade_class(
        tiny, "tiny", GradingOptions(workers=1), progress=lambda _: None,
        on_worker=lambda w: seen.append(dict(w.last_resources)),
    )  # fmt: skip
    assert [r.status for r in results] == ["graded"] * SOAK, [r.detail for r in results]
    assert len(seen) == SOAK and all(s["fds"] > 0 for s in seen), seen
    fds = [s["fds"] for s in seen]
    assert max(fds[1:]) <= fds[1], fds  # no descriptor leaks from one submission to the next
    rss = [s["rss"] for s in seen]
    assert rss[-1] - rss[1] < 64 * 2**20, rss


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_stops_grading_and_writes_what_was_graded(tiny):
    """Ctrl-C after the first submission: the workers and kernels stop, the report lists
    the graded submission and the others as interrupted, and the exit status is 130."""
    report = tiny / "interrupted-report.json"
    cmd = [sys.executable, "-m", "initlab_grading.grading", "tiny", "--root", str(tiny)]
    cmd += ["--workers", "1", "--report", str(report)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, sys.path))}
    # A shell without job control starts background jobs with SIGINT ignored, and pytest's
    # workers and their children inherit that: give the grader the default a terminal has.
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, preexec_fn=_default_sigint)  # fmt: skip
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith(f"[1/{SOAK}] s00: graded"):
            proc.send_signal(signal.SIGINT)
            break
    out = "".join(lines) + proc.communicate(timeout=120)[0]
    assert proc.returncode == 130, out
    rows = {r["student"]: r["status"] for r in json.loads(report.read_text())}
    assert rows["s00"] == "graded" and set(rows) == {f"s{i:02d}" for i in range(SOAK)}, out
    assert set(rows.values()) == {"graded", "interrupted"} and rows["s07"] == "interrupted"
    assert "Interrupted: the submissions marked 'interrupted' were not graded." in out
    time.sleep(1.5)
    left = [pid for pid in _pids() if str(tiny) in _cwd(pid) and _alive(pid)]
    assert left == [], [_cmdline(pid) for pid in left]


def test_names_that_are_not_utf8_never_stop_a_run(tmp_path):
    """Under a strict UTF-8 stdout: a student folder whose name is not UTF-8 is reported
    and not graded, a notebook under a non-UTF-8 name is reported as missing the right
    one, a kernel that leaves a file with such a name is graded; the others are graded and
    the report is written."""
    root = make_course(tmp_path / "course", [ASSIGNMENT])
    (ref,) = [s for s in samples_for(ASSIGNMENT) if s.student == "reference"]
    litter = dataclasses.replace(ref, student="litter")
    stable = build.reference_answers(REPO, ASSIGNMENT)["stable_step"]
    stable += "\nopen(b'caf\\xe9.txt', 'w').close()\n"
    litter = dataclasses.replace(litter, answers={**litter.answers, "stable_step": stable})
    build.write_submissions(root, ASSIGNMENT, [ref, litter])
    submitted = os.fsencode(root / "submitted")
    bad_student = os.path.join(submitted, b"b\xf6se", os.fsencode(ASSIGNMENT))
    os.makedirs(bad_student)
    shutil.copy(root / "submitted" / "reference" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb",
                os.path.join(bad_student, os.fsencode(f"{ASSIGNMENT}.ipynb")))  # fmt: skip
    renamed = os.path.join(submitted, b"renamed", os.fsencode(ASSIGNMENT))
    os.makedirs(renamed)
    shutil.copy(root / "submitted" / "reference" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb",
                os.path.join(renamed, b"gradient_d\xe9scent.ipynb"))  # fmt: skip
    report = tmp_path / "report.json"
    env = {**os.environ, "PYTHONIOENCODING": "utf-8:strict", "PYTHONPATH": str(REPO / "autograder")}
    done = subprocess.run(
        [sys.executable, "-m", "initlab_grading.grading", ASSIGNMENT, "--root", str(root),
         "--workers", "2", "--report", str(report)],
        env=env, capture_output=True, timeout=900,
    )  # fmt: skip
    out = done.stdout.decode("utf-8")  # strict: what was printed is valid UTF-8
    assert done.returncode == 1, out + done.stderr.decode("utf-8", "replace")[-3000:]
    rows = {r["student"]: r for r in json.loads(report.read_text())}
    assert rows["reference"]["status"] == rows["litter"]["status"] == "graded", rows
    assert rows["b\\xf6se"]["status"] == "failed"
    assert "is not valid UTF-8" in rows["b\\xf6se"]["detail"]
    assert "gradient_d\\xe9scent.ipynb" in rows["renamed"]["detail"]
    assert "b\\xf6se: failed" in out


def test_plain_nbgrader_autograde_starts_kernels_in_the_sandbox(tmp_path, monkeypatch):
    """With the course's configuration, plain `nbgrader autograde` starts each kernel
    through the sandbox launcher, as the grading command does: the grader's secrets stay
    out of the kernel, its memory and file sizes are limited, and it runs inside
    bubblewrap, where the course's gradebook does not exist."""
    from initlab_grading.grading import kernels

    root = make_course(tmp_path / "course", [ASSIGNMENT])
    (ref,) = [s for s in samples_for(ASSIGNMENT) if s.student == "reference"]
    probe = build.reference_answers(REPO, ASSIGNMENT)["stable_step"] + (
        "\nimport os, resource\n"
        "print('PROBE', os.environ.get('PGPASSWORD'),"
        " resource.getrlimit(resource.RLIMIT_DATA)[0],"
        " resource.getrlimit(resource.RLIMIT_FSIZE)[0],"
        f" os.path.exists({str(root / 'gradebook.db')!r}))\n"
    )
    answers = {**ref.answers, "stable_step": probe}
    sample = dataclasses.replace(ref, student="probe", answers=answers)
    build.write_submissions(root, ASSIGNMENT, [sample])
    monkeypatch.setenv("PGPASSWORD", "a grader's password")
    layout.nbgrader(root, "autograde", ASSIGNMENT, "--student", "probe")
    text = (root / "autograded" / "probe" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb").read_text()
    memory = int(kernels.DEFAULT_MEMORY_LIMIT_GIB * kernels.GIB)
    size = int(kernels.DEFAULT_FILE_LIMIT_GIB * kernels.GIB)
    assert (root / "gradebook.db").exists()
    assert f"PROBE None {memory} {size} False" in text
    assert "a grader's password" not in text


def test_written_answers_show_the_submitted_outputs(tmp_path):
    """The outputs a written answer discusses (gradient_descent's EVIDENCE: the divergence
    answer and the two exploration plots) are shown after the answer as the student's run
    made them, marked as submitted, in the autograded notebook, formgrader and feedback;
    the fresh run's outputs stay where they were, and submitted HTML is dropped."""
    import base64
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import nbformat
    from test_hostile_grading import _formgrader_html

    root = make_course(tmp_path / "course", [ASSIGNMENT])
    (ref,) = [s for s in samples_for(ASSIGNMENT) if s.student == "reference"]
    build.write_submissions(root, ASSIGNMENT, [ref])
    path = root / "submitted" / "reference" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
    fig, ax = plt.subplots(figsize=(2, 1))
    ax.plot([0, 1], [1, 0])
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    png = base64.b64encode(buffer.getvalue()).decode("ascii")
    nb = nbformat.read(path, as_version=4)
    (cell,) = [c for c in nb.cells if grade_id(c) == "explore_distance"]
    cell.outputs = [
        nbformat.v4.new_output("stream", name="stdout", text="SUBMITTED: 200 steps\n"),
        nbformat.v4.new_output("display_data", data={"image/png": png, "text/plain": "<Figure>"}),
        nbformat.v4.new_output("display_data", data={"text/html": "<b>SUBMITTED-HTML</b>"}),
    ]
    nbformat.write(nb, path)
    assert grade.main([ASSIGNMENT, "--root", str(root), "--workers", "1"]) == 0
    graded = nbformat.read(root / "autograded" / "reference" / ASSIGNMENT / path.name, 4)
    ids = [c.metadata.get("nbgrader", {}).get("grade_id", c.id) for c in graded.cells]
    at = ids.index("divergence")
    assert ids[at + 1 : at + 3] == ["submitted-explore_contours", "submitted-explore_distance"]
    contours, distance = graded.cells[at + 1], graded.cells[at + 2]
    assert contours.outputs == [] and "not run before submitting" in contours.source
    assert "From the submitted notebook" in distance.source
    assert distance.outputs[0].text == "SUBMITTED: 200 steps\n"
    assert distance.outputs[1].data["image/png"] == png
    assert len(distance.outputs) == 2  # the HTML output was not kept
    fresh = graded.cells[ids.index("explore_distance")]
    assert fresh.outputs and "SUBMITTED" not in json.dumps(fresh.outputs)
    layout.nbgrader(root, "generate_feedback", ASSIGNMENT, "--force")
    feedback = (root / "feedback" / "reference" / ASSIGNMENT / f"{ASSIGNMENT}.html").read_text()
    for page in (feedback, _formgrader_html(root, "reference")):
        assert "SUBMITTED: 200 steps" in page and png[:200] in page
        assert "SUBMITTED-HTML" not in page
