"""Small tensor helpers shared by every module."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["expand_like", "interp_with_slope"]


def expand_like(a: Tensor, x: Tensor) -> Tensor:
    """View a scalar or per-sample coefficient ``a`` so that it broadcasts against ``x``.

    ``a`` has shape () or (B,); ``x`` has shape (B, ...). The result has shape () or
    (B, 1, ..., 1) and the dtype of ``x``.
    """
    a = a.to(x.dtype)
    if a.ndim == 0:
        return a
    if a.ndim != 1 or a.shape[0] != x.shape[0]:
        raise ValueError(f"a coefficient of shape {tuple(a.shape)} does not match a batch of shape {tuple(x.shape)}")
    return a.reshape(a.shape[0], *([1] * (x.ndim - 1)))


def interp_with_slope(x: Tensor, xp: Tensor, fp: Tensor) -> tuple[Tensor, Tensor]:
    """Piecewise-linear interpolation of (xp, fp) at x, and the slope of the segment used.

    ``xp`` is increasing. A point on a knot uses the segment to its right (the last
    knot uses the last segment), so the slope is the right derivative.
    """
    i = torch.searchsorted(xp, x.contiguous(), right=True) - 1
    i = i.clamp(0, xp.numel() - 2)
    slope = (fp[i + 1] - fp[i]) / (xp[i + 1] - xp[i])
    return fp[i] + slope * (x - xp[i]), slope
