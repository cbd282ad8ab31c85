"""Minority guidance: a Tweedie-based uniqueness score, and guidance towards its rare class (Um et al. 2023,
arXiv:2301.12334v2, the latest version, Feb 2024).

The minority score of a clean sample x_0 at a fixed noise level t is how badly one denoising step reconstructs it,

    l(x_0) = E_eps d(x_0, x0_hat(alpha_t x_0 + sigma_t eps)),                           (their Eq. 7, per their README)

with d the squared error here (LPIPS in the paper). Tweedie's x0_hat pulls towards high-density regions, so samples
from rare modes reconstruct worse. The paper then labels training data by quantiles of l, trains a classifier
p(c | x_t) on those labels and runs classifier guidance towards the rarest class; on the mixture lab the exact
component classifier plays that role (chapter 6 measures how often the top quantile of l is the rare component).
"""

from __future__ import annotations

from torch import Tensor

from refimpl.models import DiffusionModel, check_model, predict

__all__ = ["minority_score"]


def minority_score(model: DiffusionModel, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
    """l(x_0) for each row of x0 (B, d), averaged over the draws noise (M, B, d): returns (B,)."""
    check_model(model)
    if noise.ndim != x0.ndim + 1 or noise.shape[1:] != x0.shape or noise.shape[0] == 0:
        raise ValueError(f"noise must have shape (M, *x0.shape) with M >= 1, got {tuple(noise.shape)}")
    v = model.schedule(t)
    M = noise.shape[0]
    x_t = (v.alpha * x0[None] + v.sigma * noise).reshape(-1, *x0.shape[1:])
    x0_hat = predict(model, x_t, v.t, "x0").reshape(noise.shape)
    return ((x0_hat - x0[None]) ** 2).flatten(2).sum(-1).sum(0) / M
