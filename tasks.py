#!/usr/bin/env python3
"""Task runner of the initlab course kit. Needs only python3 (3.11 or newer).

    python3 tasks.py course    the instructor's loop on the bundled sample submissions
    python3 tasks.py test      ruff, the pytest suite, and nbval over solutions/
    python3 tasks.py release   rebuild release/ and solutions/ from source/ (commit them)

Each task creates the virtual environment .venv (or the folder named by INITLAB_VENV)
on first use, and reinstalls the kit into it whenever pyproject.toml changes.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("INITLAB_VENV", ROOT / ".venv"))
STAMP = VENV / ".initlab-installed"
MIN_PYTHON = (3, 11)


def say(message: str) -> None:
    print(f"[tasks] {message}", flush=True)


def venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def ensure_venv() -> Path:
    """Create the virtual environment if needed and install the kit with its dev extras."""
    if sys.version_info < MIN_PYTHON:
        sys.exit(
            f"initlab needs Python {'.'.join(map(str, MIN_PYTHON))} or newer; this is "
            f"{sys.version.split()[0]}. Run the task with a newer python3."
        )
    python = venv_python()
    if not python.exists():
        say(f"creating the virtual environment {VENV}")
        venv.EnvBuilder(with_pip=True, clear=VENV.exists()).create(VENV)
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if not STAMP.exists() or STAMP.read_text().strip() != wanted:
        say("installing initlab[dev] into it (torch makes the first time take a few minutes)")
        pip = [str(python), "-m", "pip", "--disable-pip-version-check", "-q"]
        run([*pip, "install", "--upgrade", "pip"])
        run([*pip, "install", "-e", f"{ROOT}[dev]"])
        STAMP.write_text(wanted)
    return python


def course_env() -> dict[str, str]:
    """Environment for instructor-side commands: autograder/ on the path, fixed threads."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "autograder"), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    )
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("MKL_NUM_THREADS", "1")
    env.setdefault("PYTHONHASHSEED", "0")
    return env


def run(cmd: list[str], env: dict[str, str] | None = None) -> None:
    proc = subprocess.run(cmd, cwd=ROOT, env=env)
    if proc.returncode != 0:
        sys.exit(proc.returncode)


def task_course() -> None:
    python = ensure_venv()
    run([str(python), "-m", "initlab_grading.course"], env=course_env())


def task_release() -> None:
    python = ensure_venv()
    run([str(python), "-m", "initlab_grading.course", "--build-only"], env=course_env())


def task_test() -> None:
    python = ensure_venv()
    env = course_env()
    # Reference notebooks run at the grade budget, as when they were generated.
    env["INITLAB_BUDGET"] = "grade"
    say("ruff check")
    lint = ["lib", "autograder", "tests", "benchmarks", "tasks.py"]
    run([str(python), "-m", "ruff", "check", *lint], env=env)
    say("pytest tests/ and nbval over solutions/")
    run(
        [
            str(python),
            "-m",
            "pytest",
            "tests",
            "solutions",
            "--nbval",
            "--nbval-current-env",
            "-p",
            "no:cacheprovider",
            "-q",
        ],
        env=env,
    )


TASKS = {"course": task_course, "test": task_test, "release": task_release}


def main() -> None:
    if len(sys.argv) != 2 or sys.argv[1] not in TASKS:
        sys.exit(f"usage: python3 tasks.py {{{'|'.join(TASKS)}}}\n\n{__doc__}")
    TASKS[sys.argv[1]]()


if __name__ == "__main__":
    main()
