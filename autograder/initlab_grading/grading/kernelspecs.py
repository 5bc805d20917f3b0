"""The kernels grading starts: the kernelspec written before each submission (the sandbox
launcher with the limits, --isolate's user id, the job's token), the check that a kernel
starts under those limits before a class is graded, and --isolate's pool of user ids."""

from __future__ import annotations

import fcntl
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from initlab_grading.grading.kernels import (
    DEFAULT_MEMORY_LIMIT_GIB,
    launcher,
)
from initlab_grading.grading.sandbox import (
    BWRAP_MISSING,
    kill_user,
    remove_private_folders,
)

SANDBOX_UID_BASE = 61000
SANDBOX_UID_COUNT = 20000
"""Kernels run with --isolate get user ids from SANDBOX_UID_BASE on, a fresh one per
submission, never one of an account in the password database, and never one that another
grading run on this machine holds (a lock file per id)."""

_KERNEL_CHECK = (
    "import ipykernel, numpy, torch, initlab, initlab_grading.grading.guard, zmq\n"
    "from ipykernel.kernelapp import IPKernelApp\n"
    "curve = 'curve_secretkey' in IPKernelApp.class_trait_names() and zmq.has('curve')\n"
    "print('INITLAB-CURVE' if curve else 'INITLAB-NO-CURVE')\n"
)


# --------------------------------------------------------------------------------------
# Kernels


def _write_kernelspec(
    folder: Path,
    memory: int | None,
    uid: int | None,
    python: str | None = None,
    *,
    token: str = "",
    fsize: int | None = None,
    nproc: int | None = None,
    curve: bool = False,
    bwrap: bool = True,
) -> None:
    """Write into ``folder`` (a JUPYTER_PATH entry) a python3 kernelspec that starts the
    kernel (with ``python``, default this interpreter) through initlab_grading.grading.sandbox.
    Jupyter reads kernel.json each time it starts a kernel, so rewriting it changes the
    next kernel only. ``curve``: declare CurveZMQ support (encrypted channels)."""
    spec = folder / "kernels" / "python3"
    spec.mkdir(parents=True, exist_ok=True)
    argv = launcher(memory=memory, fsize=fsize, uid=uid, nproc=nproc, job=token, bwrap=bwrap)
    argv += [python or sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    argv += ["--InteractiveShellApp.ignore_cwd=True"]
    spec_json = {"argv": argv, "display_name": "Python 3 (grading)", "language": "python"}
    if curve:
        spec_json["metadata"] = {"supported_encryption": ["curve"]}
    spec.joinpath("kernel.json").write_text(json.dumps(spec_json))


def _jupyter_path(spec: Path) -> str:
    """JUPYTER_PATH with ``spec`` first, so that its python3 kernelspec is the one used."""
    return os.pathsep.join(
        [str(spec), *filter(None, os.environ.get("JUPYTER_PATH", "").split(os.pathsep))]
    )


def _grader_supports_curve() -> bool:
    try:
        import zmq
        from jupyter_client.manager import KernelManager
    except ImportError:
        return False
    return "transport_encryption" in KernelManager.class_trait_names() and zmq.has("curve")


def _ipykernel_supports_curve() -> bool:
    """Whether this interpreter's ipykernel reads CurveZMQ keys from its connection file."""
    try:
        from ipykernel.kernelapp import IPKernelApp
    except ImportError:
        return False
    return "curve_secretkey" in IPKernelApp.class_trait_names()


def check_kernel(
    root: Path,
    python: str | None = None,
    memory: int | None = None,
    fsize: int | None = None,
    uid: int | None = None,
    nproc: int | None = None,
    bwrap: bool = True,
) -> tuple[str, bool]:
    """Start ``python`` the way a grading kernel starts (initlab_grading.grading.sandbox with the
    same limits, as ``uid`` with --isolate) and import what kernels need: ipykernel,
    numpy, torch, initlab, initlab_grading. Returns ("" or what is wrong and how to fix
    it, whether the kernel's channels can be encrypted)."""
    python = python or sys.executable

    def attempt(memory: int | None) -> subprocess.CompletedProcess:
        work = Path(tempfile.mkdtemp(prefix="initlab-kernel-check-"))
        work.chmod(0o755)
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(
                [
                    str(root / "autograder"),
                    *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep)),
                ]
            ),
        }
        cmd = launcher(memory=memory, fsize=fsize, uid=uid, nproc=nproc, bwrap=bwrap)
        cmd += [python, "-c", _KERNEL_CHECK]
        try:
            return subprocess.run(
                cmd, cwd=work, env=env, capture_output=True, text=True, timeout=600
            )
        finally:
            if uid is not None:
                kill_user(uid)
                remove_private_folders(uid)
            shutil.rmtree(work, ignore_errors=True)

    proc = attempt(memory)
    if proc.returncode == 0:
        return "", "INITLAB-CURVE" in proc.stdout and _grader_supports_curve()
    why = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1][:300]
    if why == BWRAP_MISSING or "bwrap:" in why:
        return f"a grading kernel cannot start inside bubblewrap ({why})", False
    if memory and attempt(None).returncode == 0:
        return (
            f"a kernel under the memory limit of {memory / 2**30:g} GiB cannot import numpy "
            f"and torch ({why}). Importing torch alone needs about 1 GiB: raise "
            f"--memory-limit (default {DEFAULT_MEMORY_LIMIT_GIB:g}), or give 0 for no limit.",
            False,
        )
    if uid is not None:
        return (
            f"--isolate: a kernel running as user id {uid} cannot start ({why}). "
            f"Everything a kernel loads must be readable by other users: the interpreter "
            f"{python} with its standard library and site-packages, and "
            f"{root / 'autograder'}. An interpreter under /root (pyenv, conda) is not. "
            "Install the grading environment in a folder others can read, or name such an "
            "interpreter with --kernel-python.",
            False,
        )
    return (
        f"a grading kernel cannot start ({why}): the kernel's Python {python} needs "
        "ipykernel, numpy, torch and the initlab library (pip install './initlab[instructor]'), "
        f"and {root / 'autograder'} must hold initlab_grading.",
        False,
    )


def check_isolation(root: Path, python: str | None = None) -> str:
    """check_kernel as an isolated kernel (a sandbox user id), without limits: "" when
    such a kernel can start, else what is wrong and how to fix it."""
    uids = UidPool()
    try:
        return check_kernel(root, python, uid=uids.take())[0]
    finally:
        uids.close()


class UidPool:
    """Sandbox user ids for one grading run (--isolate): a fresh one per submission. An id
    is taken only if no account has it and no other run on this machine holds it (an
    flock'ed file per id under /tmp/initlab-grading-uids/); processes and private folders an
    earlier run left under that id are removed first, and again when the run ends."""

    def __init__(self, base: int = SANDBOX_UID_BASE, count: int = SANDBOX_UID_COUNT) -> None:
        self.base, self.end = base, base + count
        self.dir = Path(tempfile.gettempdir()) / "initlab-grading-uids"
        self.dir.mkdir(mode=0o700, exist_ok=True)
        if self.dir.is_symlink() or self.dir.stat().st_uid != os.geteuid():
            raise SystemExit(f"{self.dir} is not a folder of this user's: remove it")
        self.held: dict[int, int] = {}
        self.next = base
        self.lock = threading.Lock()

    def take(self) -> int:
        with self.lock:
            for uid in range(self.next, self.end):
                try:
                    pwd.getpwuid(uid)
                    continue  # a real account
                except KeyError:
                    pass
                fd = os.open(self.dir / str(uid), os.O_CREAT | os.O_RDWR | os.O_NOFOLLOW, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    continue  # another grading run's
                self.held[uid], self.next = fd, uid + 1
                kill_user(uid)
                remove_private_folders(uid)
                return uid
        raise RuntimeError(f"no free sandbox user id in {self.base}..{self.end - 1}")

    def close(self) -> None:
        with self.lock:
            for uid, fd in self.held.items():
                kill_user(uid)
                remove_private_folders(uid)
                os.close(fd)
            self.held.clear()
