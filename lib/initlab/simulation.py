"""Random deep networks at initialization, many at once: how the empirical variance of one
output unit over a data set spreads across networks and depth (the kurtosis lab's
Figure 2).

Network ``i`` maps an input ``x`` (a row of ``X``, dimension ``d``) to
``h1 = G_i x`` with a first layer ``G_i`` (by default Gaussian with entries N(0, 1/d);
the caller's ``first_init`` draws another, e.g. He's, an orthogonal one or ZerO's
deterministic partial identity), then ``h(l+1) = W_i(l) relu(h(l))`` for
``l = 1 .. depth`` with ``W_i(l)`` drawn by the caller's ``init``. For each network and
layer we want the variance over the inputs of the first unit ``h(l+1)_1``.

:func:`orthogonal` draws the weights of ``torch.nn.init.orthogonal_`` (with its ``gain``)
for many networks at once.

How it runs fast (chunks of networks on threads, compiled kernels, a sparse first layer for
images with a common background) is in the private module initlab._simulation; every way
gives the same variances up to round-off.

Example::

    he = lambda n: torch.randn(n, 10, 10) * math.sqrt(2 / 10)
    torch.manual_seed(0)
    v = layer_output_variances(X, he, depth=100, num_nets=1_000)  # (100, 1000)
    # orthogonal layers with torch's ReLU gain sqrt(2), first layer included
    ortho = lambda n: orthogonal(n, 10, 10, gain=math.sqrt(2))
    first = lambda n: orthogonal(n, 10, X.shape[1], gain=math.sqrt(2))
    v = layer_output_variances(X, ortho, depth=100, num_nets=1_000, first_init=first)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch

from initlab import _simulation
from initlab._simulation import (
    FUSED_MAX_WIDTH,
    FUSED_MIN_PASSES,
    IMAGE_BLOCK,
    NET_CHUNK,
    SPARSE_MAX_DENSITY,
    FirstLayer,
    Method,
    _check_init_output,
    _first_weights,
)

__all__ = [
    "FUSED_MAX_WIDTH",
    "FUSED_MIN_PASSES",
    "IMAGE_BLOCK",
    "NET_CHUNK",
    "SPARSE_MAX_DENSITY",
    "layer_output_variances",
    "layer_output_variances_one_by_one",
    "orthogonal",
]


def orthogonal(
    n: int, rows: int, cols: int, gain: float = 1.0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``n`` matrices ``(rows, cols)``, each drawn as ``torch.nn.init.orthogonal_(
    torch.empty(rows, cols), gain)`` draws one, stacked ``(n, rows, cols)``: the QR factors
    of Gaussian matrices (of the transpose when ``rows < cols``) with the signs of R's
    diagonal moved into Q (which makes Q Haar-distributed), times ``gain``. Orthonormal
    rows (``rows <= cols``) or columns, each of norm ``gain``; ``gain = sqrt(2)`` is
    ``torch.nn.init.calculate_gain("relu")``. With ``n = 1`` and the same generator state it
    is torch's matrix (the same normal draws in the same order)."""
    flat = torch.randn(n, rows, cols, generator=generator)
    if rows < cols:
        flat = flat.transpose(1, 2)
    q, r = torch.linalg.qr(flat)
    q = q * torch.sign(torch.diagonal(r, dim1=1, dim2=2)).unsqueeze(1)
    if rows < cols:
        q = q.transpose(1, 2)
    return (q * gain).contiguous()


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
    first_layer: FirstLayer = "auto",
    first_init: Callable[[int], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Variance over the rows of ``X`` of the first unit after each of ``depth`` layers,
    for ``num_nets`` independently drawn networks: a float64 tensor ``(depth, num_nets)``.

    ``init(n)`` returns the weights of one layer for ``n`` networks, shape
    ``(n, width, width)``; it is called ``depth`` times per chunk of ``net_chunk``
    networks, layer by layer, and may draw from torch's global generator (seed it with
    ``torch.manual_seed`` for reproducible results). The first layer (``d`` inputs to
    ``width`` units; its own output is not recorded) is ``first_init(n)``, shape ``(n,
    width, d)``, called once per chunk after the chunk's ``init`` calls; by default it is
    Gaussian with variance ``1/d``. Variances are unbiased (divided by ``len(X) - 1``).
    ``dtype`` is the type of the forward pass.

    Chunks run on ``workers`` threads (default: torch's thread count), each with
    single-threaded torch operations: the products are too small for torch's own
    parallelism to pay. Weights are drawn in the calling thread, chunk by chunk, so the
    result does not depend on ``workers``. ``method`` picks how the layers after the first
    run, ``first_layer`` how the first one does (``"dense"``: ``torch.mm``; ``"sparse"``:
    over the entries that differ from their column's most common value; ``"auto"``:
    sparse with the fused kernel when at most :data:`SPARSE_MAX_DENSITY` of the entries
    differ; initlab._simulation says how each runs). All give the same variances up to
    round-off.
    """
    X = torch.as_tensor(X, dtype=dtype)
    if X.dim() != 2 or len(X) < 2:
        raise ValueError(f"X must be (num_inputs >= 2, d); got shape {tuple(X.shape)}")
    if depth < 1 or num_nets < 1:
        raise ValueError(f"depth and num_nets must be positive; got {depth} and {num_nets}")
    if method not in ("auto", "fused", "bmm"):
        raise ValueError(f"method must be 'auto', 'fused' or 'bmm'; got {method!r}")
    if first_layer not in ("auto", "dense", "sparse"):
        raise ValueError(f"first_layer must be 'auto', 'dense' or 'sparse'; got {first_layer!r}")
    return _simulation.variances_in_chunks(
        X,
        init,
        depth,
        num_nets,
        net_chunk,
        image_block,
        workers,
        dtype,
        method,
        first_layer,
        first_init,
    )


def layer_output_variances_one_by_one(
    X: torch.Tensor,
    init: Callable[[int], torch.Tensor],
    *,
    depth: int,
    num_nets: int,
    dtype: torch.dtype = torch.float32,
    layout: Literal["rows", "columns"] = "rows",
    first_init: Callable[[int], torch.Tensor] | None = None,
) -> torch.Tensor:
    """The same quantity computed the plain way, one network at a time over all inputs
    (a reference for tests and benchmarks; it draws the same weights as
    :func:`layer_output_variances` with one chunk when the generator state is the same).
    ``layout``: a network's activations as rows (num_inputs, width), ``h = relu(h) @ W.T``,
    or as columns (width, num_inputs), ``h = W @ relu(h)``; the same products, which
    matrix-multiply libraries run at different speeds."""
    if layout not in ("rows", "columns"):
        raise ValueError(f"layout must be 'rows' or 'columns'; got {layout!r}")
    X = torch.as_tensor(X, dtype=dtype)
    num_inputs, d = X.shape
    Ws = [init(num_nets) for _ in range(depth)]
    width = _check_init_output(Ws[0], num_nets)
    first = _first_weights(first_init, num_nets, width, d).to(dtype)
    out = torch.empty(depth, num_nets, dtype=torch.float64)
    Xt = X.T.contiguous() if layout == "columns" else None
    for i in range(num_nets):
        if Xt is None:
            H = X @ first[i].T  # (num_inputs, width)
            for layer in range(depth):
                H = torch.relu(H) @ Ws[layer][i].to(dtype).T
                out[layer, i] = H[:, 0].double().var()
        else:
            H = first[i] @ Xt  # (width, num_inputs)
            for layer in range(depth):
                H = Ws[layer][i].to(dtype) @ torch.relu(H)
                out[layer, i] = H[0].double().var()
    return out
