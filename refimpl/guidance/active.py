"""Active diffusion subsampling: choose the next measurement where the predicted measurement has maximum entropy
(Nolan et al. 2024, arXiv:2406.14388v2, Sec. 3 [unverified]).

Measurements are coordinates of x observed with Gaussian noise, y_i = x_i + n_i, n_i ~ N(0, s^2). Given the
measurements so far, the predicted measurement y_i is x_i + n_i with x drawn from the posterior, so for a Gaussian
posterior its entropy is (1/2) log(2 pi e (Sigma_post,ii + s^2)): maximum entropy = maximum posterior variance.
ADS estimates that entropy from particles (posterior samples carried through a guided reverse diffusion); here the
particles' predicted measurements are fitted by a Gaussian, which is exact for Gaussian beliefs.

For a Gaussian-mixture prior the posterior given linear Gaussian measurements is again a mixture (each component
conditioned, weights times the component's evidence), so the lab has an exact posterior to compare the particles
with (``mixture_posterior``).

ADS draws its particles by *guided* reverse diffusion of the prior model, adding grad log p(y | x_t) to the score
(``MeasurementGuidance``, the form of Eq. (1) of ``refimpl.guidance.classifier``). Two likelihoods:

* exact (``exact_measurement_likelihood``): for a mixture prior, (x_t, y) is jointly a mixture of Gaussians, so
  log p(y | x_t) = log p(x_t, y) - log p(x_t) in closed form; the guided model is then the posterior's model and
  the particles are exact posterior particles (up to the sampler's error);
* DPS (``dps_measurement_likelihood``; Chung et al. 2023, arXiv:2209.14687v4, Eq. 11 [unverified], the guidance ADS
  uses [unverified]): log N(y; x0_hat(x_t)[observed], s^2 I), the measurement of Tweedie's x0_hat, which drops the
  spread of x_0 around x0_hat (Cov[x_0 | x_t]); it is exact only as t -> 0.

``select_measurements`` is the ADS loop: draw particles given the measurements so far, measure the coordinate of
maximum predicted-measurement entropy, repeat.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from refimpl._validation import as_positive_float, check_finite, check_instance
from refimpl.guidance.cfg import check_guidance_weight
from refimpl.guidance.classifier import grad_log, guided_eps
from refimpl.models import DiffusionModel, check_model, predict
from refimpl.schedules import NoiseSchedule
from toy_models.gmm import GaussianMixture

__all__ = [
    "MeasurementGuidance",
    "dps_measurement_likelihood",
    "exact_measurement_likelihood",
    "max_entropy_index",
    "measurement_entropy",
    "measurement_guidance",
    "mixture_posterior",
    "select_measurements",
]

LogLikelihood = Callable[[Tensor, Tensor], Tensor]


def _check_observed(observed: Tensor, d: int | None) -> Tensor:
    """observed as distinct int64 coordinates in [0, d) (in [0, inf) when d is None)."""
    if isinstance(observed, Tensor) and (observed.is_floating_point() or observed.is_complex()):
        raise TypeError(f"observed must hold integer coordinates, got {observed.dtype}")
    try:
        observed = torch.as_tensor(observed, dtype=torch.long).reshape(-1)
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(f"observed must hold integer coordinates, got {type(observed).__name__}") from err
    too_big = d is not None and bool((observed >= d).any())
    if too_big or bool((observed < 0).any()) or len(set(observed.tolist())) != observed.numel():
        raise ValueError(f"observed must hold distinct coordinates in [0, {d or 'd'}), got {observed.tolist()}")
    return observed


def _check_measurements(observed: Tensor, y: Tensor, d: int | None, noise_var: object) -> tuple[Tensor, Tensor, float]:
    """observed (m,) long, y (m,) float and noise_var checked against each other and the dimension d."""
    obs = _check_observed(observed, d)
    check_instance(y, Tensor, "y")
    check_finite(y, "y")
    if y.is_complex() or not y.is_floating_point() or y.numel() != obs.numel():
        raise ValueError(
            f"y must hold one real measurement per observed coordinate ({obs.numel()}), got {y.dtype} "
            f"of shape {tuple(y.shape)}"
        )
    return obs, y.reshape(-1), as_positive_float(noise_var, "noise_var")


def mixture_posterior(prior: GaussianMixture, observed: Tensor, y: Tensor, noise_var: float) -> GaussianMixture:
    """The exact posterior of x given y = x[observed] + N(0, noise_var I), for a mixture prior (a mixture)."""
    check_instance(prior, GaussianMixture, "prior")
    obs, y, noise_var = _check_measurements(observed, y, prior.d, noise_var)
    y = y.to(prior.dtype)
    if obs.numel() == 0:
        return prior  # nothing measured: the prior
    H = torch.eye(prior.d, dtype=prior.dtype)[obs]  # (m, d)
    S = H @ prior.covariances @ H.T + noise_var * torch.eye(len(obs), dtype=prior.dtype)  # (K, m, m)
    gain = prior.covariances @ H.T @ torch.linalg.inv(S)  # (K, d, m)
    resid = y.reshape(1, -1) - prior.means @ H.T  # (K, m)
    means = prior.means + torch.einsum("kdm,km->kd", gain, resid)
    covs = prior.covariances - gain @ H @ prior.covariances
    # posterior weights w_k N(y; H mu_k, S_k) / sum: the responsibilities of the measurement's own mixture at y
    weights = GaussianMixture(prior.weights, prior.means @ H.T, S).responsibilities(y.reshape(1, -1), 1.0, 0.0)[0]
    return GaussianMixture(weights, means, 0.5 * (covs + covs.mT), prior.labels)


def _check_particles(particles: Tensor) -> Tensor:
    check_instance(particles, Tensor, "particles")
    if particles.ndim != 2 or particles.shape[0] < 2 or particles.shape[1] < 1:
        raise ValueError(f"particles must be (K, d) with K >= 2 and d >= 1, got {tuple(particles.shape)}")
    if particles.is_complex() or not particles.is_floating_point():
        raise TypeError(f"particles must be real floating numbers, got {particles.dtype}")
    return check_finite(particles, "particles")


def measurement_entropy(particles: Tensor, noise_var: float) -> Tensor:
    """Entropy of each coordinate's predicted measurement from particles (K, d), by a Gaussian fit: (d,)."""
    var = _check_particles(particles).var(0)
    noise_var = as_positive_float(noise_var, "noise_var")
    if not bool(torch.isfinite(var).all()):
        raise ValueError("particles are too large for their variance to be finite")
    return 0.5 * torch.log(2 * math.pi * math.e * (var + noise_var))


def max_entropy_index(particles: Tensor, observed: Tensor, noise_var: float) -> int:
    """The unobserved coordinate whose predicted measurement has the largest entropy."""
    obs = _check_observed(observed, _check_particles(particles).shape[-1])
    h = measurement_entropy(particles, noise_var).clone()
    h[obs] = -torch.inf
    if bool(torch.isinf(h).all()):
        raise ValueError("every coordinate is already observed")
    return int(h.argmax())


def _single_time(schedule: NoiseSchedule, t: Tensor) -> tuple[Tensor, Tensor]:
    values = schedule(t)
    if values.alpha.numel() != 1:
        raise ValueError(f"t must be a single time (the samplers' calls), got shape {tuple(values.alpha.shape)}")
    return values.alpha.reshape(()), values.sigma.reshape(())


def exact_measurement_likelihood(
    prior: GaussianMixture, schedule: NoiseSchedule, observed: Tensor, y: Tensor, noise_var: float
) -> LogLikelihood:
    """The exact (x, t) -> log p(y | x_t) (B,) for a mixture prior and y = x_0[observed] + N(0, noise_var I).

    Per component k, (x_t, y) is Gaussian with mean (alpha mu_k, H mu_k) and covariance
    [[alpha^2 S_k + sigma^2 I, alpha S_k H^T], [alpha H S_k, H S_k H^T + noise_var I]]; the joint is the mixture of
    these, and log p(y | x_t) = log p(x_t, y) - log p_t(x_t).
    """
    check_instance(prior, GaussianMixture, "prior")
    check_instance(schedule, NoiseSchedule, "schedule")
    obs, y, noise_var = _check_measurements(observed, y, prior.d, noise_var)
    H = torch.eye(prior.d, dtype=prior.dtype)[obs]
    y = y.to(prior.dtype)

    def log_likelihood(x: Tensor, t: Tensor) -> Tensor:
        if obs.numel() == 0:
            return 0.0 * x.sum(-1)  # nothing measured: log p(y | x_t) = 0
        a, s = _single_time(schedule, t)
        S = prior.covariances
        top = torch.cat([a**2 * S + s**2 * torch.eye(prior.d, dtype=S.dtype), a * S @ H.T], -1)
        bottom = torch.cat([a * H @ S, H @ S @ H.T + noise_var * torch.eye(len(obs), dtype=S.dtype)], -1)
        joint = GaussianMixture(
            prior.weights, torch.cat([a * prior.means, prior.means @ H.T], -1), torch.cat([top, bottom], -2)
        )
        xy = torch.cat([x, y.to(x.dtype).expand(x.shape[0], -1)], -1)
        return joint.log_prob(xy) - prior.log_prob_t(x, a, s)

    return log_likelihood


def dps_measurement_likelihood(model: DiffusionModel, observed: Tensor, y: Tensor, noise_var: float) -> LogLikelihood:
    """DPS's (x, t) -> log N(y; x0_hat(x_t)[observed], noise_var I) (B,), up to a constant in x; x0_hat from
    ``model``, differentiable through it (Chung et al. 2023, arXiv:2209.14687v4, Eq. 11 [unverified])."""
    check_model(model)
    obs, y, noise_var = _check_measurements(observed, y, None, noise_var)

    def log_likelihood(x: Tensor, t: Tensor) -> Tensor:
        if obs.numel() and int(obs.max()) >= x.shape[-1]:
            raise ValueError(f"observed coordinates {obs.tolist()} do not fit points of dimension {x.shape[-1]}")
        x0 = predict(model, x, t, "x0")
        return -0.5 * (x0[:, obs] - y.to(x0.dtype)).pow(2).sum(-1) / noise_var

    return log_likelihood


@dataclass
class MeasurementGuidance:
    """The eps-model of the prior ``model`` guided by s grad log p(y | x_t) (Eq. (1) of ``classifier``)."""

    model: DiffusionModel
    log_likelihood: LogLikelihood
    s: float

    prediction = "eps"

    @property
    def schedule(self) -> NoiseSchedule:
        return self.model.schedule

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        return guided_eps(self.model, x, t, self.s * grad_log(self.log_likelihood, x, t))


def measurement_guidance(model: DiffusionModel, log_likelihood: LogLikelihood, s: float = 1.0) -> MeasurementGuidance:
    """Guide the prior ``model`` by a measurement log-likelihood (x, t) -> (B,) with scale s >= 0 (s = 1 with the
    exact likelihood: the posterior's model)."""
    check_model(model)
    if not callable(log_likelihood):
        raise TypeError(f"log_likelihood must be callable (x, t) -> (B,), got {type(log_likelihood).__name__}")
    return MeasurementGuidance(model, log_likelihood, check_guidance_weight(s, "s"))


def select_measurements(
    draw_particles: Callable[[Tensor, Tensor], Tensor],
    x_true: Tensor,
    n_select: int,
    noise_var: float,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """The ADS loop: ``n_select`` times, draw particles (K, d) = draw_particles(observed, y) given the measurements
    so far, measure y_i = x_true[i] + N(0, noise_var) at the maximum-entropy coordinate i. Returns (observed, y)."""
    if not callable(draw_particles):
        raise TypeError(f"draw_particles must be callable (observed, y) -> (K, d), got {type(draw_particles).__name__}")
    check_instance(x_true, Tensor, "x_true")
    check_finite(x_true, "x_true")
    if x_true.ndim != 1 or x_true.is_complex() or not x_true.is_floating_point():
        raise ValueError(f"x_true must be one real point (d,), got {x_true.dtype} of shape {tuple(x_true.shape)}")
    if isinstance(n_select, bool) or not isinstance(n_select, int) or not 1 <= n_select <= x_true.numel():
        raise ValueError(f"n_select must be an integer in [1, {x_true.numel()}], got {n_select!r}")
    noise_var = as_positive_float(noise_var, "noise_var")
    observed = torch.zeros(0, dtype=torch.long)
    y = torch.zeros(0, dtype=x_true.dtype)
    for _ in range(n_select):
        i = max_entropy_index(draw_particles(observed, y), observed, noise_var)
        noise = math.sqrt(noise_var) * torch.randn((), generator=generator, dtype=x_true.dtype)
        observed, y = torch.cat([observed, torch.tensor([i])]), torch.cat([y, (x_true[i] + noise)[None]])
    return observed, y
