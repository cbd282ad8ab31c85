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
    # Recursion: phi_1 = expm1(h)/h, phi_{j+1} = (phi_j - 1/j!)/h.
    safe = torch.where(h.abs() < SERIES_BELOW, torch.ones_like(h), h)
    value = torch.expm1(safe) / safe
    for j in range(1, k):
        value = (value - 1.0 / math.factorial(j)) / safe
    # Series: sum_j h^j / (j + k)!, summed from the smallest term (Horner).
    series = torch.full_like(h, 1.0 / math.factorial(_SERIES_TERMS - 1 + k))
    for j in range(_SERIES_TERMS - 2, -1, -1):
        series = series * h + 1.0 / math.factorial(j + k)
    return torch.where(h.abs() < SERIES_BELOW, series, value)
