"""Kernel launcher used while grading: limits and isolates one student's kernel.

    python -m initlab_grading.grading.sandbox [--memory BYTES] [--fsize BYTES] [--uid UID]
        [--nproc N] [--job TOKEN] [--no-bwrap] -- KERNEL ARGV...

The grading command (initlab_grading.grading.kernelspecs) writes a kernelspec whose argv starts
with this module, so only the kernel nbgrader starts for one submission is affected
(nbgrader itself runs unlimited, as root).

- The kernel's environment is reduced to what a kernel needs (``kernel_environment``):
  the grader's credentials (``PGPASSWORD``, cloud keys, ...) never reach it.
  ``PYTHONSAFEPATH=1`` and IPython's ``ignore_cwd`` (in the kernelspec) keep the working
  folder off ``sys.path``, so files a submission ships next to its notebook cannot replace
  modules the tests import.
- ``--memory``: RLIMIT_DATA, the kernel's private writable memory (what numpy and torch
  allocate). Reaching it makes the allocation fail (``MemoryError`` in the cell) or kills
  the kernel; other kernels are not affected. Address space reserved without write access
  (as CUDA does) does not count, so a CUDA build of torch is not stopped by its reservations.
  The limit is per process: each process the kernel forks gets its own.
- ``--fsize``: RLIMIT_FSIZE, the largest file the kernel (and what it starts) may write.
- ``--uid``: when started as root, the kernel runs as this unprivileged user id with no
  groups and ``umask 077``, its working folder (autograded/<student>/<assignment>/) given to
  it, and HOME and TMPDIR in a private folder (``private_folders``). ``--nproc`` then limits
  the processes and threads of that user id (RLIMIT_NPROC counts per user, so it is only
  set for a user id of the kernel's own). grade.py makes the course's private folders
  readable by their owner only, so the kernel cannot read or write them.
- ``--job``: a token put into the kernel's environment (``INITLAB_GRADING_JOB``), by which
  grade.py finds the processes of one submission's kernel (``job_processes``).
- The kernel runs inside bubblewrap (``bwrap``, no root needed; ``bwrap_command``) unless
  ``--no-bwrap``: the system read-only; the course root (the nearest folder above the
  kernel's holding ``nbgrader_config.py`` or ``gradebook.db``), the grader's home and
  ``/tmp`` replaced by empty folders, with only what a kernel needs put back (read-only:
  the Python environment, ``sys.path``, the data folder; writable: the kernel's own folder,
  its socket folder and the engine's result cache); no network when the kernel's channels
  are Unix sockets (``transport: ipc``, as initlab_grading.grading.kernels sets); its own
  process namespace, so no process it starts outlives it.

After the kernel, the grading process (as root) calls ``kill_user`` and
``secure_folder`` before it writes anything into the kernel's folder; see
initlab_grading.grading.preprocessors.GuardedExecute. See docs/security.md.
"""

from __future__ import annotations

import glob
import json
import os
import resource
import shutil
import signal
import stat
import sys
import tempfile
import time

JOB_VARIABLE = "INITLAB_GRADING_JOB"
"""The environment variable that marks the processes of one submission's kernel."""
CODE_FILES = ("*.py", "*.pyw", "*.pyc", "*.pyo", "*.so", "*.pyd", "*.pth")
"""Files of a submission that are never copied next to its notebook (nbgrader_config.py's
CourseDirectory.ignore lists them): Python could import them."""
SOCKET_FOLDER_PREFIX = "initlab-sockets-"
"""The start of the name of the folder the kernel manager (initlab_grading.grading.kernels)
makes for one kernel's Unix sockets; with --uid the launcher gives it to that user id."""
HIDE_GRADER_VARIABLE = "INITLAB_HIDE_GRADER"
"""Set to 1 (by GuardedExecute, for checks that run outside the kernel): the kernel's path
and, inside bubblewrap, its view of the files leave out every folder holding
initlab_grading, so the kernel can neither import nor read the references."""
UID_VARIABLE = "INITLAB_SANDBOX_UID"
"""Set in the grading process (not the kernel) to the user id its kernel runs as."""

# What a kernel keeps of the grader's environment: nothing else is passed on.
_KEEP = {
    "PATH",
    "LANG",
    "LANGUAGE",
    "TZ",
    "TERM",
    "PYTHONPATH",
    "PYTHONHASHSEED",
    "PYTHONIOENCODING",
    "PYTHONUTF8",
    "PYTHONDONTWRITEBYTECODE",
    "LD_LIBRARY_PATH",
    "VIRTUAL_ENV",
    "CONDA_PREFIX",
    "MPLBACKEND",
    "NBGRADER_EXECUTION",
    "CUDA_VISIBLE_DEVICES",
    "CUDA_HOME",
    "NVIDIA_VISIBLE_DEVICES",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "ATEN_CPU_CAPABILITY",  # with MKL_*: the numerical code paths (course/numerics.py)
}
_KEEP_PREFIXES = ("LC_", "INITLAB_", "OMP_", "MKL_", "OPENBLAS_", "KMP_", "JPY_", "PYDEVD_")
# Kept only when the kernel runs as the grader (without --uid it shares the grader's home).
_KEEP_SHARED_HOME = {"HOME", "USER", "LOGNAME", "TMPDIR", "IPYTHONDIR", "MPLCONFIGDIR"}


def kernel_environment(environ: dict[str, str], isolated: bool) -> dict[str, str]:
    """The part of ``environ`` a kernel gets (names in _KEEP, prefixes in _KEEP_PREFIXES;
    HOME and TMPDIR only when not ``isolated``), with PYTHONSAFEPATH=1."""
    keep = _KEEP | (set() if isolated else _KEEP_SHARED_HOME)
    env = {
        k: v
        for k, v in environ.items()
        if (k in keep or k.startswith(_KEEP_PREFIXES)) and k != UID_VARIABLE
    }
    env["PYTHONSAFEPATH"] = "1"
    return env


# --------------------------------------------------------------------------------------
# Processes


def _status_uid(pid: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("Uid:"):
                    return int(line.split()[1])  # the real user id
    except (OSError, ValueError, IndexError):
        return None
    return None


def processes_of(uid: int) -> list[int]:
    """Process ids whose real user id is ``uid`` (Linux /proc)."""
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and _status_uid(p) == uid]


def job_processes(token: str) -> list[int]:
    """Process ids whose environment carries ``INITLAB_GRADING_JOB=token``: a kernel the
    sandbox started for one submission and the processes it started (a process that
    clears its own environment is not found this way)."""
    want = f"{JOB_VARIABLE}={token}".encode()
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as fh:
                if want in fh.read().split(b"\0"):
                    found.append(int(pid))
        except OSError:
            continue
    return found


def kill_pids(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def kill_user(uid: int, patience: float = 10.0) -> list[int]:
    """SIGKILL every process of the user id ``uid`` (a sandbox user: never a real
    account), again and again until none is left (a process that forks while being
    killed) or ``patience`` seconds have passed. Returns the process ids that remain."""
    deadline = time.monotonic() + patience
    while True:
        left = processes_of(uid)
        if not left or time.monotonic() > deadline:
            return left
        kill_pids(left)
        time.sleep(0.02)


# --------------------------------------------------------------------------------------
# The kernel's folder, after the kernel


def folder_state(folder: str) -> dict[str, tuple[int, int, int, int]]:
    """Each entry below ``folder`` (symbolic links not followed): its type, inode, size
    and modification time, to tell afterwards what a kernel created or changed."""
    state = {}
    for base, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = os.path.join(base, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            state[os.path.relpath(path, folder)] = (
                stat.S_IFMT(st.st_mode),
                st.st_ino,
                st.st_size if not stat.S_ISDIR(st.st_mode) else 0,
                st.st_mtime_ns if not stat.S_ISDIR(st.st_mode) else 0,
            )
    return state


def secure_folder(
    folder: str,
    uid: int | None,
    gid: int | None,
    before: dict[str, tuple[int, int, int, int]] | None = None,
) -> list[str]:
    """Make a folder a kernel wrote in safe for root to write into and copy from: remove
    every entry that is not a regular file or folder (symbolic links, sockets, fifos), every
    file with more than one hard link (a link to a file elsewhere), and, given ``before``
    (``folder_state`` before the kernel ran), everything created or changed since; then give
    what is left to ``uid``:``gid`` (when running as root) without group or other write
    access nor set-id bits. Only call it once no process of the kernel is left. Returns the
    entries removed, "path (why)"."""
    removed: list[str] = []
    if os.path.islink(folder) or not os.path.isdir(folder):
        if os.path.lexists(folder) and not os.path.isdir(folder):
            os.unlink(folder)
            removed.append(f"{os.path.basename(folder)} (not a folder)")
        return removed
    chown = os.geteuid() == 0 and uid is not None and gid is not None
    for base, dirs, files in os.walk(folder, topdown=False):
        for name in files + dirs:
            path = os.path.join(base, name)
            rel = os.path.relpath(path, folder)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            kind = stat.S_IFMT(st.st_mode)
            why = ""
            if stat.S_ISLNK(st.st_mode):
                why = "a symbolic link"
            elif not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
                why = "not a regular file"
            elif stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
                why = "a hard link"
            elif before is not None:
                was = before.get(rel)
                now = (
                    kind,
                    st.st_ino,
                    st.st_size if not stat.S_ISDIR(st.st_mode) else 0,
                    st.st_mtime_ns if not stat.S_ISDIR(st.st_mode) else 0,
                )
                if was is None:
                    why = "created while grading"
                elif was != now:
                    why = "changed while grading"
            if why:
                if stat.S_ISDIR(st.st_mode):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    os.unlink(path)
                removed.append(f"{rel} ({why})")
                continue
            if chown:
                os.lchown(path, uid, gid)
            os.chmod(path, stat.S_IMODE(st.st_mode) & 0o755 & ~0o022)
    if chown:
        os.lchown(folder, uid, gid)
    os.chmod(folder, 0o700)
    return sorted(removed)


def private_folders(uid: int) -> list[str]:
    """The HOME/TMPDIR folders the sandbox made for kernels of ``uid``."""
    pattern = os.path.join(tempfile.gettempdir(), f"initlab-kernel-{uid}-*")
    return [p for p in glob.glob(pattern) if not os.path.islink(p)]


def remove_private_folders(uid: int) -> None:
    for path in private_folders(uid):
        shutil.rmtree(path, ignore_errors=True)  # never follows symbolic links


# --------------------------------------------------------------------------------------
# bubblewrap

BWRAP_MISSING = (
    "sandbox: bubblewrap (bwrap) is not installed, and grading kernels run inside it. "
    "Install it (Debian/Ubuntu: apt-get install bubblewrap), or grade without it "
    "(--no-bubblewrap; plain nbgrader: c.SandboxedKernelManager.bubblewrap = False), "
    "which gives kernels the grader's files: see docs/security.md."
)
COURSE_MARKERS = ("nbgrader_config.py", "gradebook.db")
"""Files that mark a course root, the folder the sandbox hides from a kernel below it."""
SANDBOX_MODULE = "initlab_grading.grading.sandbox"
SANDBOX_TMP = "/tmp"
"""In the sandbox an empty folder of its own; HOME, IPython's and matplotlib's folders."""


def course_root_of(folder: str) -> str | None:
    """The nearest folder at or above ``folder`` that holds a file of COURSE_MARKERS."""
    path = os.path.realpath(folder)
    while True:
        if any(os.path.isfile(os.path.join(path, m)) for m in COURSE_MARKERS):
            return path
        parent = os.path.dirname(path)
        if parent == path:
            return None
        path = parent


def _below(path: str, folders: list[str]) -> bool:
    return any(path == f or path.startswith(f.rstrip("/") + "/") for f in folders)


def connection_info(kernel: list[str]) -> tuple[str | None, dict]:
    """The kernel's connection file (the first existing ``*.json`` argument) and its
    content ({} when there is none or it cannot be read)."""
    for arg in kernel:
        if arg.endswith(".json") and os.path.isfile(arg):
            try:
                with open(arg, encoding="utf-8") as fh:
                    return arg, json.load(fh)
            except (OSError, ValueError):
                return arg, {}
    return None, {}


def data_folder(env: dict[str, str], home: str) -> str:
    """The initlab library's data folder (MNIST, the engine's cache), by initlab.data.data_dir's
    rule (not imported: it would load numpy into the launcher): INITLAB_DATA if set, else
    ``~/.cache/initlab``."""
    configured = env.get("INITLAB_DATA", "").strip()
    return os.path.expanduser(configured) if configured else os.path.join(home, ".cache", "initlab")


def matplotlib_font_lists(environ: dict[str, str], home: str) -> list[str]:
    """matplotlib's font cache files of the grader (read by kernels so that none rebuilds
    it, which would print into the first plotting cell's output)."""
    cache = environ.get("XDG_CACHE_HOME") or os.path.join(home, ".cache")
    folders = [environ.get("MPLCONFIGDIR", ""), os.path.join(cache, "matplotlib")]
    return sorted({f for d in folders if d for f in glob.glob(os.path.join(d, "fontlist-*.json"))})


def bwrap_command(
    kernel: list[str],
    *,
    cwd: str,
    home: str,
    readable: list[str],
    writable: list[str],
    font_lists: list[str] = (),
    interpreters: list[str] = (),
    bwrap: str = "bwrap",
    isolated: bool = False,
    conceal: list[str] = (),
) -> list[str]:
    """The bubblewrap command line that runs ``kernel`` (in the environment it is run with):
    ``/`` read-only, fresh /dev, /proc and /tmp; ``home`` and the course root above
    ``cwd`` hidden under empty folders; each existing path of ``readable`` (read-only),
    of ``writable`` (read-write) and each interpreter's environment (``kernel[0]`` and
    ``interpreters``) that lies in a hidden folder put back; ``cwd`` writable. The network
    is unshared unless the connection file asks for TCP. ``isolated``: bubblewrap runs as
    root and ``kernel`` drops to a sandbox user id (no user namespace, which would map
    that id away; the kernel keeps the HOME, TMPDIR and tool folders it was given).
    ``conceal``: more folders hidden the same way."""
    cf, info = connection_info(kernel)
    hidden = [SANDBOX_TMP]
    for path in (home, course_root_of(cwd), *conceal):
        real = os.path.realpath(path) if path else "/"
        if real != "/" and os.path.isdir(real) and not _below(real, hidden):
            hidden.append(real)
    argv = [bwrap, "--die-with-parent", "--new-session", "--unshare-ipc", "--unshare-pid"]
    argv += ["--unshare-uts", "--unshare-cgroup-try"]
    # a user namespace lets bubblewrap work without root
    argv += [] if isolated else ["--unshare-user-try"]
    if info.get("transport") == "ipc":  # TCP channels would need the host's loopback
        argv.append("--unshare-net")
    argv += ["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
    argv += ["--perms", "1777", "--tmpfs", SANDBOX_TMP]
    for path in hidden[1:]:
        argv += ["--perms", "0755", "--tmpfs", path]
    if info.get("transport") == "ipc" and info.get("ip"):
        writable = [*writable, os.path.dirname(info["ip"])]
    for exe in (kernel[0], *interpreters):  # an interpreter's environment: bin/..
        if os.path.isabs(exe):
            for path in (exe, os.path.realpath(exe)):
                readable = [*readable, os.path.dirname(os.path.dirname(path))]
    if cf:  # ipykernel rewrites it without the CurveZMQ secret key once read
        writable = [*writable, cf]
    bound: list[str] = []
    made: set[str] = set()

    def bind(how: str, source: str, dest: str) -> None:
        # the folders bubblewrap would make on the way to ``dest`` (for its user only)
        # are made first, readable by all
        top = next(h for h in hidden if _below(dest, [h]))
        parents = []
        parent = os.path.dirname(dest)
        while parent != top and parent not in made and not _below(parent, bound):
            parents.append(parent)
            parent = os.path.dirname(parent)
        for folder in reversed(parents):
            made.add(folder)
            argv.extend(["--perms", "0755", "--dir", folder])
        argv.extend([how, source, dest])
        bound.append(dest)

    wanted: dict[str, str] = {}
    for paths, how in ((readable, "--ro-bind"), (writable, "--bind"), ([cwd], "--bind")):
        for path in paths:
            real = os.path.realpath(path)
            if os.path.exists(real) and _below(real, hidden):
                wanted[real] = how if wanted.get(real) != "--bind" else "--bind"
    for real in sorted(wanted, key=len):  # a folder before what is bound inside it
        bind(wanted[real], real, real)
    argv += ["--chdir", os.path.realpath(cwd)]
    if not isolated:
        for f in font_lists:
            bind("--ro-bind", f, os.path.join(SANDBOX_TMP, ".matplotlib", os.path.basename(f)))
        argv += ["--setenv", "TMPDIR", SANDBOX_TMP]
        argv += ["--setenv", "IPYTHONDIR", os.path.join(SANDBOX_TMP, ".ipython")]
        argv += ["--setenv", "MPLCONFIGDIR", os.path.join(SANDBOX_TMP, ".matplotlib")]
    # ipykernel stops when its parent is gone; in the sandbox's process namespace its
    # parent is bubblewrap's init, not the grading worker it would look for.
    argv += ["--unsetenv", "JPY_PARENT_PID"]
    return [*argv, "--", *kernel]


def python_paths(hide_grader: bool = False) -> list[str]:
    """What the kernel's Python reads: this interpreter's prefixes and ``sys.path`` (the
    launcher runs the grading environment's interpreter with the kernel's PYTHONPATH),
    without the folders holding initlab_grading if ``hide_grader``."""
    paths = [sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(sys.executable)]
    paths += [p for p in sys.path if p]
    return [p for p in paths if not (hide_grader and holds_grader(p))]


def holds_grader(path: str) -> bool:
    """Whether ``path`` is a folder with the initlab_grading package in it."""
    return os.path.isdir(os.path.join(path, "initlab_grading"))


# --------------------------------------------------------------------------------------
# The launcher


def _chown_tree(path: str, uid: int, gid: int) -> None:
    os.chown(path, uid, gid)
    for base, dirs, files in os.walk(path):
        for name in dirs + files:
            os.lchown(os.path.join(base, name), uid, gid)


def _become(uid: int, nproc: int | None, kernel: list[str], env: dict[str, str]) -> None:
    """Drop to the sandbox user id ``uid`` (no groups, umask 077, at most ``nproc``
    processes) and start the kernel with ``env``."""
    if nproc:
        resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
    os.umask(0o077)
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)
    os.execvpe(kernel[0], kernel, env)


def main(argv: list[str]) -> None:
    memory = fsize = uid = nproc = become = None
    job = ""
    use_bwrap = True
    while argv and argv[0] != "--":
        if argv[0] == "--no-bwrap":
            use_bwrap, argv = False, argv[1:]
            continue
        flag, value, *argv = argv
        if flag == "--memory":
            memory = int(value)
        elif flag == "--fsize":
            fsize = int(value)
        elif flag == "--uid":
            uid = int(value)
        elif flag == "--nproc":
            nproc = int(value)
        elif flag == "--job":
            job = value
        elif flag == "--become":  # the second stage, inside bubblewrap (see below)
            become = int(value)
        else:
            raise SystemExit(f"sandbox: unknown option {flag}")
    kernel = argv[1:]
    if become is not None:
        _become(become, nproc, kernel, dict(os.environ))
    # The kernelspec and nbgrader_config.py (Execute.extra_arguments) may both pass
    # IPython's ignore_cwd, which traitlets refuses to get twice.
    ignore_cwd = [a for a in kernel if a.startswith("--InteractiveShellApp.ignore_cwd=")]
    kernel = [a for a in kernel if a not in ignore_cwd] + ignore_cwd[:1]
    isolated = uid is not None and os.geteuid() == 0
    bwrap = shutil.which("bwrap") if use_bwrap else None
    if use_bwrap and not bwrap:
        raise SystemExit(BWRAP_MISSING)
    grader_home = os.path.expanduser("~")
    env = kernel_environment(dict(os.environ), isolated)
    hide = env.pop(HIDE_GRADER_VARIABLE, "") == "1"
    if hide:
        entries = env.get("PYTHONPATH", "").split(os.pathsep)
        env["PYTHONPATH"] = os.pathsep.join(p for p in entries if p and not holds_grader(p))
    if job:
        env[JOB_VARIABLE] = job
    if memory:
        resource.setrlimit(resource.RLIMIT_DATA, (memory, memory))
    if fsize:
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    if isolated or bwrap:
        # PYTHONPATH entries through symlinks that the kernel's user may not traverse, or
        # in folders the sandbox hides (a course's autograder/ linked from elsewhere).
        env["PYTHONPATH"] = os.pathsep.join(
            os.path.realpath(p) for p in env.get("PYTHONPATH", "").split(os.pathsep) if p
        )
    if isolated:
        remove_private_folders(uid)  # a previous kernel's, if a run reused the id
        private = tempfile.mkdtemp(prefix=f"initlab-kernel-{uid}-")
        connection, info = connection_info(kernel)
        if connection:  # readable by root only: a copy the kernel's user owns
            copy = os.path.join(private, os.path.basename(connection))
            shutil.copy(connection, copy)
            kernel[kernel.index(connection)] = copy
        _chown_tree(private, uid, uid)
        _chown_tree(os.getcwd(), uid, uid)
        sockets = os.path.dirname(info.get("ip", "")) if info.get("transport") == "ipc" else ""
        if os.path.basename(sockets).startswith(SOCKET_FOLDER_PREFIX):
            os.chown(sockets, uid, uid)  # the kernel makes its sockets there
        env.update(
            HOME=private,
            TMPDIR=private,
            IPYTHONDIR=os.path.join(private, ".ipython"),
            MPLCONFIGDIR=os.path.join(private, ".matplotlib"),
        )
    if not bwrap:
        if isolated:
            _become(uid, nproc, kernel, env)
        os.execvpe(kernel[0], kernel, env)
    data = data_folder(env, grader_home)
    inner = kernel
    if isolated:
        # bubblewrap runs as root (it checks and binds folders the kernel's user may not
        # traverse, such as its own under the private autograded/), without a user
        # namespace; inside it, this module's second stage drops to the sandbox user id.
        # (run as a file: the kernel's path may leave out initlab_grading)
        inner = [sys.executable, "-P", os.path.realpath(__file__), "--become", str(uid)]
        inner += ["--nproc", str(nproc)] if nproc else []
        inner += ["--", *kernel]
    command = bwrap_command(
        inner,
        cwd=os.getcwd(),
        home=grader_home,
        readable=[
            *python_paths(hide),
            *env.get("PYTHONPATH", "").split(os.pathsep),
            data,
            *([os.path.realpath(__file__)] if isolated else []),
        ],
        writable=[env["HOME"]] if isolated else [os.path.join(data, "runs")],
        font_lists=matplotlib_font_lists(dict(os.environ), grader_home),
        interpreters=[kernel[0]],
        bwrap=bwrap,
        isolated=isolated,
        conceal=[p for p in python_paths() if holds_grader(p)] if hide else [],
    )
    os.execvpe(command[0], command, env)


if __name__ == "__main__":
    main(sys.argv[1:])
