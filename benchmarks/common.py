"""What the benchmark scripts share: their data, the CPU's name and how they print a ratio.

Imported by the scripts next to it (``python benchmarks/<name>.py`` puts this folder on
the path); the library and the notebooks never import it."""

from __future__ import annotations

import platform
import statistics

import torch

PIXELS = 784


def mnist_or_random(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` real MNIST training images (pixels in [0, 1], flattened) and labels
    when MNIST is in the data directory, else random images and labels of the same shape:
    the benchmarks' costs do not depend on the pixel values."""
    try:
        from initlab import data as initlab_data

        root = initlab_data.data_dir()
        if all((root / "MNIST" / "raw" / f).exists() for f in initlab_data.MNIST_SHA256):
            ds = initlab_data.mnist(train=True)
            return ds.data[:n].reshape(n, -1).float() / 255, ds.targets[:n]
    except Exception:  # noqa: BLE001 - fall back to random images
        pass
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, PIXELS, generator=g), torch.randint(0, 10, (n,), generator=g)


def spread(ratios: list[float], unit: str = "x", goal: float | None = None) -> str:
    """Median and range of per-round ratios, as ``2.5x (rounds 2.1-3.0x)`` or, with
    ``unit="%"``, ``68% (rounds 62%-70%)``; with a ``goal``, also how many rounds reach it:
    ``2.5x (rounds 2.1-3.0x, 3 of 5 >= 2.4x)``."""
    mid, lo, hi = statistics.median(ratios), min(ratios), max(ratios)
    if unit == "%":
        text = f"{mid:.0%} (rounds {lo:.0%}-{hi:.0%}"
        target = f"{goal:.0%}" if goal is not None else ""
    else:
        text = f"{mid:.1f}x (rounds {lo:.1f}-{hi:.1f}x"
        target = f"{goal:g}x" if goal is not None else ""
    if goal is not None:
        text += f", {sum(r >= goal for r in ratios)} of {len(ratios)} >= {target}"
    return text + ")"


def cpu_name() -> str:
    """The CPU's model name where the system says it (Linux), else the machine type."""
    try:
        with open("/proc/cpuinfo") as f:
            for row in f:
                if row.startswith("model name"):
                    return row.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
