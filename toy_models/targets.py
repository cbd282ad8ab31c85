"""Exact targets of guidance on the mixture lab: conditional, tilted, annealed and product laws, and p(y | x_t).

Guidance aims at laws built from the data law p (``GaussianMixture``) and its class conditionals p_c:

* the conditional p(x | y) -- the components labelled y, weights renormalised (``conditional``);
* the exact time-dependent classifier p(y | x_t) = sum_{k: label k = y} r_k(x_t) and its gradient
  grad log p(y | x_t) = grad log p_t(x | y) - grad log p_t(x) (``class_log_probs``, ``classifier_grad``);
* the product of two mixtures, itself a mixture in closed form (``product``);
* the geometric tilt p_c^w p_u^(1 - w) (the law classifier-free guidance is said to sample) and the annealed
  p^beta: no closed form for mixtures, so they are computed by quadrature on a grid in d = 1 or 2
  (``GridDensity``), normalised there, with exact reference samples from the grid law (a cell by its mass, then
  uniform inside it) and, in d = 1, the exact quantile function of that law.

The grid law is the target with its density made piecewise constant on cells of width h: its mean is the continuous
target's and its covariance exceeds it by diag(h^2 / 12) (the uniform spread inside a cell), up to the midpoint rule's
error, exponentially small for these smooth, fast-decaying densities (checked to 1e-9 in ``tests/test_targets.py``
against the closed-form Gaussian tilt).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from refimpl._validation import as_float_tensor, check_finite
from toy_models.gmm import GaussianMixture

__all__ = [
    "GridDensity",
    "annealed",
    "check_label",
    "class_log_probs",
    "classifier_grad",
    "conditional",
    "gaussian_tilt",
    "grid_density",
    "labelled_line",
    "product",
    "sample_labelled",
    "tilted",
    "wasserstein_1d",
]


def labelled_line() -> GaussianMixture:
    """A labelled 1-D mixture: class 0 one component at -2, class 1 two components at 0.5 and 2.5 (the CFG toy)."""
    return GaussianMixture(
        torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64),
        torch.tensor([[-2.0], [0.5], [2.5]], dtype=torch.float64),
        torch.tensor([[[0.3]], [[0.4]], [[0.25]]], dtype=torch.float64),
        torch.tensor([0, 1, 1]),
    )


def _classes(mixture: GaussianMixture) -> list[int]:
    if mixture.labels is None:
        raise ValueError("this mixture has no labels")
    return sorted(set(mixture.labels.tolist()))


def check_label(mixture: GaussianMixture, y: int) -> int:
    """Return y if it is one of the mixture's class labels, else raise ValueError naming the classes."""
    classes = _classes(mixture)
    if isinstance(y, bool) or not isinstance(y, int) or y not in classes:
        raise ValueError(f"label y must be one of the classes {classes}, got {y!r}")
    return y


def conditional(mixture: GaussianMixture, y: int) -> GaussianMixture:
    """p(x | y): the components labelled y with weights w_k / sum_{label j = y} w_j."""
    return mixture.condition(check_label(mixture, y))


def sample_labelled(
    mixture: GaussianMixture, n: int, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """n exact draws (x_0, y) of the labelled joint law: a component drawn by its responsibility at x_0, y its label."""
    x0 = mixture.sample(n, generator)
    idx = torch.multinomial(mixture.responsibilities(x0, 1.0, 0.0), 1, generator=generator)[:, 0]
    return x0, mixture.labels[idx]


def class_log_probs(mixture: GaussianMixture, x: Tensor, alpha: object, sigma: object) -> Tensor:
    """log p(y | x_t) for every class y (columns in sorted label order): (B, C).

    Bayes' rule on the noised mixture: p(y | x_t) = sum over components k labelled y of r_k(x_t).
    """
    classes = _classes(mixture)
    log_r = torch.log_softmax(mixture._terms(x, alpha, sigma)[2], -1)  # (B, K); gmm has no public log r_k yet
    return torch.stack([torch.logsumexp(log_r[:, mixture.labels == c], -1) for c in classes], -1)


def classifier_grad(mixture: GaussianMixture, x: Tensor, alpha: object, sigma: object, y: int) -> Tensor:
    """grad_x log p(y | x_t) = grad log p_t(x | y) - grad log p_t(x): (B, d), the exact guidance direction."""
    return conditional(mixture, y).score(x, alpha, sigma) - mixture.score(x, alpha, sigma)


def product(first: GaussianMixture, second: GaussianMixture) -> GaussianMixture:
    """The normalised product p_1(x) p_2(x) of two mixtures: a mixture of K_1 K_2 Gaussians.

    N(x; m_i, S_i) N(x; n_j, T_j) = N(m_i; n_j, S_i + T_j) N(x; c_ij, P_ij) with
    P_ij = (S_i^{-1} + T_j^{-1})^{-1} and c_ij = P_ij (S_i^{-1} m_i + T_j^{-1} n_j); the weights are
    w_i v_j N(m_i; n_j, S_i + T_j), normalised (Petersen & Pedersen, The Matrix Cookbook, Sec. 8.1.8).
    """
    if first.d != second.d:
        raise ValueError(f"both mixtures must have the same dimension, got {first.d} and {second.d}")
    S, T = first.covariances[:, None], second.covariances[None, :]  # (K1, 1, d, d), (1, K2, d, d)
    m, n = first.means[:, None], second.means[None, :]
    S_inv, T_inv = torch.linalg.inv(S), torch.linalg.inv(T)
    P = torch.linalg.inv(S_inv + T_inv)
    c = torch.einsum(
        "abij,abj->abi", P, torch.einsum("abij,abj->abi", S_inv, m) + torch.einsum("abij,abj->abi", T_inv, n)
    )
    log_z = torch.distributions.MultivariateNormal(n.expand_as(c), S + T).log_prob(m.expand_as(c))
    log_w = torch.log(first.weights)[:, None] + torch.log(second.weights)[None, :] + log_z
    weights = torch.softmax(log_w.reshape(-1), 0)
    d = first.d
    return GaussianMixture(weights, c.reshape(-1, d), (0.5 * (P + P.mT)).reshape(-1, d, d))


def gaussian_tilt(cond: GaussianMixture, uncond: GaussianMixture, w: float) -> GaussianMixture:
    """Closed form of N_c^w N_u^(1 - w) for single Gaussians (K = 1): precision w Lambda_c + (1 - w) Lambda_u.

    Defined when that precision is positive definite (always for 0 <= w <= 1; for w > 1 when w Lambda_c
    dominates (w - 1) Lambda_u); ValueError otherwise.
    """
    if cond.K != 1 or uncond.K != 1:
        raise ValueError("gaussian_tilt needs single Gaussians (K = 1); use tilted() on a grid for mixtures")
    _check_weight(w, "w")
    L_c, L_u = torch.linalg.inv(cond.covariances[0]), torch.linalg.inv(uncond.covariances[0])
    precision = w * L_c + (1 - w) * L_u
    if bool(torch.linalg.cholesky_ex(precision)[1] != 0):
        raise ValueError(f"the tilt with w = {w} has no normalisable density (its precision is not positive definite)")
    cov = torch.linalg.inv(precision)
    mean = cov @ (w * L_c @ cond.means[0] + (1 - w) * L_u @ uncond.means[0])
    return GaussianMixture(torch.ones(1, dtype=cov.dtype), mean[None], (0.5 * (cov + cov.mT))[None])


def _check_weight(value: float, name: str) -> float:
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    return value


@dataclass(frozen=True, eq=False)
class GridDensity:
    """A normalised density tabulated on a tensor-product grid of cell centres in d = 1 or 2.

    ``axes`` holds the d 1-D arrays of cell centres (uniform spacing ``h`` per axis), ``points`` (M, d) the
    centres in row-major order and ``mass`` (M,) the probability of each cell (sums to 1).
    """

    axes: tuple[Tensor, ...]
    points: Tensor
    mass: Tensor

    @property
    def d(self) -> int:
        return len(self.axes)

    @property
    def h(self) -> Tensor:
        """Cell widths, one per axis: (d,)."""
        return torch.stack([a[1] - a[0] for a in self.axes])

    def mean(self) -> Tensor:
        """E[x] under the grid law: (d,)."""
        return self.mass @ self.points

    def covariance(self) -> Tensor:
        """Cov[x] under the grid law (uniform within cells: + h^2 / 12 on the diagonal): (d, d)."""
        centred = self.points - self.mean()
        return torch.einsum("m,mi,mj->ij", self.mass, centred, centred) + torch.diag(self.h**2 / 12)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n exact draws from the grid law: a cell by its mass, then uniform within the cell: (n, d)."""
        if n < 1:
            raise ValueError(f"n must be positive, got {n}")
        idx = torch.multinomial(self.mass, n, replacement=True, generator=generator)
        jitter = torch.rand(n, self.d, generator=generator, dtype=self.points.dtype) - 0.5
        return self.points[idx] + jitter * self.h

    def quantile(self, u: Tensor) -> Tensor:
        """The quantile function of the grid law at levels u in (0, 1), d = 1 only: (len(u),).

        The CDF is piecewise linear (uniform within cells), so its inverse is exact linear interpolation.
        """
        if self.d != 1:
            raise ValueError("quantile needs a one-dimensional grid law")
        u = as_float_tensor(u, "u", self.mass.dtype)
        if bool(((u <= 0) | (u >= 1)).any()):
            raise ValueError("quantile levels u must lie strictly inside (0, 1)")
        edges = torch.cat([self.points[:1, 0] - self.h[0] / 2, self.points[:, 0] + self.h[0] / 2])
        cdf = torch.cat([torch.zeros(1, dtype=u.dtype), torch.cumsum(self.mass, 0)])
        j = torch.searchsorted(cdf, u).clamp(1, len(cdf) - 1)
        frac = (u - cdf[j - 1]) / (cdf[j] - cdf[j - 1]).clamp_min(torch.finfo(u.dtype).tiny)
        return edges[j - 1] + frac * (edges[j] - edges[j - 1])


def grid_density(log_density: Callable[[Tensor], Tensor], lo: object, hi: object, n: int) -> GridDensity:
    """Tabulate an unnormalised log density on n cells per axis over the box [lo, hi] (d = len(lo) <= 2).

    The box must hold all but a negligible mass of the law (the caller's choice; the book uses mean +- 8 std).
    """
    lo_t, hi_t = as_float_tensor(lo, "lo").reshape(-1), as_float_tensor(hi, "hi").reshape(-1)
    if lo_t.shape != hi_t.shape or lo_t.numel() not in (1, 2) or not bool((lo_t < hi_t).all()):
        raise ValueError("lo and hi must be 1 or 2 numbers with lo < hi")
    if n < 2:
        raise ValueError(f"n must be at least 2 cells per axis, got {n}")
    h = (hi_t - lo_t) / n
    axes = tuple(lo_t[i] + h[i] * (torch.arange(n, dtype=h.dtype) + 0.5) for i in range(len(lo_t)))
    points = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, len(axes))
    log_p = check_finite(log_density(points), "log density on the grid")
    return GridDensity(axes, points, torch.softmax(log_p, 0))


def tilted(cond: GaussianMixture, uncond: GaussianMixture, w: float, lo: object, hi: object, n: int) -> GridDensity:
    """The geometric tilt p_c^w p_u^(1 - w), w >= 0, on a grid: w = 1 is p_c, w = 0 is p_u.

    The law classifier-free guidance with weight w is often said to sample (Ho & Salimans 2022,
    arXiv:2207.12598v1, Sec. 3.2); chapter 6 measures how far from it CFG lands.
    """
    w = _check_weight(w, "w")
    return grid_density(lambda x: w * cond.log_prob(x) + (1 - w) * uncond.log_prob(x), lo, hi, n)


def annealed(mixture: GaussianMixture, beta: float, lo: object, hi: object, n: int) -> GridDensity:
    """p^beta / Z on a grid, beta > 0 (beta = 1 is p; beta > 1 sharpens the modes, beta < 1 flattens them)."""
    beta = _check_weight(beta, "beta")
    if beta == 0:
        raise ValueError("beta must be > 0 (p^0 is not normalisable on the whole space)")
    return grid_density(lambda x: beta * mixture.log_prob(x), lo, hi, n)


def wasserstein_1d(quantiles_a: Tensor, quantiles_b: Tensor) -> float:
    """W1 between two 1-D laws from their quantiles at the same equally spaced levels (midpoint rule)."""
    if quantiles_a.shape != quantiles_b.shape:
        raise ValueError("both quantile tensors must have the same shape")
    return float((quantiles_a - quantiles_b).abs().mean())
