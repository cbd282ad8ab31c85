"""The 8x8 digits that ship with scikit-learn (1797 images, no download), as data for the toys.

``digits_images`` scales the 0..16 grey levels to [-1, 1]; ``gaussian_fit`` turns any data set into a
single-Gaussian ``GaussianMixture`` (the exact toy closest to it); ``dct_basis`` is the orthonormal 2-D
DCT-II basis, the frequency coordinates of the "frequency view" of Yang et al. (Diffusion Probabilistic
Model Made Slim, arXiv:2211.17106v1, Sec. 3). ``digits_split`` is the fixed train / held-out split of the
trained toys (``toy_models.train``, ``toy_models.metrics``) and ``as_images`` the (B, 1, 8, 8) image view.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from toy_models.gmm import GaussianMixture

__all__ = ["HELDOUT_EVERY", "as_images", "dct_basis", "digits_images", "digits_split", "gaussian_fit"]


def digits_images() -> tuple[Tensor, Tensor]:
    """All 1797 scikit-learn digits as float64 (1797, 64) in [-1, 1], row-major 8x8, and their labels."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.as_tensor(data.data, dtype=torch.float64) / 8.0 - 1.0
    return x, torch.as_tensor(data.target)


def gaussian_fit(x: Tensor, ridge: float = 1e-3) -> GaussianMixture:
    """The Gaussian with the sample mean and covariance of x (N, d), plus ``ridge`` I.

    The ridge keeps the covariance positive definite when some coordinates never vary (the digits'
    blank border pixels).
    """
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"x must have shape (N >= 2, d), got {tuple(x.shape)}")
    if ridge <= 0:
        raise ValueError(f"ridge must be positive, got {ridge}")
    mean = x.mean(0)
    cov = torch.cov(x.T) + ridge * torch.eye(x.shape[1], dtype=x.dtype)
    return GaussianMixture(torch.ones(1, dtype=x.dtype), mean[None], cov[None])


def dct_basis(n: int = 8) -> tuple[Tensor, Tensor]:
    """Orthonormal 2-D DCT-II basis of n x n images: (n^2, n^2) rows = basis images, and each row's radial
    frequency sqrt(u^2 + v^2) in cycles per 2n pixels."""
    k = torch.arange(n, dtype=torch.float64)
    c = torch.cos(math.pi * (2 * k[None, :] + 1) * k[:, None] / (2 * n))  # c[u, pixel]
    scale = torch.full((n, 1), math.sqrt(2 / n), dtype=torch.float64)
    scale[0] = math.sqrt(1 / n)
    c = c * scale
    basis = torch.einsum("ux,vy->uvxy", c, c).reshape(n * n, n * n)
    freq = torch.sqrt(k[:, None] ** 2 + k[None, :] ** 2).reshape(-1)
    return basis, freq


# --- the fixed train / held-out split of the trained toys (toy_models.train, toy_models.metrics) -------------

#: Every HELDOUT_EVERY-th image of each class (in scikit-learn's order) is held out: 355 held-out images
#: (34 to 36 per class) and 1442 training images.
HELDOUT_EVERY = 5


def digits_split() -> tuple[Tensor, Tensor]:
    """Indices (train, held_out) into ``digits_images()``: a fixed, stratified split with no randomness.

    Within each class, the images are ranked in scikit-learn's order; the ranks r with
    r % HELDOUT_EVERY == HELDOUT_EVERY - 1 (the 5th, 10th, ... image of each class) are held out.
    Both index tensors are sorted (int64).
    """
    _, labels = digits_images()
    rank = torch.zeros_like(labels)
    for c in labels.unique():
        members = torch.nonzero(labels == c).squeeze(1)
        rank[members] = torch.arange(members.numel())
    held_out = rank % HELDOUT_EVERY == HELDOUT_EVERY - 1
    return torch.nonzero(~held_out).squeeze(1), torch.nonzero(held_out).squeeze(1)


def as_images(x: Tensor) -> Tensor:
    """Flat digits (B, 64) as images (B, 1, 8, 8), row-major; images pass through unchanged."""
    if x.ndim == 4 and tuple(x.shape[1:]) == (1, 8, 8):
        return x
    if x.ndim != 2 or x.shape[1] != 64:
        raise ValueError(f"digits must have shape (B, 64) or (B, 1, 8, 8), got {tuple(x.shape)}")
    return x.reshape(-1, 1, 8, 8)
