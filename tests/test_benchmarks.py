"""The benchmark scripts run (on tiny workloads) and print every line their docstrings
promise; their figures are not checked here (they are measurements, see the README)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import REPO


def _run(*args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO / "lib"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "kurtosis.py"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


SMALL = ("--nets", "8", "--loop-nets", "2", "--images", "256", "--repeats", "1")


@pytest.mark.parametrize("isa", [(), ("--avx2",)], ids=["host", "avx2"])
def test_kurtosis_benchmark_prints_every_figure(isa):
    out = _run(*SMALL, *isa)
    for line in (
        "1. batched, fused",
        "speed-up: fused",
        "2. bare matrix products",
        "3. full Figure 2",
        "4. one thread: fused kernel",
        "the CPU's peak",
        "of torch.mm",
        "of the peak",
    ):
        assert line in out, f"{line!r} missing from:\n{out}"
    if isa:
        assert "ATen AVX2, as an AVX2 CPU (--avx2)" in out, out
