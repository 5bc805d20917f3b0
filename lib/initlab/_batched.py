"""The batched computation behind initlab.engine: every configuration's weights stacked
along a leading axis, one ``torch.baddbmm`` per layer, the backward pass written out for the
whole stack, activations applied in place in blocks of lanes, and the stack split over
threads. Nothing here is needed to read the notebooks: initlab.engine says what is trained
and how."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from initlab.engine import Config

ADAM_BETAS: tuple[float, float] = (0.9, 0.999)
ADAM_EPS: float = 1e-8
"""torch.optim.Adam's defaults, used by ``optimizer="adam"``."""
HISTORY_KEYS: tuple[str, ...] = ("train_loss", "train_acc", "val_loss", "val_acc", "step")
"""What a training history records, per configuration and period."""

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
