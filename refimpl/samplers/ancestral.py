"""Ancestral DPM-Solver-2: a deterministic DPM-Solver-2 step to a lower noise level, then fresh noise back up.

An ancestral step from s to t (Ho et al. 2020's ancestral sampling in the EDM variables of Karras et al. 2022,
arXiv:2206.00364v2, Eq. 4: rho = sigma / alpha = e^{-lambda} and the scaled state x~ = x / alpha) splits the target
noise level rho_t into a deterministic part rho_down and a fresh part rho_up, rho_down^2 + rho_up^2 = rho_t^2:

    rho_up = eta rho_t sqrt(1 - rho_t^2 / rho_s^2) = eta rho_t sqrt(1 - e^{-2h}),   h = lambda_t - lambda_s,

(Song et al. 2021, arXiv:2010.02502v4, Eq. 16's sigma with eta, read in the scaled state). With eta = 1 the noise
is DDPM's posterior noise and rho_down = rho_t^2 / rho_s, i.e. lambda_down = lambda_t + h. The deterministic part
is one DPM-Solver-2 step (Lu et al. 2022, arXiv:2206.00927v3, Algorithm 1, r1 = 1/2) from s to lambda_down, written
in the frame of t (alpha fixed at alpha_t, sigma' = alpha_t rho_down: only rho enters the scaled step, so the state
lands as alpha_t x~_down), then x_t = alpha_t (x~_down + rho_up z). Its midpoint lambda_s + (lambda_down -
lambda_s) / 2 is lambda_t itself when eta = 1: the second model call is at the next grid time. This is
k-diffusion's ``sample_dpm_2_ancestral`` and diffusers' ``KDPM2AncestralDiscreteScheduler``. eta = 0 is
DPM-Solver-2 (r1 = 1/2).

``sample_sde_dpm_solver_pp_2s`` is k-diffusion's stochastic DPM-Solver++(2S) (``sample_dpmpp_sde``, r = 1/2; diffusers'
``DPMSolverSDEScheduler``): both stages are ancestral DPM-Solver++(1) steps from s, the first to the midpoint
lambda_s + h / 2 with noise z_1, the second to t with the midpoint's x0 and noise z_2. No paper states it (it is not
the SDE-DPM-Solver++(2M) of Lu et al. 2022b), so it is a model of their code for the oracle
(``SDE_DPM_SOLVER_PP_2S``), not a registry entry; its two noises a step (k-diffusion draws them as increments of one
Brownian path over the nested intervals [sigma_mid, sigma_s] and [sigma_t, sigma_s]) are given as
``noise[i] = (z_1, z_2)`` (one normal a step, used by both stages, is accepted too: the shared signature's).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from refimpl._util import expand_like
from refimpl._validation import check_kinds
from refimpl.models import DiffusionModel, predict_x0_eps
from refimpl.registry import SamplerSpec, register
from refimpl.samplers._common import Callback, NoiseSource, StepInfo, check_sampler_inputs
from refimpl.samplers.dpm_solver import dpm_solver_1_step, dpm_solver_2_step
from refimpl.samplers.dpm_solver_pp import dpm_solver_pp_1_step
from refimpl.schedules import ScheduleValues

__all__ = ["SDE_DPM_SOLVER_PP_2S", "ancestral_split", "sample_dpm_solver_2_ancestral", "sample_sde_dpm_solver_pp_2s"]


def ancestral_split(v_s: ScheduleValues, v_t: ScheduleValues, eta: float = 1.0) -> tuple[ScheduleValues, Tensor]:
    """(v_down, rho_up) of an ancestral step s -> t: v_down is the deterministic target lambda_down in the frame of
    t (alpha_t, sigma_t rho_down / rho_t, lambda_down), rho_up the scaled noise level added after it (module
    docstring; arXiv:2010.02502v4 Eq. 16 in the scaled state, as diffusers' DDIMScheduler numbers it)."""
    check_kinds(ScheduleValues, v_s=v_s, v_t=v_t)
    if isinstance(eta, bool) or not isinstance(eta, int | float) or not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must be a number in [0, 1], got {eta!r}")
    h = v_t.lambda_ - v_s.lambda_
    rho_t = v_t.rho
    rho_up = eta * rho_t * torch.sqrt(-torch.expm1(-2 * h))
    # rho_down^2 = rho_t^2 - rho_up^2 = rho_t^2 ((1 - eta^2) + eta^2 e^{-2h}): a sum of two non-negative terms, where
    # the difference would lose u e^{2h} of its relative accuracy (1.8e-7 from sigma = 80 to 0.002 at eta = 1)
    rho_down = rho_t * torch.sqrt((1 - eta**2) + eta**2 * torch.exp(-2 * h))
    nan = torch.full_like(v_t.t, float("nan"))
    v_down = ScheduleValues(v_t.t, v_t.alpha, v_t.alpha * rho_down, nan, nan, -torch.log(rho_down))
    return v_down, rho_up


def sample_dpm_solver_2_ancestral(
    model: DiffusionModel,
    x: Tensor,
    timesteps: Tensor,
    *,
    eta: float = 1.0,
    stages: Sequence[float] | None = None,
    noise: Tensor | None = None,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """Ancestral DPM-Solver-2 (module docstring): two model calls a step, ``noise[i]`` (shape (n_steps, *x.shape))
    or a draw from ``generator`` added at step i.

    ``stages`` (one time per step) overrides the midpoint, t(lambda_s + (lambda_down - lambda_s) / 2) by default,
    as an implementation with its own (rounded) intermediate noise levels evaluates there.
    """
    ts = check_sampler_inputs(model, x, timesteps)
    n_steps = len(ts) - 1
    noise_at = NoiseSource(noise, generator, n_steps, x)
    schedule = model.schedule
    values = schedule(ts)
    for i in range(n_steps):
        v_s = values[i]
        v_down, rho_up = ancestral_split(v_s, values[i + 1], eta)
        v_mid = _midpoint(schedule, v_s.lambda_, v_down.lambda_, stages, i, n_steps)
        x0, eps = predict_x0_eps(model, x, ts[i], v_s)
        u = dpm_solver_1_step(x, eps, v_s, v_mid)
        eps_mid = predict_x0_eps(model, u, v_mid.t, v_mid)[1]
        x_next = dpm_solver_2_step(x, eps, eps_mid, v_s, v_mid, v_down)
        if eta > 0:
            x_next = x_next + expand_like(v_down.alpha * rho_up, x) * noise_at(i)
        if callback is not None:
            callback(StepInfo(i, ts[i], ts[i + 1], x, x_next, x0))
        x = x_next
    return x


def _midpoint(schedule, lam_s: Tensor, lam_end: Tensor, stages: Sequence[float] | None, i: int, n: int):
    """The schedule at lambda_s + (lam_end - lambda_s) / 2, or at ``stages[i]`` if given (one time per step)."""
    if stages is None:
        lam_mid = (lam_s + lam_end) / 2  # lambda_t for an ancestral DPM-Solver-2 step with eta = 1: clamp round-off
        return schedule(schedule.t_of_lambda(lam_mid.clamp(schedule.lambda_min, schedule.lambda_max)))
    if len(stages) != n:
        raise ValueError(f"stages must give one midpoint time per step ({n}), got {len(stages)}")
    return schedule(schedule.check_t(torch.as_tensor(float(stages[i]), dtype=torch.float64), "stages"))


def sample_sde_dpm_solver_pp_2s(
    model: DiffusionModel,
    x: Tensor,
    timesteps: Tensor,
    *,
    eta: float = 1.0,
    stages: Sequence[float] | None = None,
    noise: Tensor | None = None,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """Stochastic DPM-Solver++(2S), k-diffusion's ``sample_dpmpp_sde`` with r = 1/2 (module docstring): two model
    calls a step; ``noise[i] = (z_1, z_2)`` (shape (n_steps, 2, *x.shape)), or one normal a step for both stages
    (shape (n_steps, *x.shape), the shared signature's), or draws from ``generator``; ``stages`` (one time per step)
    overrides the midpoint t(lambda_s + h / 2)."""
    ts = check_sampler_inputs(model, x, timesteps)
    n_steps = len(ts) - 1
    if isinstance(noise, Tensor) and tuple(noise.shape) == (n_steps, *x.shape):
        noise = noise.unsqueeze(1).expand(n_steps, 2, *x.shape)
    noise_at = NoiseSource(noise, generator, n_steps, x.new_empty(2, *x.shape))
    schedule = model.schedule
    values = schedule(ts)
    for i in range(n_steps):
        v_s, v_t = values[i], values[i + 1]
        v_mid = _midpoint(schedule, v_s.lambda_, v_t.lambda_, stages, i, n_steps)
        z_1, z_2 = noise_at(i) if eta > 0 else (None, None)
        x0 = predict_x0_eps(model, x, ts[i], v_s)[0]
        u = _ancestral_pp_1(x, x0, v_s, v_mid, eta, z_1)
        x_next = _ancestral_pp_1(x, predict_x0_eps(model, u, v_mid.t, v_mid)[0], v_s, v_t, eta, z_2)
        if callback is not None:
            callback(StepInfo(i, ts[i], ts[i + 1], x, x_next, x0))
        x = x_next
    return x


def _ancestral_pp_1(x: Tensor, x0: Tensor, v_s: ScheduleValues, v_t: ScheduleValues, eta: float, z) -> Tensor:
    """DPM-Solver++(1) from s to lambda_down, then the ancestral noise rho_up z, in the frame of t."""
    v_down, rho_up = ancestral_split(v_s, v_t, eta)
    out = dpm_solver_pp_1_step(x, x0, v_s, v_down)
    return out if z is None else out + expand_like(v_down.alpha * rho_up, x) * z


#: k-diffusion's / diffusers' stochastic DPM-Solver++(2S) for the oracle (a model of their code: module docstring).
SDE_DPM_SOLVER_PP_2S = SamplerSpec(
    "sde_dpm_solver_pp_2s",
    sample_sde_dpm_solver_pp_2s,
    1,  # nominal (weak order not measured: no registry entry)
    lambda options: options.get("eta", 1.0) > 0,
    "lu2022dpmsolverpp",
    "k-diffusion sample_dpmpp_sde (r = 1/2): arXiv:2211.01095v3 DPM-Solver++(1) stages made ancestral",
    nfe=lambda n: 2 * n,
)


register(
    SamplerSpec(
        name="dpm_solver_2_ancestral",
        sample=sample_dpm_solver_2_ancestral,
        order=2,  # weak order, measured on Gaussian data (as SDE-DPM-Solver++(2M)'s)
        stochastic=lambda options: options.get("eta", 1.0) > 0,
        paper="lu2022dpmsolver",
        equation="arXiv:2206.00927v3 Algorithm 1 (r1 = 1/2) to lambda_down, plus ancestral noise (eta = 1)",
        nfe=lambda n: 2 * n,
        order_steps=(32, 64, 128),  # local weak orders 2.09, 2.04 on the Gaussian (2.02 at 256)
    )
)
