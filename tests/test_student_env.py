"""A student's environment holds initlab and the student's Jupyter tools, and cannot import
or read the instructor's material (autograder/, solutions/, source/).

The environment is the one `python3 tasks.py student --venv DIR` builds, run for real (a
wheel of this checkout, ``<wheel>[student]`` from the package index, the student
configuration of deploy/jupyterhub/ in its etc/jupyter), with one difference: before the
command runs, the fresh venv is lent the test environment's installs of initlab's own
dependencies (numpy, matplotlib, scipy, torch, torchvision and what they need) through a
``.pth`` line to a folder of links to them, so pip finds them satisfied and does not
fetch torch's 5.5 GB again. Everything else (JupyterLab, Notebook, nbgrader, ipywidgets and
their dependencies) is installed into the venv, about a minute. The folder lent holds
no initlab code and nothing of autograder/. tests/test_student_lab.py runs JupyterLab from
this same environment. ``INITLAB_TEST_FULL_STUDENT_ENV=1`` also runs the command with
nothing lent (opt-in: about 4 minutes and 6 GB from the package index).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import venv
import zipfile
from importlib import metadata
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
INSTRUCTOR_ONLY = ("autograder", "solutions", "source")
SECRET_MARKERS = ("initlab_grading", "### BEGIN SOLUTION", "### BEGIN HIDDEN TESTS")
PROBE = """
import importlib, importlib.util, json, sys
import initlab
modules = ["budget", "checks", "data", "engine", "plotting", "widgets"]
for name in modules:
    importlib.import_module(f"initlab.{name}")
print(json.dumps({
    "initlab": initlab.__file__,
    "initlab_grading": importlib.util.find_spec("initlab_grading") is not None,
    "path": sys.path,
    "prefix": sys.prefix,
}))
"""
STUDENT_SERVER_EXTENSIONS = {
    "nbgrader.server_extensions.formgrader": False,
    "nbgrader.server_extensions.course_list": False,
    "nbgrader.server_extensions.assignment_list": True,
    "nbgrader.server_extensions.validate_assignment": True,
}
INSTRUCTOR_LAB_PLUGINS = (
    "@jupyter/nbgrader:formgrader",
    "@jupyter/nbgrader:create-assignment",
    "@jupyter/nbgrader:course-list",
)
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _tasks():
    spec = importlib.util.spec_from_file_location("initlab_tasks", REPO / "tasks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a student's shell: no PYTHONPATH, no user site-packages."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PYTHONNOUSERSITE"] = "1"
    env.update(extra)
    return env


def probe(python: Path, cwd: Path) -> dict:
    """What the environment's python sees, started as a student starts it (from
    elsewhere, clean_env)."""
    out = subprocess.run(
        [str(python), "-c", PROBE], cwd=cwd, env=clean_env(), capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def assert_holds_nothing_of_the_instructor(env_dir: Path) -> None:
    """No file in the environment equals a file of autograder/, solutions/ or source/;
    no path file or file of initlab's own install carries a solution,
    hidden-test or grading-package marker (third-party packages may: nbgrader's own code
    handles and ships notebooks with "### BEGIN SOLUTION"; METADATA is the README)."""
    secret = {
        _digest(p): p
        for top in INSTRUCTOR_ONLY
        for p in (REPO / top).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.stat().st_size > 0
    }
    (record,) = env_dir.glob("lib/python*/site-packages/initlab-*.dist-info/RECORD")
    own = {
        (record.parents[1] / line.split(",")[0]).resolve()
        for line in record.read_text().splitlines()
        if line
    }
    for path in env_dir.rglob("*"):
        if not path.is_file() or path.is_symlink():
            continue
        assert _digest(path) not in secret, f"{path} is a copy of {secret[_digest(path)]}"
        if path.suffix == ".pth" or path.resolve() in own and path.name != "METADATA":
            text = path.read_text(errors="replace")
            found = [m for m in SECRET_MARKERS if m in text]
            assert not found, f"{path} contains {found}"


def assert_student_view(seen: dict, env_dir: Path, lent: Path | None = None) -> None:
    """initlab comes from the environment's own site-packages, initlab_grading is not
    importable, and no import path leads into the repository (``lent``: the folder of
    dependencies the environment borrows, checked by lend_dependencies)."""
    assert not seen["initlab_grading"], "a student's environment can import initlab_grading"
    assert Path(seen["initlab"]).resolve().is_relative_to(env_dir.resolve()), seen["initlab"]
    for entry in seen["path"]:
        if not entry or (lent is not None and Path(entry) == lent):
            continue
        resolved = Path(entry).resolve()
        assert not resolved.is_relative_to(REPO) or resolved.is_relative_to(env_dir.resolve()), (
            f"{entry} on a student's sys.path leads into the repository"
        )


# --------------------------------------------------------------------------------------
# The student environment, built once per test session


def lend_dependencies(dest: Path) -> Path:
    """A folder of links to this environment's installs of initlab's own dependencies
    (pyproject's [project] dependencies) and, recursively, theirs: only the top-level
    modules and .dist-info folders their RECORDs list, so initlab itself, nbgrader and
    JupyterLab are not among them unless torch's stack needs them."""
    wanted = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    todo, found = [Requirement(r) for r in wanted], {}
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in found or req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        found[name] = metadata.distribution(name)
        todo += [Requirement(r) for r in found[name].requires or []]
    assert not {"initlab", "nbgrader", "jupyterlab", "notebook"} & set(found), sorted(found)
    dest.mkdir(parents=True)
    for dist in found.values():
        for top in {f.parts[0] for f in dist.files or []} - {"..", "__pycache__"}:
            link = dest / top
            if not link.exists():
                link.symlink_to(Path(dist.locate_file(top)).resolve())
    assert not (dest / "initlab").exists() and not (dest / "initlab_grading").exists()
    return dest


def build_student_env(base: Path) -> tuple[Path, Path]:
    """`python3 tasks.py student --venv base/env`, the venv lent this environment's
    numeric stack first (see the module's docstring). Returns (env, lent folder)."""
    env_dir, lent = base / "env", lend_dependencies(base / "lent")
    venv.EnvBuilder(with_pip=True).create(env_dir)  # as task_student creates it
    site = subprocess.run(
        [
            str(env_dir / "bin" / "python"),
            "-c",
            "import sysconfig; print(sysconfig.get_paths()['purelib'])",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(site, "zz_lent_dependencies.pth").write_text(f"{lent}\n")
    subprocess.run(
        [sys.executable, str(REPO / "tasks.py"), "student", "--venv", str(env_dir)],
        env=clean_env(),
        check=True,
    )
    return env_dir, lent


def student_env(tmp_path_factory) -> tuple[Path, Path]:
    """The student environment of this test session (built by the first module that
    asks, about a minute; test_student_lab.py runs JupyterLab from it)."""
    base = tmp_path_factory.getbasetemp() / "student-env"
    if not (base / "built").exists():
        shutil.rmtree(base, ignore_errors=True)
        build_student_env(base)
        (base / "built").write_text("")
    return base / "env", base / "lent"


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> tuple[Path, Path]:
    return student_env(tmp_path_factory)


def jupyter_listing(env_dir: Path, *args: str, home: Path) -> str:
    """`jupyter ...` of the environment, as a student with a home of their own runs it
    (no user configuration), without colours."""
    out = subprocess.run(
        [str(env_dir / "bin" / "jupyter"), *args],
        env=clean_env(HOME=str(home), JUPYTER_CONFIG_DIR=str(home / ".jupyter")),
        capture_output=True,
        text=True,
        check=True,
    )
    return ANSI.sub("", out.stdout + out.stderr)


# --------------------------------------------------------------------------------------
# A notebook whose correct answer writes to stderr (warnings, a progress line)


def _nbgrader(**meta) -> dict:
    cell = {"grade": False, "solution": False, "locked": False, "task": False}
    return {"nbgrader": {**cell, "schema_version": 3, **meta}}


def stderr_notebook(path: Path, correct: bool = True) -> Path:
    """An nbgrader notebook with one answer and one test cell. The answer warns and
    prints a progress line on stderr each time it is called, as correct code using a
    library often does; the test calls it. ``correct=False``: the answer is wrong too."""
    result = "sum(xs) / len(xs)" if correct else "sum(xs)"
    answer = (
        "import sys\nimport warnings\n\n\ndef mean(xs):\n"
        '    warnings.warn("mean() converts its input to float", UserWarning)\n'
        '    sys.stderr.write("converting: 100%\\n")\n'
        f"    return {result}\n"
    )
    test = (
        'assert mean([1, 2, 3]) == 2, f"mean([1, 2, 3]) should be 2, not {mean([1, 2, 3])}"\n'
        'print("Visible tests passed.")'
    )
    kernel = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb = new_notebook(metadata={"kernelspec": kernel})
    nb.cells = [
        new_code_cell(answer, metadata=_nbgrader(solution=True, grade_id="answer")),
        new_code_cell(test, metadata=_nbgrader(grade=True, locked=True, points=1, grade_id="t")),
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def nbgrader_validate(nbgrader: Path, notebook: Path, home: Path, config_dir: Path) -> str:
    """`nbgrader validate` as a student runs it in their folder: HOME their own,
    JUPYTER_CONFIG_DIR (the user configuration folder) as given."""
    out = subprocess.run(
        [str(nbgrader), "validate", notebook.name],
        cwd=notebook.parent,
        env=clean_env(HOME=str(home), JUPYTER_CONFIG_DIR=str(config_dir)),
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


# --------------------------------------------------------------------------------------
# The tests


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    # the test environment has the build backend; no isolated build (offline in CI)
    return _tasks().build_wheel(tmp_path_factory.mktemp("wheel"), sys.executable, isolated=False)


def test_wheel_holds_the_student_library_only(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    package = sorted(n for n in names if not n.startswith("initlab-0.1.0.dist-info/"))
    library = sorted(
        f"initlab/{p.relative_to(REPO / 'lib' / 'initlab').as_posix()}"
        for p in (REPO / "lib" / "initlab").rglob("*.py")
    )
    assert package == library, "the wheel must hold lib/initlab's modules and nothing else"
    with zipfile.ZipFile(wheel) as archive:
        for name in names:
            text = archive.read(name).decode(errors="replace")
            assert not [m for m in SECRET_MARKERS if m in text and "METADATA" not in name], name


def test_student_environment_cannot_import_or_read_instructor_material(env, tmp_path):
    env_dir, lent = env
    seen = probe(env_dir / "bin" / "python", tmp_path)
    assert_student_view(seen, env_dir, lent)
    assert Path(seen["prefix"]).resolve() == env_dir.resolve()
    assert_holds_nothing_of_the_instructor(env_dir)
    # JupyterLab, nbgrader and the kernel are the environment's own, not lent
    for module in ("jupyterlab", "nbgrader", "ipykernel", "ipywidgets", "notebook"):
        where = subprocess.run(
            [str(env_dir / "bin" / "python"), "-c", f"import {module}; print({module}.__file__)"],
            env=clean_env(),
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        assert Path(where).resolve().is_relative_to(env_dir.resolve()), (module, where)


def test_student_environment_has_the_student_tools_and_no_instructor_tool(env, tmp_path):
    env_dir, _ = env
    server = jupyter_listing(env_dir, "server", "extension", "list", home=tmp_path)
    for extension, on in STUDENT_SERVER_EXTENSIONS.items():
        state = "enabled" if on else "disabled"
        assert re.search(rf"^\s*{re.escape(extension)} {state}\b", server, re.M), (
            f"{extension} should be {state} in the student environment:\n{server}"
        )
    lab = jupyter_listing(env_dir, "labextension", "list", home=tmp_path)
    assert re.search(r"@jupyter/nbgrader v0\.9\.6 enabled OK", lab), lab
    disabled = lab.split("Disabled extensions:", 1)[-1] if "Disabled extensions:" in lab else ""
    for plugin in INSTRUCTOR_LAB_PLUGINS:
        assert plugin in disabled, f"{plugin} should be listed as disabled:\n{lab}"
    config = env_dir / "etc" / "jupyter"
    assert (config / "nbgrader_config.py").read_bytes() == (
        REPO / "deploy" / "jupyterhub" / "nbgrader_config.py"
    ).read_bytes()


def test_validate_in_the_student_environment_ignores_stderr_as_grading_does(env, tmp_path):
    """The answer is right but warns on stderr: nbgrader's own Validate would fail its test
    cell (tests/test_jupyterhub_deploy.py shows it), the student environment's passes it,
    and still fails a wrong answer that warns the same way."""
    env_dir, _ = env
    nbgrader, home = env_dir / "bin" / "nbgrader", tmp_path / "home"
    home.mkdir()
    right = stderr_notebook(tmp_path / "work" / "warns.ipynb")
    said = nbgrader_validate(nbgrader, right, home, home / ".jupyter")
    assert "Success! Your notebook passes all the tests." in said, said
    wrong = stderr_notebook(tmp_path / "work" / "warns-wrong.ipynb", correct=False)
    said = nbgrader_validate(nbgrader, wrong, home, home / ".jupyter")
    assert "VALIDATION FAILED ON 1 CELL(S)!" in said, said
    assert "mean([1, 2, 3]) should be 2, not 6" in said, said


@pytest.mark.skipif(
    os.environ.get("INITLAB_TEST_FULL_STUDENT_ENV") != "1",
    reason="nothing lent: about 4 minutes and 6 GB; INITLAB_TEST_FULL_STUDENT_ENV=1 runs it",
)
def test_one_command_student_environment_with_nothing_lent(tmp_path):
    env_dir = tmp_path / "initlab-env"
    subprocess.run(
        [sys.executable, str(REPO / "tasks.py"), "student", "--venv", str(env_dir)],
        env=clean_env(),
        check=True,
    )
    seen = probe(env_dir / "bin" / "python", tmp_path)
    assert_student_view(seen, env_dir)
    assert_holds_nothing_of_the_instructor(env_dir)
    test_student_environment_has_the_student_tools_and_no_instructor_tool((env_dir, None), tmp_path)
