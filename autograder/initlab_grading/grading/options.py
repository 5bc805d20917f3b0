"""How a class is graded: the limits of each submission and kernel, and the engine that
grades (:class:`GradingOptions`, which :func:`initlab_grading.grading.grade.grade_class`
takes). The command line's options (``python -m initlab_grading.grading --help``) map
onto its fields one to one."""

from __future__ import annotations

from dataclasses import dataclass

from initlab_grading.grading.kernels import DEFAULT_FILE_LIMIT_GIB, DEFAULT_MEMORY_LIMIT_GIB

ENGINES = ("local", "dask")


@dataclass(frozen=True)
class GradingOptions:
    """The limits and the engine of one grading run; checked when made (ValueError naming
    every value out of range).

    ``workers``: parallel grading workers (local engine; None: one per CPU core).
    ``timeout``: seconds per submission; ``retries``: retries of infrastructure failures.
    ``memory_limit``: GiB of private writable memory per kernel (None or 0: unlimited).
    ``cell_timeout``: seconds per cell (None: Execute.timeout of nbgrader_config.py).
    ``file_limit``: GiB per file a kernel writes (None or 0: unlimited).
    ``isolate``: run each kernel as its own unprivileged user (needs root; local engine
    only) after making the course's private paths readable by their owner only.
    ``bubblewrap``: run each kernel inside bubblewrap (no network, no course files but
    its own folder, no process that outlives it; initlab_grading.grading.sandbox).
    ``kernel_python``: the interpreter kernels run (None: this one).
    ``engine``: ``"local"`` (grading workers on this machine) or ``"dask"`` (tasks on the
    Dask cluster whose scheduler is at ``scheduler``, ``tcp://HOST:PORT``)."""

    workers: int | None = None
    timeout: float = 900.0
    retries: int = 2
    memory_limit: float | None = DEFAULT_MEMORY_LIMIT_GIB
    cell_timeout: float | None = None
    file_limit: float | None = DEFAULT_FILE_LIMIT_GIB
    isolate: bool = False
    bubblewrap: bool = True
    kernel_python: str | None = None
    engine: str = "local"
    scheduler: str | None = None

    def __post_init__(self) -> None:
        problems = []
        if self.workers is not None and self.workers < 1:
            problems.append(f"workers must be at least 1, not {self.workers}")
        if not self.timeout > 0:
            problems.append(f"timeout must be a positive number of seconds, not {self.timeout}")
        if self.retries < 0:
            problems.append(f"retries must be 0 or more, not {self.retries}")
        if self.memory_limit is not None and self.memory_limit < 0:
            problems.append(
                f"memory_limit must be 0 (none) or a positive GiB, not {self.memory_limit}"
            )
        if self.file_limit is not None and self.file_limit < 0:
            problems.append(f"file_limit must be 0 (none) or a positive GiB, not {self.file_limit}")
        if self.cell_timeout is not None and not self.cell_timeout > 0:
            problems.append(
                f"cell_timeout must be a positive number of seconds, not {self.cell_timeout}"
            )
        if self.engine not in ENGINES:
            problems.append(f"engine must be 'local' or 'dask', not {self.engine!r}")
        if problems:
            raise ValueError("; ".join(problems))
