"""What a check wraps around a call of a student's answer: context managers that each yield
a function giving what they saw (or None).

This module imports numpy and torch only: when checks run outside the student's kernel, the
grading worker loads it into the kernel as text and makes the calls inside the probe there
(``Remote.probed``, through :func:`initlab_grading.checking.calls.inside`); otherwise the probe
runs in the checks' own process.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch.overrides import TorchFunctionMode


class AutogradWatch(TorchFunctionMode):
    """Records the first sign that a call differentiates with torch's machinery."""

    def __init__(self) -> None:
        super().__init__()
        self.evidence: str | None = None

    def note(self, what: str) -> None:
        if self.evidence is None:
            self.evidence = what

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        name = getattr(func, "__name__", "") or ""
        module = getattr(func, "__module__", "") or ""
        if "backward" in name:
            self.note(f"{name} (a backward kernel, or .backward())")
        elif "dual" in name:
            self.note("dual numbers (forward-mode autograd: torch.func.jvp, forward_ad)")
        elif module.startswith("torch.autograd"):
            self.note(f"torch.autograd's {name}")
        elif torch.is_grad_enabled():
            self.note("autograd switched back on (torch.enable_grad or set_grad_enabled)")
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def autograd_watch() -> Iterator[Callable[[], str | None]]:
    """Run the block under torch.no_grad() and watched for differentiation by torch: a
    backward kernel or ``.backward()``, dual numbers (forward mode), torch.autograd's
    functions, autograd switched back on, or a graph being recorded; yields a function that
    gives the first sign seen (None: none). torch.func refuses to run under the saved-tensor
    hooks used here and raises a RuntimeError that says so."""
    watch = AutogradWatch()

    def pack(t: Any) -> Any:
        watch.note("an autograd graph (tensors saved for a backward pass)")
        return t

    with (
        torch.no_grad(),
        torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t),
        watch,
    ):
        yield lambda: watch.evidence


@contextlib.contextmanager
def float_errors_raised() -> Iterator[Callable[[], None]]:
    """Run the block with numpy's overflow, invalid operation and division by zero raised
    as FloatingPointError instead of warned about (underflow ignored)."""
    with np.errstate(over="raise", invalid="raise", divide="raise", under="ignore"):
        yield lambda: None


@contextlib.contextmanager
def torch_seeded(seed: int) -> Iterator[Callable[[], None]]:
    """Run the block with torch's global random generator seeded with ``seed`` (an answer
    that draws with tensor.normal_ draws the same numbers on every run)."""
    torch.manual_seed(seed)
    yield lambda: None
