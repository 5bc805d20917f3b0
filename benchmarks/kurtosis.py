"""Benchmark of the kurtosis lab's batched simulation of random deep networks
(initlab.simulation), measured in one run.

    python benchmarks/kurtosis.py [--nets 400] [--loop-nets 40] [--images 5000]
        [--repeats 5] [--full] [--avx2]

Workload: the lab's Figure 2 setting, width 10, depth 100, He weights, a Gaussian first
layer from 784 MNIST pixels, preprocessed as the lab does (mean 0, variance 1 over all
pixels). A "pass" is one network carrying one input through one of the
100 layers (the first layer, 784 -> 10, is computed too but not counted). Each rate is
the median of ``--repeats`` interleaved rounds after a warm-up, each ratio the median over
the rounds of the ratio within a round (a round takes a few seconds, so a change in the
machine's speed between rounds cancels). Prints:

1. passes per second of the batched simulation, with its fused kernel and the first layer
   over the pixels off the background (``first_layer="auto"``: what the full Figure 2
   runs), with the fused kernel and a dense first layer (``torch.mm``), and with one
   ``torch.bmm`` per layer, against the same networks computed one at a time (each network
   over all inputs, one matrix product per layer), the fastest of four plain loops in each
   round: a network's activations as rows or as columns (matrix-multiply libraries run
   the same products at different speeds), on torch's threads or on one (goal: >= 10x);
2. each against the bare matrix products of the ``bmm`` method (the same ``torch.mm`` and
   ``torch.bmm`` calls on the same shapes, dense, with no ReLU and no statistics; goal:
   >= 50 % of their speed);
3. the wall time of the full Figure 2 for one initialization (10,000 networks, 60,000
   images): extrapolated from (1), and measured with ``--full``;
4. how close the fused kernel comes to what this CPU's floating-point units give: its
   multiply-adds per second on one thread (one chunk of networks, one block of images, the
   first layer excluded) against ``torch.mm`` of two 1024 x 1024 matrices on one thread
   (a well-tuned program) and against the CPU's peak (twelve independent chains of vector
   multiply-adds in registers, no memory access, compiled like the kernel).

The fused kernel's compile time (once per process) is printed apart, not in the rates.

``--avx2`` runs the same on this CPU as if it had AVX2 and no AVX-512 (a laptop's CPU):
the script restarts itself with Numba compiling for Haswell (``NUMBA_CPU_NAME``), ATen's
AVX2 kernels (``ATEN_CPU_CAPABILITY``) and MKL's AVX2 code (``MKL_ENABLE_INSTRUCTIONS``),
and the fused kernel blocked as :func:`initlab._simulation._host_vectors` would block it on
such a CPU (16 registers of 256 bits). Clock and caches stay this machine's.

Data: the real MNIST training images when they are in the data directory, else random
images of the same shape. The dense costs do not depend on the pixel values; the sparse
first layer's does (on random images it finds no background, and ``"auto"`` runs dense).
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

AVX2_ENV = {
    "NUMBA_CPU_NAME": "haswell",
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
}
if "--avx2" in sys.argv and any(os.environ.get(k) != v for k, v in AVX2_ENV.items()):
    os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **AVX2_ENV})

import numpy as np  # noqa: E402 - after the restart above
import torch  # noqa: E402

from common import cpu_name, mnist_or_random, spread  # noqa: E402
from initlab import _simulation as simulation  # noqa: E402
from initlab._simulation import (  # noqa: E402
    IMAGE_BLOCK,
    NET_CHUNK,
    _first_layer_inputs,
    _fused_kernel,
    _splat,
    _used_inputs,
    _vector_function,
)
from initlab.simulation import (  # noqa: E402
    layer_output_variances,
    layer_output_variances_one_by_one,
)

WIDTH, DEPTH = 10, 100
FULL_NETS, FULL_IMAGES = 10_000, 60_000


def one_by_one(X: torch.Tensor, layout: str, num_nets: int, threads: int) -> None:
    """The plain per-network loop in ``layout`` on ``threads`` torch threads."""
    with torch_threads(threads):
        layer_output_variances_one_by_one(X, he, depth=DEPTH, num_nets=num_nets, layout=layout)


def normalised(X: torch.Tensor) -> torch.Tensor:
    """The lab's preprocessing: mean 0 and variance 1 over all pixels."""
    return (X - X.mean()) / X.std()


def he(n: int) -> torch.Tensor:
    return torch.randn(n, WIDTH, WIDTH) * math.sqrt(2 / WIDTH)


def timed(fns: dict, repeats: int) -> dict[str, list[float]]:
    """Wall times of each function, ``repeats`` interleaved rounds after one warm-up call
    of each (so a change in the machine's load reaches all of them alike)."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def bare_chunk(X_t: torch.Tensor, n: int, block: int) -> None:
    W = torch.randn(DEPTH, n, WIDTH, WIDTH)
    first = torch.randn(n * WIDTH, X_t.shape[0])
    H = torch.empty(n, WIDTH, block)
    spare = torch.empty_like(H)
    for b in range(0, X_t.shape[1], block):
        cols = X_t[:, b : b + block]
        if cols.shape[1] != H.shape[2]:
            H = H[:, :, : cols.shape[1]].contiguous()
            spare = spare[:, :, : cols.shape[1]].contiguous()
        torch.mm(first, cols, out=H.view(n * WIDTH, -1))
        for layer in range(DEPTH):
            torch.bmm(W[layer], H, out=spare)
            H, spare = spare, H


def bare_products(
    X: torch.Tensor, nets: int, net_chunk: int = NET_CHUNK, block: int = IMAGE_BLOCK
) -> None:
    """The matrix products of :func:`layer_output_variances` (same shapes, same threads:
    chunks of networks on torch's thread count of threads, one torch thread each, the first
    layer over the inputs it uses), alone."""
    used = _used_inputs(X)
    X_t = (X if used is None else X[:, used]).T.contiguous()
    with torch_threads(1), ThreadPoolExecutor(torch.get_num_threads()) as pool:
        sizes = [min(net_chunk, nets - s) for s in range(0, nets, net_chunk)]
        list(pool.map(lambda n: bare_chunk(X_t, n, block), sizes))


def kernel_alone(n: int = NET_CHUNK, block: int = IMAGE_BLOCK):
    """One call of the fused kernel on one chunk and block (what each worker thread runs
    between first-layer products), and its multiply-adds."""
    kernel = _fused_kernel(WIDTH, torch.float32)
    W = he(n * DEPTH).reshape(n, DEPTH, WIDTH, WIDTH).numpy()  # network-major
    HT = torch.randn(block, n * WIDTH).numpy()  # the first layer's outputs, as rows
    mean, m2 = np.empty((DEPTH, n)), np.empty((DEPTH, n))
    zero = W.dtype.type(0)
    return (lambda: kernel(W, HT, mean, m2, zero)), n * block * DEPTH * WIDTH**2


def peak_multiply_adds(lanes: int, chains: int = 12) -> tuple[Callable[[int], float], int]:
    """A compiled function ``f(n)`` running ``n`` rounds of ``chains`` independent vector
    multiply-adds of ``lanes`` float32 each, all in registers (enough chains to cover the
    multiply-add latency on two units), and the multiply-adds per round."""
    import numba
    from llvmlite import ir
    from numba import types
    from numba.core import cgutils
    from numba.extending import intrinsic

    @intrinsic
    def rounds(typingctx, n):  # noqa: ARG001 - Numba's intrinsic protocol
        def codegen(context, builder, signature, args):
            f = ir.FloatType()
            v_ty = ir.VectorType(f, lanes)
            fma = _vector_function(builder, "fma", v_ty, 3)
            scale = _splat(builder, ir.Constant(f, 0.9999), v_ty)
            shift = _splat(builder, ir.Constant(f, 1e-4), v_ty)
            accs = [
                cgutils.alloca_once_value(builder, _splat(builder, ir.Constant(f, i), v_ty))
                for i in range(chains)
            ]
            with cgutils.for_range(builder, args[0]):
                for acc in accs:
                    builder.store(builder.call(fma, [builder.load(acc), scale, shift]), acc)
            total = builder.load(accs[0])
            for acc in accs[1:]:
                total = builder.fadd(total, builder.load(acc))
            return builder.extract_element(total, ir.Constant(ir.IntType(32), 0))

        return types.float32(n), codegen

    @numba.njit(nogil=True)
    def run(n: int) -> float:
        return rounds(n)

    run(1)
    return run, chains * lanes


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch's intra-op thread count set to ``n`` inside the block, restored after it."""
    saved = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nets", type=int, default=400, help="networks in the batched runs")
    parser.add_argument("--loop-nets", type=int, default=40, help="networks in the plain loop")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved runs per figure")
    parser.add_argument("--images", type=int, default=5_000)
    parser.add_argument("--full", action="store_true", help="also run the full Figure 2 once")
    parser.add_argument(
        "--avx2", action="store_true", help="as on a CPU with AVX2 and no AVX-512 (see above)"
    )
    args = parser.parse_args()
    if args.avx2:
        simulation._host_vectors = lambda: (256, 16)  # what an AVX2 CPU reports

    threads = torch.get_num_threads()
    print(
        f"torch {torch.__version__} on {cpu_name()}, "
        f"{os.cpu_count()} CPUs, {threads} torch threads, "
        f"ATen {torch.backends.cpu.get_cpu_capability()}"
        + (", as an AVX2 CPU (--avx2)" if args.avx2 else "")
    )
    X = normalised(mnist_or_random(args.images)[0])
    inputs = _first_layer_inputs(X, "auto", fused=True)[0]
    sparse = isinstance(inputs, simulation._SparseInputs)
    print(
        f"width {WIDTH}, depth {DEPTH}, {len(X)} images, He weights, float32; "
        + (
            f"{len(inputs.val) / X.numel():.1%} of the pixels off the background: sparse "
            "first layer"
            if sparse
            else "no background value: dense first layer"
        )
        + "\n"
    )

    start = time.perf_counter()
    layer_output_variances(X[:2], he, depth=1, num_nets=1, method="fused", first_layer="sparse")
    print(
        f"fused kernel and sparse first layer compiled in {time.perf_counter() - start:.1f} s "
        "(once per process)\n"
    )

    torch.manual_seed(0)
    times = timed(
        {
            "fused": lambda: layer_output_variances(
                X, he, depth=DEPTH, num_nets=args.nets, method="fused"
            ),
            "dense": lambda: layer_output_variances(
                X, he, depth=DEPTH, num_nets=args.nets, method="fused", first_layer="dense"
            ),
            "bmm": lambda: layer_output_variances(
                X, he, depth=DEPTH, num_nets=args.nets, method="bmm"
            ),
            **{
                f"loop {layout}{suffix}": functools.partial(
                    one_by_one, X, layout, args.loop_nets, threads=n_threads
                )
                for layout in ("rows", "columns")
                for suffix, n_threads in (("", threads), (", 1 thread", 1))
                if not (suffix and threads == 1)
            },
            "bare": lambda: bare_products(X, args.nets),
        },
        args.repeats,
    )
    loops = [name for name in times if name.startswith("loop ")]
    # the reference: in each round, the fastest of the plain loops
    times["loop"] = [
        min(round_times) for round_times in zip(*(times[n] for n in loops), strict=True)
    ]
    t = {name: statistics.median(values) for name, values in times.items()}
    nets = {name: args.loop_nets if name.startswith("loop") else args.nets for name in times}

    def rate(name: str) -> float:
        return nets[name] * len(X) * DEPTH / t[name]

    def line(label: str, name: str) -> str:
        return (
            f"{label:<22}{rate(name):10.3g} passes/s ({nets[name]} networks in {t[name]:.2f} s; "
            f"min {min(times[name]):.2f} s, max {max(times[name]):.2f} s)"
        )

    fused, bmm, bare = (rate(k) for k in ("fused", "bmm", "bare"))

    def ratio(fast: str, slow: str, unit: str, goal: float | None = None) -> str:
        """Median and range over the rounds of the rate of ``fast`` over that of ``slow``
        (and how many rounds reach ``goal``)."""
        r = [
            nets[fast] * ts / (nets[slow] * tf)
            for tf, ts in zip(times[fast], times[slow], strict=True)
        ]
        return spread(r, unit, goal)

    print(
        f"rates: medians of {args.repeats} interleaved rounds after a warm-up; ratios: median "
        "and range of the ratios within a round"
    )
    print("1. " + line("batched, fused", "fused"))
    print("   " + line("fused, dense 1st layer", "dense"))
    print("   " + line("batched, bmm", "bmm"))
    for name in loops:
        print("   " + line("one by one, " + name[5:], name))
    print(
        "   speed-up over the fastest loop of each round (goal >= 10x): fused "
        f"{ratio('fused', 'loop', 'x', 10)}, fused with a dense first layer "
        f"{ratio('dense', 'loop', 'x', 10)}, bmm {ratio('bmm', 'loop', 'x', 10)}"
    )
    print(
        f"2. bare matrix products {bare:.3g} passes/s; the simulation runs at "
        f"{ratio('fused', 'bare', '%')} of them fused, {ratio('dense', 'bare', '%')} fused "
        f"with a dense first layer, {ratio('bmm', 'bare', '%')} with bmm (goal >= 50 %)"
    )
    full_passes = FULL_NETS * FULL_IMAGES * DEPTH
    print(
        f"3. full Figure 2, one initialization ({FULL_NETS} networks x {FULL_IMAGES} images): "
        f"extrapolated {full_passes / fused / 60:.1f} min fused, {full_passes / bmm / 60:.1f} "
        "min with bmm (goal < 10 min)"
    )
    kernel, kernel_macs = kernel_alone()
    A, B = torch.randn(1024, 1024), torch.randn(1024, 1024)

    def mm_one_thread() -> None:
        with torch_threads(1):
            A @ B

    # The kernel is compiled Numba code on the calling thread: torch's thread count does not
    # reach it.
    peak, peak_macs = peak_multiply_adds(simulation._host_vectors()[0] // 32)  # --avx2 too
    peak_rounds = 10**7
    gemm = timed(
        {"kernel": kernel, "mm": mm_one_thread, "peak": lambda: peak(peak_rounds)},
        3 * args.repeats,
    )
    kernel_rate = kernel_macs / statistics.median(gemm["kernel"])
    mm_rate = 1024**3 / statistics.median(gemm["mm"])
    peak_rate = peak_rounds * peak_macs / statistics.median(gemm["peak"])
    to_mm = statistics.median(
        kernel_macs * m / (1024**3 * k) for k, m in zip(gemm["kernel"], gemm["mm"], strict=True)
    )
    to_peak = statistics.median(
        kernel_macs * q / (peak_rounds * peak_macs * k)
        for k, q in zip(gemm["kernel"], gemm["peak"], strict=True)
    )
    print(
        f"4. one thread: fused kernel {kernel_rate / 1e9:.1f} G multiply-adds/s, torch.mm "
        f"(1024 x 1024) {mm_rate / 1e9:.1f} G/s, the CPU's peak {peak_rate / 1e9:.1f} G/s:\n"
        f"   the kernel at {to_mm:.0%} of torch.mm, {to_peak:.0%} of the peak"
    )
    if args.full:
        X_full = normalised(mnist_or_random(FULL_IMAGES)[0])
        torch.manual_seed(0)
        start = time.perf_counter()
        layer_output_variances(X_full, he, depth=DEPTH, num_nets=FULL_NETS)  # "auto": fused
        print(f"   measured: {(time.perf_counter() - start) / 60:.1f} min (method 'auto')")


if __name__ == "__main__":
    main()
