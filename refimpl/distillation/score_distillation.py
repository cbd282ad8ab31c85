"""Score distillation as particle flows: SDS against VSD, and ISM against TSM, with exact scores.

A parameter theta is rendered to an image x = g(theta) and pushed along a gradient built from a pretrained
noise predictor eps_hat(x_t, t) at the noised render x_t = alpha_t x + sigma_t eps. With the identity renderer
g(theta) = theta the parameters are particles in data space, the Jacobian dg/dtheta is the identity, and every
gradient below is a vector field on the particles; the mixture lab gives every eps_hat exactly.

* SDS (Poole et al. 2022, arXiv:2209.14988v1, Eq. 3; ProlificDreamer's Eq. 3):
  grad = w(t) (eps_hat(x_t, t) - eps). Its mean over eps is -w(t) sigma_t E[grad log p_t(x_t)]: every particle
  climbs the smoothed data density on its own, so particles on one mode collapse onto one point.
* VSD (Wang et al. 2023, ProlificDreamer, arXiv:2305.16213v2, Eq. 9): the injected eps is replaced
  by the noise prediction eps_phi of the particles' own law q, grad = w(t) (eps_hat(x_t, t) - eps_phi(x_t, t)).
  ProlificDreamer fits eps_phi by LoRA; here q is the particles' empirical measure smoothed by N(0, h^2 I)
  (``particle_law``), whose noised law and eps_phi are exact. The flow is then a Wasserstein gradient flow of
  KL(q_t || p_t) averaged over t, which keeps the particles spread: its fixed points have q_t = p_t.
* ISM (Liang et al. 2023, LucidDreamer, arXiv:2311.11284v2, Eq. 12 [unverified]): DDIM inversion carries the
  render x_0 to x_s (several small steps) and then x_s to x_t (one step); grad = w(t) (eps_cfg(x_t, t) -
  eps_uncond(x_s, s)), w(t) = sigma_t / alpha_t.
* TSM (Dreamer XL, Miao et al. 2024, arXiv:2405.11252v1, Sec. 3.2, Eqs. 4, 5 and 7; code guidance/sd_utils.py,
  ``train_step``): from the same x_s, path (a) x_s -> x_t gives the network input and path (b) x_s -> x_mu, with
  mu = s + (t - s) sqrt(1 - gamma^2), gives the target eps_uncond(x_mu, mu). gamma = 1 puts mu at s: path (b) is
  path (a) and TSM is ISM. (This gamma is the code's; the paper's Algorithm 1 and Sec. 3.3 write
  mu = s + gamma (t - s), where gamma = 0 is ISM.)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from refimpl._util import expand_like
from refimpl._validation import (
    as_float_tensor,
    check_finite,
    check_float_tensors,
    check_instance,
    check_number,
    check_tensor,
)
from refimpl.differentiable.mmd import _check_bandwidth, rbf_kernel
from refimpl.models import DiffusionModel, check_model, predict
from refimpl.samplers.ddim import invert_ddim
from toy_models.gmm import ExactModel, GaussianMixture

__all__ = [
    "WEIGHTINGS",
    "IntervalPaths",
    "interval_paths",
    "ism_gradient",
    "mixture_kernel_mean",
    "mmd2_to_mixture",
    "particle_flow",
    "particle_law",
    "sds_gradient",
    "tsm_gradient",
    "vsd_gradient",
    "within_mode_spread",
]

# w(t) as a function of (alpha_t, sigma_t): DreamFusion's and threestudio's sigma_t^2 (their 1 - alpha-bar_t),
# LucidDreamer's and Dreamer XL's sqrt((1 - alpha-bar_t) / alpha-bar_t) = sigma_t / alpha_t, or none.
WEIGHTINGS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "sigma2": lambda alpha, sigma: sigma**2,
    "sigma_over_alpha": lambda alpha, sigma: sigma / alpha,
    "one": lambda alpha, sigma: torch.ones_like(sigma),
}


def _weight(weighting: str, schedule, t: Tensor) -> Tensor:
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {sorted(WEIGHTINGS)}, got {weighting!r}")
    v = schedule(t)
    return WEIGHTINGS[weighting](v.alpha, v.sigma)


def _noised(theta: Tensor, eps: Tensor, schedule, t: Tensor) -> Tensor:
    """x_t = alpha_t theta + sigma_t eps for particles theta (B, d) and per-particle or shared t."""
    if not isinstance(theta, Tensor) or theta.ndim != 2:
        raise ValueError(f"theta must be a (B, d) tensor of particles, got {getattr(theta, 'shape', theta)!r}")
    check_finite(theta, "theta")
    if eps.shape != theta.shape:
        raise ValueError(f"eps must have the shape of theta {tuple(theta.shape)}, got {tuple(eps.shape)}")
    v = schedule(t)
    return expand_like(v.alpha, theta) * theta + expand_like(v.sigma, eps) * eps


def sds_gradient(theta: Tensor, model: DiffusionModel, t: object, eps: Tensor, *, weighting: str = "sigma2") -> Tensor:
    """SDS with the identity renderer: w(t) (eps_hat(x_t, t) - eps) at x_t = alpha_t theta + sigma_t eps: (B, d).

    Poole et al. 2022 (arXiv:2209.14988v1), Eq. 3; t a number or a (B,) tensor inside the model's schedule.
    """
    check_model(model)
    t = model.schedule.check_t(as_float_tensor(t, "t"))
    x_t = _noised(theta, eps, model.schedule, t)
    w = expand_like(_weight(weighting, model.schedule, t), theta)
    return w * (predict(model, x_t, t, "eps") - eps)


def vsd_gradient(
    theta: Tensor,
    model: DiffusionModel,
    fake: DiffusionModel,
    t: object,
    eps: Tensor,
    *,
    weighting: str = "sigma2",
) -> Tensor:
    """VSD with the identity renderer: w(t) (eps_hat(x_t, t) - eps_phi(x_t, t)): (B, d).

    Wang et al. 2023 (arXiv:2305.16213v2), Eq. 9; ``fake`` predicts the noise of the particles' law
    (``ExactModel(particle_law(theta, h), schedule)`` for the exact one). A fake model that returns the injected
    eps turns this into ``sds_gradient``.
    """
    check_model(model)
    check_model(fake)
    t = model.schedule.check_t(as_float_tensor(t, "t"))
    x_t = _noised(theta, eps, model.schedule, t)
    w = expand_like(_weight(weighting, model.schedule, t), theta)
    return w * (predict(model, x_t, t, "eps") - predict(fake, x_t, t, "eps"))


def particle_law(theta: Tensor, bandwidth: float) -> GaussianMixture:
    """The particles' empirical law smoothed by N(0, h^2 I): (1/n) sum_i N(theta_i, h^2 I), h = ``bandwidth`` > 0."""
    if not isinstance(theta, Tensor) or theta.ndim != 2:
        raise ValueError(f"theta must be a (n, d) tensor of particles, got {getattr(theta, 'shape', theta)!r}")
    if not (isinstance(bandwidth, int | float) and not isinstance(bandwidth, bool)) or not bandwidth > 0:
        raise ValueError(f"bandwidth must be a positive number, got {bandwidth!r}")
    n, d = theta.shape
    theta = theta.detach()
    covs = bandwidth**2 * torch.eye(d, dtype=theta.dtype).expand(n, d, d)
    return GaussianMixture(torch.full((n,), 1.0 / n, dtype=theta.dtype), theta, covs)


def particle_flow(
    theta: Tensor,
    model: DiffusionModel,
    *,
    method: str = "vsd",
    steps: int = 200,
    lr: float = 0.05,
    n_noise: int = 8,
    t_range: tuple[float, float] = (0.02, 0.98),
    bandwidth: float = 0.05,
    weighting: str = "sigma2",
    generator: torch.Generator | None = None,
) -> Tensor:
    """Move particles theta (n, d) by ``steps`` gradient steps theta <- theta - lr * mean gradient; returns the
    trajectory (steps + 1, n, d).

    Each step draws ``n_noise`` pairs (t, eps) per particle, t uniform in ``t_range`` (ProlificDreamer's
    t_range [0.02, 0.98], read as times of the schedule), and averages the SDS or VSD gradient over them. For
    VSD the fake model is exact: ``ExactModel(particle_law(theta, bandwidth), schedule)`` at the current theta.
    """
    check_model(model)
    if method not in ("sds", "vsd"):
        raise ValueError(f"method must be 'sds' or 'vsd', got {method!r}")
    for name, value in [("steps", steps), ("n_noise", n_noise)]:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr!r}")
    lo, hi = (float(v) for v in t_range)
    schedule = model.schedule
    if not lo < hi:
        raise ValueError(f"t_range must satisfy lo < hi, got {t_range}")
    schedule.check_t(torch.tensor([lo, hi]), "t_range")
    theta = check_finite(as_float_tensor(theta, "theta"), "theta").detach().clone()
    if theta.ndim != 2:
        raise ValueError(f"theta must be a (n, d) tensor of particles, got shape {tuple(theta.shape)}")
    n, d = theta.shape
    trajectory = [theta.clone()]
    for _ in range(steps):
        x = theta.repeat(n_noise, 1)  # (n_noise * n, d): draw j of particle i is row j * n + i
        t = lo + (hi - lo) * torch.rand(x.shape[0], generator=generator, dtype=theta.dtype)
        eps = torch.randn(x.shape, generator=generator, dtype=theta.dtype)
        if method == "sds":
            g = sds_gradient(x, model, t, eps, weighting=weighting)
        else:
            fake = ExactModel(particle_law(theta, bandwidth), schedule)
            g = vsd_gradient(x, model, fake, t, eps, weighting=weighting)
        theta = theta - lr * g.reshape(n_noise, n, d).mean(0)
        trajectory.append(theta.clone())
    return torch.stack(trajectory)


def mmd2_to_mixture(particles: Tensor, mixture: GaussianMixture, bandwidth: float) -> Tensor:
    """The exact squared MMD (RBF kernel of width l) between the particles' empirical law and a Gaussian mixture.

    MMD^2 = E k(theta, theta') - 2 E k(theta, X) + E k(X, X') (Gretton et al. 2012, Lemma 6 with population
    expectations), with E_X k(x, X) = (2 pi l^2)^(d/2) p_l(x), p_l the mixture smoothed by N(0, l^2 I), and
    E k(X, X') summed over component pairs in closed form. n i.i.d. draws of the mixture have expected value
    (1 - E k(X, X')) / n, the floor a good particle set should reach or beat.
    """
    check_instance(mixture, GaussianMixture, "mixture")
    bandwidth = _check_bandwidth(bandwidth)
    check_tensor(particles, "particles", ndim=2)
    d = mixture.d
    if particles.shape[1] != d:
        raise ValueError(f"particles must be (n, {d}) like the mixture, got {tuple(particles.shape)}")
    k_qq = rbf_kernel(particles, particles, bandwidth).mean()
    log_c = 0.5 * d * math.log(2 * math.pi * bandwidth**2)
    k_qp = torch.exp(log_c + mixture.noised(1.0, bandwidth).log_prob(particles)).mean()
    return k_qq - 2 * k_qp + mixture_kernel_mean(mixture, bandwidth)


def mixture_kernel_mean(mixture: GaussianMixture, bandwidth: float) -> Tensor:
    """E k(X, X') for X, X' independent draws of the mixture, RBF kernel of width l, in closed form:

    sum_jk w_j w_k det(I + S_jk / l^2)^(-1/2) exp(-delta_jk^T (S_jk + l^2 I)^(-1) delta_jk / 2),
    S_jk = Sigma_j + Sigma_k, delta_jk = mu_j - mu_k (the Gaussian integral of the kernel; all pairs at once).
    """
    check_instance(mixture, GaussianMixture, "mixture")
    bandwidth = _check_bandwidth(bandwidth)
    w, m, S = mixture.weights, mixture.means, mixture.covariances
    eye = torch.eye(mixture.d, dtype=m.dtype)
    C = S[:, None] + S[None, :] + bandwidth**2 * eye  # (K, K, d, d)
    delta = (m[:, None] - m[None, :])[..., None]  # (K, K, d, 1)
    quad = (delta * torch.linalg.solve(C, delta)).sum((-1, -2))
    pair = torch.exp(-0.5 * quad) / torch.sqrt(torch.linalg.det(C / bandwidth**2))
    return w @ pair @ w


def within_mode_spread(theta: Tensor, modes: Tensor) -> float:
    """RMS distance of the particles (n, d) to the centroid of the particles nearest the same mode (K, d).

    Modes holding fewer than two particles are left out. A collapsed flow has spread near zero; draws of a
    mixture of isotropic components of standard deviation s have about s sqrt(d).
    """
    check_tensor(theta, "theta", ndim=2)
    check_tensor(modes, "modes", ndim=2)
    if modes.shape[1] != theta.shape[1] or len(modes) == 0:
        raise ValueError(f"modes must be (K, d) with K >= 1 and the d of theta, got {tuple(modes.shape)}")
    k = torch.cdist(theta, modes).argmin(1)
    sq = [((theta[k == j] - theta[k == j].mean(0)) ** 2).sum(1) for j in range(len(modes)) if int((k == j).sum()) > 1]
    if not sq:
        raise ValueError("no mode holds two or more particles of theta")
    return float(torch.cat(sq).mean().sqrt())


@dataclass(frozen=True)
class IntervalPaths:
    """The DDIM-inversion points of ISM and TSM: x_s, x_t by path (a), x_mu and x_t by path (b), each (B, d)."""

    x_s: Tensor
    x_t: Tensor
    x_mu: Tensor
    x_t_via_mu: Tensor

    def __post_init__(self) -> None:
        for name in ("x_s", "x_t", "x_mu", "x_t_via_mu"):
            check_float_tensors(**{name: getattr(self, name)})
            check_finite(getattr(self, name), name)
            if getattr(self, name).shape != self.x_s.shape:
                raise ValueError(f"{name} must have the shape of x_s {tuple(self.x_s.shape)}")


def _invert_step(model: DiffusionModel, x: Tensor, s: float, t: float) -> Tensor:
    """One DDIM inversion step x_s -> x_t (t > s), or x itself when t = s."""
    return x if t == s else invert_ddim(model, x, torch.tensor([t, s], dtype=torch.float64))


def interval_paths(
    theta: Tensor,
    uncond: DiffusionModel,
    eps: Tensor,
    *,
    s: float,
    t: float,
    mu: float,
    t_start: float,
    inversion_steps: int,
) -> IntervalPaths:
    """DDIM inversion of the render: x_{t_start} = alpha theta + sigma eps, ``inversion_steps`` uniform steps in t
    up to s (LucidDreamer's x_s), then path (a) x_s -> x_t and path (b) x_s -> x_mu -> x_t, one step each.

    Times must satisfy t_start <= s <= mu <= t; t_start = s skips the first inversion.
    """
    check_model(uncond)
    s, t, mu, t_start = (check_number(v, n) for v, n in ((s, "s"), (t, "t"), (mu, "mu"), (t_start, "t_start")))
    if not t_start <= s <= mu <= t or s == t:
        raise ValueError(f"need t_start <= s <= mu <= t with s < t, got {t_start}, {s}, {mu}, {t}")
    if isinstance(inversion_steps, bool) or not isinstance(inversion_steps, int) or inversion_steps < 1:
        raise ValueError(f"inversion_steps must be a positive integer, got {inversion_steps!r}")
    uncond.schedule.check_t(torch.tensor([t_start, t]), "times")
    x = _noised(theta, eps, uncond.schedule, torch.tensor(t_start, dtype=torch.float64))
    if s > t_start:
        x = invert_ddim(uncond, x, torch.linspace(s, t_start, inversion_steps + 1, dtype=torch.float64))
    x_t = _invert_step(uncond, x, s, t)
    x_mu = _invert_step(uncond, x, s, mu)
    return IntervalPaths(x, x_t, x_mu, _invert_step(uncond, x_mu, mu, t))


def ism_gradient(
    theta: Tensor,
    guided: DiffusionModel,
    uncond: DiffusionModel,
    eps: Tensor,
    *,
    s: float,
    t: float,
    t_start: float,
    inversion_steps: int,
    weighting: str = "sigma_over_alpha",
) -> Tensor:
    """ISM: w(t) (eps_guided(x_t, t) - eps_uncond(x_s, s)), x_s and x_t by DDIM inversion (path (a)): (B, d).

    Liang et al. 2023 (arXiv:2311.11284v2), Eq. 12 [unverified]; w = sigma_t / alpha_t by default.
    """
    check_model(guided)
    paths = interval_paths(theta, uncond, eps, s=s, t=t, mu=s, t_start=t_start, inversion_steps=inversion_steps)
    t_ = torch.tensor(t, dtype=torch.float64)
    w = _weight(weighting, guided.schedule, t_)
    return w * (predict(guided, paths.x_t, t_, "eps") - predict(uncond, paths.x_s, torch.tensor(s), "eps"))


def tsm_gradient(
    theta: Tensor,
    guided: DiffusionModel,
    uncond: DiffusionModel,
    eps: Tensor,
    *,
    s: float,
    t: float,
    gamma: float,
    t_start: float,
    inversion_steps: int,
    weighting: str = "sigma_over_alpha",
) -> Tensor:
    """TSM: w(t) (eps_guided(x_t, t) - eps_uncond(x_mu, mu)), mu = s + (t - s) sqrt(1 - gamma^2): (B, d).

    Miao et al. 2024 (arXiv:2405.11252v1), Sec. 3.2, Eqs. 4, 5 (x_mu, x_t from x_s) and 7, and their
    guidance/sd_utils.py ``train_step`` (target ``target_mu2t``); gamma in [0, 1], gamma = 1 is ISM (the code's
    gamma; the paper's Algorithm 1 has mu = s + gamma (t - s), ISM at gamma = 0).
    """
    check_model(guided)
    check_model(uncond)
    gamma = check_number(gamma, "gamma", 0.0, 1.0)
    s, t = check_number(s, "s"), check_number(t, "t")
    mu = s + (t - s) * math.sqrt(1.0 - gamma**2)
    paths = interval_paths(theta, uncond, eps, s=s, t=t, mu=mu, t_start=t_start, inversion_steps=inversion_steps)
    t_ = torch.tensor(t, dtype=torch.float64)
    w = _weight(weighting, guided.schedule, t_)
    return w * (predict(guided, paths.x_t, t_, "eps") - predict(uncond, paths.x_mu, torch.tensor(mu), "eps"))
