"""Plotting helpers for the book: notebooks call these and define none of their own.

Every helper draws on a Matplotlib ``Axes`` it is given, labels its axes, and returns what it drew,
so a chapter's figure cell stays a few lines long. ``sized`` is the notebooks' size knob: with
``REFIMPL_QUICK=1`` in the environment (the test suite) heavy cells run a small version.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from typing import TypeVar

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.lines import Line2D
from torch import Tensor

from refimpl.reference import OrderResult

__all__ = [
    "density_grid",
    "plot_convergence",
    "plot_density",
    "plot_image_grid",
    "plot_trajectories",
    "setup_style",
    "sized",
]

T = TypeVar("T")


def sized(full: T, quick: T) -> T:
    """``quick`` when the environment sets REFIMPL_QUICK=1 (the test suite), else ``full``."""
    return quick if os.environ.get("REFIMPL_QUICK") == "1" else full


def setup_style() -> None:
    """The book's figure style: readable fonts, light grids, tight layout."""
    plt.rcParams.update(
        {
            "figure.dpi": 110,
            "figure.figsize": (6.4, 4.0),
            "figure.constrained_layout.use": True,
            "axes.grid": True,
            "grid.alpha": 0.3,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "font.size": 10,
            "legend.frameon": False,
        }
    )


def density_grid(
    log_prob: Callable[[Tensor], Tensor], extent: Sequence[float], n: int = 200
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Evaluate a 2-D log density on an n x n grid over extent = (xmin, xmax, ymin, ymax).

    Returns (X, Y, P) with P = exp(log_prob) as numpy arrays of shape (n, n).
    """
    xs = torch.linspace(extent[0], extent[1], n, dtype=torch.float64)
    ys = torch.linspace(extent[2], extent[3], n, dtype=torch.float64)
    X, Y = torch.meshgrid(xs, ys, indexing="xy")
    points = torch.stack([X.reshape(-1), Y.reshape(-1)], -1)
    P = torch.exp(log_prob(points)).reshape(n, n)
    return X.numpy(), Y.numpy(), P.numpy()


def plot_density(
    ax: Axes, log_prob: Callable[[Tensor], Tensor], extent: Sequence[float], n: int = 200, cmap: str = "Blues"
) -> object:
    """Shade a 2-D density given by its log (a function of (N, 2) points) over ``extent``."""
    X, Y, P = density_grid(log_prob, extent, n)
    image = ax.pcolormesh(X, Y, P, cmap=cmap, shading="auto", rasterized=True)
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    ax.set_aspect("equal")
    return image


def plot_trajectories(
    ax: Axes, xs: Tensor, color: str = "C1", max_paths: int = 32, label: str | None = None
) -> list[Line2D]:
    """Draw 2-D paths xs of shape (n_steps + 1, B, 2): start points hollow, end points filled."""
    if xs.ndim != 3 or xs.shape[-1] != 2:
        raise ValueError(f"xs must have shape (n_steps + 1, B, 2), got {tuple(xs.shape)}")
    paths = xs[:, :max_paths].detach().cpu().numpy()
    lines = ax.plot(paths[..., 0], paths[..., 1], color=color, lw=0.8, alpha=0.6)
    ax.scatter(paths[0, :, 0], paths[0, :, 1], s=12, facecolors="none", edgecolors=color, lw=0.8)
    ax.scatter(paths[-1, :, 0], paths[-1, :, 1], s=12, color=color, label=label)
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    return lines


def plot_convergence(
    ax: Axes, result: OrderResult, label: str, x: Sequence[float] | None = None, xlabel: str = "steps"
) -> Line2D:
    """Errors against steps (or NFE, via ``x``) on log-log axes, with the fitted slope in the legend."""
    xs = np.asarray(result.steps if x is None else x, dtype=float)
    errors = np.asarray(result.errors)
    (line,) = ax.loglog(xs, errors, "o-", label=f"{label} (slope {-result.order:.2f})")
    fit = np.exp(np.polyval(np.polyfit(np.log(xs), np.log(errors), 1), np.log(xs)))
    ax.loglog(xs, fit, ":", color=line.get_color(), lw=1)
    ax.set_xlabel(f"{xlabel} (log scale)")
    ax.set_ylabel("max-abs error (log scale)")
    ax.legend()
    return line


def plot_oracle_report(ax: Axes, report: object, label: str | None = None) -> Line2D:
    """Deviation from the reference per step (log scale) of an oracle ``Report``, with its tolerance dotted."""
    steps = [s.i for s in report.steps]
    devs = [max(s.dev_reference, 1e-17) for s in report.steps]
    (line,) = ax.semilogy(steps, devs, "o-", ms=3, label=label or report.implementation)
    ax.axhline(report.tolerance, ls=":", color=line.get_color(), lw=1)
    ax.set_xlabel("step")
    ax.set_ylabel("|x - refimpl| (max-abs, log scale)")
    ax.legend(fontsize=8)
    return line


def plot_image_grid(
    ax: Axes, images: Tensor, ncol: int = 10, vmin: float = -1.0, vmax: float = 1.0, cmap: str = "gray_r"
) -> object:
    """Tile images (n, 1, h, w), (n, h, w) or flat square (n, h*w) row-major into rows of ``ncol``, with
    one-pixel gaps; image i sits in row i // ncol, column i % ncol. Values are clipped to [vmin, vmax]."""
    x = images.detach().to("cpu", torch.float64)
    if x.ndim == 2:
        side = math.isqrt(x.shape[1])
        if side * side != x.shape[1]:
            raise ValueError(f"flat images must be square, got {x.shape[1]} pixels")
        x = x.reshape(-1, side, side)
    elif x.ndim == 4 and x.shape[1] == 1:
        x = x[:, 0]
    elif x.ndim != 3:
        raise ValueError(f"images must have shape (n, 1, h, w), (n, h, w) or (n, h*w), got {tuple(images.shape)}")
    n, h, w = x.shape
    nrow = -(-n // ncol)
    canvas = torch.full((nrow * (h + 1) - 1, ncol * (w + 1) - 1), float("nan"), dtype=torch.float64)
    for i in range(n):
        r, c = divmod(i, ncol)
        canvas[r * (h + 1) : r * (h + 1) + h, c * (w + 1) : c * (w + 1) + w] = x[i].clamp(vmin, vmax)
    image = ax.imshow(canvas.numpy(), cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    return image
