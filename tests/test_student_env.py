"""A student's environment holds initlab and cannot import or read the instructor's
material (autograder/, solutions/, source/).

`python3 tasks.py student` builds a wheel of this checkout and installs
``<wheel>[student]`` into a fresh venv: torch and JupyterLab make that a few minutes and
about 5.5 GB, too much for every CI run. So the always-on test installs the same wheel,
built by the same function, with ``--no-deps`` into a fresh venv, and lends it the
dependencies of the test environment through a ``.pth`` line (a site-packages folder with
no initlab code in it: the dev install of initlab is editable, i.e. only a path hook,
which a ``.pth`` path line does not run). What is checked is what the wheel brings: its
files, where ``import initlab`` resolves, and that nothing of the instructor's material
is importable or stored in the environment. ``INITLAB_TEST_FULL_STUDENT_ENV=1`` runs the
real one-command install as well (opt-in, minutes).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

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


def _tasks():
    spec = importlib.util.spec_from_file_location("initlab_tasks", REPO / "tasks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def clean_env() -> dict[str, str]:
    """The environment of a student's shell: no PYTHONPATH, no user site-packages."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PYTHONNOUSERSITE"] = "1"
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
    importable, and no import path leads into the repository (``lent``: the dependency
    folder the light environment borrows, checked by the caller)."""
    assert not seen["initlab_grading"], "a student's environment can import initlab_grading"
    assert Path(seen["initlab"]).resolve().is_relative_to(env_dir.resolve()), seen["initlab"]
    for entry in seen["path"]:
        if not entry or (lent is not None and Path(entry) == lent):
            continue
        resolved = Path(entry).resolve()
        assert not resolved.is_relative_to(REPO) or resolved.is_relative_to(env_dir.resolve()), (
            f"{entry} on a student's sys.path leads into the repository"
        )


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


def test_installed_student_environment_cannot_import_or_read_instructor_material(wheel, tmp_path):
    env_dir = tmp_path / "student-env"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    install = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [*install, "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)],
        env=clean_env(),
        check=True,
    )
    # the dependencies (numpy, torch, ...) of the test environment, lent by a path line
    lent = Path(sysconfig.get_paths()["purelib"])
    assert not (lent / "initlab").exists() and not (lent / "initlab_grading").exists()
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(purelib, "zz_lent_dependencies.pth").write_text(f"{lent}\n")

    seen = probe(python, tmp_path)
    assert_student_view(seen, env_dir, lent)
    assert Path(seen["initlab"]).resolve() == Path(purelib, "initlab", "__init__.py").resolve()
    assert_holds_nothing_of_the_instructor(env_dir)


@pytest.mark.skipif(
    os.environ.get("INITLAB_TEST_FULL_STUDENT_ENV") != "1",
    reason="the real install takes minutes and ~5.5 GB; INITLAB_TEST_FULL_STUDENT_ENV=1 runs it",
)
def test_one_command_student_environment(tmp_path):
    env_dir = tmp_path / "initlab-env"
    subprocess.run(
        [sys.executable, str(REPO / "tasks.py"), "student", "--venv", str(env_dir)],
        env=clean_env(),
        check=True,
    )
    python = env_dir / "bin" / "python"
    seen = probe(python, tmp_path)
    assert_student_view(seen, env_dir)
    assert_holds_nothing_of_the_instructor(env_dir)
    jupyter = env_dir / "bin" / "jupyter"
    labext = subprocess.run(
        [str(jupyter), "labextension", "list"], capture_output=True, text=True, check=True
    )
    assert "@jupyter/nbgrader" in labext.stdout + labext.stderr
    server = subprocess.run(
        [str(jupyter), "server", "extension", "list"], capture_output=True, text=True, check=True
    )
    listed = server.stdout + server.stderr
    for extension in ("validate_assignment", "assignment_list"):
        assert f"nbgrader.server_extensions.{extension} \x1b[32menabled" in listed or (
            f"nbgrader.server_extensions.{extension} enabled" in listed
        ), listed
