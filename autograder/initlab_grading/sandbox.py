"""Kernel launcher used while grading: limits and isolates one student's kernel.

    python -m initlab_grading.sandbox [--memory BYTES] [--uid UID] -- KERNEL ARGV...

grade.py writes a kernelspec whose argv starts with this module, so only the kernel
nbgrader starts for one submission is affected (nbgrader itself runs unlimited, as root).

- ``--memory``: RLIMIT_DATA, the kernel's private writable memory (what numpy and torch
  allocate). Reaching it makes the allocation fail (``MemoryError`` in the cell) or kills
  the kernel; other kernels are not affected. Address space reserved without write access
  (as CUDA does) does not count, so a CUDA build of torch is not stopped by its reservations.
- ``--uid``: when started as root, the kernel runs as this unprivileged user id with no
  groups and ``umask 077``, its working folder (autograded/<student>/<assignment>/) given to
  it, and HOME and TMPDIR in a private folder. grade.py makes the course's private folders
  readable by their owner only, so the kernel cannot read or write them. See README, "What
  grading isolates".
"""

from __future__ import annotations

import os
import resource
import shutil
import sys
import tempfile


def _chown_tree(path: str, uid: int, gid: int) -> None:
    os.chown(path, uid, gid)
    for base, dirs, files in os.walk(path):
        for name in dirs + files:
            os.lchown(os.path.join(base, name), uid, gid)


def main(argv: list[str]) -> None:
    memory = uid = None
    while argv and argv[0] != "--":
        flag, value, *argv = argv
        if flag == "--memory":
            memory = int(value)
        elif flag == "--uid":
            uid = int(value)
        else:
            raise SystemExit(f"sandbox: unknown option {flag}")
    kernel = argv[1:]
    if memory:
        resource.setrlimit(resource.RLIMIT_DATA, (memory, memory))
    if uid is not None and os.geteuid() == 0:
        private = tempfile.mkdtemp(prefix="initlab-kernel-")
        for i, arg in enumerate(kernel):  # the connection file, readable by root only
            if arg.endswith(".json") and os.path.isfile(arg):
                copy = os.path.join(private, os.path.basename(arg))
                shutil.copy(arg, copy)
                kernel[i] = copy
        _chown_tree(private, uid, uid)
        _chown_tree(os.getcwd(), uid, uid)
        os.environ.update(
            HOME=private,
            TMPDIR=private,
            IPYTHONDIR=os.path.join(private, ".ipython"),
            MPLCONFIGDIR=os.path.join(private, ".matplotlib"),
        )
        # PYTHONPATH entries through symlinks the kernel's user may not traverse.
        os.environ["PYTHONPATH"] = os.pathsep.join(
            os.path.realpath(p) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p
        )
        os.umask(0o077)
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    os.execvp(kernel[0], kernel)


if __name__ == "__main__":
    main(sys.argv[1:])
