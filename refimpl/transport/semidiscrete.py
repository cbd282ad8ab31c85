"""DPM-OT's semi-discrete optimal transport map by a Brenier potential (Li et al. 2023, arXiv:2307.11308v1).

A continuous source mu (the diffusion's Gaussian noise) is sent to N stored targets y_i with weights nu_i by the
gradient of the piecewise-linear Brenier potential u_h(x) = max_i <x, y_i> + h_i (their Sec. 3.2, after Gu et al.
2016, arXiv:1302.5472): T(x) = y_{i(x)}, i(x) = argmax_i <x, y_i> + h_i, whose power cells W_i(h) = {x: i(x) = i}
get the masses mu(W_i(h)). The heights h minimise the convex energy E(h) = int u_h dmu - sum_i nu_i h_i, whose
gradient is g_i = mu(W_i(h)) - nu_i (their Sec. 3.2; the official code estimates mu(W_i) by Monte Carlo and takes
gradient steps on h). At the minimiser every cell holds its target weight and T is the OT map for the cost
-<x, y> (equivalently |x - y|^2 / 2 with the heights shifted by |y_i|^2 / 2, Brenier 1991).

T is cyclically monotone for any h: if T(x_a) = y_i and T(x_b) = y_j then <x_a, y_i> + h_i >= <x_a, y_j> + h_j and
<x_b, y_j> + h_j >= <x_b, y_i> + h_i; adding them, <x_a, y_i> + <x_b, y_j> >= <x_a, y_j> + <x_b, y_i>: no 2-swap
of targets lowers the quadratic cost. ``is_cyclically_monotone`` checks every pair of a sample.

Here the source is N(0, I), the law the diffusion's noise has; the official code draws its Monte Carlo source with
``torch.rand`` (uniform on [0, 1)^d) [C ot_utils], which is not the Gaussian prior it then maps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from refimpl._validation import as_float_tensor, check_finite, check_number, check_probability_vector, check_tensor

__all__ = ["SemiDiscreteOT", "fit_semidiscrete_ot", "is_cyclically_monotone"]


@dataclass(frozen=True)
class SemiDiscreteOT:
    """The map T(x) = y_{argmax_i <x, y_i> + h_i}: targets (N, d), weights nu (N,), heights h (N,)."""

    targets: Tensor
    weights: Tensor
    heights: Tensor

    def scores(self, x: Tensor) -> Tensor:
        """<x, y_i> + h_i for each point and target: (B, N)."""
        return x @ self.targets.T + self.heights

    def assign(self, x: Tensor) -> Tensor:
        """The cell index i(x) of each point: (B,)."""
        return self.scores(x).argmax(-1)

    def __call__(self, x: Tensor) -> Tensor:
        """T(x) = y_{i(x)}: (B, d)."""
        return self.targets[self.assign(x)]

    def potential(self, x: Tensor) -> Tensor:
        """The Brenier potential u_h(x) = max_i <x, y_i> + h_i: (B,)."""
        return self.scores(x).amax(-1)

    def cell_masses(self, x: Tensor) -> Tensor:
        """The fraction of the points x (B, d) in each cell: (N,), the Monte Carlo mu(W_i(h))."""
        return torch.bincount(self.assign(x), minlength=self.targets.shape[0]).to(x.dtype) / x.shape[0]


def fit_semidiscrete_ot(
    source: Tensor,
    targets: Tensor,
    weights: Tensor | None = None,
    *,
    lr: float = 0.3,
    max_iter: int = 5000,
    tol: float = 0.0,
) -> tuple[SemiDiscreteOT, int]:
    """Gradient descent on the heights, h <- h - lr_k (mu_n(W_i(h)) - nu_i), on the empirical source (n, d).

    DPM-OT (arXiv:2307.11308v1), Sec. 3.2, with the step size decaying as lr / sqrt(1 + k / 100). Stops once
    max_i |mu_n(W_i) - nu_i| <= tol (tol = 0 asks for exact cell counts, reachable when n nu_i are integers) or after
    ``max_iter`` steps. Returns the map and the number of steps taken.
    """
    source = check_finite(as_float_tensor(source, "source"), "source")
    targets = check_finite(as_float_tensor(targets, "targets", source.dtype), "targets")
    if source.ndim != 2 or targets.ndim != 2 or source.shape[1] != targets.shape[1]:
        raise ValueError(
            f"source (n, d) and targets (N, d) must share d, got {tuple(source.shape)} and {tuple(targets.shape)}"
        )
    N = targets.shape[0]
    if weights is None:
        weights = torch.full((N,), 1.0 / N, dtype=source.dtype)
    weights = as_float_tensor(weights, "weights", source.dtype)
    check_probability_vector(weights, "weights")
    if weights.shape != (N,):
        raise ValueError(f"weights must have shape ({N},) to match targets, got {tuple(weights.shape)}")
    if lr <= 0 or max_iter < 1 or tol < 0:
        raise ValueError(f"need lr > 0, max_iter >= 1, tol >= 0; got lr={lr}, max_iter={max_iter}, tol={tol}")
    # Scale the step by the typical score gap: heights live on the scale of <x, y>.
    scale = float(targets.norm(dim=1).max()) * float(source.norm(dim=1).mean())
    h = torch.zeros(N, dtype=source.dtype)
    sd = SemiDiscreteOT(targets, weights, h)
    for k in range(max_iter):
        g = sd.cell_masses(source) - weights  # the gradient of E(h): mu(W_i) - nu_i
        if float(g.abs().max()) <= tol + 1e-15:
            return sd, k
        h = h - lr * scale / math.sqrt(1.0 + k / 100.0) * g
        sd = SemiDiscreteOT(targets, weights, h - h.mean())  # E is invariant to a common shift of h
    return sd, max_iter


def is_cyclically_monotone(x: Tensor, y: Tensor, atol: float = 0.0) -> tuple[bool, float]:
    """Whether no 2-swap of the pairs (x_a, y_a) lowers sum |x - y|^2, i.e. <x_a, y_a> + <x_b, y_b> >= <x_a, y_b> +
    <x_b, y_a> - atol for all a, b. Returns (holds, the largest gain of a swap)."""
    x, y = check_tensor(x, "x"), check_tensor(y, "y")
    check_number(atol, "atol", 0.0)
    if x.shape != y.shape or x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(
            f"x and y must be paired points of the same shape (B, d), got {tuple(x.shape)}, {tuple(y.shape)}"
        )
    inner = x @ y.T  # (B, B): <x_a, y_b>
    diag = inner.diagonal()
    gain = inner + inner.T - diag[:, None] - diag[None, :]  # improvement of swapping the targets of a and b
    if not bool(torch.isfinite(gain).all()):
        raise ValueError("x and y are too large: their inner products overflow float64")
    worst = float(gain.max())
    return worst <= atol, worst
