"""Reusable pieces of the application gallery (chapter 13), each on an exact toy.

* Tex4D (Bao et al., arXiv:2410.10821v1, Sec. 3): latents of K views rendered into one texture are averaged. If
  each view's latent is x_t^k = sqrt(abar) x_0 + sqrt(1 - abar) eps_k with independent eps_k, the average keeps the
  signal and shrinks the noise part's variance to (1 - abar) / K:
      Var(xbar_t) = abar Var(x_0) + (1 - abar) / K.
  A DDIM step assumes noise variance 1 - abar, so it treats the average as a cleaner x_t than it is and its output
  has too little spread (``ode_output_variance``). Re-noising the average with independent noise of variance
  (1 - abar)(1 - 1/K) restores the marginal exactly (``renoise_average``); the paper states only that it makes a
  "simple modification to DDIM" against this blur, so this correction is the generic one, not its exact recipe.
* DomainStudio (Zhu et al., arXiv:2306.14153v4, Sec. 3.2): a pairwise-similarity-preservation loss keeps the
  relative distances between generated samples when adapting a model: for a batch, each sample's softmax
  distribution of cosine similarities to the others, under the source and the adapted model, compared by KL.
  Zero iff the distributions match; invariant to rescaling any embedding (cosines).
* GMem (Tang et al., arXiv:2412.08781v1): conditioning on an entry of an external memory bank. On a Gaussian-mixture
  toy a memory entry is a component: the conditional model is that component, and the mixture's score is the
  responsibility-weighted sum of the components' scores (``mixture_score_from_components``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from refimpl._validation import check_instance, check_integer, check_number, check_tensor
from toy_models.gmm import GaussianMixture

__all__ = [
    "average_latents",
    "averaged_latent_variance",
    "memory_entry_model",
    "mixture_score_from_components",
    "ode_output_variance",
    "pairwise_similarity_loss",
    "renoise_average",
    "similarity_distributions",
]


def _check_abar(abar: float, K: int | None = None) -> None:
    if not 0.0 < check_number(abar, "abar") < 1.0:
        raise ValueError(f"abar must lie in (0, 1), got {abar}")
    if K is not None:
        check_integer(K, "K (number of views)", 1)


def averaged_latent_variance(abar: float, var_x0: float, K: int) -> float:
    """abar Var(x_0) + (1 - abar) / K: the variance of the average of K latents with independent noise.

    Paper: Bao et al. (Tex4D), arXiv:2410.10821v1, Sec. 3; the variance formula is derived here, eq. [unverified].
    """
    _check_abar(abar, K)
    check_number(var_x0, "var_x0", 0.0)
    return abar * var_x0 + (1.0 - abar) / K


def average_latents(x0: Tensor, abar: float, K: int, generator: torch.Generator | None = None) -> Tensor:
    """(1/K) sum_k (sqrt(abar) x_0 + sqrt(1 - abar) eps_k) for each row of x0 (n, d): the averaged latent.

    Paper: Bao et al. (Tex4D), arXiv:2410.10821v1, Sec. 3, averaging the views' latents, eq. [unverified].
    """
    x0 = check_tensor(x0, "x0")
    _check_abar(abar, K)
    eps = torch.randn((K, *x0.shape), generator=generator, dtype=x0.dtype)
    return math.sqrt(abar) * x0 + math.sqrt(1.0 - abar) * eps.mean(0)


def renoise_average(xbar: Tensor, abar: float, K: int, generator: torch.Generator | None = None) -> Tensor:
    """Add independent noise of variance (1 - abar)(1 - 1/K): the noise part is then N(0, 1 - abar) again.

    Paper: Bao et al. (Tex4D), arXiv:2410.10821v1, Sec. 3; the generic correction, not the paper's own recipe (not
    stated in its text), eq. [unverified].
    """
    xbar = check_tensor(xbar, "xbar")
    _check_abar(abar, K)
    xi = torch.randn(xbar.shape, generator=generator, dtype=xbar.dtype)
    return xbar + math.sqrt((1.0 - abar) * (1.0 - 1.0 / K)) * xi


def ode_output_variance(var_in: float, abar: float, var_x0: float) -> float:
    """Variance at t = 0 of the exact probability-flow (DDIM) map of 1-D Gaussian data N(m, var_x0) started at
    noise level abar from a point law of variance var_in: the map scales by sqrt(var_x0 / (abar var_x0 + 1 - abar)).

    Helper, no paper equation: the exact DDIM output variance on 1-D Gaussian data, for the Tex4D section.
    """
    _check_abar(abar)
    check_number(var_in, "var_in", 0.0), check_number(var_x0, "var_x0", 0.0)
    return var_in * var_x0 / (abar * var_x0 + 1.0 - abar)


def similarity_distributions(z: Tensor, temperature: float = 1.0) -> Tensor:
    """(n, n - 1): row i is softmax_j (cos(z_i, z_j) / temperature) over j != i (DomainStudio's p_i).

    Paper: Zhu et al. (DomainStudio), arXiv:2306.14153v4, Sec. 3.2, the similarity distributions p_i, eq.
    [unverified].
    """
    return _similarity(z, temperature, "z")


def _similarity(z: Tensor, temperature: float, name: str) -> Tensor:
    z = check_tensor(z, name)
    if z.ndim != 2 or z.shape[0] < 3:
        raise ValueError(f"{name} must have shape (n >= 3, d), got {tuple(z.shape)}")
    if check_number(temperature, "temperature") <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    norm = z.norm(dim=1, keepdim=True)
    if not bool(((norm > 0) & torch.isfinite(norm)).all()):
        raise ValueError(f"{name} must have non-zero rows of finite norm (a cosine needs a direction)")
    u = z / norm
    sim = u @ u.T
    n = z.shape[0]
    off = ~torch.eye(n, dtype=torch.bool)
    return torch.softmax(sim[off].reshape(n, n - 1) / temperature, -1)


def pairwise_similarity_loss(source: Tensor, adapted: Tensor, temperature: float = 1.0) -> Tensor:
    """sum_i KL(p_i^source || p_i^adapted) of the similarity distributions (DomainStudio Sec. 3.2).

    Paper: Zhu et al. (DomainStudio), arXiv:2306.14153v4, Sec. 3.2, the pairwise-similarity-preservation loss, eq.
    [unverified].
    """
    source, adapted = check_tensor(source, "source"), check_tensor(adapted, "adapted")
    if source.shape != adapted.shape:
        raise ValueError(f"source and adapted must have one shape, got {tuple(source.shape)}, {tuple(adapted.shape)}")
    p = _similarity(source, temperature, "source")
    q = _similarity(adapted, temperature, "adapted")
    return (p * (p.log() - q.log())).sum()


def memory_entry_model(gmm: GaussianMixture, k: int) -> GaussianMixture:
    """The model conditioned on memory entry k: the k-th component alone.

    Paper: Tang et al. (GMem), arXiv:2412.08781v1, conditioning on a memory entry (here a mixture component), eq.
    [unverified].
    """
    check_instance(gmm, GaussianMixture, "gmm")
    if not 0 <= check_integer(k, "k") < gmm.K:
        raise ValueError(f"k must index a component in [0, {gmm.K}), got {k}")
    return GaussianMixture(torch.ones(1, dtype=gmm.dtype), gmm.means[k : k + 1], gmm.covariances[k : k + 1])


def mixture_score_from_components(gmm: GaussianMixture, x: Tensor, alpha: float, sigma: float) -> Tensor:
    """sum_k r_k(x_t) grad log p_t(x | k): the unconditional score from the memory-conditioned ones.

    Paper: Tang et al. (GMem), arXiv:2412.08781v1; the mixture-score identity is standard, derived here, eq.
    [unverified].
    """
    check_instance(gmm, GaussianMixture, "gmm")
    x = check_tensor(x, "x")
    check_number(alpha, "alpha"), check_number(sigma, "sigma")
    r = gmm.responsibilities(x, alpha, sigma)  # (B, K)
    scores = torch.stack([memory_entry_model(gmm, k).score(x, alpha, sigma) for k in range(gmm.K)], 1)
    return (r[..., None] * scores).sum(1)
