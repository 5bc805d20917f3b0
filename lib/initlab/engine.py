"""Train many small MLP classifiers at once: activations x learning rates x seeds as one
batched computation.

Every configuration has its own weights, stacked along a leading axis, so one
``torch.baddbmm`` per layer runs the forward pass of all of them, and autograd runs all
backward passes in one go (the loss is the sum of the configurations' losses, and each
configuration's parameters enter only its own loss). Configurations are sorted by
activation, so each activation is applied to one contiguous slice of the stack.

Each configuration owns a ``torch.Generator`` seeded with its ``seed``: it draws the
initial weights (torch's ``nn.Linear`` default, uniform on +-1/sqrt(fan_in)) and then one
permutation of the training set per epoch. A configuration therefore trains exactly as it
would alone, whatever else is in the batch (``tests/test_engine.py`` compares), and
configurations that share a seed start from the same weights and see the same batches,
so they differ only in what they are meant to differ in.

Results are cached on disk under ``<data_dir>/runs/``, one file per configuration, keyed
by the configuration, the training settings, a hash of the data and a hash of this
file's source: re-running a notebook loads them; changing the code retrains.

Example::

    configs = [Config(act, lr, seed) for act in ("relu", "tanh") for lr in (0.01, 0.1)
               for seed in (0, 1)]
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
import time
from collections.abc import Sequence
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
    "Config",
    "Result",
    "activation_fn",
    "code_version",
    "evaluate",
    "pick_device",
    "train",
]

ACTIVATIONS: tuple[str, ...] = ("relu", "sigmoid", "leaky_relu", "tanh", "mish", "swish")
"""Activation names the engine knows (LeakyReLU with torch's slope 0.01)."""

HISTORY_KEYS: tuple[str, ...] = ("train_loss", "train_acc", "val_loss", "val_acc")


@dataclass(frozen=True)
class Config:
    """One network to train: activation, learning rate, seed. ``beta`` is swish's
    initial beta; ``learn_beta`` makes it a trainable parameter per layer."""

    activation: str
    lr: float
    seed: int = 0
    beta: float = 1.0
    learn_beta: bool = False

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"unknown activation {self.activation!r}; use one of {', '.join(ACTIVATIONS)}"
            )
        if self.learn_beta and self.activation != "swish":
            raise ValueError("learn_beta only applies to the swish activation")

    def label(self) -> str:
        extra = ", learned beta" if self.learn_beta else ""
        return f"{self.activation}, lr={self.lr:.4g}, seed={self.seed}{extra}"


@dataclass
class Result:
    """What training one configuration produced.

    ``history`` maps ``train_loss``, ``train_acc`` (means over the epoch's mini-batches,
    taken before each update), ``val_loss`` and ``val_acc`` (the whole validation set
    after the epoch; nan without one) to arrays with one entry per epoch. ``params``
    holds the final weights ``W1, b1, W2, b2, ...`` and swish's ``beta`` per hidden layer.
    """

    config: Config
    history: dict[str, np.ndarray]
    params: dict[str, np.ndarray]
    seconds: float = 0.0
    cached: bool = field(default=False, compare=False)


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` if given, else CUDA when present, else the CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def code_version() -> str:
    """SHA-256 of this module's source: part of every cache key."""
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()


def activation_fn(name: str, z: torch.Tensor, beta: torch.Tensor | None = None) -> torch.Tensor:
    """Apply an activation to ``z``; for swish, ``beta`` broadcasts against ``z``."""
    if name == "relu":
        return F.relu(z)
    if name == "sigmoid":
        return torch.sigmoid(z)
    if name == "leaky_relu":
        return F.leaky_relu(z, 0.01)
    if name == "tanh":
        return torch.tanh(z)
    if name == "mish":
        return F.mish(z)
    if name == "swish":
        return z * torch.sigmoid(beta * z)
    raise ValueError(f"unknown activation {name!r}")


# --------------------------------------------------------------------------------------
# Progress


class Progress:
    """A one-line text progress bar on stdout, redrawn at most every ``interval`` s.

    It never writes to stderr (nbgrader scores a test cell with stderr output as zero),
    and it is off under the ``grade`` budget (grading, CI), so executed notebooks have
    the same output whether or not results came from the cache."""

    def __init__(self, total: int, label: str, enabled: bool, stream: TextIO | None = None) -> None:
        self.total, self.label, self.enabled = total, label, enabled
        self.stream = stream or sys.stdout
        self.start = self.last = time.perf_counter()
        self.interval = 0.5

    def update(self, done: int) -> None:
        now = time.perf_counter()
        if not self.enabled or (now - self.last < self.interval and done < self.total):
            return
        self.last = now
        frac = done / max(self.total, 1)
        elapsed = now - self.start
        eta = elapsed / frac - elapsed if frac > 0 else float("nan")
        bar = "#" * int(30 * frac)
        self.stream.write(
            f"\r{self.label} [{bar:<30}] {done}/{self.total} epochs, "
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


def _cache_key(config: Config, settings: dict[str, Any], data_hash: str, version: str) -> str:
    blob = json.dumps(
        {"config": asdict(config), "settings": settings, "data": data_hash, "code": version},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def _load(path: Path, config: Config) -> Result | None:
    try:
        with np.load(path) as npz:
            history = {k: npz[f"history/{k}"] for k in HISTORY_KEYS}
            params = {k[len("params/") :]: npz[k] for k in npz.files if k.startswith("params/")}
            seconds = float(npz["seconds"])
    except (OSError, KeyError, ValueError):
        return None
    return Result(config, history, params, seconds, cached=True)


def _save(path: Path, result: Result) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {f"history/{k}": v for k, v in result.history.items()}
    arrays.update({f"params/{k}": v for k, v in result.params.items()})
    buffer = io.BytesIO()
    np.savez(buffer, seconds=np.float64(result.seconds), **arrays)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_bytes(buffer.getvalue())
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------
# Training


def _init_params(
    configs: Sequence[Config], layer_sizes: Sequence[int], generators: list[torch.Generator]
) -> list[torch.Tensor]:
    """Per layer, stacked W (C, out, in) and b (C, out), drawn config by config on the
    CPU from each config's generator (so CPU and GPU runs start identically)."""
    params = []
    for fan_in, fan_out in zip(layer_sizes[:-1], layer_sizes[1:], strict=True):
        bound = 1.0 / math.sqrt(fan_in)
        W = torch.stack(
            [(torch.rand(fan_out, fan_in, generator=g) * 2 - 1) * bound for g in generators]
        )
        b = torch.stack([(torch.rand(fan_out, generator=g) * 2 - 1) * bound for g in generators])
        params += [W, b]
    return params


_ATEN = torch.ops.aten


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
        return _ATEN.mish_backward(grad, z)
    if name == "swish":
        return _ATEN.silu_backward(grad, beta * z)
    raise ValueError(f"unknown activation {name!r}")


def _activation_into(
    name: str, z: torch.Tensor, beta: torch.Tensor | None, out: torch.Tensor
) -> None:
    """:func:`activation_fn` written into ``out`` (a slice of a larger tensor)."""
    if name == "relu":
        torch.clamp(z, min=0, out=out)
    elif name == "sigmoid":
        torch.sigmoid(z, out=out)
    elif name == "leaky_relu":
        torch._C._nn.leaky_relu(z, 0.01, out=out)
    elif name == "tanh":
        torch.tanh(z, out=out)
    elif name == "mish":
        torch._C._nn.mish(z, out=out)
    elif name == "swish":
        torch.mul(beta, z, out=out)
        torch.sigmoid(out, out=out)
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
        _ATEN.silu_backward.grad_input(grad, beta * z, grad_input=out)
    else:  # mish has no out= variant
        out.copy_(_activation_backward(name, grad, z, a, beta))


class _Stack:
    """The stacked networks (configs sorted by activation) and one SGD step for all.

    Weights are stored transposed, ``Wt`` of shape (C, in, out), so that a layer is
    ``baddbmm(b, A, Wt)``. The backward pass is written out: the output gradient is
    scaled by each configuration's ``lr / batch`` first, so every weight update is one
    fused in-place ``Wt.baddbmm_(A^T, G, alpha=-1)`` (one pass over the weights)."""

    def __init__(
        self,
        configs: Sequence[Config],
        layer_sizes: Sequence[int],
        device: torch.device,
        dtype: torch.dtype,
    ) -> None:
        self.configs = list(configs)
        self.num_layers = len(layer_sizes) - 1
        self.generators = [torch.Generator().manual_seed(c.seed) for c in configs]
        init = _init_params(configs, layer_sizes, self.generators)
        self.Wt = [W.transpose(1, 2).contiguous().to(device, dtype) for W in init[0::2]]
        self.b = [b.to(device, dtype) for b in init[1::2]]
        self.betas = [
            torch.tensor([c.beta for c in configs], device=device, dtype=dtype)
            for _ in range(self.num_layers - 1)
        ]
        self.lr = torch.tensor([c.lr for c in configs], device=device, dtype=dtype)
        self.learn = [i for i, c in enumerate(configs) if c.learn_beta]
        # contiguous slices of equal activation
        self.groups: list[tuple[str, slice]] = []
        start = 0
        for i in range(1, len(configs) + 1):
            if i == len(configs) or configs[i].activation != configs[start].activation:
                self.groups.append((configs[start].activation, slice(start, i)))
                start = i

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
            if h.dim() == 2:  # shared input
                z = torch.matmul(h, self.Wt[layer]) + self.b[layer][:, None, :]
            else:
                z = torch.baddbmm(self.b[layer][:, None, :], h, self.Wt[layer])
            zs.append(z)
            if layer < self.num_layers - 1:
                h = self.activate(z, layer)
                activations.append(h)
        return zs, activations

    @staticmethod
    def _loss(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        C, N, K = logits.shape
        target = y.expand(C, N) if y.dim() == 1 else y
        losses = F.cross_entropy(logits.reshape(C * N, K), target.reshape(C * N), reduction="none")
        correct = (logits.argmax(-1) == target).sum(1)
        return losses.view(C, N).mean(1), correct

    def step(self, X: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One SGD step of every config on its own batch (X: (C, B, in), y: (C, B));
        returns the batch's mean loss (C,) and number correct (C,) before the step."""
        zs, acts = self.forward(X)
        logits = zs[-1]
        loss, correct = self._loss(logits, y)
        # d(mean cross-entropy)/d logits = (softmax - onehot) / B, times lr per config
        G = torch.softmax(logits, dim=-1)
        G.scatter_add_(-1, y[..., None], torch.full_like(y[..., None], -1, dtype=G.dtype))
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

    def _update_beta(
        self, grad_a: torch.Tensor, z: torch.Tensor, a: torch.Tensor, layer: int
    ) -> None:
        """Swish with learned beta: a = silu(beta z) / beta, so
        da/dbeta = (z silu'(beta z) - a) / beta; grad_a already carries lr."""
        idx = torch.tensor(self.learn, device=z.device)
        beta = self.betas[layer][idx][:, None, None]
        zl, al, gl = z[idx], a[idx], grad_a[idx]
        slope = _ATEN.silu_backward(torch.ones_like(zl), beta * zl)
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
            loss, correct = self._loss(zs[-1], y[s : s + chunk])
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

    def load(self, i: int, params: dict[str, np.ndarray]) -> None:
        for layer in range(self.num_layers):
            self.Wt[layer][i] = torch.as_tensor(params[f"W{layer + 1}"]).T
            self.b[layer][i] = torch.as_tensor(params[f"b{layer + 1}"])
        if "beta" in params:
            for layer, beta in enumerate(self.betas):
                beta[i] = float(params["beta"][layer])


@torch.no_grad()
def _train_stack(
    configs: Sequence[Config],
    X: torch.Tensor,
    y: torch.Tensor,
    val: tuple[torch.Tensor, torch.Tensor] | None,
    num_epochs: int,
    batch_size: int,
    layer_sizes: Sequence[int],
    dtype: torch.dtype,
    progress: Progress,
    done_before: int,
) -> list[Result]:
    start = time.perf_counter()
    stack = _Stack(configs, layer_sizes, X.device, dtype)
    C, n = len(configs), len(X)
    hist = {k: np.full((C, num_epochs), np.nan) for k in HISTORY_KEYS}
    for epoch in range(num_epochs):
        perms = torch.stack([torch.randperm(n, generator=g) for g in stack.generators])
        perms = perms.to(X.device)
        sum_loss = torch.zeros(C, dtype=torch.float64, device=X.device)
        sum_correct = torch.zeros(C, dtype=torch.float64, device=X.device)
        for s in range(0, n, batch_size):
            idx = perms[:, s : s + batch_size]
            loss, correct = stack.step(X[idx], y[idx])
            sum_loss += loss.detach().double() * idx.shape[1]
            sum_correct += correct.double()
        hist["train_loss"][:, epoch] = (sum_loss / n).cpu().numpy()
        hist["train_acc"][:, epoch] = (sum_correct / n).cpu().numpy()
        if val is not None:
            hist["val_loss"][:, epoch], hist["val_acc"][:, epoch] = stack.evaluate(*val)
        progress.update(done_before + epoch + 1)
    seconds = (time.perf_counter() - start) / C
    return [
        Result(c, {k: v[i].copy() for k, v in hist.items()}, stack.export(i), seconds)
        for i, c in enumerate(configs)
    ]


def train(
    configs: Sequence[Config],
    train_data: tuple[Any, Any],
    val_data: tuple[Any, Any] | None = None,
    *,
    num_epochs: int,
    batch_size: int = 64,
    layer_sizes: Sequence[int] = (784, 200, 64, 10),
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
    cache: bool = True,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool | None = None,
    max_batch: int | None = None,
    split_activations: bool = False,
) -> list[Result]:
    """Train every configuration with plain mini-batch SGD on cross-entropy; return one
    :class:`Result` per configuration, in the given order.

    ``train_data`` and ``val_data`` are ``(X, y)`` with X of shape (N, layer_sizes[0])
    (float) and y of shape (N,) (integer labels). Configurations not in the cache train
    together in one batched computation (at most ``max_batch`` per stack, all by
    default; one stack per activation with ``split_activations``). ``progress``
    defaults to a bar on stdout except under the ``grade`` budget.
    """
    dev = pick_device(device)
    X = torch.as_tensor(train_data[0], dtype=dtype).to(dev)
    y = torch.as_tensor(train_data[1], dtype=torch.long).to(dev)
    val = None
    if val_data is not None:
        val = (
            torch.as_tensor(val_data[0], dtype=dtype).to(dev),
            torch.as_tensor(val_data[1], dtype=torch.long).to(dev),
        )
    if X.dim() != 2 or X.shape[1] != layer_sizes[0] or len(y) != len(X):
        raise ValueError(
            f"train_data must be X of shape (N, {layer_sizes[0]}) and y of shape (N,); "
            f"got {tuple(X.shape)} and {tuple(y.shape)}"
        )
    settings = {
        "num_epochs": num_epochs,
        "batch_size": batch_size,
        "layer_sizes": list(layer_sizes),
        "dtype": str(dtype),
        "device": dev.type,
        "torch": torch.__version__,
    }
    data_hash = _tensor_digest(X, y, *(val or ()))
    folder = Path(cache_dir) if cache_dir is not None else data_dir() / "runs"
    version = code_version()
    paths = [folder / f"{_cache_key(c, settings, data_hash, version)}.npz" for c in configs]
    results: list[Result | None] = [None] * len(configs)
    if cache:
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
        bar = Progress(
            num_epochs * len(chunks), f"training {len(todo)} networks on {dev.type}", enabled
        )
        for k, chunk in enumerate(chunks):
            trained = _train_stack(
                [configs[i] for i in chunk],
                X,
                y,
                val,
                num_epochs,
                batch_size,
                layer_sizes,
                dtype,
                bar,
                k * num_epochs,
            )
            for i, result in zip(chunk, trained, strict=True):
                results[i] = result
                if cache:
                    _save(paths[i], result)
    return [r for r in results if r is not None]


def evaluate(result: Result, X: Any, y: Any, device: str | torch.device | None = None) -> dict:
    """Loss and accuracy of a trained configuration's final weights on (X, y)."""
    dev = pick_device(device)
    layer_sizes = [result.params["W1"].shape[1]]
    while f"W{len(layer_sizes)}" in result.params:
        layer_sizes.append(result.params[f"W{len(layer_sizes)}"].shape[0])
    with torch.no_grad():
        stack = _Stack([result.config], layer_sizes, dev, torch.float32)
        stack.load(0, result.params)
        Xt = torch.as_tensor(X, dtype=torch.float32).to(dev)
        yt = torch.as_tensor(y, dtype=torch.long).to(dev)
        loss, acc = stack.evaluate(Xt, yt)
    return {"loss": float(loss[0]), "acc": float(acc[0])}
