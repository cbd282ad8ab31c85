"""Named toy data laws used across the book, the tests and the benchmarks.

Each function returns a fresh float64 ``GaussianMixture``; random ones take a seed so that
every chapter can name exactly which toy it used.
"""

from __future__ import annotations

import math

import torch

from toy_models.gmm import GaussianMixture

__all__ = ["anisotropic_gaussian", "labelled_pair", "random_mixture", "ring"]


def ring(K: int = 8, radius: float = 2.0, std: float = 0.15) -> GaussianMixture:
    """K equal-weight isotropic components on a circle in 2-D; labels alternate 0, 1."""
    angle = 2 * math.pi * torch.arange(K, dtype=torch.float64) / K
    means = radius * torch.stack([torch.cos(angle), torch.sin(angle)], -1)
    covs = std**2 * torch.eye(2, dtype=torch.float64).expand(K, 2, 2).clone()
    return GaussianMixture(torch.full((K,), 1.0 / K, dtype=torch.float64), means, covs, torch.arange(K) % 2)


def labelled_pair() -> GaussianMixture:
    """Two classes in 2-D, two elongated components each: the conditional toy for guidance and editing."""
    means = torch.tensor([[-1.5, 1.0], [-1.0, -1.5], [1.5, 1.0], [1.0, -1.5]], dtype=torch.float64)
    rot = torch.tensor([[[0.30, 0.12], [0.12, 0.10]], [[0.10, -0.05], [-0.05, 0.25]]], dtype=torch.float64)
    covs = torch.cat([rot, rot.flip(-1).flip(-2)])
    weights = torch.tensor([0.3, 0.2, 0.25, 0.25], dtype=torch.float64)
    return GaussianMixture(weights, means, covs, torch.tensor([0, 0, 1, 1]))


def random_mixture(
    K: int = 4, d: int = 16, seed: int = 0, spread: float = 2.0, eig_range: tuple[float, float] = (0.05, 1.0)
) -> GaussianMixture:
    """K components in d dimensions with random means (norm about ``spread``), random full
    covariances and Dirichlet(2) weights.

    Covariance eigenvalues are log-uniform in ``eig_range``; eigenvectors are Haar-random.
    """
    g = torch.Generator().manual_seed(seed)
    # Dirichlet(2, ..., 2): normalised Gamma(2) draws, each the sum of two unit exponentials.
    weights = -torch.log(torch.rand(K, 2, generator=g, dtype=torch.float64)).sum(-1)
    weights = weights / weights.sum()
    means = spread * torch.randn(K, d, generator=g, dtype=torch.float64) / math.sqrt(d)
    q, _ = torch.linalg.qr(torch.randn(K, d, d, generator=g, dtype=torch.float64))
    lo, hi = math.log(eig_range[0]), math.log(eig_range[1])
    eig = torch.exp(lo + (hi - lo) * torch.rand(K, d, generator=g, dtype=torch.float64))
    covs = q @ torch.diag_embed(eig) @ q.mT
    return GaussianMixture(weights, means, 0.5 * (covs + covs.mT), torch.arange(K) % 2)


def anisotropic_gaussian(d: int = 2, seed: int = 0, eig_range: tuple[float, float] = (0.1, 2.0)) -> GaussianMixture:
    """A single Gaussian (K = 1) with a random mean and a random full covariance: the closed-form ODE toy."""
    return random_mixture(K=1, d=d, seed=seed, spread=1.0, eig_range=eig_range)
