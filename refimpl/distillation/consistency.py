"""Consistency distillation with an ODE or an SDE teacher, and multistep consistency sampling.

A consistency function maps every point of a probability-flow trajectory to its end at the smallest time
epsilon = timesteps[-1]: f(x_t, t) = x_epsilon (Song et al. 2023, arXiv:2303.01469v2, Sec. 3). Its boundary
condition f(x, epsilon) = x holds *by parameterisation* (their Eq. 5 and App. C):

    f_theta(x, t) = c_skip(t) x + c_out(t) F_theta(x, t),
    c_skip = sigma_d^2 / ((rho_t - rho_eps)^2 + sigma_d^2),
    c_out = sigma_d (rho_t - rho_eps) / sqrt(sigma_d^2 + rho_t^2),

with the paper's time t read as rho_t = sigma_t / alpha_t (its variance-exploding noise level), so c_skip = 1 and
c_out = 0 exactly at t = epsilon. Consistency distillation (their Eq. 7; CoMoSpeech, Ye et al. 2023,
arXiv:2305.06908v4, Sec. 3.3) minimises, on the grid t_0 > t_1 > ... > t_N = epsilon,

    E || f_theta(x_{t_n}, t_n) - f_theta^-(x_hat_{t_{n+1}}, t_{n+1}) ||^2,   x_hat = one teacher step t_n -> t_{n+1},

the target network theta^- an EMA of theta. SCott (Liu et al. 2024, arXiv:2403.01505v2, Sec. 3) replaces the ODE
teacher step by an SDE step of controlled noise strength; here that step is DDIM with eta (``teacher_step``), which at
eta = 0 *is* the ODE teacher step. Its output law is right in mean (tower rule) but not in covariance: with the
exact model, x_hat = E[alpha_t x_0 + c eps + s z | x_s, z] (c = sqrt(sigma_t^2 - s^2), s = DDIM's eta-noise), so the
law of total covariance gives

    Cov(x_hat) = Cov(p_t) - kappa^2 E Cov[x_0 | x_s],   kappa = alpha_t - c alpha_s / sigma_s,               (SC)

an under-dispersion that grows with eta (``sde_teacher_gain``; exact on Gaussian data: ``sde_teacher_covariance``),
bounded by kappa^2 min(Cov(x_0), (sigma_s / alpha_s)^2 I) since the posterior covariance is below both.

With F affine per grid point (``AffineConsistencyModel``) and theta^- = theta
after an exact inner minimisation, one update is a least-squares fit per grid point (``cd_update``); the fixed point
solves f(., t_n) = f(., t_{n+1}) o teacher step, i.e. f = the teacher's flow map to epsilon, reached after N updates.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from refimpl._validation import check_finite, check_instance
from refimpl.distillation.progressive import fit_affine
from refimpl.models import DiffusionModel, check_model, predict_x0_eps
from refimpl.samplers.ddim import ddim_sigma, ddim_step
from refimpl.samplers.distilled import renoise
from refimpl.schedules import NoiseSchedule
from toy_models.gmm import GaussianMixture

__all__ = [
    "AffineConsistencyModel",
    "TeacherStep",
    "cd_fixed_point",
    "cd_loss",
    "cd_update",
    "consistency_coefficients",
    "consistency_multistep",
    "sde_teacher_covariance",
    "sde_teacher_gain",
    "teacher_step",
]

TeacherStep = Callable[[Tensor, int], Tensor]


def consistency_coefficients(
    schedule: NoiseSchedule, t: Tensor, t_eps: Tensor, sigma_data: float = 0.5
) -> tuple[Tensor, Tensor]:
    """(c_skip(t), c_out(t)) of Song et al. (2023), App. C, in rho = sigma / alpha; exactly (1, 0) at t = t_eps."""
    check_instance(schedule, NoiseSchedule, "schedule")
    if not sigma_data > 0:
        raise ValueError(f"sigma_data must be positive, got {sigma_data}")
    rho, rho_eps = schedule.rho_t(t), schedule.rho_t(t_eps)
    gap = rho - rho_eps
    c_skip = sigma_data**2 / (gap**2 + sigma_data**2)
    c_out = sigma_data * gap / torch.sqrt(sigma_data**2 + rho**2)
    return c_skip, c_out


@dataclass
class AffineConsistencyModel:
    """f(x, t_n) = c_skip x + c_out (W_n x + c_n) on the grid ``timesteps`` (N + 1, decreasing to epsilon).

    weights (N + 1, d, d), biases (N + 1, d); the last pair is multiplied by c_out(epsilon) = 0.
    """

    schedule: NoiseSchedule
    timesteps: Tensor
    weights: Tensor
    biases: Tensor
    sigma_data: float = 0.5

    @classmethod
    def zeros(cls, schedule: NoiseSchedule, timesteps: Tensor, d: int, sigma_data: float = 0.5):
        """F = 0: the model starts as c_skip x."""
        n = len(timesteps)
        dtype = torch.float64
        return cls(schedule, timesteps, torch.zeros(n, d, d, dtype=dtype), torch.zeros(n, d, dtype=dtype), sigma_data)

    def coefficients(self, n: int) -> tuple[Tensor, Tensor]:
        return consistency_coefficients(self.schedule, self.timesteps[n], self.timesteps[-1], self.sigma_data)

    def __call__(self, x: Tensor, n: int) -> Tensor:
        """f(x, t_n) for x (B, d)."""
        c_skip, c_out = self.coefficients(n)
        return c_skip * x + c_out * (x @ self.weights[n].T + self.biases[n])


def teacher_step(
    model: DiffusionModel, timesteps: Tensor, eta: float = 0.0, generator: torch.Generator | None = None
) -> TeacherStep:
    """The teacher's step t_n -> t_{n+1}: DDIM with noise strength eta (eta = 0: the ODE teacher; SCott's SDE teacher
    for eta > 0; Song et al. 2021, arXiv:2010.02502v4, Eq. 12). Returns step(x, n)."""
    check_model(model)
    if not isinstance(eta, int | float) or not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must be a number in [0, 1], got {eta!r}")
    timesteps = model.schedule.check_t(torch.as_tensor(timesteps, dtype=torch.float64), "timesteps")
    values = model.schedule(timesteps)

    def step(x: Tensor, n: int) -> Tensor:
        v_s, v_t = values[n], values[n + 1]
        x0, eps = predict_x0_eps(model, x, timesteps[n], v_s)
        if eta == 0:
            return ddim_step(x0, eps, v_t)
        z = torch.randn(x.shape, generator=generator, dtype=x.dtype)
        return ddim_step(x0, eps, v_t, ddim_sigma(eta, v_s, v_t), z)

    return step


def sde_teacher_gain(schedule: NoiseSchedule, t_from: float | Tensor, t_to: float | Tensor, eta: float) -> Tensor:
    """kappa of (SC): the factor by which the posterior spread of x_0 is missing from one SDE-teacher step's output,
    alpha_t - sqrt(sigma_t^2 - s^2) alpha_s / sigma_s with s = ``ddim_sigma(eta)``; the DDIM (ODE) value at eta = 0."""
    check_instance(schedule, NoiseSchedule, "schedule")
    v_s, v_t = schedule(schedule.check_t(t_from, "t_from")), schedule(schedule.check_t(t_to, "t_to"))
    c = torch.sqrt(v_t.sigma**2 - ddim_sigma(eta, v_s, v_t) ** 2)
    return v_t.alpha - c * v_s.alpha / v_s.sigma


def sde_teacher_covariance(
    mixture: GaussianMixture, schedule: NoiseSchedule, t_from: float | Tensor, t_to: float | Tensor, eta: float
) -> Tensor:
    """(SC) on one Gaussian N(mu, Sigma): the exact covariance of the SDE-teacher step's output for x_s ~ p_s,
    alpha_t^2 Sigma + sigma_t^2 I - kappa^2 (Sigma^-1 + (alpha_s / sigma_s)^2 I)^-1."""
    if not isinstance(mixture, GaussianMixture) or mixture.K != 1:
        raise ValueError("mixture must be a GaussianMixture with a single component (K = 1)")
    kappa = sde_teacher_gain(schedule, t_from, t_to, eta)
    v_s, v_t = schedule(schedule.check_t(t_from, "t_from")), schedule(schedule.check_t(t_to, "t_to"))
    Sigma, eye = mixture.covariances[0], torch.eye(mixture.d, dtype=mixture.dtype)
    posterior = torch.linalg.inv(torch.linalg.inv(Sigma) + (v_s.alpha / v_s.sigma) ** 2 * eye)
    return v_t.alpha**2 * Sigma + v_t.sigma**2 * eye - kappa**2 * posterior


def cd_loss(student: AffineConsistencyModel, target: AffineConsistencyModel, step: TeacherStep, x: Tensor, n: int):
    """The consistency-distillation loss at grid point n on x ~ p_{t_n} (B, d): mean squared distance, Eq. 7."""
    return ((student(x, n) - target(step(x, n), n + 1)) ** 2).sum(-1).mean()


def _noised(schedule: NoiseSchedule, t: Tensor, data: Tensor, generator: torch.Generator | None) -> Tensor:
    v = schedule(t)
    return v.alpha * data + v.sigma * torch.randn(data.shape, generator=generator, dtype=data.dtype)


def cd_update(
    target: AffineConsistencyModel,
    step: TeacherStep,
    data: Tensor,
    generator: torch.Generator | None = None,
    sweep: str = "parallel",
) -> AffineConsistencyModel:
    """One update theta <- argmin_theta CD loss given theta^- = ``target``: per grid point, least squares of F onto
    (f^-(x_hat_{n+1}) - c_skip x) / c_out with x = alpha x_0 + sigma eps, x_0 from ``data`` (B, d).

    ``sweep="parallel"`` fits every grid point against ``target`` (theta^- fixed during the update, as in training);
    ``sweep="backward"`` visits n = N - 1, ..., 0 and uses the point just fitted at n + 1 (Gauss-Seidel), which
    reaches the fixed point in a single update.
    """
    check_instance(target, AffineConsistencyModel, "target")
    if not callable(step):
        raise TypeError(f"step must be callable, got {type(step).__name__}")
    if sweep not in ("parallel", "backward"):
        raise ValueError(f"sweep must be 'parallel' or 'backward', got {sweep!r}")
    new = AffineConsistencyModel(
        target.schedule, target.timesteps, target.weights.clone(), target.biases.clone(), target.sigma_data
    )
    reference = new if sweep == "backward" else target
    for n in reversed(range(len(target.timesteps) - 1)):
        x = _noised(target.schedule, target.timesteps[n], data, generator)
        c_skip, c_out = target.coefficients(n)
        aim = (reference(step(x, n), n + 1) - c_skip * x) / c_out
        new.weights[n], new.biases[n] = fit_affine(x, aim)
    return new


def cd_fixed_point(
    start: AffineConsistencyModel,
    step: TeacherStep,
    data: Tensor,
    updates: int,
    generator: torch.Generator | None = None,
    sweep: str = "parallel",
) -> list[AffineConsistencyModel]:
    """``updates`` successive ``cd_update``s from ``start`` (EMA rate 0); returns every iterate."""
    check_instance(start, AffineConsistencyModel, "start")
    if not isinstance(updates, int) or updates < 1:
        raise ValueError(f"updates must be a positive integer, got {updates!r}")
    models = [start]
    for _ in range(updates):
        models.append(cd_update(models[-1], step, data, generator, sweep))
    return models[1:]


def consistency_multistep(
    model: AffineConsistencyModel, x: Tensor, indices: list[int], noise: Tensor | None = None, generator=None
) -> Tensor:
    """Multistep consistency sampling (Song et al. 2023, Algorithm 1): x <- f(x, t_0), then for each grid index n,
    re-noise exactly from epsilon to t_n, x_n = (alpha_n / alpha_eps) x + sqrt(sigma_n^2 - (alpha_n/alpha_eps)^2
    sigma_eps^2) z, and x <- f(x_n, t_n). ``noise`` (len(indices), B, d) or drawn from ``generator``."""
    check_instance(model, AffineConsistencyModel, "model")
    check_finite(x, "x")
    if not isinstance(indices, list | tuple) or any(
        isinstance(n, bool) or not isinstance(n, int) or not 0 < n < len(model.timesteps) - 1 for n in indices
    ):
        raise ValueError(f"indices must lie in 1..{len(model.timesteps) - 2}, got {indices}")
    if noise is not None and tuple(noise.shape) != (len(indices), *x.shape):
        raise ValueError(f"noise must have shape {(len(indices), *x.shape)}, got {tuple(noise.shape)}")
    v_eps = model.schedule(model.timesteps[-1])
    x = model(x, 0)
    for j, n in enumerate(indices):
        z = noise[j] if noise is not None else torch.randn(x.shape, generator=generator, dtype=x.dtype)
        x = model(renoise(x, v_eps, model.schedule(model.timesteps[n]), z), n)
    return x
