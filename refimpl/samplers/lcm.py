"""Multistep latent consistency sampling: the consistency function of an LCM, then re-noising to the next time.

A latent consistency model (Luo et al. 2023, arXiv:2310.04378v1, Sec. 4.2, Eq. 9 [unverified]) parameterises its
consistency function by the network's x0 prediction x0_theta(x, t), with the boundary condition f(x, epsilon) = x
built in (Song et al. 2023, arXiv:2303.01469v2, Eq. 5 and App. C):

    f(x, t) = c_skip(tau) x + c_out(tau) x0_theta(x, t),
    c_skip = sigma_d^2 / (tau^2 + sigma_d^2),   c_out = tau / sqrt(tau^2 + sigma_d^2),

where tau is the discrete training timestep k = N (t - t_min) of an N-step grid starting at t_min (diffusers' time
convention t = (k + 1) / N on a discrete schedule), scaled by ``timestep_scaling`` (10 in the official code, so that
c_skip is ~1e-5 from k = 20 on and exactly 1 at k = 0); unlike the consistency-models form, c_out carries no factor
sigma_d. Multistep sampling (LCM's Algorithm 3, as diffusers' LCMScheduler docs number it; consistency models'
Algorithm 1) evaluates f at t_i and re-noises the result *as if it were x_0* to the next time:
x_{i+1} = alpha_{i+1} f(x_i, t_i) + sigma_{i+1} z_i; the last step returns f(x_{n-1}, t_{n-1}), reported at the grid's
last time (for LCM t_min, where f is x itself).

This is what diffusers' ``LCMScheduler`` computes. It is a sampler of the data law only when x0_theta comes from a
trained consistency model: with a diffusion model's posterior mean E[x_0 | x_t] the re-noised states lose the
posterior covariance at every step (on Gaussian data the output's variance tends to about half the data's), so it is
not a registry entry (the registry's weak-order test would fail by design). ``LCM_MULTISTEP`` describes it for the
oracle, which compares step math given the same model outputs and noise.
"""

from __future__ import annotations

import torch
from torch import Tensor

from refimpl._util import expand_like
from refimpl._validation import as_finite_float, check_integer
from refimpl.models import DiffusionModel, predict_x0_eps
from refimpl.registry import SamplerSpec
from refimpl.samplers._common import Callback, NoiseSource, StepInfo, check_sampler_inputs
from refimpl.schedules import NoiseSchedule

__all__ = ["LCM_MULTISTEP", "lcm_scalings", "sample_lcm_multistep"]


def lcm_scalings(
    schedule: NoiseSchedule, t: Tensor, train_steps: int = 1000, timestep_scaling: float = 10.0, sigma_data: float = 0.5
) -> tuple[Tensor, Tensor]:
    """(c_skip, c_out) of LCM's consistency function at time t (module docstring; arXiv:2310.04378v1 Eq. 9
    [unverified]): tau = timestep_scaling * train_steps * (t - t_min)."""
    if not isinstance(schedule, NoiseSchedule):
        raise TypeError(f"schedule must be a NoiseSchedule, got {type(schedule).__name__}")
    check_integer(train_steps, "train_steps", lo=1)
    scaling, sd = as_finite_float(timestep_scaling, "timestep_scaling"), as_finite_float(sigma_data, "sigma_data")
    if not (scaling > 0 and sd > 0):
        raise ValueError(f"timestep_scaling and sigma_data must be positive, got {scaling}, {sd}")
    t = schedule.check_t(torch.as_tensor(t, dtype=torch.float64), "t")
    tau = scaling * train_steps * (t - schedule.t_min)
    return sd**2 / (tau**2 + sd**2), tau / torch.sqrt(tau**2 + sd**2)


def sample_lcm_multistep(
    model: DiffusionModel,
    x: Tensor,
    timesteps: Tensor,
    *,
    train_steps: int = 1000,
    timestep_scaling: float = 10.0,
    sigma_data: float = 0.5,
    noise: Tensor | None = None,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """Multistep LCM sampling (module docstring): step i computes f(x, t_i) = c_skip x + c_out x0(x, t_i) and, except
    at the last step, re-noises it to t_{i+1} with ``noise[i]`` (shape (n_steps, *x.shape); the last is unused) or a
    draw from ``generator``. One model call a step."""
    ts = check_sampler_inputs(model, x, timesteps)
    n_steps = len(ts) - 1
    noise_at = NoiseSource(noise, generator, n_steps, x)
    values = model.schedule(ts)
    c_skip, c_out = lcm_scalings(model.schedule, ts, train_steps, timestep_scaling, sigma_data)
    for i in range(n_steps):
        x0 = predict_x0_eps(model, x, ts[i], values[i])[0]
        f = expand_like(c_skip[i], x) * x + expand_like(c_out[i], x) * x0
        v = values[i + 1]
        x_next = f if i == n_steps - 1 else expand_like(v.alpha, x) * f + expand_like(v.sigma, x) * noise_at(i)
        if callback is not None:
            callback(StepInfo(i, ts[i], ts[i + 1], x, x_next, x0))
        x = x_next
    return x


#: The oracle's description of LCM sampling (not a registry entry: see the module docstring).
LCM_MULTISTEP = SamplerSpec(
    "lcm_multistep",
    sample_lcm_multistep,
    1,  # nominal: with a diffusion model's x0 it converges to no law (module docstring)
    True,
    "luo2023lcm",
    "arXiv:2310.04378v1 Eq. 9 [unverified] and Algorithm 3: f = c_skip x + c_out x0, re-noised as x_0",
)
