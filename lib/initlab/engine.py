"""Train many small MLP classifiers at once: activations x learning rates x seeds x
initializations as one batched computation.

Every configuration has its own weights, stacked along a leading axis, so one
``torch.baddbmm`` per layer runs the forward pass of all of them; the backward pass is
written out by hand for the whole stack. Configurations are sorted by activation, so
each activation is applied to one contiguous slice of the stack.

Each configuration owns a ``torch.Generator`` seeded with its ``seed``: it draws the
initial weights (the configuration's ``init`` scheme, see :func:`init_layer`, or the
caller's ``init_fn``) and then one permutation of the training set per pass over it. A
configuration therefore trains exactly as it would alone, whatever else is in the batch
(``tests/test_engine.py`` compares), and configurations that share a seed see the same
batches, so they differ only in what they are meant to differ in.

Training is mini-batch SGD or Adam (``optimizer="adam"``: torch.optim.Adam's update with
betas 0.9 and 0.999, eps 1e-8, no weight decay) on the cross-entropy, for a number of
epochs or of gradient steps; a test set, when given, is evaluated once at the end.

Results are cached on disk under ``<data_dir>/runs/``, one file per configuration, keyed
by the configuration, the training settings, a hash of the data, a hash of the initial
parameters (so a changed ``init_fn`` retrains) and a hash of this file's source:
re-running a notebook loads them; changing the code retrains.

Example::

    configs = [Config(act, lr, seed, init=init) for act in ("relu", "tanh")
               for lr in (0.01, 0.1) for seed in (0, 1) for init in ("default", "kaiming")]
    results = train(configs, (X_train, y_train), (X_val, y_val), num_epochs=5)
    results[0].history["val_acc"]  # one value per epoch
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch
import torch.nn.functional as F

from initlab import budget
from initlab.data import data_dir

__all__ = [
    "ACTIVATIONS",
    "ADAM_BETAS",
    "ADAM_EPS",
    "INITS",
    "OPTIMIZERS",
    "Config",
    "Result",
    "activation_fn",
    "batch_generator",
    "code_version",
    "evaluate",
    "init_layer",
    "init_std",
    "pick_device",
    "train",
]

ACTIVATIONS: tuple[str, ...] = ("relu", "sigmoid", "leaky_relu", "tanh", "mish", "swish")
"""Activation names the engine knows (LeakyReLU with torch's slope 0.01)."""

INITS: tuple[str, ...] = ("default", "small", "large", "xavier", "kaiming")
"""Built-in initialization schemes (see :func:`init_layer`). Schemes that students derive
and are graded on (Skorski's scale, ZerO, ...) are not built in: pass them as ``init_fn``."""

OPTIMIZERS: tuple[str, ...] = ("sgd", "adam")

ADAM_BETAS: tuple[float, float] = (0.9, 0.999)
ADAM_EPS: float = 1e-8

HISTORY_KEYS: tuple[str, ...] = ("train_loss", "train_acc", "val_loss", "val_acc", "step")

InitFn = Callable[["Config", Sequence[int], torch.Generator], Sequence[tuple[Any, Any]]]
"""``init_fn(config, layer_sizes, generator) -> [(W, b), ...]``: one pair per layer, W of
shape (out, in), b of shape (out,)."""


@dataclass(frozen=True)
class Config:
    """One network to train: activation, learning rate, seed, initialization. ``beta`` is
    swish's initial beta; ``learn_beta`` makes it a trainable parameter per layer.

    ``init`` names a built-in scheme (:data:`INITS`, default torch's ``nn.Linear``
    initialization) or, when ``train`` gets an ``init_fn``, any label that function
    understands."""

    activation: str
    lr: float
    seed: int = 0
    beta: float = 1.0
    learn_beta: bool = False
    init: str = "default"

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"unknown activation {self.activation!r}; use one of {', '.join(ACTIVATIONS)}"
            )
        if self.learn_beta and self.activation != "swish":
            raise ValueError("learn_beta only applies to the swish activation")
        if not isinstance(self.init, str) or not self.init:
            raise ValueError(f"init must be a non-empty name, got {self.init!r}")

    def label(self) -> str:
        extra = ", learned beta" if self.learn_beta else ""
        init = f", init={self.init}" if self.init != "default" else ""
        return f"{self.activation}, lr={self.lr:.4g}, seed={self.seed}{init}{extra}"


@dataclass
class Result:
    """What training one configuration produced.

    ``history`` maps ``train_loss``, ``train_acc`` (means over the mini-batches of each
    period, taken before each update), ``val_loss`` and ``val_acc`` (the whole validation
    set at the end of the period; nan without one) and ``step`` (gradient steps done) to
    arrays with one entry per period: an epoch, or ``log_every`` steps when training for
    ``num_steps``. ``params`` holds the final weights ``W1, b1, W2, b2, ...`` and swish's
    ``beta`` per hidden layer. ``test`` holds ``loss`` and ``acc`` on the test set after
    training (empty without one).
    """

    config: Config
    history: dict[str, np.ndarray]
    params: dict[str, np.ndarray]
    seconds: float = 0.0
    cached: bool = field(default=False, compare=False)
    test: dict[str, float] = field(default_factory=dict)


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` if given, else CUDA when present, else the CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def code_version() -> str:
    """SHA-256 of this module's source: part of every cache key."""
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()


_ATEN = torch.ops.aten

_LANE_BLOCK = 64
"""Elements per step of ATen's widest vectorised CPU loop, with room to spare (two AVX-512
vectors of float32 are 32 elements)."""
_GRAIN = 32768
"""ATen's grain size: elementwise kernels on fewer elements run on one thread."""


def _no_remainder_numel(n: int) -> int:
    """The least ``m >= n`` such that an elementwise ATen CPU kernel over ``m`` elements
    has no scalar remainder loop: every thread's share is a multiple of _LANE_BLOCK."""
    threads = torch.get_num_threads()
    m = -(-n // _LANE_BLOCK) * _LANE_BLOCK
    while True:
        tasks = 1 if threads == 1 or m < _GRAIN else min(threads, -(-m // _GRAIN))
        block = _LANE_BLOCK * tasks
        if m % block == 0:
            return m
        m = -(-m // block) * block


def _lanewise_into(op, out: torch.Tensor, *inputs: torch.Tensor) -> torch.Tensor:
    """``op(*inputs, out)`` for an elementwise ATen kernel writing into ``out`` (inputs and
    ``out`` of one shape), computed so that each element's value does not depend on where
    it sits in the tensor.

    ATen's CPU kernels run vectorised (SLEEF) over whole vectors and a scalar loop over the
    remainder, and for sigmoid, softplus, mish and SiLU the two round differently (seen with
    AVX-512). A network trained in a stack would then differ in the last bit from the same
    network trained alone, where its elements sit elsewhere relative to the remainder. Here
    the kernel runs on a zero-padded copy without a remainder when the tensor has one, so
    every element goes through the vectorised path."""
    n = out.numel()
    m = n if out.device.type != "cpu" else _no_remainder_numel(n)
    if m == n and all(t.is_contiguous() for t in (out, *inputs)):
        op(*inputs, out)
        return out
    padded = []
    for t in inputs:
        buf = t.new_zeros(m)
        buf[:n] = t.reshape(-1)
        padded.append(buf)
    result = out.new_empty(m)
    op(*padded, result)
    out.copy_(result[:n].view(out.shape))
    return out


def _lanewise(op, *inputs: torch.Tensor) -> torch.Tensor:
    """:func:`_lanewise_into` into a new tensor."""
    return _lanewise_into(op, torch.empty_like(inputs[0]), *inputs)


def _sigmoid_into(z: torch.Tensor, out: torch.Tensor) -> None:
    torch.sigmoid(z, out=out)


def _mish_into(z: torch.Tensor, out: torch.Tensor) -> None:
    torch._C._nn.mish(z, out=out)


def _silu_backward_into(grad: torch.Tensor, u: torch.Tensor, out: torch.Tensor) -> None:
    _ATEN.silu_backward.grad_input(grad, u, grad_input=out)


def _mish_backward_into(grad: torch.Tensor, z: torch.Tensor, out: torch.Tensor) -> None:
    out.copy_(_ATEN.mish_backward(grad, z))  # no out= variant


def activation_fn(name: str, z: torch.Tensor, beta: torch.Tensor | None = None) -> torch.Tensor:
    """Apply an activation to ``z``; for swish, ``beta`` broadcasts against ``z``.

    Without autograd (the engine's own use) sigmoid, mish and swish run through
    :func:`_lanewise`, so each element's value does not depend on its place in the tensor.
    While autograd records (an input requires grad) they are plain differentiable torch
    operations, whose values may differ from the engine's in the last bit."""
    lanewise = not (
        torch.is_grad_enabled() and (z.requires_grad or (beta is not None and beta.requires_grad))
    )
    if name == "relu":
        return F.relu(z)
    if name == "sigmoid":
        return _lanewise(_sigmoid_into, z) if lanewise else torch.sigmoid(z)
    if name == "leaky_relu":
        return F.leaky_relu(z, 0.01)
    if name == "tanh":
        return torch.tanh(z)
    if name == "mish":
        return _lanewise(_mish_into, z) if lanewise else F.mish(z)
    if name == "swish":
        u = beta * z
        return z * (_lanewise(_sigmoid_into, u) if lanewise else torch.sigmoid(u))
    raise ValueError(f"unknown activation {name!r}")


# --------------------------------------------------------------------------------------
# Progress


class Progress:
    """A one-line text progress bar on stdout, redrawn at most every ``interval`` s and
    every ``growth`` times the time elapsed, whichever is longer.

    A notebook executed outside a browser (nbconvert, nbgrader, nbval) keeps every redraw
    in its saved output, so the bar's redraws grow logarithmically with the run's length:
    about 300 for the full protocol's hour-long cell instead of one every half second
    (which made 1.9 MB of output). It never writes to stderr (nbgrader scores a test cell
    with stderr output as zero), and it is off under the ``grade`` budget (grading, CI),
    so executed notebooks have the same output whether or not results came from the
    cache."""

    def __init__(
        self,
        total: int,
        label: str,
        enabled: bool,
        stream: TextIO | None = None,
        unit: str = "epochs",
    ) -> None:
        self.total, self.label, self.enabled, self.unit = total, label, enabled, unit
        self.stream = stream or sys.stdout
        self.start = self.last = time.perf_counter()
        self.interval = 0.5
        self.growth = 0.02

    def update(self, done: int) -> None:
        now = time.perf_counter()
        wait = max(self.interval, self.growth * (now - self.start))
        if not self.enabled or (now - self.last < wait and done < self.total):
            return
        self.last = now
        frac = done / max(self.total, 1)
        elapsed = now - self.start
        eta = elapsed / frac - elapsed if frac > 0 else float("nan")
        bar = "#" * int(30 * frac)
        self.stream.write(
            f"\r{self.label} [{bar:<30}] {done}/{self.total} {self.unit}, "
            f"{elapsed:.0f} s elapsed, ~{eta:.0f} s left "
        )
        if done >= self.total:
            self.stream.write("\n")
        self.stream.flush()


# --------------------------------------------------------------------------------------
# Cache


def _tensor_digest(*tensors: torch.Tensor) -> str:
    digest = hashlib.sha256()
    for t in tensors:
        t = t.detach().to("cpu").contiguous()
        digest.update(str((tuple(t.shape), str(t.dtype))).encode())
        digest.update(t.numpy().tobytes())
    return digest.hexdigest()


def _cache_key(
    config: Config, settings: dict[str, Any], data_hash: str, version: str, init_hash: str
) -> str:
    blob = json.dumps(
        {
            "config": asdict(config),
            "settings": settings,
            "data": data_hash,
            "code": version,
            "init": init_hash,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def _load(path: Path, config: Config) -> Result | None:
    try:
        with np.load(path) as npz:
            history = {k: npz[f"history/{k}"] for k in HISTORY_KEYS}
            params = {k[len("params/") :]: npz[k] for k in npz.files if k.startswith("params/")}
            seconds = float(npz["seconds"])
            test = {k[len("test/") :]: float(npz[k]) for k in npz.files if k.startswith("test/")}
    except (OSError, KeyError, ValueError):
        return None
    return Result(config, history, params, seconds, cached=True, test=test)


def _save(path: Path, result: Result) -> None:
    """Write a result to the cache; a cache that cannot be written is reported on stdout
    (never stderr, which costs points in a graded cell) and training goes on."""
    try:
        _write(path, result)
    except OSError as error:
        print(
            f"initlab.engine: could not cache a result in {path.parent} ({error.strerror}); "
            "it will be trained again next time. Set INITLAB_DATA to a writable folder "
            "to keep results."
        )


def _write(path: Path, result: Result) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {f"history/{k}": v for k, v in result.history.items()}
    arrays.update({f"params/{k}": v for k, v in result.params.items()})
    arrays.update({f"test/{k}": np.float64(v) for k, v in result.test.items()})
    buffer = io.BytesIO()
    np.savez(buffer, seconds=np.float64(result.seconds), **arrays)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_bytes(buffer.getvalue())
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------
# Training


def init_std(scheme: str, fan_in: int, fan_out: int) -> float:
    """Standard deviation of the normal weights of a built-in scheme other than
    ``default`` (:func:`init_layer` says where each comes from)."""
    if scheme == "small":
        return 0.3 / math.sqrt(fan_in)
    if scheme == "large":
        return 3.0 / math.sqrt(fan_in)
    if scheme == "xavier":
        return math.sqrt(2.0 / (fan_in + fan_out))
    if scheme == "kaiming":
        return math.sqrt(2.0 / fan_in)
    raise ValueError(
        f"unknown init scheme {scheme!r}; built-in schemes with a std are "
        f"{', '.join(INITS[1:])} ('default' is uniform)"
    )


def init_layer(
    scheme: str, fan_in: int, fan_out: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Initial ``(W, b)`` of one layer, W of shape (fan_out, fan_in), drawn on the CPU from
    ``generator`` in float32.

    - ``default``: torch's ``nn.Linear``: W and b uniform on +-1/sqrt(fan_in) (variance
      1/(3 fan_in)), W drawn first.
    - ``small`` and ``large``: normal with std 0.3/sqrt(fan_in) and 3/sqrt(fan_in), the
      "too small" and "too large" scales of the initialization notebook's variance study:
      each layer multiplies the forward second moment by fan_in Var(W) times the
      activation's factor, 0.09 and 9 before the activation (0.045 and 4.5 with ReLU), so
      signals vanish or explode within a few layers, while the scales stay close enough
      to 1/sqrt(fan_in) for a shallow net to train.
    - ``xavier``: normal with Var = 2/(fan_in + fan_out) (``torch.nn.init.xavier_normal_``,
      gain 1).
    - ``kaiming``: normal with Var = 2/fan_in (``torch.nn.init.kaiming_normal_`` defaults:
      mode fan_in, gain sqrt(2) for ReLU).

    Every scheme but ``default`` sets the biases to zero.
    """
    if scheme == "default":
        bound = 1.0 / math.sqrt(fan_in)
        W = (torch.rand(fan_out, fan_in, generator=generator) * 2 - 1) * bound
        b = (torch.rand(fan_out, generator=generator) * 2 - 1) * bound
        return W, b
    std = init_std(scheme, fan_in, fan_out)
    return torch.randn(fan_out, fan_in, generator=generator) * std, torch.zeros(fan_out)


def batch_generator(seed: int) -> torch.Generator:
    """The generator that orders a configuration's batches: seeded from ``seed`` through
    numpy's SeedSequence, so it is a stream of its own, unrelated to the
    ``Generator().manual_seed(seed)`` that draws the initial weights."""
    state = np.random.SeedSequence([int(seed), 0x62617463]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state) >> 1)


def _builtin_init(
    config: Config, layer_sizes: Sequence[int], generator: torch.Generator
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    if config.init not in INITS:
        raise ValueError(
            f"unknown init scheme {config.init!r} in {config.label()}; the built-in schemes "
            f"are {', '.join(INITS)}. For another scheme pass init_fn=... to train()."
        )
    return [
        init_layer(config.init, fan_in, fan_out, generator)
        for fan_in, fan_out in zip(layer_sizes[:-1], layer_sizes[1:], strict=True)
    ]


def _initial_params(
    config: Config,
    layer_sizes: Sequence[int],
    generator: torch.Generator,
    init_fn: InitFn | None,
    dtype: torch.dtype,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """One config's initial (W, b) per layer on the CPU in ``dtype``, checked."""
    if init_fn is None:
        raw = _builtin_init(config, layer_sizes, generator)
    else:
        raw = list(init_fn(config, layer_sizes, generator))
    num_layers = len(layer_sizes) - 1
    if len(raw) != num_layers:
        raise ValueError(
            f"init_fn returned {len(raw)} layers for {config.label()}; layer_sizes "
            f"{list(layer_sizes)} has {num_layers}: return one (W, b) pair per layer"
        )
    params = []
    for k, (pair, fan_in, fan_out) in enumerate(
        zip(raw, layer_sizes[:-1], layer_sizes[1:], strict=True), start=1
    ):
        W, b = (torch.as_tensor(t).detach().to("cpu", dtype).clone() for t in pair)
        if tuple(W.shape) != (fan_out, fan_in) or tuple(b.shape) != (fan_out,):
            raise ValueError(
                f"layer {k} of {config.label()}: W must have shape ({fan_out}, {fan_in}) and "
                f"b shape ({fan_out},), got {tuple(W.shape)} and {tuple(b.shape)}"
            )
        if not (torch.isfinite(W).all() and torch.isfinite(b).all()):
            raise ValueError(f"layer {k} of {config.label()}: initial W or b is not finite")
        params.append((W, b))
    return params


def _activation_backward(
    name: str, grad: torch.Tensor, z: torch.Tensor, a: torch.Tensor, beta: torch.Tensor | None
) -> torch.Tensor:
    """``grad * activation'(z)`` from torch's own backward kernels (``a`` is the
    activation's output; swish is ``silu(beta z) / beta``, so its slope is
    ``silu'(beta z)``)."""
    if name == "relu":
        return _ATEN.threshold_backward(grad, z, 0.0)
    if name == "sigmoid":
        return _ATEN.sigmoid_backward(grad, a)
    if name == "leaky_relu":
        return _ATEN.leaky_relu_backward(grad, z, 0.01, False)
    if name == "tanh":
        return _ATEN.tanh_backward(grad, a)
    if name == "mish":
        return _lanewise(_mish_backward_into, grad, z)
    if name == "swish":
        return _lanewise(_silu_backward_into, grad, beta * z)
    raise ValueError(f"unknown activation {name!r}")


def _activation_into(
    name: str, z: torch.Tensor, beta: torch.Tensor | None, out: torch.Tensor
) -> None:
    """:func:`activation_fn` written into ``out`` (a slice of a larger tensor)."""
    if name == "relu":
        torch.clamp(z, min=0, out=out)
    elif name == "sigmoid":
        _lanewise_into(_sigmoid_into, out, z)
    elif name == "leaky_relu":
        torch._C._nn.leaky_relu(z, 0.01, out=out)
    elif name == "tanh":
        torch.tanh(z, out=out)
    elif name == "mish":
        _lanewise_into(_mish_into, out, z)
    elif name == "swish":
        torch.mul(beta, z, out=out)
        _lanewise_into(_sigmoid_into, out, out)
        out.mul_(z)
    else:
        raise ValueError(f"unknown activation {name!r}")


def _activation_backward_into(
    name: str,
    grad: torch.Tensor,
    z: torch.Tensor,
    a: torch.Tensor,
    beta: torch.Tensor | None,
    out: torch.Tensor,
) -> None:
    """:func:`_activation_backward` written into ``out``."""
    if name == "relu":
        _ATEN.threshold_backward.grad_input(grad, z, 0.0, grad_input=out)
    elif name == "sigmoid":
        _ATEN.sigmoid_backward.grad_input(grad, a, grad_input=out)
    elif name == "leaky_relu":
        _ATEN.leaky_relu_backward.grad_input(grad, z, 0.01, False, grad_input=out)
    elif name == "tanh":
        _ATEN.tanh_backward.grad_input(grad, a, grad_input=out)
    elif name == "swish":
        _lanewise_into(_silu_backward_into, out, grad, beta * z)
    else:  # mish has no out= variant
        out.copy_(_activation_backward(name, grad, z, a, beta))


def _runs(activations: Sequence[str]) -> list[tuple[str, slice]]:
    """The runs of equal names in ``activations`` (sorted: equal names adjacent), each as
    (name, slice of its positions)."""
    runs: list[tuple[str, slice]] = []
    start = 0
    for i in range(1, len(activations) + 1):
        if i == len(activations) or activations[i] != activations[start]:
            runs.append((activations[start], slice(start, i)))
            start = i
    return runs


class _Stack:
    """The stacked networks (configs sorted by activation) and one SGD or Adam step for
    all.

    Weights are stored transposed, ``Wt`` of shape (C, in, out), so that a layer is
    ``baddbmm(b, A, Wt)``. The backward pass is written out. With SGD the output gradient
    is scaled by each configuration's ``lr / batch`` first, so every weight update is one
    fused in-place ``Wt.baddbmm_(A^T, G, alpha=-1)`` (one pass over the weights). With
    Adam the gradients are formed and :meth:`_adam` updates each parameter."""

    def __init__(
        self,
        configs: Sequence[Config],
        inits: Sequence[Sequence[tuple[torch.Tensor, torch.Tensor]]],
        device: torch.device,
        dtype: torch.dtype,
        optimizer: str = "sgd",
    ) -> None:
        self.configs = list(configs)
        self.num_layers = len(inits[0])
        self.Wt = [
            torch.stack([p[layer][0] for p in inits]).transpose(1, 2).contiguous().to(device, dtype)
            for layer in range(self.num_layers)
        ]
        self.b = [
            torch.stack([p[layer][1] for p in inits]).to(device, dtype)
            for layer in range(self.num_layers)
        ]
        self.optimizer = optimizer
        if optimizer == "adam":
            params = self.Wt + self.b
            self.adam_m = [torch.zeros_like(t) for t in params]
            self.adam_v = [torch.zeros_like(t) for t in params]
            self.adam_t = 0
        self.betas = [
            torch.tensor([c.beta for c in configs], device=device, dtype=dtype)
            for _ in range(self.num_layers - 1)
        ]
        self.lr = torch.tensor([c.lr for c in configs], device=device, dtype=dtype)
        self.learn = [i for i, c in enumerate(configs) if c.learn_beta]
        self.groups = _runs([c.activation for c in configs])

    def _beta(self, layer: int, name: str, sl: slice) -> torch.Tensor | None:
        return self.betas[layer][sl, None, None] if name == "swish" else None

    def activate(self, z: torch.Tensor, layer: int) -> torch.Tensor:
        if len(self.groups) == 1:
            name, sl = self.groups[0]
            return activation_fn(name, z, self._beta(layer, name, sl))
        out = torch.empty_like(z)  # each group writes its slice in place: no torch.cat
        for name, sl in self.groups:
            _activation_into(name, z[sl], self._beta(layer, name, sl), out[sl])
        return out

    def activate_backward(
        self, grad: torch.Tensor, z: torch.Tensor, a: torch.Tensor, layer: int
    ) -> torch.Tensor:
        if len(self.groups) == 1:
            name, sl = self.groups[0]
            return _activation_backward(name, grad, z, a, self._beta(layer, name, sl))
        out = torch.empty_like(z)
        for name, sl in self.groups:
            beta = self._beta(layer, name, sl)
            _activation_backward_into(name, grad[sl], z[sl], a[sl], beta, out[sl])
        return out

    def forward(self, X: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Pre-activations and activations of every layer. X is (C, N, in), or (N, in)
        shared by all configs; the last pre-activation holds the logits (C, N, K)."""
        zs, activations = [], [X]
        h = X
        for layer in range(self.num_layers):
            if h.dim() == 2:  # shared input (evaluation): the bias added in place
                z = torch.matmul(h, self.Wt[layer]).add_(self.b[layer][:, None, :])
            else:
                z = torch.baddbmm(self.b[layer][:, None, :], h, self.Wt[layer])
            zs.append(z)
            if layer < self.num_layers - 1:
                h = self.activate(z, layer)
                activations.append(h)
        return zs, activations

    @staticmethod
    def _loss(
        logits: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mean cross-entropy (C,), number correct (C,) and the log-probabilities."""
        C, N, _ = logits.shape
        target = (y.expand(C, N) if y.dim() == 1 else y)[..., None]
        logp = torch.log_softmax(logits, dim=-1)
        loss = -logp.gather(-1, target).squeeze(-1).mean(1)
        correct = (logits.argmax(-1, keepdim=True) == target).sum((1, 2))
        return loss, correct, logp

    def step(self, X: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step of every config on its own batch (X: (C, B, in), y: (C, B));
        returns the batch's mean loss (C,) and number correct (C,) before the step."""
        zs, acts = self.forward(X)
        loss, correct, logp = self._loss(zs[-1], y)
        # d(mean cross-entropy)/d logits = (softmax - onehot) / B (times lr for SGD)
        G = logp.exp_()
        G.scatter_add_(-1, y[..., None], torch.full_like(y[..., None], -1, dtype=G.dtype))
        if self.optimizer == "adam":
            G.div_(X.shape[1])
            self._adam_step(zs, acts, G)
            return loss, correct
        G.mul_((self.lr / X.shape[1])[:, None, None])
        for layer in reversed(range(self.num_layers)):
            if layer > 0:
                grad_a = torch.bmm(G, self.Wt[layer].transpose(1, 2))
            self.Wt[layer].baddbmm_(acts[layer].transpose(1, 2), G, alpha=-1)
            self.b[layer].sub_(G.sum(1))
            if layer > 0:
                z, a = zs[layer - 1], acts[layer]
                G_next = self.activate_backward(grad_a, z, a, layer - 1)
                if self.learn:  # after the slope above, which needs the old beta
                    self._update_beta(grad_a, z, a, layer - 1)
                G = G_next
        return loss, correct

    def _adam_step(self, zs: list[torch.Tensor], acts: list[torch.Tensor], G: torch.Tensor) -> None:
        """Backward pass to all gradients first (the input gradients need the old
        weights), then one Adam update of every parameter."""
        grads_W: list[torch.Tensor] = [G] * self.num_layers
        grads_b: list[torch.Tensor] = [G] * self.num_layers
        for layer in reversed(range(self.num_layers)):
            grads_W[layer] = torch.bmm(acts[layer].transpose(1, 2), G)
            grads_b[layer] = G.sum(1)
            if layer > 0:
                grad_a = torch.bmm(G, self.Wt[layer].transpose(1, 2))
                G = self.activate_backward(grad_a, zs[layer - 1], acts[layer], layer - 1)
        self.adam_t += 1
        self._adam(self.Wt + self.b, grads_W + grads_b)

    def _adam(self, params: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
        """torch.optim.Adam's update (no weight decay, no amsgrad), written with
        elementwise operations whose result does not depend on the stack size (no fused
        multiply-adds, whose vectorised and scalar paths round differently):

            m <- beta1 m + (1 - beta1) g,   v <- beta2 v + (1 - beta2) g^2,
            p <- p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps).
        """
        beta1, beta2 = ADAM_BETAS
        t = self.adam_t
        step_size = (self.lr.double() / (1 - beta1**t)).to(self.lr.dtype)
        root2 = math.sqrt(1 - beta2**t)
        for p, g, m, v in zip(params, grads, self.adam_m, self.adam_v, strict=True):
            m.mul_(beta1).add_(g * (1 - beta1))
            v.mul_(beta2).add_(g * g * (1 - beta2))
            denom = (v.sqrt() / root2).add_(ADAM_EPS)
            update = m / denom
            update.mul_(step_size.view(-1, *([1] * (p.dim() - 1))))
            p.sub_(update)

    def _update_beta(
        self, grad_a: torch.Tensor, z: torch.Tensor, a: torch.Tensor, layer: int
    ) -> None:
        """Swish with learned beta: a = silu(beta z) / beta, so
        da/dbeta = (z silu'(beta z) - a) / beta; grad_a already carries lr."""
        idx = torch.tensor(self.learn, device=z.device)
        beta = self.betas[layer][idx][:, None, None]
        zl, al, gl = z[idx], a[idx], grad_a[idx]
        slope = _lanewise(_silu_backward_into, torch.ones_like(zl), beta * zl)
        dbeta = (gl * (zl * slope - al) / beta).sum((1, 2))
        self.betas[layer][idx] -= dbeta

    def evaluate(
        self, X: torch.Tensor, y: torch.Tensor, chunk: int = 4096
    ) -> tuple[np.ndarray, np.ndarray]:
        """Mean loss and accuracy per config on a shared data set, in chunks."""
        total_loss = torch.zeros(len(self.configs), dtype=torch.float64, device=X.device)
        total_correct = torch.zeros(len(self.configs), dtype=torch.float64, device=X.device)
        for s in range(0, len(X), chunk):
            zs, _ = self.forward(X[s : s + chunk])
            loss, correct, _ = self._loss(zs[-1], y[s : s + chunk])
            total_loss += loss.double() * min(chunk, len(X) - s)
            total_correct += correct.double()
        return (total_loss / len(X)).cpu().numpy(), (total_correct / len(X)).cpu().numpy()

    def export(self, i: int) -> dict[str, np.ndarray]:
        out = {}
        for layer in range(self.num_layers):
            out[f"W{layer + 1}"] = self.Wt[layer][i].T.cpu().numpy().copy()
            out[f"b{layer + 1}"] = self.b[layer][i].cpu().numpy().copy()
        if self.configs[i].activation == "swish":
            out["beta"] = np.array([float(b[i]) for b in self.betas])
        return out


def _share_out(activations: Sequence[str], parts: int) -> list[list[int]]:
    """Indices of ``activations`` (sorted, equal names adjacent) for each of ``parts``
    parts: every run of one activation is cut into ``parts`` contiguous pieces as equal
    as possible, the left-over networks going to the parts that had the fewest so far, so
    each part holds about the same share of every activation. Activations differ in cost
    (on the 784-200-64-10 network ATen's mish forward and backward cost about 60 % of the
    first layer's matrix products and more than the second's), and a stack's training ends
    with its slowest part, so an even share of each keeps the threads equally busy."""
    members: list[list[int]] = [[] for _ in range(parts)]
    for _, run in _runs(activations):
        q, r = divmod(run.stop - run.start, parts)
        extra = set(sorted(range(parts), key=lambda k: (len(members[k]), k))[:r])
        start = run.start
        for k in range(parts):
            take = q + (k in extra)
            members[k].extend(range(start, start + take))
            start += take
    return [m for m in members if m]


class _Stopped(Exception):
    """A part stopped because another failed or the run was interrupted."""


class _Parts:
    """A stack of configurations shared out among ``workers`` parts (see
    :func:`_share_out`), each a :class:`_Stack` trained on a thread of its own while torch
    runs single-threaded.

    Every network is then computed by single-threaded kernels whatever the number of
    threads, and the parts need no synchronisation: each thread draws its networks'
    batches, steps them and evaluates them alone, through the whole schedule, so a
    network's result depends neither on the stack around it nor on the thread count.
    (Stepping the parts in lockstep, a barrier after every step, took 1.16 and 1.19 times
    as long on two cores, medians of two runs of 12 interleaved rounds: every step waited
    for the part the shared machine had slowed, and the threads handed over twice.)"""

    def __init__(
        self,
        configs: Sequence[Config],
        inits: Sequence[Sequence[tuple[torch.Tensor, torch.Tensor]]],
        device: torch.device,
        dtype: torch.dtype,
        optimizer: str,
        workers: int,
    ) -> None:
        self.members = _share_out(
            [c.activation for c in configs], max(1, min(workers, len(configs)))
        )
        self.stacks = [
            _Stack([configs[i] for i in m], [inits[i] for i in m], device, dtype, optimizer)
            for m in self.members
        ]
        self.where = {i: (k, j) for k, m in enumerate(self.members) for j, i in enumerate(m)}
        self.order = np.argsort(np.array([i for m in self.members for i in m]))
        # parts whose networks share one seed also share their batches (the same rows)
        self.shared = [len({configs[i].seed for i in m}) == 1 for m in self.members]

    def gather(self, out: Sequence[np.ndarray]) -> np.ndarray:
        """Per-part arrays (rows in part order) back in the configs' order."""
        return np.concatenate(out)[self.order]

    def run(
        self, fn: Callable[[int], Any], poll: Callable[[], None], stop: threading.Event
    ) -> list:
        """``fn(k)`` for every part, each on a thread of its own (in this thread when
        there is one part), calling ``poll`` about every 0.2 s while they run. The first
        error stops the other parts (``stop`` is set) and is raised; so is an interrupt."""
        if len(self.stacks) == 1:
            return [fn(0)]
        with ThreadPoolExecutor(len(self.stacks)) as pool:
            futures = [pool.submit(fn, k) for k in range(len(self.stacks))]
            try:
                pending = set(futures)
                while pending:
                    done, pending = wait(pending, timeout=0.2, return_when=FIRST_EXCEPTION)
                    if any(f.exception() is not None for f in done):
                        break
                    poll()
            finally:
                stop.set()  # a no-op once all are done; otherwise the others end at their next step
        # every part has ended here: raise the error that stopped the others, not theirs
        for f in futures:
            error = f.exception()
            if error is not None and not isinstance(error, _Stopped):
                raise error
        return [f.result() for f in futures]

    def export(self, i: int) -> dict[str, np.ndarray]:
        k, j = self.where[i]
        return self.stacks[k].export(j)


def _train_part(
    stack: _Stack,
    generators: Sequence[torch.Generator],
    shared: bool,
    X: torch.Tensor,
    y: torch.Tensor,
    val: tuple[torch.Tensor, torch.Tensor] | None,
    test: tuple[torch.Tensor, torch.Tensor] | None,
    schedule: Sequence[int],
    batch_size: int,
    report: Callable[[int, int], None],
    stop: threading.Event,
) -> tuple[dict[str, np.ndarray], np.ndarray | None, np.ndarray | None]:
    """Train one part for ``schedule``: its history (rows in the part's order) and its
    test loss and accuracy (None without test data). Each config's batches come from its
    batch generator: a fresh permutation of the training set whenever the last one is used
    up (the last batch of a pass may be smaller), so an epoch is ceil(N / batch_size)
    steps; a part whose configs share one seed draws the permutation once for all.
    ``report(steps, periods)`` is called after every step."""
    C, n = len(stack.configs), len(X)
    hist = {k: np.full((C, len(schedule)), np.nan) for k in HISTORY_KEYS}
    draw = generators[:1] if shared else generators
    perms, pos, steps = None, n, 0
    for period, num_steps in enumerate(schedule):
        sum_loss = torch.zeros(C, dtype=torch.float64, device=X.device)
        sum_correct = torch.zeros(C, dtype=torch.float64, device=X.device)
        seen = 0
        for _ in range(num_steps):
            if stop.is_set():
                raise _Stopped
            if pos >= n:
                perms = torch.stack([torch.randperm(n, generator=g) for g in draw])
                perms, pos = perms.to(X.device), 0
            assert perms is not None
            idx = perms[:, pos : pos + batch_size]
            pos += batch_size
            if shared:  # one batch, seen by every network
                rows = idx[0]
                loss, correct = stack.step(X[rows].expand(C, -1, -1), y[rows].expand(C, -1))
            else:
                loss, correct = stack.step(X[idx], y[idx])
            sum_loss += loss.double() * idx.shape[1]
            sum_correct += correct.double()
            seen += idx.shape[1]
            steps += 1
            report(steps, period)
        hist["train_loss"][:, period] = (sum_loss / max(seen, 1)).cpu().numpy()
        hist["train_acc"][:, period] = (sum_correct / max(seen, 1)).cpu().numpy()
        hist["step"][:, period] = steps
        if val is not None:
            hist["val_loss"][:, period], hist["val_acc"][:, period] = stack.evaluate(*val)
        report(steps, period + 1)
    test_loss, test_acc = stack.evaluate(*test) if test is not None else (None, None)
    return hist, test_loss, test_acc


@torch.no_grad()
def _train_stack(
    configs: Sequence[Config],
    inits: Sequence[Sequence[tuple[torch.Tensor, torch.Tensor]]],
    generators: Sequence[torch.Generator],
    X: torch.Tensor,
    y: torch.Tensor,
    val: tuple[torch.Tensor, torch.Tensor] | None,
    test: tuple[torch.Tensor, torch.Tensor] | None,
    schedule: Sequence[int],
    batch_size: int,
    dtype: torch.dtype,
    optimizer: str,
    progress: Progress,
    done_before: int,
    per_step: bool,
    workers: int,
) -> list[Result]:
    """Train one stack for ``schedule`` (a history entry after each period of that many
    steps), shared out among ``workers`` parts (:func:`_train_part` each); the progress
    bar counts the steps (``per_step``) or periods of the slowest part."""
    start = time.perf_counter()
    parts = _Parts(configs, inits, X.device, dtype, optimizer, workers)
    done = [0] * len(parts.stacks)
    stop = threading.Event()
    alone = len(parts.stacks) == 1

    def report(k: int, steps: int, periods: int) -> None:
        done[k] = steps if per_step else periods
        if alone:
            progress.update(done_before + done[k])

    def one(k: int) -> tuple[dict[str, np.ndarray], np.ndarray | None, np.ndarray | None]:
        return _train_part(
            parts.stacks[k],
            [generators[i] for i in parts.members[k]],
            parts.shared[k],
            X,
            y,
            val,
            test,
            schedule,
            batch_size,
            lambda steps, periods: report(k, steps, periods),
            stop,
        )

    out = parts.run(one, lambda: progress.update(done_before + min(done)), stop)
    progress.update(done_before + min(done))
    hist = {key: parts.gather([o[0][key] for o in out]) for key in HISTORY_KEYS}
    tests: list[dict[str, float]] = [{} for _ in configs]
    if test is not None:
        test_loss, test_acc = parts.gather([o[1] for o in out]), parts.gather([o[2] for o in out])
        tests = [
            {"loss": float(lo), "acc": float(ac)}
            for lo, ac in zip(test_loss, test_acc, strict=True)
        ]
    seconds = (time.perf_counter() - start) / len(configs)
    return [
        Result(c, {k: v[i].copy() for k, v in hist.items()}, parts.export(i), seconds, test=t)
        for i, (c, t) in enumerate(zip(configs, tests, strict=True))
    ]


def _as_data(
    data: tuple[Any, Any] | None, dtype: torch.dtype, dev: torch.device, name: str, dim: int
) -> tuple[torch.Tensor, torch.Tensor] | None:
    if data is None:
        return None
    X = torch.as_tensor(data[0], dtype=dtype).to(dev)
    y = torch.as_tensor(data[1], dtype=torch.long).to(dev)
    if X.dim() != 2 or X.shape[1] != dim or y.dim() != 1 or len(y) != len(X) or len(X) == 0:
        raise ValueError(
            f"{name} must be X of shape (N, {dim}) and y of shape (N,) with N >= 1; "
            f"got {tuple(X.shape)} and {tuple(y.shape)}"
        )
    return X, y


def train(
    configs: Sequence[Config],
    train_data: tuple[Any, Any],
    val_data: tuple[Any, Any] | None = None,
    *,
    num_epochs: int | None = None,
    num_steps: int | None = None,
    log_every: int | None = None,
    batch_size: int = 64,
    layer_sizes: Sequence[int] = (784, 200, 64, 10),
    optimizer: str = "sgd",
    init_fn: InitFn | None = None,
    test_data: tuple[Any, Any] | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
    cache: bool = True,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool | None = None,
    max_batch: int | None = None,
    split_activations: bool = False,
    workers: int | None = None,
) -> list[Result]:
    """Train every configuration with mini-batch SGD (``optimizer="sgd"``) or Adam
    (``"adam"``, torch.optim.Adam's update, betas 0.9/0.999, eps 1e-8, no weight decay)
    on cross-entropy; return one :class:`Result` per configuration, in the given order.

    ``train_data``, ``val_data`` and ``test_data`` are ``(X, y)`` with X of shape
    (N, layer_sizes[0]) (float) and y of shape (N,) (integer labels). Train for
    ``num_epochs`` passes over the data (a history entry per epoch) or for exactly
    ``num_steps`` gradient steps (a history entry every ``log_every`` steps, default
    once at the end). ``layer_sizes`` may have any depth, ``[784, 10]`` being a linear
    classifier. The test set is evaluated once, after training (``Result.test``).

    Initial weights come from each configuration's ``init`` scheme (:func:`init_layer`)
    or from ``init_fn(config, layer_sizes, generator)``, which returns one ``(W, b)``
    per layer (W of shape (out, in)) and should draw any randomness from ``generator``
    (the configuration's own, ``torch.Generator().manual_seed(config.seed)``) so that
    runs are reproducible. The initial parameters are hashed into the cache key, so a
    changed ``init_fn`` retrains. The order of the batches comes from a second generator
    per configuration, derived from its seed alone (:func:`batch_generator`), so
    configurations with the same seed see the same batches whatever their
    initialization.

    Configurations not in the cache train together in one batched computation (at most
    ``max_batch`` per stack, all by default; one stack per activation with
    ``split_activations``). On the CPU a stack is shared out among ``workers`` parts
    (default: torch's thread count), each with an equal share of every activation, that
    train on threads of their own while torch runs single-threaded, so every network's
    result is the same whatever the number of threads and whatever else is in the stack.
    ``progress`` defaults to a bar on stdout except under the ``grade`` budget.
    """
    if (num_epochs is None) == (num_steps is None):
        raise ValueError("give exactly one of num_epochs (passes over the data) and num_steps")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; use one of {', '.join(OPTIMIZERS)}")
    if optimizer == "adam" and any(c.learn_beta for c in configs):
        raise ValueError("learn_beta is only implemented for optimizer='sgd'")
    if len(layer_sizes) < 2 or any(int(k) < 1 for k in layer_sizes):
        raise ValueError(f"layer_sizes must be at least [inputs, classes], got {layer_sizes}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    dev = pick_device(device)
    train_pair = _as_data(train_data, dtype, dev, "train_data", layer_sizes[0])
    assert train_pair is not None
    X, y = train_pair
    val = _as_data(val_data, dtype, dev, "val_data", layer_sizes[0])
    test = _as_data(test_data, dtype, dev, "test_data", layer_sizes[0])
    if num_epochs is not None:
        if num_epochs < 0:
            raise ValueError(f"num_epochs must be >= 0, got {num_epochs}")
        schedule = [math.ceil(len(X) / batch_size)] * num_epochs
    else:
        assert num_steps is not None
        every = log_every or max(num_steps, 1)
        if num_steps < 0 or every < 1:
            raise ValueError(f"need num_steps >= 0 and log_every >= 1, got {num_steps}, {every}")
        schedule = [every] * (num_steps // every) + (
            [num_steps % every] if num_steps % every else []
        )
    settings: dict[str, Any] = {
        "schedule": schedule,
        "batch_size": batch_size,
        "layer_sizes": [int(k) for k in layer_sizes],
        "optimizer": optimizer,
        "dtype": str(dtype),
        "device": dev.type,
        "torch": torch.__version__,
    }
    if optimizer == "adam":
        settings["adam"] = {"betas": list(ADAM_BETAS), "eps": ADAM_EPS}
    inits = [
        _initial_params(c, layer_sizes, torch.Generator().manual_seed(c.seed), init_fn, dtype)
        for c in configs
    ]
    results: list[Result | None] = [None] * len(configs)
    paths: list[Path] = []
    if cache:
        data_hash = _tensor_digest(X, y, *(val or ()), *(test or ()))
        folder = Path(cache_dir) if cache_dir is not None else data_dir() / "runs"
        version = code_version()
        keys = [
            _cache_key(c, settings, data_hash, version, _tensor_digest(*sum(p, ())))
            for c, p in zip(configs, inits, strict=True)
        ]
        paths = [folder / f"{key}.npz" for key in keys]
        results = [p.exists() and _load(p, c) or None for p, c in zip(paths, configs, strict=True)]
    todo = sorted(
        (i for i, r in enumerate(results) if r is None),
        key=lambda i: ACTIVATIONS.index(configs[i].activation),
    )
    if todo:
        step = max_batch or len(todo)
        groups = [todo]
        if split_activations:
            groups = [[i for i in todo if configs[i].activation == a] for a in ACTIVATIONS]
        chunks = [g[s : s + step] for g in groups for s in range(0, len(g), step)]
        enabled = budget.current() != "grade" if progress is None else progress
        per_step = num_steps is not None
        unit_total = sum(schedule) if per_step else len(schedule)
        bar = Progress(
            unit_total * len(chunks),
            f"training {len(todo)} networks on {dev.type}",
            enabled,
            unit="steps" if per_step else "epochs",
        )
        threads = torch.get_num_threads()
        parts = 1 if dev.type != "cpu" else (workers or threads)
        if dev.type == "cpu":
            torch.set_num_threads(1)
        try:
            for k, chunk in enumerate(chunks):
                trained = _train_stack(
                    [configs[i] for i in chunk],
                    [inits[i] for i in chunk],
                    [batch_generator(configs[i].seed) for i in chunk],
                    X,
                    y,
                    val,
                    test,
                    schedule,
                    batch_size,
                    dtype,
                    optimizer,
                    bar,
                    k * unit_total,
                    per_step,
                    parts,
                )
                for i, result in zip(chunk, trained, strict=True):
                    results[i] = result
                    if cache:
                        _save(paths[i], result)
        finally:
            torch.set_num_threads(threads)
    return [r for r in results if r is not None]


def evaluate(result: Result, X: Any, y: Any, device: str | torch.device | None = None) -> dict:
    """Loss and accuracy of a trained configuration's final weights on (X, y)."""
    dev = pick_device(device)
    num_layers = 0
    while f"W{num_layers + 1}" in result.params:
        num_layers += 1
    params = [
        (torch.as_tensor(result.params[f"W{k}"]), torch.as_tensor(result.params[f"b{k}"]))
        for k in range(1, num_layers + 1)
    ]
    with torch.no_grad():
        stack = _Stack([result.config], [params], dev, torch.float32)
        if "beta" in result.params:
            for layer, beta in enumerate(stack.betas):
                beta[0] = float(result.params["beta"][layer])
        Xt = torch.as_tensor(X, dtype=torch.float32).to(dev)
        yt = torch.as_tensor(y, dtype=torch.long).to(dev)
        loss, acc = stack.evaluate(Xt, yt)
    return {"loss": float(loss[0]), "acc": float(acc[0])}
