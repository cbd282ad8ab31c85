"""The phi functions of exponential integrators, evaluated without cancellation.

phi_0(h) = e^h and phi_{k+1}(h) = (phi_k(h) - 1/k!) / h, so that phi_k(h) = sum_j h^j / (j + k)!
(Hochbruck & Ostermann 2010, Acta Numerica, Eq. 2.10; the coefficients of DPM-Solver,
arXiv:2206.00927v3, Eq. 3.6-3.8, and of UniPC, arXiv:2302.04867v4, Eq. 7).

For |h| below ``SERIES_BELOW`` the recursion would divide a rounding error by h^k, so the Taylor
series is summed instead; above it the recursion from ``expm1`` loses at most a few ulps per level.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["phi"]

SERIES_BELOW = 0.5
_SERIES_TERMS = 24  # |h| < 0.5: the tail after 24 terms is below 0.5^24 / 24! ~ 1e-31


def phi(k: int, h: Tensor | float) -> Tensor:
    """phi_k(h) for k >= 1, elementwise, for any real h (float64 unless h is another float tensor)."""
    if k < 1:
        raise ValueError(f"phi_k is defined here for k >= 1, got k = {k}")
    h = torch.as_tensor(h, dtype=h.dtype if isinstance(h, Tensor) and h.is_floating_point() else torch.float64)
    if h.ndim == 0 and not h.requires_grad:
        # One number (every step of a sampler): evaluate only the branch it needs, in Python floats (a 0-d
        # tensor per operation costs far more than the arithmetic).
        value = float(h)
        formula = _series if abs(value) < SERIES_BELOW else _recursion
        return torch.tensor(formula(k, value), dtype=h.dtype)
    safe = torch.where(h.abs() < SERIES_BELOW, torch.ones_like(h), h)
    return torch.where(h.abs() < SERIES_BELOW, _series(k, h), _recursion(k, safe))


def _recursion(k: int, h: Tensor | float) -> Tensor | float:
    """phi_1 = expm1(h)/h, phi_{j+1} = (phi_j - 1/j!)/h: accurate for |h| >= SERIES_BELOW."""
    value = (torch.expm1(h) if isinstance(h, Tensor) else math.expm1(h)) / h
    for j in range(1, k):
        value = (value - 1.0 / math.factorial(j)) / h
    return value


def _series(k: int, h: Tensor | float) -> Tensor | float:
    """sum_j h^j / (j + k)!, summed from the smallest term (Horner): accurate for |h| < SERIES_BELOW."""
    series = h * 0.0 + 1.0 / math.factorial(_SERIES_TERMS - 1 + k)
    for j in range(_SERIES_TERMS - 2, -1, -1):
        series = series * h + 1.0 / math.factorial(j + k)
    return series
