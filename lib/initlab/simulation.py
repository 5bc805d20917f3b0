"""Random deep networks at initialization, many at once: how the empirical variance of one
output unit over a data set spreads across networks and depth (the kurtosis lab's
Figure 2).

Network ``i`` maps an input ``x`` (a row of ``X``, dimension ``d``) to
``h1 = G_i x`` with a Gaussian first layer ``G_i`` (entries N(0, 1/d)), then
``h(l+1) = W_i(l) relu(h(l))`` for ``l = 1 .. depth`` with ``W_i(l)`` drawn by the
caller's ``init``. For each network and layer we want the variance over the inputs of
the first unit ``h(l)_1``.

The work is laid out for the CPU's caches: networks go in chunks of ``net_chunk`` and
inputs in blocks of ``image_block``; all ``depth`` weight matrices of a chunk are drawn
first, so each block of inputs runs through the whole depth while its activations,
``(net_chunk, width, image_block)``, stay in cache; chunks run on several threads. The
first layer of a chunk is one ``torch.mm`` per block. The ``depth`` layers after it run
one of two ways (``method``):

- ``"bmm"``: one ``torch.bmm`` per layer for the whole chunk, a ReLU and a copy of unit 0;
- ``"fused"``: a kernel compiled with Numba for the chunk's width that carries each block
  through all layers, ReLU and product in one pass over the activations while they sit in
  the L1 cache. At width 10 the product is too small for a matrix-multiply library (10 x 10
  times 10 x 512 per network) and the ReLU and copy cost as much as it; on the
  development machine (AVX-512) the whole simulation carried 2.7 times as many
  network-input-layer passes per second with it as with ``"bmm"`` (benchmarks/kurtosis.py:
  4.06e8 against 1.52e8). Compiling it takes 2-3 s, once per process, width and dtype.

``"auto"`` (the default) takes ``"fused"`` for widths up to :data:`FUSED_MAX_WIDTH` when a
call has at least :data:`FUSED_MIN_PASSES` passes (where the compile time pays for itself),
``"bmm"`` otherwise. Each block's mean and centred sum of squares are merged across blocks
with Chan et al.'s pairwise update in float64, so deep layers whose outputs barely vary
around a large mean keep their digits.

Example::

    he = lambda n: torch.randn(n, 10, 10) * math.sqrt(2 / 10)
    torch.manual_seed(0)
    v = layer_output_variances(X, he, depth=100, num_nets=1_000)  # (100, 1000)
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Literal

import numpy as np
import torch

__all__ = [
    "FUSED_MAX_WIDTH",
    "FUSED_MIN_PASSES",
    "IMAGE_BLOCK",
    "NET_CHUNK",
    "layer_output_variances",
    "layer_output_variances_one_by_one",
]

Method = Literal["auto", "fused", "bmm"]

NET_CHUNK = 40
"""Networks per chunk. With IMAGE_BLOCK inputs, a chunk's activations at width 10 take
40 x 10 x 512 x 4 bytes = 800 KB, so they and the next layer's (1.6 MB together) stay in
a 2 MB L2 cache; on the development machine this ran about 7 % faster than chunks of 50
networks and blocks of 1,024 inputs (median of 7 interleaved runs of 400 networks)."""
IMAGE_BLOCK = 512
"""Inputs per block (see NET_CHUNK)."""
FUSED_MAX_WIDTH = 16
"""Widest layers the fused kernel handles: it keeps one input's ``width`` activations and
their ``width`` outputs in vector registers (32 on AVX-512) and is written out for the
width, ``width**2`` multiply-adds per layer."""
FUSED_MIN_PASSES = 300_000_000
"""Network-input-layer passes from which ``method="auto"`` compiles the fused kernel. A
single call wins its compile time (2-3 s) back from about 7e8 passes (``"bmm"`` carried
~1.5e8 passes per second on the development machine's 2 cores, the fused kernel ~4e8); the
threshold is lower because a process compiles once and the lab calls the simulation four
times (5e8 passes each at the ``default`` budget)."""

_COMPILE_LOCK = threading.Lock()


def _fused_source(width: int) -> str:
    """Python source of the fused kernel for ``width``: per network, the block's inputs are
    the innermost loop (vectorized across inputs), each layer's product written out as
    ``width`` sums of ``width`` terms over scalars that stay in registers; after each layer
    the mean and centred sum of squares of unit 0 over the block, in float64 (two passes
    over the block's values of unit 0, which sit in the L1 cache)."""
    weights = [f"w{j}_{q} = M[{j}, {q}]" for j in range(width) for q in range(width)]
    loads = [f"x{q} = a[{q}, i]" for q in range(width)]
    sums = [f"y{j} = " + " + ".join(f"w{j}_{q} * x{q}" for q in range(width)) for j in range(width)]
    stores = [f"a[{j}, i] = max(y{j}, zero)" for j in range(width)]
    body = "\n".join(
        [
            "def fused_layers(W, H, mean, m2, zero):",
            "    depth, num_nets = W.shape[0], W.shape[1]",
            "    k = H.shape[2]",
            f"    a = np.empty(({width}, k), H.dtype)",
            "    unit0 = np.empty(k, H.dtype)",
            "    for net in range(num_nets):",
            f"        for j in range({width}):",
            "            for i in range(k):",
            "                a[j, i] = max(H[net, j, i], zero)",
            "        for layer in range(depth):",
            "            M = W[layer, net]",
            *("            " + line for line in weights),
            "            for i in range(k):",
            *("                " + line for line in loads + sums),
            "                unit0[i] = y0",
            *("                " + line for line in stores),
            "            total = 0.0",
            "            for i in range(k):",
            "                total += np.float64(unit0[i])",
            "            mu = total / k",
            "            squares = 0.0",
            "            for i in range(k):",
            "                dev = np.float64(unit0[i]) - mu",
            "                squares += dev * dev",
            "            mean[layer, net] = mu",
            "            m2[layer, net] = squares",
        ]
    )
    return body + "\n"


@functools.cache
def _fused_kernel(width: int, dtype: torch.dtype) -> Callable:
    """The fused kernel for ``width`` and ``dtype``, compiled (once per process) in the
    calling thread. ``kernel(W, H, mean, m2, zero)`` carries the first layer's outputs H
    (n, w, k) for a block of k inputs through the layers W (depth, n, w, w), all
    C-contiguous arrays of ``dtype`` (``zero`` a scalar of it), and writes, per layer and
    network, the block's mean and centred sum of squares of unit 0 to the float64 arrays
    mean and m2 (depth, n). H is left as it was.

    LLVM's cost model vectorizes with 256-bit registers on AVX-512 machines; with 16 lanes
    the kernel ran 1.2 and 1.8 times as fast in two runs, so the vector width is forced to
    16 while this kernel compiles (and only then) where the CPU has AVX-512."""
    import llvmlite.binding as llvm
    import numba

    namespace: dict = {"np": np}
    exec(compile(_fused_source(width), f"<initlab fused kernel, width {width}>", "exec"), namespace)
    kernel = numba.njit(nogil=True, fastmath=True, error_model="numpy")(namespace["fused_layers"])
    np_dtype = torch.empty((), dtype=dtype).numpy().dtype
    array3 = numba.from_dtype(np_dtype)[:, :, ::1]
    array4 = numba.from_dtype(np_dtype)[:, :, :, ::1]
    stats = numba.float64[:, ::1]
    signature = (array4, array3, stats, stats, numba.from_dtype(np_dtype))
    wide = "avx512f" in llvm.get_host_cpu_features().flatten()
    with _COMPILE_LOCK:
        if wide:
            llvm.set_option("initlab", "--force-vector-width=16")
        try:
            kernel.compile(signature)
        finally:
            if wide:
                llvm.set_option("initlab", "--force-vector-width=0")
    kernel.disable_compile()
    return kernel


def _check_init_output(W: torch.Tensor, n: int) -> int:
    if W.dim() != 3 or W.shape[0] != n or W.shape[1] != W.shape[2]:
        raise ValueError(
            f"init(n) must return n square weight matrices of shape (n, width, width); "
            f"init({n}) returned shape {tuple(W.shape)}"
        )
    return W.shape[1]


def _chunk_variances(
    W: torch.Tensor,
    first: torch.Tensor,
    Xt: torch.Tensor,
    image_block: int,
    flush: int,
    kernel: Callable | None,
) -> torch.Tensor:
    """Unbiased variances ``(depth, n)`` of unit 0 for one chunk of networks: weights
    ``W`` (depth, n, w, w), first layer ``first`` (n * w, d), inputs as columns ``Xt``;
    the layers through the fused ``kernel`` when given, else one ``torch.bmm`` each."""
    depth, n, width, _ = W.shape
    num_inputs = Xt.shape[1]
    k = min(image_block, num_inputs)
    H = torch.empty(n, width, k, dtype=W.dtype)
    spare = torch.empty_like(H)
    record = torch.empty(min(flush, depth), n, k, dtype=W.dtype)  # unit 0, a few layers
    W_np = W.numpy() if kernel is not None else None
    zero = W_np.dtype.type(0) if W_np is not None else None
    count = 0
    mean = torch.zeros(depth, n, dtype=torch.float64)
    m2 = torch.zeros(depth, n, dtype=torch.float64)
    block_mean = torch.empty(depth, n, dtype=torch.float64)
    block_m2 = torch.empty(depth, n, dtype=torch.float64)
    for b in range(0, num_inputs, image_block):
        cols = Xt[:, b : b + image_block]
        if cols.shape[1] != k:
            k = cols.shape[1]
            H, spare = H[:, :, :k].contiguous(), spare[:, :, :k].contiguous()
            record = record[:, :, :k].contiguous()
        torch.mm(first, cols, out=H.view(n * width, k))
        if kernel is not None:
            kernel(W_np, H.numpy(), block_mean.numpy(), block_m2.numpy(), zero)
        else:
            for layer in range(depth):
                torch.relu_(H)
                torch.bmm(W[layer], H, out=spare)
                H, spare = spare, H
                slot = layer % flush
                record[slot].copy_(H[:, 0, :])
                if slot == flush - 1 or layer == depth - 1:
                    # Mean and centred sum of squares of the block, for the last few layers
                    # at once: few large operations instead of many small ones.
                    rows = record[: slot + 1]
                    mu = rows.mean(dim=2)
                    rows.sub_(mu.unsqueeze(2))
                    block_mean[layer - slot : layer + 1] = mu
                    block_m2[layer - slot : layer + 1] = rows.square_().sum(dim=2)
        # Chan, Golub and LeVeque's pairwise merge of (count, mean, M2).
        total = count + k
        delta = block_mean - mean
        mean += delta * (k / total)
        m2 += block_m2 + delta**2 * (count * k / total)
        count = total
    return m2 / (count - 1)


def layer_output_variances(
    X: torch.Tensor,
    init: Callable[[int], torch.Tensor],
    *,
    depth: int,
    num_nets: int,
    net_chunk: int = NET_CHUNK,
    image_block: int = IMAGE_BLOCK,
    workers: int | None = None,
    dtype: torch.dtype = torch.float32,
    method: Method = "auto",
) -> torch.Tensor:
    """Variance over the rows of ``X`` of the first unit after each of ``depth`` layers,
    for ``num_nets`` independently drawn networks: a float64 tensor ``(depth, num_nets)``.

    ``init(n)`` returns the weights of one layer for ``n`` networks, shape
    ``(n, width, width)``; it is called ``depth`` times per chunk of ``net_chunk``
    networks, layer by layer, and may draw from torch's global generator (seed it with
    ``torch.manual_seed`` for reproducible results). The first layer is Gaussian with
    variance ``1/d``. Variances are unbiased (divided by ``len(X) - 1``). ``dtype`` is the
    type of the forward pass.

    Chunks run on ``workers`` threads (default: torch's thread count), each with
    single-threaded torch operations: the products are too small for torch's own
    parallelism to pay. Weights are drawn in the calling thread, chunk by chunk, so the
    result does not depend on ``workers``. ``method`` picks how the layers after the first
    run (module docstring); both give the same variances up to round-off.
    """
    X = torch.as_tensor(X, dtype=dtype)
    if X.dim() != 2 or len(X) < 2:
        raise ValueError(f"X must be (num_inputs >= 2, d); got shape {tuple(X.shape)}")
    if depth < 1 or num_nets < 1:
        raise ValueError(f"depth and num_nets must be positive; got {depth} and {num_nets}")
    if method not in ("auto", "fused", "bmm"):
        raise ValueError(f"method must be 'auto', 'fused' or 'bmm'; got {method!r}")
    d = X.shape[1]
    Xt = X.T.contiguous()  # (d, num_inputs): blocks of columns feed the first layer
    out = torch.empty(depth, num_nets, dtype=torch.float64)
    workers = workers or torch.get_num_threads()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(workers) as pool:
            pending: dict[Future, int] = {}
            for start in range(0, num_nets, net_chunk):
                n = min(net_chunk, num_nets - start)
                Ws = [init(n) for _ in range(depth)]
                width = _check_init_output(Ws[0], n)
                W = torch.stack([w.to(dtype) for w in Ws]).contiguous()  # (depth, n, w, w)
                first = (torch.randn(n * width, d) / math.sqrt(d)).to(dtype)
                if start == 0:
                    kernel = _pick_kernel(method, width, dtype, num_nets * len(X) * depth)
                job = (W, first, Xt, image_block, 10, kernel)
                pending[pool.submit(_chunk_variances, *job)] = start
                if len(pending) >= 2 * workers:  # bound the memory of drawn weights
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        result = future.result()
                        begin = pending.pop(future)
                        out[:, begin : begin + result.shape[1]] = result
            for future, begin in pending.items():
                result = future.result()
                out[:, begin : begin + result.shape[1]] = result
    finally:
        torch.set_num_threads(threads)
    return out


def _pick_kernel(method: Method, width: int, dtype: torch.dtype, passes: int) -> Callable | None:
    """The fused kernel where ``method`` asks for it (or ``"auto"`` finds it worth its
    compile time), else None (one ``torch.bmm`` per layer)."""
    fits = width <= FUSED_MAX_WIDTH and dtype in (torch.float32, torch.float64)
    if method == "fused" and not fits:
        raise ValueError(
            f"method='fused' handles float32 or float64 layers up to width {FUSED_MAX_WIDTH}; "
            f"got width {width} in {dtype}: use method='bmm' (or 'auto')"
        )
    if method == "fused" or (method == "auto" and fits and passes >= FUSED_MIN_PASSES):
        return _fused_kernel(width, dtype)
    return None


def layer_output_variances_one_by_one(
    X: torch.Tensor,
    init: Callable[[int], torch.Tensor],
    *,
    depth: int,
    num_nets: int,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The same quantity computed the plain way, one network at a time over all inputs
    (a reference for tests and benchmarks; it draws the same weights as
    :func:`layer_output_variances` with one chunk when the generator state is the same)."""
    X = torch.as_tensor(X, dtype=dtype)
    num_inputs, d = X.shape
    Ws = [init(num_nets) for _ in range(depth)]
    width = _check_init_output(Ws[0], num_nets)
    first = (torch.randn(num_nets * width, d) / math.sqrt(d)).to(dtype).view(num_nets, width, d)
    out = torch.empty(depth, num_nets, dtype=torch.float64)
    for i in range(num_nets):
        H = X @ first[i].T  # (num_inputs, width)
        for layer in range(depth):
            H = torch.relu(H) @ Ws[layer][i].to(dtype).T
            out[layer, i] = H[:, 0].double().var()
    return out
