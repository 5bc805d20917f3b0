"""The benchmark scripts run (on tiny workloads) and print every line their docstrings
promise; their figures are not checked here (they are measurements, see docs/performance.md)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import REPO


def _run(script: str, *args: str, threads: int = 1) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO / "lib")}
    env |= {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}  # torch reads both
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / script), *args],
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
    out = _run("kurtosis.py", *SMALL, *isa)
    for line in (
        "first layer\n",  # sparse on MNIST, dense on random images
        "1. batched, fused",
        "fused, dense 1st layer",
        "one by one, rows",
        "one by one, columns",
        "speed-up over the fastest loop of each round (goal >= 10x): fused",
        "of 1 >= 10x)",  # rounds that reach the goal
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


def test_engine_benchmark_prints_every_figure():
    """Two threads, so the two single-threaded plain layouts run too; 128 training images
    (2 steps per epoch)."""
    out = _run("engine.py", "--train-images", "128", "--repeats", "1", threads=2)
    for line in (
        "1. achieved FLOP/s",
        "engine, call's setup subtracted:",
        "one stack on 2 thread(s), new tensors:",
        "one stack on 2 thread(s), into existing:",
        "2 single-threaded stacks, new tensors:",
        "2 single-threaded stacks, into existing:",
        "engine / fastest plain:",
        "2. batched against one network at a time",
        "faster (goal >= 3x)",
        "torch.func, vmap(grad) per activation:",
        "-> the engine",
        "3. mixed activations",
        "4. wall time of the notebook's training",
        "(scaled from 128 + 32 images: not the notebook's workload)",
        "full protocol:",
    ):
        assert line in out, f"{line!r} missing from:\n{out}"
