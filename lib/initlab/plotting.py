"""One plotting helper per view. Each draws on the axes it is given (or a new figure)
and returns the axes, so a notebook can combine views in subplots."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes

__all__ = [
    "plot_contours",
    "plot_curves",
    "plot_distance",
    "plot_layer_stats",
    "plot_mean_range",
]


def _axes(ax: Axes | None, figsize: tuple[float, float] = (6.0, 5.0)) -> Axes:
    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    return ax


def plot_contours(
    f: Callable[[np.ndarray], Any],
    trajectories: Mapping[str, Any] | None = None,
    xlim: tuple[float, float] = (0.0, 12.0),
    ylim: tuple[float, float] = (-2.0, 10.0),
    optimum: Any = None,
    num_levels: int = 30,
    resolution: int = 121,
    ax: Axes | None = None,
) -> Axes:
    """Contour lines of a function of two variables, with optimisation paths on top.

    ``f`` takes one point of shape (2,) and returns a number (it is called point by point,
    so it need not be vectorised). ``trajectories`` maps a label to an array of shape
    (num_points, 2); ``optimum`` marks a point with a star.
    """
    ax = _axes(ax)
    xs = np.linspace(*xlim, resolution)
    ys = np.linspace(*ylim, resolution)
    values = np.array([[float(f(np.array([x, y]))) for x in xs] for y in ys])
    contour = ax.contour(xs, ys, values, levels=num_levels, cmap="viridis", linewidths=0.8)
    ax.figure.colorbar(contour, ax=ax, label="f(x)")
    for label, path in (trajectories or {}).items():
        path = np.asarray(path, dtype=float)
        ax.plot(path[:, 0], path[:, 1], "o-", markersize=3, linewidth=1.2, label=label)
    if optimum is not None:
        ax.plot(*np.asarray(optimum, dtype=float), "k*", markersize=12, label="minimum")
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    if trajectories or optimum is not None:
        ax.legend(fontsize="small", loc="upper left")
    return ax


def plot_distance(
    trajectories: Mapping[str, Any],
    optimum: Any,
    ax: Axes | None = None,
) -> Axes:
    """Distance ``||x_t - x*||`` against iteration ``t`` on a logarithmic axis, one line
    per labelled trajectory (arrays of shape (num_points, dim))."""
    ax = _axes(ax)
    target = np.asarray(optimum, dtype=float)
    for label, path in trajectories.items():
        path = np.asarray(path, dtype=float)
        dist = np.linalg.norm(path - target, axis=1)
        ax.semilogy(np.arange(len(dist)), dist, label=label)
    ax.set_xlabel("iteration t")
    ax.set_ylabel(r"$\|x_t - x^*\|$")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    return ax


def plot_layer_stats(
    stats: Mapping[str, Any],
    ylabel: str,
    ax: Axes | None = None,
    title: str = "",
) -> Axes:
    """One statistic per layer (a variance, say) against the layer index on a
    logarithmic axis, one line per labelled configuration. Zero, inf and nan entries are
    marked at the edge of the plot instead of silently dropped."""
    ax = _axes(ax)
    for label, values in stats.items():
        values = np.asarray(values, dtype=float)
        layers = np.arange(1, len(values) + 1)
        finite = np.isfinite(values) & (values > 0)
        (line,) = ax.semilogy(layers[finite], values[finite], "o-", markersize=3, label=label)
        if not finite.all():
            ax.annotate(
                f"{label}: {int((~finite).sum())} layers 0, inf or nan",
                xy=(0.02, 0.02 + 0.05 * (len(ax.texts))),
                xycoords="axes fraction",
                fontsize="x-small",
                color=line.get_color(),
            )
    ax.set_xlabel("layer")
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="x-small")
    if title:
        ax.set_title(title)
    return ax


def plot_curves(
    histories: Mapping[str, Mapping[str, Any]],
    keys: tuple[str, ...] = ("train_loss", "val_loss", "train_acc", "val_acc"),
    axes: Any = None,
    title: str = "",
) -> Any:
    """Training curves: one panel per key (``train_loss``, ``val_acc``, ...), one line per
    labelled history (a mapping from key to one value per epoch). A history whose values
    turn inf or nan (a diverged network) is named in a note on the panel from the first
    such epoch on, instead of silently ending its line. Returns the axes."""
    if axes is None:
        _, axes = plt.subplots(1, len(keys), figsize=(4.0 * len(keys), 3.2))
    axes = np.atleast_1d(axes)
    for ax, key in zip(axes, keys, strict=True):
        notes = []
        for label, history in histories.items():
            values = np.asarray(history[key], dtype=float)
            (line,) = ax.plot(
                np.arange(1, len(values) + 1),
                values,
                marker="o" if len(values) < 3 else None,
                markersize=3,
                label=label,
            )
            bad = np.flatnonzero(~np.isfinite(values))
            if len(bad):
                notes.append((f"{label}: inf/nan from epoch {bad[0] + 1}", line.get_color()))
        for k, (text, color) in enumerate(notes):
            ax.annotate(
                text,
                xy=(0.02, 0.02 + 0.06 * k),
                xycoords="axes fraction",
                fontsize="x-small",
                color=color,
            )
        ax.set_xlabel("epoch")
        ax.set_title(key.replace("_", " "), fontsize="medium")
        ax.grid(True, alpha=0.3)
        if "loss" in key:
            ax.set_yscale("log")
    axes[-1].legend(fontsize="x-small")
    if title:
        axes[0].figure.suptitle(title)
    axes[0].figure.tight_layout()
    return axes


def plot_mean_range(
    x: Any,
    values: Mapping[str, Any],
    xlabel: str,
    ylabel: str,
    ax: Axes | None = None,
    title: str = "",
) -> Axes:
    """Repeated measurements against one variable: per label an array of shape
    (len(x), repeats), drawn as the mean over the repeats with bars from the minimum to
    the maximum (slightly offset per label so that the bars stay apart)."""
    ax = _axes(ax, figsize=(6.5, 4.0))
    x = np.asarray(x, dtype=float)
    spread = (x.max() - x.min()) if len(x) > 1 else 1.0
    offsets = np.linspace(-0.01, 0.01, len(values)) * spread if len(values) > 1 else [0.0]
    for offset, (label, runs) in zip(offsets, values.items(), strict=True):
        runs = np.asarray(runs, dtype=float).reshape(len(x), -1)
        mean = runs.mean(axis=1)
        yerr = np.stack([mean - runs.min(axis=1), runs.max(axis=1) - mean])
        ax.errorbar(x + offset, mean, yerr=yerr, marker="o", markersize=3, capsize=3, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    if title:
        ax.set_title(title)
    return ax
