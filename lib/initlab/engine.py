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
parameters (so a changed ``init_fn`` retrains), a hash of the training code (this module
and its private initlab._batched) and the numerical code paths (:func:`numerics`):
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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch

from initlab import budget
from initlab._batched import (
    ADAM_BETAS,
    ADAM_EPS,
    HISTORY_KEYS,
    _Parts,
    _Stack,
    _train_part,
    activation_fn,
)
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


def numerics(device: torch.device) -> dict[str, str]:
    """What decides how a run rounds, besides the code and the data: on the CPU, ATen's
    vectorised kernels (AVX2, AVX-512, ...) and MKL's reproducibility branch (``MKL_CBWR``,
    empty when unset); part of every cache key, so a result computed on other code paths is
    computed again rather than read."""
    if device.type != "cpu":
        return {"device": str(device)}
    return {
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "mkl_cbwr": os.environ.get("MKL_CBWR", ""),
    }


def code_version() -> str:
    """SHA-256 of the training code's source (this module and initlab._batched): part of
    every cache key."""
    digest = hashlib.sha256()
    for path in (Path(__file__), Path(__file__).with_name("_batched.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()


# --------------------------------------------------------------------------------------
# Progress


PROGRESS_VARIABLE = "INITLAB_PROGRESS"
"""Set to ``0``, training shows no progress bar (see :class:`Progress`)."""


class Progress:
    """A one-line text progress bar on stdout, redrawn at most every ``interval`` s and
    every ``growth`` times the time elapsed, whichever is longer.

    A notebook executed outside a browser (nbconvert, nbgrader, nbval) keeps every redraw
    in its saved output, so the bar's redraws grow logarithmically with the run's length:
    about 300 for the full protocol's hour-long cell instead of one every half second
    (which made 1.9 MB of output). It never writes to stderr (nbgrader scores a test cell
    with stderr output as zero), and it is off under the ``grade`` budget (grading, CI)
    and where ``$INITLAB_PROGRESS`` is ``0`` (the course's build and nbval run of
    solutions/), so executed notebooks have the same output whether or not results came
    from the cache."""

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
    ``progress`` defaults to a bar on stdout except under the ``grade`` budget or with
    ``$INITLAB_PROGRESS`` set to ``0``.
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
        "numerics": numerics(dev),
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
        enabled = progress
        if progress is None:
            enabled = budget.current() != "grade" and os.environ.get(PROGRESS_VARIABLE) != "0"
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
