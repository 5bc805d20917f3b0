#!/usr/bin/env python3
"""Task runner of the initlab course kit. Needs only python3 (3.11 or newer).

    python3 tasks.py course    the instructor's loop on the bundled sample submissions
    python3 tasks.py test      ruff, the pytest suite, and nbval over solutions/
    python3 tasks.py release   rebuild release/ and solutions/ from source/ (commit them)
    python3 tasks.py new-assignment ID [--title TITLE]
                               a new assignment: its master notebook, grader, samples and
                               test, found by discovery (nothing else to register)
    python3 tasks.py student [--venv DIR]
                               a student's environment in DIR (default .venv-student):
                               initlab from a wheel, JupyterLab 4, nbgrader's validate
                               and assignment list; nothing from autograder/ or solutions/

The first three tasks create the virtual environment .venv (or the folder named by INITLAB_VENV)
on first use, and reinstalls the kit into it whenever pyproject.toml changes.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
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


def check_python() -> None:
    if sys.version_info < MIN_PYTHON:
        sys.exit(
            f"initlab needs Python {'.'.join(map(str, MIN_PYTHON))} or newer; this is "
            f"{sys.version.split()[0]}. Run the task with a newer python3."
        )


def create_venv(target: Path, clear: bool = False) -> None:
    """A virtual environment with pip at ``target``; a Python without ensurepip (Debian
    and Ubuntu ship it in a separate package) gets a message saying what to install."""
    if importlib.util.find_spec("ensurepip") is None:
        sys.exit(
            f"{sys.executable} cannot create virtual environments with pip (its ensurepip "
            "module is missing). On Debian or Ubuntu install it with "
            f"`apt-get install python{sys.version_info.major}.{sys.version_info.minor}-venv` "
            "(or python3-venv), then run the task again."
        )
    venv.EnvBuilder(with_pip=True, clear=clear).create(target)


def ensure_venv() -> Path:
    """Create the virtual environment if needed and install the kit with its dev extras."""
    check_python()
    python = venv_python()
    if not python.exists():
        say(f"creating the virtual environment {VENV}")
        create_venv(VENV, clear=VENV.exists())
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if not STAMP.exists() or STAMP.read_text().strip() != wanted:
        say("installing initlab[dev] into it (torch makes the first time take a few minutes)")
        pip = [str(python), "-m", "pip", "--disable-pip-version-check", "-q"]
        run([*pip, "install", "--upgrade", "pip"])
        run([*pip, "install", "-e", f"{ROOT}[dev]"])
        STAMP.write_text(wanted)
    return python


def ensure_bubblewrap() -> None:
    """Grading kernels run inside bubblewrap (docs/security.md): install Debian's package
    when it is missing and this is root with apt-get, else say how."""
    if shutil.which("bwrap"):
        return
    if os.geteuid() == 0 and shutil.which("apt-get"):
        say("installing bubblewrap (grading kernels run inside it)")
        apt = ["apt-get", "-o", "DPkg::Lock::Timeout=900", "-q"]
        run([*apt, "update"])
        run([*apt, "install", "-y", "bubblewrap"])
        return
    raise SystemExit(
        "bubblewrap (bwrap) is missing; grading kernels run inside it. Install it "
        "(Debian/Ubuntu: sudo apt-get install bubblewrap), then run the task again."
    )


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


def reference_numerics() -> dict[str, str]:
    """The numerical code paths solutions/ is executed on
    (autograder/initlab_grading/course/numerics.py, a module that imports nothing)."""
    path = ROOT / "autograder" / "initlab_grading" / "course" / "numerics.py"
    spec = importlib.util.spec_from_file_location("_initlab_numerics", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return dict(module.REFERENCE_NUMERICS)


def run(cmd: list[str], env: dict[str, str] | None = None) -> None:
    proc = subprocess.run(cmd, cwd=ROOT, env=env)
    if proc.returncode != 0:
        sys.exit(proc.returncode)


def task_course() -> None:
    python = ensure_venv()
    ensure_bubblewrap()
    run([str(python), "-m", "initlab_grading.course"], env=course_env())


def task_release() -> None:
    python = ensure_venv()
    run([str(python), "-m", "initlab_grading.course", "--build-only"], env=course_env())


def task_test() -> None:
    python = ensure_venv()
    ensure_bubblewrap()
    env = course_env()
    say("ruff check")
    lint = ["lib", "autograder", "tests", "benchmarks", "results", "tasks.py"]
    run([str(python), "-m", "ruff", "check", *lint], env=env)
    # two workers (tests/conftest.py groups the tests so that a file's module fixtures are
    # built once, and a notebook's cells run in one kernel); grading inside the tests uses
    # both cores too; the 15 slowest tests are listed at the end
    pytest = [str(python), "-m", "pytest", "-n", "2", "-p", "no:cacheprovider", "-q"]
    pytest += ["--durations=15"]
    say("pytest tests/ (experiments at the grade budget)")
    run([*pytest, "--dist", "loadgroup", "tests"], env={**env, "INITLAB_BUDGET": "grade"})
    # solutions/ was executed at the default budget (the one students run) on fixed numerical
    # code paths: nbval runs it again there, so every output it compares and every
    # instructor check holds at that budget, on any x86-64 CPU
    say("nbval over solutions/ (at the default budget and numerics they were executed at)")
    run(
        [*pytest, "--dist", "loadfile", "solutions", "--nbval", "--nbval-current-env"],
        env={**env, **reference_numerics(), "INITLAB_BUDGET": "default", "INITLAB_PROGRESS": "0"},
    )


def build_wheel(dest: Path, python: Path | str = sys.executable, isolated: bool = True) -> Path:
    """A wheel of initlab from this checkout: lib/initlab only (the package list in
    pyproject.toml), so an environment installed from it holds no file of autograder/,
    solutions/ or source/ and no path into this repository."""
    cmd = [str(python), "-m", "pip", "--disable-pip-version-check", "-q", "wheel", "--no-deps"]
    if not isolated:
        cmd.append("--no-build-isolation")
    run([*cmd, "--wheel-dir", str(dest), str(ROOT)])
    (wheel,) = Path(dest).glob("initlab-*.whl")
    return wheel


def task_student(args: list[str]) -> None:
    """Create or update a student's environment: a venv with initlab[student] installed
    from a wheel of this checkout, never as an editable install pointing into it."""
    if not (args == [] or len(args) == 2 and args[0] == "--venv"):
        sys.exit("usage: python3 tasks.py student [--venv DIR]")
    check_python()
    target = Path(args[1] if args else ROOT / ".venv-student").expanduser().resolve()
    python = target / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    if not python.exists():
        say(f"creating the student environment {target}")
        create_venv(target)
    with tempfile.TemporaryDirectory() as tmp:
        wheel = build_wheel(Path(tmp), python)
        say(f"installing {wheel.name}[student] (torch makes the first time take a few minutes)")
        pip = [str(python), "-m", "pip", "--disable-pip-version-check", "-q", "install"]
        # the same version number from a newer checkout must replace the installed one
        run([*pip, "--force-reinstall", "--no-deps", str(wheel)])
        run([*pip, f"{wheel}[student]"])
    # the single-user image's configuration (deploy/jupyterhub/install_config.py): Validate
    # judges stderr and time limits as grading does; nbgrader's instructor tools are off
    say("installing the student configuration into its etc/jupyter")
    run([str(python), str(ROOT / "deploy" / "jupyterhub" / "install_config.py")])
    jupyter = python.with_name("jupyter")
    say(f"done. JupyterLab on the released notebooks: cd {ROOT / 'release'} && {jupyter} lab")


def task_new_assignment(args: list[str]) -> None:
    python = ensure_venv()
    run([str(python), "-m", "initlab_grading.course.scaffold", *args], env=course_env())


TASKS = {"course": task_course, "test": task_test, "release": task_release}


def main() -> None:
    name, args = (sys.argv[1], sys.argv[2:]) if len(sys.argv) > 1 else ("", [])
    if name == "student":
        task_student(args)
    elif name == "new-assignment" and args:
        task_new_assignment(args)
    elif name in TASKS and not args:
        TASKS[name]()
    else:
        names = "|".join([*TASKS, "student", "new-assignment ID"])
        sys.exit(f"usage: python3 tasks.py {{{names}}}\n\n{__doc__}")


if __name__ == "__main__":
    main()
