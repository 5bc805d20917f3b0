"""Shared fixtures. The instructor-only package initlab_grading lives in autograder/;
tests import it from there, as nbgrader's kernels do."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# apt-get for the tests that install a Debian package when it is missing: it waits for
# dpkg's lock, which the other test worker may hold while installing its own package.
APT_GET = ("apt-get", "-o", "DPkg::Lock::Timeout=900")
if str(REPO / "autograder") not in sys.path:
    sys.path.insert(0, str(REPO / "autograder"))

from initlab_grading.course import layout  # noqa: E402
from initlab_grading.course.samples import samples_for  # noqa: E402


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


def make_course(root: Path, assignments=layout.ASSIGNMENTS) -> Path:
    """A course root with the repository's source/, config and autograder/, and release/
    freshly generated there by nbgrader (the repository's own release/ is compared with
    it, never overwritten)."""
    shutil.copytree(REPO / "source", root / "source")
    shutil.copy(REPO / "nbgrader_config.py", root / "nbgrader_config.py")
    (root / "autograder").symlink_to(REPO / "autograder", target_is_directory=True)
    for assignment in assignments:
        layout.nbgrader(root, "generate_assignment", assignment, "--force")
    return root


@pytest.fixture(scope="session")
def fresh_course(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A course root with every assignment released (see make_course)."""
    return make_course(tmp_path_factory.mktemp("course"))


# Parallel runs (tasks.py test: pytest-xdist, two workers, --dist loadgroup). Each
# notebook's cells must run in order in one kernel (nbval), a file's module fixtures should
# be built once, and the autograde round trip, by far the longest file, grades each
# assignment's samples when a test first asks for it, so its tests are grouped per
# assignment. xdist's own xdist_group marks do not reach its scheduler under pytest 9 (it
# renames items through an attribute pytest no longer reads), so the groups are computed
# here from the test ids.
ROUNDTRIP = "tests/test_autograde_roundtrip.py"
# The round trip's longest assignments, longest first (a run on two workers starts with
# them). Only an ordering hint: every assignment of layout.ASSIGNMENTS gets a group of its
# own whether it is listed here or not.
ROUNDTRIP_LONGEST_FIRST = (
    "initialization_deep_dive",
    "activations",
    "kurtosis_deep_dive",
    "initialization",
    "kurtosis",
    "activations_deep_dive",
    "backprop_deep_dive",
    "backprop",
)
ROUNDTRIP_ORDER = (
    *[a for a in ROUNDTRIP_LONGEST_FIRST if a in layout.ASSIGNMENTS],
    *[a for a in layout.ASSIGNMENTS if a not in ROUNDTRIP_LONGEST_FIRST],
)
EXPORT_GROUP = layout.ASSIGNMENTS[0]
"""The round trip's export test grades the first assignment and goes with its group."""


def xdist_scope(nodeid: str) -> str:
    """The group a test runs in: its file, or for the round trip its assignment (the
    export test goes with the assignment it grades)."""
    path = nodeid.split("::")[0]
    if path != ROUNDTRIP:
        return path
    for assignment in layout.ASSIGNMENTS:
        if f"[{assignment}]" in nodeid:
            return f"{path}-{assignment}"
    return f"{path}-{EXPORT_GROUP}"


LONG_FILES_FIRST = (
    "tests/test_student_lab.py",
    "tests/test_parallel_grading.py",
    "tests/test_hostile_grading.py",
    "tests/test_exchange_loop.py",
    "tests/test_distributed_grading.py",
)
"""The longest files after the round trip, longest first (the browser test runs every
notebook in one JupyterLab), so that no long group starts last and leaves one worker alone
at the end. Only an ordering hint."""


def _order(item: pytest.Item) -> int:
    scope = xdist_scope(item.nodeid)
    for rank, assignment in enumerate(ROUNDTRIP_ORDER):
        if scope == f"{ROUNDTRIP}-{assignment}":
            return rank
    if scope in LONG_FILES_FIRST:
        return len(ROUNDTRIP_ORDER) + LONG_FILES_FIRST.index(scope)
    return len(ROUNDTRIP_ORDER) + len(LONG_FILES_FIRST)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The round trip's tests first, longest assignment first, then the longest other
    files; the rest in the order collected (a stable sort)."""
    items.sort(key=_order)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """With ``--dist loadgroup``: xdist's scope scheduler over the groups of
    ``xdist_scope``, handed out in collection order (``--no-loadscope-reorder``)."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ByGroup(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return xdist_scope(nodeid)

    config.option.loadscopereorder = False
    return ByGroup(config, log)
