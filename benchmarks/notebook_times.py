"""How long each released notebook runs for a student, at one experiment budget.

    PYTHONPATH=lib:autograder python benchmarks/notebook_times.py [--budget default]
        [--threads 2] [--assignment NAME ...] [--save DIR] [--cell-timeout 1800]

Each notebook is the release with the reference answers written in (what a student who
finished runs), executed top to bottom in a fresh kernel that sees lib/ only, with an
empty training cache (MNIST is linked in from the data directory, so the download is not
timed). Prints the wall time per notebook and its slowest cells. The notebooks' first
cells state these times; the machine and its load are printed with them. ``--save DIR``
writes each executed notebook to DIR (to read what a run printed, e.g. the accuracies of
the full protocol).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from initlab_grading.course import build, layout
from initlab_grading.course.samples import samples_for

REPO = Path(__file__).resolve().parents[1]


def time_notebook(
    assignment: str, budget: str, threads: int, data: Path, cell_timeout: int = 1800
) -> tuple[list[tuple], object]:
    (reference,) = [s for s in samples_for(assignment) if s.student == "reference"]
    nb = build.build_submission(REPO, assignment, reference)
    env = {
        "INITLAB_BUDGET": budget,
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "INITLAB_DATA": str(data),
        "PYTHONPATH": str(REPO / "lib"),
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    os.environ.pop("CI", None)
    try:
        with tempfile.TemporaryDirectory() as cwd:
            client = NotebookClient(
                nb,
                timeout=cell_timeout,
                kernel_name="python3",
                resources={"metadata": {"path": cwd}},
            )
            times = []
            with client.setup_kernel():
                for index, cell in enumerate(nb.cells):
                    start = time.perf_counter()
                    client.execute_cell(cell, index)
                    times.append((time.perf_counter() - start, index, cell.cell_type))
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return times, nb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", default="default")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--assignment", nargs="*", default=list(layout.ASSIGNMENTS))
    parser.add_argument("--save", type=Path, help="write the executed notebooks here")
    parser.add_argument("--cell-timeout", type=int, default=1800, help="seconds per cell")
    args = parser.parse_args()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}, "
        f"python {sys.version.split()[0]}; budget {args.budget}, {args.threads} threads"
    )
    mnist = Path(os.environ.get("INITLAB_DATA", Path.home() / ".cache" / "initlab")) / "MNIST"
    for assignment in args.assignment:
        with tempfile.TemporaryDirectory() as data:
            if mnist.exists():
                (Path(data) / "MNIST").symlink_to(mnist, target_is_directory=True)
            start = time.perf_counter()
            times, executed = time_notebook(
                assignment, args.budget, args.threads, Path(data), args.cell_timeout
            )
            total = time.perf_counter() - start
        if args.save:
            args.save.mkdir(parents=True, exist_ok=True)
            nbformat.write(executed, args.save / f"{assignment}-{args.budget}.ipynb")
        slowest = ", ".join(f"cell {i} {t:.1f} s" for t, i, _ in sorted(times, reverse=True)[:3])
        print(f"{assignment:18s} {total:7.1f} s (kernel start included); slowest: {slowest}")


if __name__ == "__main__":
    main()
