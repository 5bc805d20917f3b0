"""Shared fixtures. The instructor-only package initlab_grading lives in autograder/;
tests import it from there, as nbgrader's kernels do."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "autograder") not in sys.path:
    sys.path.insert(0, str(REPO / "autograder"))

from initlab_grading import course  # noqa: E402
from initlab_grading.samples import samples_for  # noqa: E402


def sample_answers(assignment: str, student: str) -> dict:
    """The namespace a sample's answer cells leave behind, run in order after the imports
    every notebook makes (numpy as np, math, torch)."""
    import math

    import numpy as np
    import torch

    (sample,) = [s for s in samples_for(assignment) if s.student == student]
    namespace = {"np": np, "math": math, "torch": torch}
    for source in sample.answers.values():
        exec(source, namespace)
    return namespace


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


def make_course(root: Path, assignments=course.ASSIGNMENTS) -> Path:
    """A course root with the repository's source/, config and autograder/, and release/
    freshly generated there by nbgrader (the repository's own release/ is compared with
    it, never overwritten)."""
    shutil.copytree(REPO / "source", root / "source")
    shutil.copy(REPO / "nbgrader_config.py", root / "nbgrader_config.py")
    (root / "autograder").symlink_to(REPO / "autograder", target_is_directory=True)
    for assignment in assignments:
        course.nbgrader(root, "generate_assignment", assignment, "--force")
    return root


@pytest.fixture(scope="session")
def fresh_course(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A course root with every assignment released (see make_course)."""
    return make_course(tmp_path_factory.mktemp("course"))


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Groups for pytest-xdist's ``--dist loadgroup`` (tasks.py test runs two workers):
    a file's tests run on one worker, so its module fixtures are built once, except the
    autograde round trip, whose tests are grouped per assignment (its fixture grades an
    assignment's samples when a test first asks for it), so that the two workers share
    the longest file. A test that names its own group keeps it. Without xdist the marks
    are inert."""
    for item in items:
        if item.get_closest_marker("xdist_group") is not None:
            continue
        group = item.nodeid.split("::")[0]
        params = getattr(item, "callspec", None)
        if group.endswith("test_autograde_roundtrip.py") and params is not None:
            group += "-" + params.params.get("assignment", "")
        item.add_marker(pytest.mark.xdist_group(group))
