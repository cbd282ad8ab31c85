"""Denoising MCMC: a Gibbs chain on (x, sigma), then an ODE integrator from the chain's sigma (Kim & Ye 2022,
arXiv:2209.14593v2 [unverified version]; the Denoising Langevin Gibbs sampler, their Algorithm 1 [unverified]).

On a variance-exploding path x_sigma = x_0 + sigma eps with noise levels on a grid sigma_1 > ... > sigma_J and a
prior pi_j, the joint p(x, j) = pi_j p_{sigma_j}(x) has the conditionals

    x | j  ~  p_{sigma_j}   (Langevin: x <- x + (eps_j / 2) s(x, sigma_j) + sqrt(eps_j) z, eps_j = eta sigma_j^2),
    j | x  ~  pi_j p_{sigma_j}(x) / sum_i pi_i p_{sigma_i}(x).

Alternating exact draws from both is a Gibbs sampler of the joint. The unadjusted Langevin step is biased at
finite eta (for Gaussian data its stationary variance is c / (1 - eps / (4 c)), tested); a Metropolis correction
(MALA) makes it exact. The official code's sigma step takes the arg-max of a noise-level classifier, a MAP step
with no invariance guarantee; chapter 6 measures the joint it produces.
"""

from __future__ import annotations

import torch
from torch import Tensor

from toy_models.gmm import GaussianMixture

__all__ = ["dlg_sweep", "langevin_step", "sigma_log_posterior"]

SIGMA_STEPS = ("gibbs", "argmax")


def sigma_log_posterior(mixture: GaussianMixture, x: Tensor, sigmas: Tensor, log_prior: Tensor) -> Tensor:
    """log p(j | x) on the grid: log pi_j + log p_{sigma_j}(x), normalised over j: (B, J)."""
    logits = torch.stack([mixture.log_prob_t(x, 1.0, float(s)) for s in sigmas], -1) + log_prior
    return torch.log_softmax(logits, -1)


def langevin_step(
    mixture: GaussianMixture, x: Tensor, sigma: Tensor, step: Tensor, z: Tensor, u: Tensor | None = None
) -> Tensor:
    """One Langevin step at noise levels sigma (B,) with step sizes (B,); with uniforms u (B,) a MALA step.

    x' = x + (step / 2) s(x, sigma) + sqrt(step) z; MALA accepts x' with probability
    min(1, p(x') q(x | x') / (p(x) q(x' | x))), q the Gaussian proposal (Roberts & Tweedie 1996).
    """
    a = torch.ones_like(sigma)
    eps = step[:, None]
    score = mixture.score(x, a, sigma)
    proposal = x + 0.5 * eps * score + torch.sqrt(eps) * z
    if u is None:
        return proposal
    back = x - proposal - 0.5 * eps * mixture.score(proposal, a, sigma)
    log_ratio = (
        mixture.log_prob_t(proposal, a, sigma)
        - mixture.log_prob_t(x, a, sigma)
        - (back**2).sum(-1) / (2 * step)
        + (z**2).sum(-1) / 2
    )
    accept = torch.log(u) < log_ratio
    return torch.where(accept[:, None], proposal, x)


def dlg_sweep(
    mixture: GaussianMixture,
    x: Tensor,
    j: Tensor,
    sigmas: Tensor,
    log_prior: Tensor,
    *,
    eta: float,
    n_langevin: int = 1,
    sigma_step: str = "gibbs",
    metropolis: bool = False,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """One Gibbs sweep: n_langevin Langevin (or MALA) steps at sigma_j, then a sigma step ("gibbs": draw j from
    p(j | x); "argmax": its mode). Returns the new (x, j); costs n_langevin (x2 with MALA) + J density evaluations."""
    if sigma_step not in SIGMA_STEPS:
        raise ValueError(f"sigma_step must be one of {SIGMA_STEPS}, got {sigma_step!r}")
    if not eta > 0:
        raise ValueError(f"eta must be positive, got {eta}")
    sigma = sigmas[j]
    for _ in range(n_langevin):
        z = torch.randn(x.shape, generator=generator, dtype=x.dtype)
        u = torch.rand(x.shape[0], generator=generator, dtype=x.dtype) if metropolis else None
        x = langevin_step(mixture, x, sigma, eta * sigma**2, z, u)
    log_post = sigma_log_posterior(mixture, x, sigmas, log_prior)
    if sigma_step == "gibbs":
        j = torch.multinomial(log_post.exp(), 1, generator=generator)[:, 0]
    else:
        j = log_post.argmax(-1)
    return x, j
