"""How initlab.simulation computes its variances fast; nothing here is needed to read
the notebooks (initlab.simulation says what is computed).

The work is laid out for the CPU's caches: networks go in chunks of ``net_chunk`` and
inputs in blocks of ``image_block``; all ``depth`` weight matrices of a chunk are drawn
first, so each block of inputs runs through the whole depth while its activations,
``(net_chunk, width, image_block)``, stay in cache; chunks run on several threads.

The first layer of a chunk (``first_layer``) is one ``torch.mm`` per block (``"dense"``)
or, where most entries of each column of ``X`` share one value (normalised images: the
background, 81 % of MNIST's pixels), ``"sparse"``: ``G x = G (x - b) + G b`` with ``b``
the columns' common values, ``x - b`` stored in compressed sparse rows once per call, and
compiled code (:func:`_rows_intrinsic`) that keeps an input's outputs for all networks of
the chunk in vector registers while its entries off the background stream past. It does
the 19 % of the multiply-adds that are not zero, and takes a third to a half of
``torch.mm``'s time (benchmarks/kurtosis.py, line 1 prints both). ``"auto"``
takes it with the fused kernel when at most :data:`SPARSE_MAX_DENSITY` of the entries are
off their column's common value. The ``depth`` layers after it run one of two ways
(``method``):

- ``"bmm"``: one ``torch.bmm`` per layer for the whole chunk, a ReLU and a copy of unit 0;
- ``"fused"``: a kernel compiled with Numba for the chunk's width that carries each block
  through all layers, ReLU and product in one pass over the activations while they sit in
  the L1 cache. At width 10 the product is too small for a matrix-multiply library (10 x 10
  times 10 x 512 per network) and the ReLU and copy cost as much as it. Each layer is LLVM
  vector code blocked for the host's vector registers (:func:`_block_intrinsic`): on
  AVX-512 32 images per step, each weight broadcast once for two multiply-adds, no
  register spilled; it does multiply-adds at 67-125 % of ``torch.mm``'s rate on one
  thread, 47-70 % of the CPU's peak, depending on the CPU (benchmarks/kurtosis.py,
  line 4).
  Compiling it and the sparse first layer takes 2-3 s, once per process, width and dtype.

``"auto"`` (the default) takes ``"fused"`` for widths up to :data:`FUSED_MAX_WIDTH` when a
call has at least :data:`FUSED_MIN_PASSES` passes (where the compile time pays for itself),
``"bmm"`` otherwise. Each block's mean and centred sum of squares are merged across blocks
with Chan et al.'s pairwise update in float64, so deep layers whose outputs barely vary
around a large mean keep their digits.
"""

from __future__ import annotations

import functools
import math
import platform
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Literal, NamedTuple

import numpy as np
import torch

Method = Literal["auto", "fused", "bmm"]
FirstLayer = Literal["auto", "dense", "sparse"]

NET_CHUNK = 40
"""Networks per chunk. With IMAGE_BLOCK inputs, a chunk's activations at width 10 take
40 x 10 x 512 x 4 bytes = 800 KB, so they and the next layer's (1.6 MB together) stay in
a 2 MB L2 cache; this ran about 7 % faster than chunks of 50
networks and blocks of 1,024 inputs (median of 7 interleaved runs of 400 networks)."""
IMAGE_BLOCK = 512
"""Inputs per block (see NET_CHUNK)."""
FUSED_MAX_WIDTH = 16
"""Widest layers the fused kernel handles: it keeps a block's ``width`` activations and a
group of outputs in vector registers (32 on AVX-512) and is written out for the width,
``width**2`` multiply-adds per layer."""
FUSED_MIN_PASSES = 300_000_000
"""Network-input-layer passes from which ``method="auto"`` compiles the fused kernel. A
single call wins its compile time (2-3 s) back from about 7e8 passes (``"bmm"`` carried
~1.5e8 passes per second on 2 cores, the fused kernel ~4e8); the
threshold is lower because a process compiles once and the lab calls the simulation four
times (5e8 passes each at the ``default`` budget)."""

SPARSE_MAX_DENSITY = 0.3
"""Largest fraction of input entries off their column's base at which ``first_layer="auto"``
takes the sparse first layer (with the fused kernel). Its cost grows with that fraction,
``torch.mm``'s does not: for a block of 512 inputs of dimension 784 and 40 networks of width
10 on one thread, the sparse layer took 1.8, 3.5, 4.9 and 6.8 ms at 19, 35, 50
and 65 % of the entries off the base, against 3.6-4.3 ms with ``torch.mm`` (break-even near
40 %). Normalised MNIST has 19 %."""

_COMPILE_LOCK = threading.Lock()


@functools.cache
def _host_vectors() -> tuple[int, int]:
    """(bits per vector register, number of vector registers) of this CPU, for the fused
    kernel's blocking: AVX-512 32 x 512, AVX/AVX2 16 x 256, NEON 32 x 128, else 16 x 128.
    Asked once per process (LLVM's query takes about a millisecond; chunks ask again)."""
    machine = platform.machine().lower()
    try:
        import llvmlite.binding as llvm

        features = llvm.get_host_cpu_features()
    except Exception:  # noqa: BLE001 - unknown host: the narrowest vectors
        features = {}
    if machine in ("x86_64", "amd64", "x86", "i686"):
        if features.get("avx512f"):
            return 512, 32
        if features.get("avx2") or features.get("avx"):
            return 256, 16
        return 128, 16
    if machine in ("arm64", "aarch64"):
        return 128, 32
    return 128, 16


def _blocking(width: int, registers: int) -> tuple[int, int]:
    """(image vectors per block, outputs per group): always two image vectors, so that
    each weight broadcast serves two multiply-adds. Where the block's inputs (``2 *
    width`` registers), one group's sums (``2 * group``) and a broadcast weight fit in
    ``registers``, the inputs stay in registers; else (AVX2 from width 7 on) LLVM re-reads
    them from the L1 cache, and a group takes the sums that fit beside the weight and two
    inputs. On an AVX2 CPU, width 10, two vectors in groups of 6 did 28-32 G
    multiply-adds/s against 24-28 for the one vector in groups of 5 that kept the inputs in
    registers (width 16: 24 against 15)."""
    if 2 * width + 2 + 1 <= registers:
        group = (registers - 1 - 2 * width) // 2
    else:
        group = (registers - 3) // 2
    return 2, max(1, min(width, group))


def _vector_function(builder, name: str, v_ty, arity: int):
    """The LLVM intrinsic ``llvm.<name>`` on vectors of type ``v_ty`` (``fma``: 3 operands,
    ``maxnum``: 2), declared in the builder's module once."""
    from llvmlite import ir
    from numba.core import cgutils

    bits = 64 if isinstance(v_ty.element, ir.DoubleType) else 32
    return cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(v_ty, [v_ty] * arity), f"llvm.{name}.v{v_ty.count}f{bits}"
    )


def _splat(builder, value, v_ty):
    """A vector of type ``v_ty`` with ``value`` in every lane."""
    from llvmlite import ir

    undef = ir.Constant(v_ty, ir.Undefined)
    one = builder.insert_element(undef, value, ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(
        one, undef, ir.Constant(ir.VectorType(ir.IntType(32), v_ty.count), [0] * v_ty.count)
    )


def _block_intrinsic(width: int, lanes: int, vectors: int, group: int) -> Callable:
    """A Numba intrinsic ``block(a, M, u, i)``: one layer for the ``vectors * lanes``
    inputs in columns ``i ..`` of the activations ``a`` (width, k) in place, written as
    LLVM vector code: the inputs' ``width`` values are loaded into registers once, then
    for each group of ``group`` outputs every weight ``M[j, q]`` is broadcast once and
    multiply-added into ``vectors`` sums, the group's ReLU'd outputs stored over the
    inputs (which stay in registers), and unit 0's pre-activation written to ``u``."""
    from llvmlite import ir
    from numba import types
    from numba.core import cgutils
    from numba.extending import intrinsic

    @intrinsic
    def block(typingctx, a, M, u, i):  # noqa: ARG001 - Numba's intrinsic protocol
        def codegen(context, builder, signature, args):
            a_ty, m_ty, u_ty, _ = signature.args
            A = context.make_array(a_ty)(context, builder, args[0])
            Mw = context.make_array(m_ty)(context, builder, args[1])
            U = context.make_array(u_ty)(context, builder, args[2])
            start = args[3]
            cols = cgutils.unpack_tuple(builder, A.shape, 2)[1]
            idx = cols.type
            f_ty = context.get_value_type(a_ty.dtype)
            v_ty = ir.VectorType(f_ty, lanes)
            fma = _vector_function(builder, "fma", v_ty, 3)
            relu = _vector_function(builder, "maxnum", v_ty, 2)
            zero = ir.Constant(v_ty, [ir.Constant(f_ty, 0.0)] * lanes)

            def at(base, row, stride, v):
                off = builder.add(
                    builder.mul(ir.Constant(idx, row), stride),
                    builder.add(start, ir.Constant(idx, v * lanes)),
                )
                return builder.bitcast(builder.gep(base, [off]), v_ty.as_pointer())

            def weight(j, q):
                w = builder.load(builder.gep(Mw.data, [ir.Constant(idx, j * width + q)]))
                return _splat(builder, w, v_ty)

            x = [
                [builder.load(at(A.data, q, cols, v), align=4) for v in range(vectors)]
                for q in range(width)
            ]
            for first in range(0, width, group):
                rows = range(first, min(width, first + group))
                acc: dict = {}
                for q in range(width):
                    for j in rows:
                        w = weight(j, q)
                        for v in range(vectors):
                            acc[j, v] = (
                                builder.fmul(w, x[q][v])
                                if q == 0
                                else builder.call(fma, [w, x[q][v], acc[j, v]])
                            )
                if first == 0:
                    for v in range(vectors):
                        builder.store(acc[0, v], at(U.data, 0, cols, v), align=4)
                for j in rows:
                    for v in range(vectors):
                        out = builder.call(relu, [acc[j, v], zero])
                        builder.store(out, at(A.data, j, cols, v), align=4)
            return context.get_dummy_value()

        return types.void(a, M, u, i), codegen

    return block


def _moments_intrinsic(lanes: int) -> Callable:
    """A Numba intrinsic ``moments(u, k) -> (mean, m2)``: the mean and centred sum of
    squares of ``u[:k]`` in float64, two passes, each summing into four vector
    accumulators of ``lanes`` doubles (a single accumulator would wait on the adder's
    latency at every step: a fifth of the kernel's time) and the last ``k mod 4 lanes``
    values one by one."""
    from llvmlite import ir
    from numba import types
    from numba.core import cgutils
    from numba.extending import intrinsic

    width = 4 * lanes

    @intrinsic
    def moments(typingctx, u, k):  # noqa: ARG001 - Numba's intrinsic protocol
        ret = types.UniTuple(types.float64, 2)

        def codegen(context, builder, signature, args):
            u_ty = signature.args[0]
            U = context.make_array(u_ty)(context, builder, args[0])
            k = args[1]
            idx = k.type
            f_ty = context.get_value_type(u_ty.dtype)
            d_ty = ir.DoubleType()
            vf_ty, vd_ty = ir.VectorType(f_ty, lanes), ir.VectorType(d_ty, lanes)
            fma = _vector_function(builder, "fma", vd_ty, 3)
            full = builder.mul(builder.sdiv(k, ir.Constant(idx, width)), ir.Constant(idx, width))
            zero = ir.Constant(vd_ty, [ir.Constant(d_ty, 0.0)] * lanes)

            def widen(value, ty):
                return value if f_ty == d_ty else builder.fpext(value, ty)

            def one_pass(step_vec, step_one):
                accs = [cgutils.alloca_once_value(builder, zero) for _ in range(4)]
                with cgutils.for_range_slice(
                    builder, ir.Constant(idx, 0), full, ir.Constant(idx, width), idx
                ) as (i, _):
                    for a, acc in enumerate(accs):
                        at = builder.add(i, ir.Constant(idx, a * lanes))
                        ptr = builder.bitcast(builder.gep(U.data, [at]), vf_ty.as_pointer())
                        x = widen(builder.load(ptr, align=4), vd_ty)
                        builder.store(step_vec(x, builder.load(acc)), acc)
                v = builder.fadd(
                    builder.fadd(builder.load(accs[0]), builder.load(accs[1])),
                    builder.fadd(builder.load(accs[2]), builder.load(accs[3])),
                )
                total = cgutils.alloca_once_value(builder, ir.Constant(d_ty, 0.0))
                for lane in range(lanes):
                    element = builder.extract_element(v, ir.Constant(ir.IntType(32), lane))
                    builder.store(builder.fadd(builder.load(total), element), total)
                with cgutils.for_range_slice(builder, full, k, ir.Constant(idx, 1), idx) as (i, _):
                    x = widen(builder.load(builder.gep(U.data, [i])), d_ty)
                    builder.store(step_one(x, builder.load(total)), total)
                return builder.load(total)

            total = one_pass(builder.fadd, builder.fadd)
            mean = builder.fdiv(total, builder.sitofp(k, d_ty))
            mean_v = _splat(builder, mean, vd_ty)

            def square_vec(x, acc):
                dev = builder.fsub(x, mean_v)
                return builder.call(fma, [dev, dev, acc])

            def square_one(x, acc):
                dev = builder.fsub(x, mean)
                return builder.fadd(acc, builder.fmul(dev, dev))

            m2 = one_pass(square_vec, square_one)
            return context.make_tuple(builder, ret, [mean, m2])

        return ret(u, k), codegen

    return moments


def _fused_kernel(width: int, dtype: torch.dtype) -> Callable:
    """The fused kernel for ``width`` and ``dtype``, blocked for this CPU's vector
    registers, compiled (once per process) in the calling thread.
    ``kernel(W, HT, mean, m2, zero)`` carries the first layer's outputs for a block of k
    inputs, HT (k, R >= n w) with input i's outputs in row i, network after network (unit
    j of network ``net`` in column ``net * w + j``), through the layers W (n, depth, w, w),
    C-contiguous arrays of ``dtype`` (``zero`` a scalar of it), and writes, per layer and
    network, the block's mean and centred sum of squares of unit 0 to the float64 arrays
    mean and m2 (depth, n). HT is left as it was."""
    return _compiled_kernel(width, dtype, *_host_vectors())


@functools.cache
def _compiled_kernel(width: int, dtype: torch.dtype, bits: int, registers: int) -> Callable:
    """:func:`_fused_kernel` for vectors of ``bits`` and ``registers`` of them (any values
    give the same results up to round-off; the host's give the speed). The inputs are
    padded with zero columns to whole blocks: a column never mixes with another, and zeros
    stay zero through ReLU layers without bias. After each layer, the mean and centred sum
    of squares of unit 0 over the block, in float64 (two passes over values in L1)."""
    import numba

    np_dtype = torch.empty((), dtype=dtype).numpy().dtype
    lanes = bits // (8 * np_dtype.itemsize)
    vectors, group = _blocking(width, registers)
    step = lanes * vectors
    block = _block_intrinsic(width, lanes, vectors, group)
    moments = _moments_intrinsic(bits // 64)

    def fused_layers(W, HT, mean, m2, zero):
        num_nets, depth = W.shape[0], W.shape[1]
        k = HT.shape[0]
        if (
            W.shape[2] != width
            or W.shape[3] != width
            or HT.shape[1] < num_nets * width
            or mean.shape[0] != depth
            or mean.shape[1] != num_nets
            or m2.shape[0] != depth
            or m2.shape[1] != num_nets
        ):
            raise ValueError("fused kernel: W (n, depth, w, w), HT (k, >= n w), stats (depth, n)")
        padded = (k + step - 1) // step * step
        a = np.zeros((width, padded), HT.dtype)
        u = np.empty(padded, HT.dtype)
        for net in range(num_nets):
            for i in range(k):
                for j in range(width):
                    a[j, i] = max(HT[i, net * width + j], zero)
            for j in range(width):
                for i in range(k, padded):
                    a[j, i] = zero
            for layer in range(depth):
                M = W[net, layer]
                for i in range(0, padded, step):
                    block(a, M, u, i)
                mean[layer, net], m2[layer, net] = moments(u, k)

    kernel = numba.njit(nogil=True, fastmath=True, error_model="numpy")(fused_layers)
    array2 = numba.from_dtype(np_dtype)[:, ::1]
    array4 = numba.from_dtype(np_dtype)[:, :, :, ::1]
    stats = numba.float64[:, ::1]
    with _COMPILE_LOCK:
        kernel.compile((array4, array2, stats, stats, numba.from_dtype(np_dtype)))
    kernel.disable_compile()
    return kernel


def _rows_intrinsic(lanes: int, vectors: int) -> Callable:
    """A Numba intrinsic ``rows(HT, FT, c, indptr, idx, val, img, row, r0)``: for input
    ``img`` of a compressed-sparse-row matrix (``indptr``, column indices ``idx``, values
    ``val``), the first-layer outputs ``r0 .. r0 + vectors * lanes`` of every network,
    ``c + sum_p val[p] * FT[idx[p]]``, kept in ``vectors`` vector registers while the
    input's non-zero entries stream past (one broadcast and ``vectors`` multiply-adds each),
    then stored to row ``row`` of ``HT``."""
    from llvmlite import ir
    from numba import types
    from numba.core import cgutils
    from numba.extending import intrinsic

    @intrinsic
    def rows(typingctx, HT, FT, c, indptr, idx, val, img, row, r0):  # noqa: ARG001
        def codegen(context, builder, signature, args):
            arrays = [
                context.make_array(ty)(context, builder, value)
                for ty, value in zip(signature.args[:6], args[:6], strict=True)
            ]
            Hm, Fm, Cm, Pm, Im, Vm = arrays
            img_, row_, r0_ = args[6:]
            index = r0_.type
            v_ty = ir.VectorType(context.get_value_type(signature.args[0].dtype), lanes)
            fma = _vector_function(builder, "fma", v_ty, 3)
            h_cols = cgutils.unpack_tuple(builder, Hm.shape, 2)[1]
            f_cols = cgutils.unpack_tuple(builder, Fm.shape, 2)[1]

            def vector_at(base, offset, v):
                at = builder.add(offset, ir.Constant(index, v * lanes))
                return builder.bitcast(builder.gep(base, [at]), v_ty.as_pointer())

            accs = [
                cgutils.alloca_once_value(
                    builder, builder.load(vector_at(Cm.data, r0_, v), align=4)
                )
                for v in range(vectors)
            ]
            lo = builder.load(builder.gep(Pm.data, [img_]))
            hi = builder.load(builder.gep(Pm.data, [builder.add(img_, ir.Constant(index, 1))]))
            with cgutils.for_range_slice(builder, lo, hi, ir.Constant(index, 1), index) as (p, _):
                j = builder.sext(builder.load(builder.gep(Im.data, [p])), index)
                s = _splat(builder, builder.load(builder.gep(Vm.data, [p])), v_ty)
                start = builder.add(builder.mul(j, f_cols), r0_)
                for v, acc in enumerate(accs):
                    f = builder.load(vector_at(Fm.data, start, v), align=4)
                    builder.store(builder.call(fma, [s, f, builder.load(acc)]), acc)
            out = builder.add(builder.mul(row_, h_cols), r0_)
            for v, acc in enumerate(accs):
                builder.store(builder.load(acc), vector_at(Hm.data, out, v), align=4)
            return context.get_dummy_value()

        return types.void(HT, FT, c, indptr, idx, val, img, row, r0), codegen

    return rows


def _sparse_first_layer(dtype: torch.dtype) -> Callable:
    """The first layer over sparse inputs for ``dtype``, vectors of this CPU, compiled
    once per process. ``first_layer(FT, c, indptr, idx, val, start, HT)`` writes row ``i``
    of ``HT`` (k, R) as ``c + FT.T @ s`` for input ``s = start + i`` of the CSR matrix
    (``indptr`` int64, ``idx`` int32, ``val``); ``FT`` is (d, R) and ``c`` (R,), with R
    a multiple of the vector lanes (pad with zero columns)."""
    return _compiled_first_layer(dtype, *_host_vectors())


@functools.cache
def _compiled_first_layer(dtype: torch.dtype, bits: int, registers: int) -> Callable:
    """:func:`_sparse_first_layer` for vectors of ``bits`` and ``registers`` of them.
    An input's R outputs go in passes of at most ``most`` vectors (as equal as they can
    be), few enough to stay in registers and for one pass's columns of ``FT`` (d x 128
    float32 values at most, 400 KB for MNIST) to stay in the L2 cache."""
    import numba

    np_dtype = torch.empty((), dtype=dtype).numpy().dtype
    lanes = bits // (8 * np_dtype.itemsize)
    most = max(1, min(8, registers - 4))
    passes = [_rows_intrinsic(lanes, v) for v in range(1, most + 1)]

    def chain(vectors: int):  # calls passes[vectors - 1] for a count known at run time
        one = passes[vectors - 1]
        if vectors == 1:

            @numba.njit(inline="always")
            def call(count, HT, FT, c, indptr, idx, val, img, row, r0):
                one(HT, FT, c, indptr, idx, val, img, row, r0)

            return call
        fewer = chain(vectors - 1)

        @numba.njit(inline="always")
        def call(count, HT, FT, c, indptr, idx, val, img, row, r0):
            if count == vectors:
                one(HT, FT, c, indptr, idx, val, img, row, r0)
            else:
                fewer(count, HT, FT, c, indptr, idx, val, img, row, r0)

        return call

    run_pass = chain(most)

    def first_layer(FT, c, indptr, idx, val, start, HT):
        k, R = HT.shape
        if (
            FT.shape[1] != R
            or c.shape[0] != R
            or R % lanes != 0
            or start < 0
            or start + k > indptr.shape[0] - 1
        ):
            raise ValueError("sparse first layer: FT (d, R), c (R,), HT (k, R), R in lanes")
        vectors = R // lanes
        num_passes = (vectors + most - 1) // most
        for i in range(k):
            r0 = 0
            for q in range(num_passes):
                count = (vectors - r0 // lanes + num_passes - q - 1) // (num_passes - q)
                run_pass(count, HT, FT, c, indptr, idx, val, start + i, i, r0)
                r0 += count * lanes

    kernel = numba.njit(nogil=True, fastmath=True, error_model="numpy")(first_layer)
    vec = numba.from_dtype(np_dtype)[::1]
    mat = numba.from_dtype(np_dtype)[:, ::1]
    with _COMPILE_LOCK:
        kernel.compile((mat, vec, numba.int64[::1], numba.int32[::1], vec, numba.int64, mat))
    kernel.disable_compile()
    return kernel


def _check_init_output(W: torch.Tensor, n: int) -> int:
    if W.dim() != 3 or W.shape[0] != n or W.shape[1] != W.shape[2]:
        raise ValueError(
            f"init(n) must return n square weight matrices of shape (n, width, width); "
            f"init({n}) returned shape {tuple(W.shape)}"
        )
    return W.shape[1]


def _first_weights(
    first_init: Callable[[int], torch.Tensor] | None, n: int, width: int, d: int
) -> torch.Tensor:
    """The first layers of ``n`` networks, ``(n, width, d)``: ``first_init(n)``, checked,
    or by default Gaussian with variance ``1/d`` (drawn from torch's global generator)."""
    if first_init is None:
        return torch.randn(n * width, d).div_(math.sqrt(d)).view(n, width, d)
    G = torch.as_tensor(first_init(n))
    if tuple(G.shape) != (n, width, d):
        raise ValueError(
            f"first_init(n) must return n first layers of shape (n, width, d) = "
            f"({n}, {width}, {d}); first_init({n}) returned shape {tuple(G.shape)}"
        )
    return G


class _SparseInputs(NamedTuple):
    """The inputs as ``X = S + base`` (``base`` added to every row) with ``S`` in
    compressed sparse rows: input ``i``'s non-zero entries are ``val[indptr[i]:indptr[i +
    1]]`` in the columns ``idx[...]``."""

    indptr: np.ndarray
    idx: np.ndarray
    val: np.ndarray
    base: torch.Tensor


def _chunk_variances(
    W: torch.Tensor,
    first: torch.Tensor,
    inputs: torch.Tensor | _SparseInputs,
    image_block: int,
    flush: int,
    kernel: Callable | None,
    first_layer: Callable | None,
) -> torch.Tensor:
    """Unbiased variances ``(depth, n)`` of unit 0 for one chunk of networks: weights
    ``W`` (depth, n, w, w), or (n, depth, w, w) for the fused ``kernel`` (which reads one
    network's layers one after another), first layer ``first`` (n * w, d); the inputs as
    :func:`_first_layer_inputs` gives them (sparse for the compiled ``first_layer``); the
    layers through the fused ``kernel`` when given, else one ``torch.bmm`` each."""
    if kernel is not None:
        n, depth, width, _ = W.shape
    else:
        depth, n, width, _ = W.shape
    sparse = inputs if isinstance(inputs, _SparseInputs) else None
    if sparse is not None:
        num_inputs = len(sparse.indptr) - 1
    else:
        num_inputs = inputs.shape[0] if kernel is not None else inputs.shape[1]
    k = min(image_block, num_inputs)
    R = n * width
    H = torch.empty(n, width, k, dtype=W.dtype)
    if sparse is not None or kernel is not None:
        # the first layer's outputs as rows (k, R): FT = first.T, for the sparse layer
        # padded to whole vectors with zero columns (and c = first @ base with zeros)
        lanes = _host_vectors()[0] // (8 * W.element_size()) if sparse is not None else 1
        FT = torch.zeros(first.shape[1], -(-R // lanes) * lanes, dtype=W.dtype)
        FT[:, :R] = first.T
        HT = torch.empty(k, FT.shape[1], dtype=W.dtype)
    if sparse is not None:
        c = torch.zeros(FT.shape[1], dtype=W.dtype)
        c[:R] = first @ sparse.base
        FT_np, c_np = FT.numpy(), c.numpy()
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
        size = min(image_block, num_inputs - b)
        if size != k:
            k = size
            H, spare = H[:, :, :k].contiguous(), spare[:, :, :k].contiguous()
            record = record[:, :, :k].contiguous()
        if sparse is not None:
            first_layer(FT_np, c_np, sparse.indptr, sparse.idx, sparse.val, b, HT[:k].numpy())
        elif kernel is not None:
            torch.mm(inputs[b : b + k], FT, out=HT[:k])
        else:
            torch.mm(first, inputs[:, b : b + k], out=H.view(R, k))
        if kernel is not None:
            kernel(W_np, HT[:k].numpy(), block_mean.numpy(), block_m2.numpy(), zero)
        else:
            if sparse is not None:
                H.copy_(HT[:k, :R].view(k, n, width).permute(1, 2, 0))
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


def _used_inputs(X: torch.Tensor) -> torch.Tensor | None:
    """Which of ``X``'s columns the first layer's products need: a boolean mask of the
    inputs that are non-zero in some row, or None when all are. Inputs that are zero in
    every row (MNIST's border pixels: 67 of 784 over the training set) only add exact
    zeros; the first layer is still drawn over all inputs, so the weights do not change."""
    used = (X != 0).any(dim=0)
    return None if bool(used.all()) else used


def _first_layer_inputs(
    X: torch.Tensor, first_layer: FirstLayer, fused: bool
) -> tuple[torch.Tensor | _SparseInputs, torch.Tensor | None]:
    """The inputs as the first layer reads them, and the columns of ``X`` its dense
    products use (None: all). Sparse (``first_layer="sparse"``, or ``"auto"`` with the
    ``fused`` kernel and at most SPARSE_MAX_DENSITY of the entries off their column's
    base): ``X - base`` in compressed sparse rows, the base of each column the more
    frequent of its minimum and maximum (normalised MNIST: the background's value, 81 % of
    the pixels). Dense: the used columns of ``X``, as rows (num_inputs, d used) for the
    fused kernel, else transposed (d used, num_inputs)."""
    if first_layer != "dense" and (fused or first_layer == "sparse"):
        Xn = X.numpy()
        lo, hi = Xn.min(axis=0), Xn.max(axis=0)
        at_lo, at_hi = (Xn == lo).sum(axis=0), (Xn == hi).sum(axis=0)
        base = np.where(at_hi > at_lo, hi, lo)
        density = 1 - float(np.maximum(at_lo, at_hi).sum()) / Xn.size
        if first_layer == "sparse" or density <= SPARSE_MAX_DENSITY:
            off = Xn.size - int(np.maximum(at_lo, at_hi).sum())
            indptr = np.empty(len(Xn) + 1, np.int64)
            idx, val = np.empty(off + 1, np.int32), np.empty(off + 1, Xn.dtype)  # +1: see fill
            _compressed_rows()(np.ascontiguousarray(Xn), base, indptr, idx, val)
            sparse = _SparseInputs(indptr, idx[:off], val[:off], torch.from_numpy(base))
            return sparse, None
    used = _used_inputs(X)
    columns = None if used is None else used.nonzero().squeeze(1)
    rows = X if columns is None else X[:, columns]
    return (rows.contiguous() if fused else rows.T.contiguous()), columns


@functools.cache
def _compressed_rows() -> Callable:
    """``fill(X, base, indptr, idx, val)``: ``X - base`` (base added to every row) in
    compressed sparse rows, ``idx`` and ``val`` sized for one more than its non-zero
    entries: every entry is written at the next free place and the place advances only
    past non-zeros, which spares a branch the CPU would mispredict (compiled on first
    use)."""
    import numba

    @numba.njit(nogil=True)
    def fill(X, base, indptr, idx, val):
        p = 0
        indptr[0] = 0
        for i in range(X.shape[0]):
            for j in range(X.shape[1]):
                off = X[i, j] - base[j]
                idx[p] = j
                val[p] = off
                p += off != 0
            indptr[i + 1] = p

    return fill


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


def variances_in_chunks(
    X: torch.Tensor,
    init: Callable[[int], torch.Tensor],
    depth: int,
    num_nets: int,
    net_chunk: int,
    image_block: int,
    workers: int | None,
    dtype: torch.dtype,
    method: Method,
    first_layer: FirstLayer,
    first_init: Callable[[int], torch.Tensor] | None,
) -> torch.Tensor:
    """What :func:`initlab.simulation.layer_output_variances` computes, once its arguments
    are checked: chunks of networks on threads, blocks of inputs through the whole depth."""
    d = X.shape[1]
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
                if start == 0:
                    kernel = _pick_kernel(method, width, dtype, num_nets * len(X) * depth)
                    inputs, columns = _first_layer_inputs(X, first_layer, kernel is not None)
                    sparse = isinstance(inputs, _SparseInputs)
                    rows = _sparse_first_layer(dtype) if sparse else None
                # (depth, n, w, w), or network-major (n, depth, w, w) for the fused kernel
                W = torch.stack([w.to(dtype) for w in Ws], dim=0 if kernel is None else 1)
                first = _first_weights(first_init, n, width, d).reshape(n * width, d).to(dtype)
                if columns is not None:
                    first = first.index_select(1, columns)
                job = (W, first, inputs, image_block, 10, kernel, rows)
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
