"""Benchmark of the batched training engine (initlab.engine), measured in one run.

    python benchmarks/engine.py [--epochs 1] [--repeats 5] [--device cpu|cuda]
        [--train-images 9600]

Prints, each time the median of ``--repeats`` interleaved rounds after a warm-up run
(minimum and maximum beside it, since the machine may be shared), and each ratio the
median over the rounds of the ratio within a round (a round takes under a minute, so a
change in the machine's speed between rounds cancels), with its range:

1. the engine's achieved FLOP/s on an epoch of the full protocol's learning-rate search
   (48 networks: 6 activations x 8 rates, 784-200-64-10, batch 64, 150 training steps on
   9,600 images, then the validation pass over 2,400 images) against the same sequence of
   matrix products (per step 3 forward, 2 input-gradient, 3 weight-gradient; the
   validation forward pass) on tensors of the same shapes, with nothing else, laid out
   four ways (one stack on all threads, or one single-threaded stack per thread, each
   product into a new tensor or into one kept from the previous step) and the fastest
   taken (goal: at least 70 %). The full protocol calls the engine once for
   1,000 epochs, so the call's one-time setup (drawing the 48 initializations, stacking,
   exporting) is 0.01 % of it; it is measured apart (a call with 0 epochs), subtracted, and
   the whole one-epoch call shown beside;
2. the same 48 networks trained together against one at a time, with the engine and with
   the usual nn.Sequential + torch.optim.SGD loop on all threads (goal: at least 3x), and
   against the idiomatic batched peer in torch.func: per activation, the networks'
   parameters stacked with ``stack_module_state``, one ``vmap(grad(loss))`` per step and
   SGD on the stacked tensors;
3. one stack with mixed activations against one stack per activation;
4. the wall time of the notebook's training at the ``default`` budget and of the full
   protocol (1,000 epochs per network), extrapolated from the measured throughput.

Data: the real MNIST training images when they are in the data directory, else random
images of the same shape (the cost does not depend on the pixel values).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from common import cpu_name, mnist_or_random, spread
from initlab import engine

SIZES = (784, 200, 64, 10)
BATCH = 64
N_TRAIN, N_FULL = 9_600, 12_000
LRS = np.logspace(-3, 0, 8)


def flops_per_example() -> tuple[int, int]:
    """Multiply-adds x 2 per example per network of (a training step, a validation pass):
    forward (all layers), weight gradients (all layers), input gradients (all layers but
    the first); the validation pass is the forward alone."""
    pairs = list(zip(SIZES[:-1], SIZES[1:], strict=True))
    forward = sum(i * o for i, o in pairs)
    input_grad = sum(i * o for i, o in pairs[1:])
    return 2 * (2 * forward + input_grad), 2 * forward


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _product(op, a: torch.Tensor, b: torch.Tensor, outs: dict | None, key: tuple) -> None:
    """``op(a, b)`` into a new tensor, or with ``outs`` into the tensor kept there under
    ``key`` (made by the first call), as the engine writes its weight updates in place."""
    if outs is None:
        op(a, b)
    elif key in outs:
        op(a, b, out=outs[key])
    else:
        outs[key] = op(a, b)


def _plain_products(W: list, A: list, steps: int, outs: dict | None = None) -> None:
    for _ in range(steps):
        for k in range(3):  # forward
            _product(torch.bmm, A[k], W[k], outs, ("forward", k))
        for k in (2, 1):  # input gradients
            _product(torch.bmm, A[k + 1], W[k].transpose(1, 2), outs, ("input", k))
        for k in range(3):  # weight gradients
            _product(torch.bmm, A[k].transpose(1, 2), A[k + 1], outs, ("weight", k))


def _plain_forward(W: list, V: list, outs: dict | None = None) -> None:
    """The validation pass's products: the shared inputs V[0] (N, 784) through every
    network (torch.matmul broadcasts them, as the engine does), then batched products."""
    _product(torch.matmul, V[0], W[0], outs, ("validation", 0))
    for k in (1, 2):
        _product(torch.bmm, V[k], W[k], outs, ("validation", k))


def plain_bmm_seconds(
    C: int,
    steps: int,
    device: torch.device,
    parts: int = 1,
    val_images: int = 0,
    epochs: int = 1,
    into: bool = False,
) -> float:
    """The engine's matrix products alone, on random tensors of the same shapes: ``epochs``
    times ``steps`` training steps, each time followed by a validation pass over
    ``val_images`` images when not 0; one stack of C on torch's threads (``parts=1``), or
    ``parts`` stacks stepped on threads of their own while torch runs single-threaded (the
    engine's layout on the CPU); each product into a new tensor, or with ``into`` into
    one kept from the previous step (no allocation, no page faults)."""
    g = torch.Generator().manual_seed(0)
    sizes = [(C * k // parts, C * (k + 1) // parts) for k in range(parts)]
    stacks = []
    for lo, hi in sizes:
        pairs = zip(SIZES[:-1], SIZES[1:], strict=True)
        W = [torch.rand(hi - lo, i, o, generator=g).to(device) for i, o in pairs]
        A = [torch.rand(hi - lo, BATCH, n, generator=g).to(device) for n in SIZES]
        V = [torch.rand(val_images, SIZES[0], generator=g).to(device)]
        V += [torch.rand(hi - lo, val_images, n, generator=g).to(device) for n in SIZES[1:-1]]
        stacks.append((W, A, V, {} if into else None))

    def run(stack: tuple) -> None:
        """One stack's epochs: training steps, each epoch followed by its validation pass."""
        W, A, V, outs = stack
        for _ in range(epochs):
            _plain_products(W, A, steps, outs)
            if val_images:
                _plain_forward(W, V, outs)

    threads = torch.get_num_threads()
    sync(device)
    start = time.perf_counter()
    if parts == 1:
        run(stacks[0])
    else:
        torch.set_num_threads(1)
        try:
            with ThreadPoolExecutor(parts) as pool:  # each part on its own, as the engine's
                list(pool.map(run, stacks))
        finally:
            torch.set_num_threads(threads)
    sync(device)
    return time.perf_counter() - start


def train_seconds(configs, X, y, epochs: int, device, val=None, **kwargs) -> float:
    sync(device)
    start = time.perf_counter()
    engine.train(
        configs,
        (X, y),
        val,
        num_epochs=epochs,
        batch_size=BATCH,
        device=device,
        cache=False,
        progress=False,
        **kwargs,
    )
    sync(device)
    return time.perf_counter() - start


ACTIVATION_MODULES = {
    "relu": torch.nn.ReLU,
    "sigmoid": torch.nn.Sigmoid,
    "leaky_relu": torch.nn.LeakyReLU,
    "tanh": torch.nn.Tanh,
    "mish": torch.nn.Mish,
    "swish": torch.nn.SiLU,
}


def sequential(activation: str) -> torch.nn.Sequential:
    """The 784-200-64-10 MLP as ``nn.Sequential`` with torch's default initialization."""
    layers: list[torch.nn.Module] = []
    for k, (i, o) in enumerate(zip(SIZES[:-1], SIZES[1:], strict=True)):
        layers.append(torch.nn.Linear(i, o))
        if k < len(SIZES) - 2:
            layers.append(ACTIVATION_MODULES[activation]())
    return torch.nn.Sequential(*layers)


def torch_loop_seconds(configs, X, y, epochs: int, device) -> float:
    """The usual way: one ``nn.Sequential`` per configuration, ``torch.optim.SGD``,
    autograd, the same batch size and number of steps; networks trained one after
    another."""
    sync(device)
    start = time.perf_counter()
    for config in configs:
        g = torch.Generator().manual_seed(config.seed)
        torch.manual_seed(config.seed)
        net = sequential(config.activation).to(device)
        opt = torch.optim.SGD(net.parameters(), lr=config.lr)
        for _ in range(epochs):
            perm = torch.randperm(len(X), generator=g).to(device)
            for s in range(0, len(X), BATCH):
                idx = perm[s : s + BATCH]
                loss = torch.nn.functional.cross_entropy(net(X[idx]), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
    sync(device)
    return time.perf_counter() - start


def torch_func_seconds(configs, X, y, epochs: int, device) -> float:
    """The idiomatic batched peer in ``torch.func``: for each activation, its networks'
    parameters stacked (``stack_module_state``), the loss's gradient for all of them in
    one ``vmap(grad(loss))`` per step on the same batch, and SGD on the stacked tensors
    with each network's learning rate."""
    from torch.func import functional_call, grad, stack_module_state, vmap

    groups: dict[str, list] = {}
    for config in configs:
        groups.setdefault(config.activation, []).append(config)
    sync(device)
    start = time.perf_counter()
    for activation, group in groups.items():
        torch.manual_seed(group[0].seed)
        nets = [sequential(activation).to(device) for _ in group]
        params, buffers = stack_module_state(nets)
        params = {k: v.detach() for k, v in params.items()}
        skeleton = sequential(activation).to("meta")

        def loss(p, b, xb, yb, skeleton=skeleton):
            logits = functional_call(skeleton, (p, b), (xb,))
            return torch.nn.functional.cross_entropy(logits, yb)

        step = vmap(grad(loss), in_dims=(0, 0, None, None))
        lrs = torch.tensor([c.lr for c in group], device=device)
        g = torch.Generator().manual_seed(group[0].seed)
        for _ in range(epochs):
            perm = torch.randperm(len(X), generator=g).to(device)
            for s in range(0, len(X), BATCH):
                idx = perm[s : s + BATCH]
                grads = step(params, buffers, X[idx], y[idx])
                for name, p in params.items():
                    p.sub_(lrs.view(-1, *[1] * (p.dim() - 1)) * grads[name])
    sync(device)
    return time.perf_counter() - start


def _stats(values: list[float]) -> str:
    return f"{statistics.median(values):7.2f} s (min {min(values):.2f}, max {max(values):.2f})"


def _ratio(times: dict[str, list[float]], slow: str, fast: str, unit: str = "x") -> str:
    """Median and range over the rounds of ``slow`` time / ``fast`` time in the same round."""
    return spread([a / b for a, b in zip(times[slow], times[fast], strict=True)], unit)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1, help="epochs per measurement")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if present)")
    parser.add_argument(
        "--train-images",
        type=int,
        default=N_TRAIN,
        help=f"training images (default {N_TRAIN}, the notebook's); a quarter as many validate",
    )
    args = parser.parse_args()
    device = engine.pick_device(args.device)
    n_train = args.train_images
    if n_train < BATCH:
        parser.error(f"--train-images must be at least the batch size {BATCH}")
    X_all, y_all = mnist_or_random(n_train + n_train // 4)
    X_all, y_all = X_all.to(device), y_all.to(device)
    X, y = X_all[:n_train], y_all[:n_train]  # the notebook's split: the last 20 % validate
    val = (X_all[n_train:], y_all[n_train:])
    configs = [engine.Config(a, float(lr), 0) for a in engine.ACTIVATIONS for lr in LRS]
    C = len(configs)
    per_epoch = -(-n_train // BATCH)
    steps = args.epochs * per_epoch
    step_flop, val_flop = flops_per_example()
    flop = step_flop * n_train * args.epochs * C
    epoch_flop = flop + val_flop * len(val[0]) * args.epochs * C
    threads = torch.get_num_threads()

    print(
        f"machine: {cpu_name()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__}, {threads} threads, device {device}"
    )
    print(
        f"workload: {C} networks 784-200-64-10, batch {BATCH}, {n_train} training and "
        f"{len(val[0])} validation images, {args.epochs} epoch(s) = {steps} steps; "
        f"times: medians of {args.repeats} interleaved rounds after a warm-up; ratios: "
        "median and range of the ratios within a round"
    )

    warm = 1 if device.type == "cpu" else args.epochs
    train_seconds(configs, X, y, warm, device, val)  # warm-up
    times: dict[str, list[float]] = {}

    def record(name: str, seconds: float) -> None:
        times.setdefault(name, []).append(seconds)

    # the plain products laid out four ways: (parts, into existing tensors)
    layouts = {
        f"one stack on {threads} thread(s), new tensors:": (1, False),
        f"one stack on {threads} thread(s), into existing:": (1, True),
    }
    if device.type == "cpu" and threads > 1:
        layouts[f"{threads} single-threaded stacks, new tensors:"] = (threads, False)
        layouts[f"{threads} single-threaded stacks, into existing:"] = (threads, True)

    for _ in range(args.repeats):
        record("call", train_seconds(configs, X, y, args.epochs, device, val))
        record("setup", train_seconds(configs, X, y, 0, device, val))
        record("epoch", times["call"][-1] - times["setup"][-1])
        for name, (parts, into) in layouts.items():
            seconds = plain_bmm_seconds(
                C, per_epoch, device, parts, len(val[0]), args.epochs, into=into
            )
            record(name, seconds)
        record("engine", train_seconds(configs, X, y, args.epochs, device))
        record("split", train_seconds(configs, X, y, args.epochs, device, split_activations=True))
        record("alone", sum(train_seconds([c], X, y, args.epochs, device) for c in configs))
        record("loop", torch_loop_seconds(configs, X, y, args.epochs, device))
        record("func", torch_func_seconds(configs, X, y, args.epochs, device))
    med = {name: statistics.median(v) for name, v in times.items()}
    plain = min(layouts, key=lambda k: med[k])

    def gflops(name: str) -> str:
        return f"  {epoch_flop / med[name] / 1e9:6.1f} GFLOP/s"

    print(
        f"\n1. achieved FLOP/s over {args.epochs} epoch(s) of the protocol ({steps} steps and "
        f"{args.epochs} validation pass(es), {epoch_flop / 1e9:.1f} GFLOP)"
    )
    print(f"   engine, call's setup subtracted:      {_stats(times['epoch'])}{gflops('epoch')}")
    print(f"   (the whole call:                      {_stats(times['call'])}{gflops('call')}")
    print(f"    its setup, a call with 0 epochs:     {_stats(times['setup'])})")
    print("   plain products,")
    for name in layouts:
        print(f"     {name:<42}{_stats(times[name])}{gflops(name)}")
    print(
        f"   engine / fastest plain: {_ratio(times, plain, 'epoch', '%')} (goal >= 70 %);\n"
        f"   the whole one-epoch call: {_ratio(times, plain, 'call', '%')}"
    )

    print("\n2. batched against one network at a time (same 48 configurations)")
    print(f"   batched engine:                       {_stats(times['engine'])}")
    print(
        f"   the engine, one network per call:     {_stats(times['alone'])}"
        f"\n      -> batched {_ratio(times, 'alone', 'engine')} faster"
    )
    print(
        f"   nn.Sequential + optim.SGD per net:    {_stats(times['loop'])}"
        f"\n      -> batched {_ratio(times, 'loop', 'engine')} faster (goal >= 3x)"
    )
    print(
        f"   torch.func, vmap(grad) per activation: {_stats(times['func'])}"
        f"\n      -> the engine {_ratio(times, 'func', 'engine')} faster"
    )

    print("\n3. mixed activations")
    print(f"   one stack, activations applied per contiguous slice: {_stats(times['engine'])}")
    print(f"   one stack per activation (6 stacks of 8):            {_stats(times['split'])}")

    # the cost of an epoch is proportional to its images: scaled to the notebook's 12,000
    per_net_epoch = med["epoch"] / (C * args.epochs) * N_FULL / (len(X) + len(val[0]))
    # network-epochs of the notebook: Part 5 (6 nets), Part 6 (48), Part 7 (6 x seeds on
    # 12,000 images), Part 8 (1 on 12,000)
    default = 6 * 10 + 48 * 5 + (18 * 5 + 5) * N_FULL / N_TRAIN
    full = (6 + 48) * 1000 + (30 + 1) * 1000 * N_FULL / N_TRAIN
    print("\n4. wall time of the notebook's training (extrapolated from the engine's epoch in 1,")
    print("   validation included; the smaller stacks of Parts 5, 7 and 8 run as fast per network)")
    if n_train != N_TRAIN:
        print(f"   (scaled from {n_train} + {len(val[0])} images: not the notebook's workload)")
    print(f"   {per_net_epoch:.3f} s per network and epoch of 9,600 + 2,400 images")
    print(f"   default budget: {default:.0f} network-epochs -> {default * per_net_epoch:.0f} s")
    print(f"   full protocol:  {full:.0f} network-epochs -> {full * per_net_epoch / 3600:.1f} h")


if __name__ == "__main__":
    main()
