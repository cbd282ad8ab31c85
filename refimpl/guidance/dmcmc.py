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

from refimpl._validation import as_positive_float, check_instance, check_integer, check_real_tensor
from toy_models.gmm import GaussianMixture

__all__ = ["dlg_sweep", "langevin_step", "sigma_log_posterior"]

SIGMA_STEPS = ("gibbs", "argmax")


def _points(x: object, mixture: GaussianMixture) -> Tensor:
    x = check_real_tensor(x, "x", 2)
    if x.shape[1] != mixture.d:
        raise ValueError(f"x must be points (B, {mixture.d}) of the mixture's dimension, got {tuple(x.shape)}")
    return x


def sigma_log_posterior(mixture: GaussianMixture, x: Tensor, sigmas: Tensor, log_prior: Tensor) -> Tensor:
    """log p(j | x) on the grid: log pi_j + log p_{sigma_j}(x), normalised over j: (B, J)."""
    check_instance(mixture, GaussianMixture, "mixture")
    x = _points(x, mixture)
    sigmas = check_real_tensor(sigmas, "sigmas", 1)
    if bool((sigmas <= 0).any()):
        raise ValueError("sigmas must be positive noise levels")
    log_prior = check_real_tensor(log_prior, "log_prior", 1, log_weights=True)
    if log_prior.shape != sigmas.shape:
        raise ValueError(f"log_prior must hold one entry per level ({sigmas.numel()}), got {log_prior.numel()}")
    logits = torch.stack([mixture.log_prob_t(x, 1.0, float(s)) for s in sigmas], -1) + log_prior
    return torch.log_softmax(logits, -1)


def langevin_step(
    mixture: GaussianMixture, x: Tensor, sigma: Tensor, step: Tensor, z: Tensor, u: Tensor | None = None
) -> Tensor:
    """One Langevin step at noise levels sigma (B,) with step sizes (B,); with uniforms u (B,) a MALA step.

    x' = x + (step / 2) s(x, sigma) + sqrt(step) z; MALA accepts x' with probability
    min(1, p(x') q(x | x') / (p(x) q(x' | x))), q the Gaussian proposal (Roberts & Tweedie 1996).
    """
    check_instance(mixture, GaussianMixture, "mixture")
    x = _points(x, mixture)
    sigma, step = check_real_tensor(sigma, "sigma", 1), check_real_tensor(step, "step", 1)
    z = check_real_tensor(z, "z", 2)
    if sigma.shape != (x.shape[0],) or step.shape != sigma.shape or z.shape != x.shape:
        raise ValueError(f"sigma, step (B,) and z (B, d) must match x {tuple(x.shape)}")
    if bool((sigma <= 0).any()) or bool((step <= 0).any()):
        raise ValueError("sigma and step must be positive")
    if u is not None:
        u = check_real_tensor(u, "u", 1)
        if u.shape != sigma.shape or bool(((u < 0) | (u > 1)).any()):
            raise ValueError("u must hold one uniform in [0, 1] per point")
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
    check_instance(mixture, GaussianMixture, "mixture")
    x = _points(x, mixture)
    sigmas = check_real_tensor(sigmas, "sigmas", 1)
    check_instance(j, Tensor, "j")
    if j.is_floating_point() or j.is_complex() or j.dtype == torch.bool or j.shape != (x.shape[0],):
        raise TypeError(f"j must hold one integer level per point, got {j.dtype} of shape {tuple(j.shape)}")
    if bool(((j < 0) | (j >= sigmas.numel())).any()):
        raise ValueError(f"j must lie in [0, {sigmas.numel()})")
    n_langevin = check_integer(n_langevin, "n_langevin", 1)
    if sigma_step not in SIGMA_STEPS:
        raise ValueError(f"sigma_step must be one of {SIGMA_STEPS}, got {sigma_step!r}")
    eta = as_positive_float(eta, "eta")
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
