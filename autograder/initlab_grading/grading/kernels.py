"""The kernel manager of the course's nbgrader configuration: every kernel nbgrader starts
to grade goes through the launcher initlab_grading.grading.sandbox.

The kit's grading command writes a kernelspec whose command already starts with the
launcher (with the limits its options set). Plain ``nbgrader autograde`` starts the
environment's ordinary python3 kernel; with this manager (``Execute.kernel_manager_class``
in nbgrader_config.py) that kernel is launched through the sandbox too, with the grading
command's default limits, so the grader's environment (database passwords, cloud keys)
never reaches a submission and its memory and file sizes are bounded.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

from jupyter_client.manager import AsyncKernelManager
from traitlets import Bool

from initlab_grading.grading.sandbox import SANDBOX_MODULE, SOCKET_FOLDER_PREFIX

GIB = 1024**3
DEFAULT_MEMORY_LIMIT_GIB = 6.0
"""Per-kernel limit on private writable memory (RLIMIT_DATA). Importing torch (CUDA build)
with numpy, matplotlib and torchvision uses 0.9 GB of it (VmData, measured); the rest is
room for the notebooks' data and networks."""
DEFAULT_NPROC = max(512, 8 * (os.cpu_count() or 1))
"""Processes and threads per sandbox user id with --isolate (RLIMIT_NPROC; torch starts a
thread per core)."""
DEFAULT_FILE_LIMIT_GIB = 4.0
"""Largest file a kernel may write (RLIMIT_FSIZE): a runaway writer fails with "File too
large" instead of filling the disk under everyone's kernels."""


def launcher(
    *,
    memory: int | None = None,
    fsize: int | None = None,
    uid: int | None = None,
    nproc: int | None = None,
    job: str = "",
    bwrap: bool = True,
) -> list[str]:
    """The command line of the sandbox launcher up to ``--``, after which the kernel's
    own command follows (limits in bytes; ``bwrap``: inside bubblewrap; see
    initlab_grading.grading.sandbox)."""
    argv = [sys.executable, "-P", "-m", SANDBOX_MODULE]
    argv += [] if bwrap else ["--no-bwrap"]
    argv += ["--memory", str(memory)] if memory else []
    argv += ["--fsize", str(fsize)] if fsize else []
    argv += ["--uid", str(uid)] if uid is not None else []
    argv += ["--nproc", str(nproc)] if nproc and uid is not None else []
    argv += ["--job", job] if job else []
    return [*argv, "--"]


def sandboxed(cmd: list[str], memory_gib: float, file_gib: float, bwrap: bool = True) -> list[str]:
    """``cmd`` started through the sandbox launcher, unless it already is."""
    if SANDBOX_MODULE in cmd:
        return cmd
    limits = launcher(memory=int(memory_gib * GIB), fsize=int(file_gib * GIB), bwrap=bwrap)
    return [*limits, *cmd]


class SandboxedKernelManager(AsyncKernelManager):
    """nbclient's kernel manager (the asynchronous one: with a synchronous manager nbclient
    does not notice a kernel that died) whose kernels start through
    initlab_grading.grading.sandbox. Its kernels talk over Unix sockets in a folder of
    their own (``transport = "ipc"``), so that the sandbox can take the network away."""

    bubblewrap = Bool(
        True,
        config=True,
        help="Run kernels inside bubblewrap (no network, the course's files hidden); "
        "False only where bwrap cannot be installed (see docs/security.md).",
    )

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._sockets = tempfile.mkdtemp(prefix=SOCKET_FOLDER_PREFIX)
        self.transport = "ipc"
        self.ip = os.path.join(self._sockets, "kernel")

    def format_kernel_cmd(self, extra_arguments: list[str] | None = None) -> list[str]:
        # A signal would reach bubblewrap, which does not pass it on: interrupts (a cell's
        # time limit) go to the kernel as messages on its control channel.
        self.kernel_spec.interrupt_mode = "message"
        cmd = super().format_kernel_cmd(extra_arguments)
        return sandboxed(cmd, DEFAULT_MEMORY_LIMIT_GIB, DEFAULT_FILE_LIMIT_GIB, self.bubblewrap)

    async def _async_cleanup_resources(self, restart: bool = False) -> None:
        await super()._async_cleanup_resources(restart=restart)
        if not restart:
            shutil.rmtree(self._sockets, ignore_errors=True)

    cleanup_resources = _async_cleanup_resources
