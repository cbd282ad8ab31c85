"""Active diffusion subsampling: choose the next measurement where the predicted measurement has maximum entropy
(Nolan et al. 2024, arXiv:2406.14388v2 [unverified version], Sec. 3 [unverified]).

Measurements are coordinates of x observed with Gaussian noise, y_i = x_i + n_i, n_i ~ N(0, s^2). Given the
measurements so far, the predicted measurement y_i is x_i + n_i with x drawn from the posterior, so for a Gaussian
posterior its entropy is (1/2) log(2 pi e (Sigma_post,ii + s^2)): maximum entropy = maximum posterior variance.
ADS estimates that entropy from particles (posterior samples carried through a guided reverse diffusion); here the
particles' predicted measurements are fitted by a Gaussian, which is exact for Gaussian beliefs.

For a Gaussian-mixture prior the posterior given linear Gaussian measurements is again a mixture (each component
conditioned, weights times the component's evidence), so the lab has an exact posterior to compare the particles
with (``mixture_posterior``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from toy_models.gmm import GaussianMixture

__all__ = ["max_entropy_index", "measurement_entropy", "mixture_posterior"]


def _check_observed(observed: Tensor, d: int) -> Tensor:
    observed = torch.as_tensor(observed, dtype=torch.long).reshape(-1)
    if bool(((observed < 0) | (observed >= d)).any()) or len(set(observed.tolist())) != observed.numel():
        raise ValueError(f"observed must hold distinct coordinates in [0, {d}), got {observed.tolist()}")
    return observed


def mixture_posterior(prior: GaussianMixture, observed: Tensor, y: Tensor, noise_var: float) -> GaussianMixture:
    """The exact posterior of x given y = x[observed] + N(0, noise_var I), for a mixture prior (a mixture)."""
    if not noise_var > 0:
        raise ValueError(f"noise_var must be positive, got {noise_var}")
    obs = _check_observed(observed, prior.d)
    H = torch.eye(prior.d, dtype=prior.dtype)[obs]  # (m, d)
    S = H @ prior.covariances @ H.T + noise_var * torch.eye(len(obs), dtype=prior.dtype)  # (K, m, m)
    gain = prior.covariances @ H.T @ torch.linalg.inv(S)  # (K, d, m)
    resid = y.reshape(1, -1) - prior.means @ H.T  # (K, m)
    means = prior.means + torch.einsum("kdm,km->kd", gain, resid)
    covs = prior.covariances - gain @ H @ prior.covariances
    log_ev = torch.distributions.MultivariateNormal(prior.means @ H.T, S).log_prob(y.reshape(1, -1))
    weights = torch.softmax(torch.log(prior.weights) + log_ev, 0)
    return GaussianMixture(weights, means, 0.5 * (covs + covs.mT), prior.labels)


def measurement_entropy(particles: Tensor, noise_var: float) -> Tensor:
    """Entropy of each coordinate's predicted measurement from particles (K, d), by a Gaussian fit: (d,)."""
    if particles.ndim != 2 or particles.shape[0] < 2:
        raise ValueError(f"particles must be (K, d) with K >= 2, got {tuple(particles.shape)}")
    return 0.5 * torch.log(2 * math.pi * math.e * (particles.var(0) + noise_var))


def max_entropy_index(particles: Tensor, observed: Tensor, noise_var: float) -> int:
    """The unobserved coordinate whose predicted measurement has the largest entropy."""
    obs = _check_observed(observed, particles.shape[-1])
    h = measurement_entropy(particles, noise_var).clone()
    h[obs] = -torch.inf
    if bool(torch.isinf(h).all()):
        raise ValueError("every coordinate is already observed")
    return int(h.argmax())
