"""DDIM: the eta family of Song, Meng & Ermon (2021), arXiv:2010.02502v4, and DDIM inversion.

In the notation x_t = alpha_t x_0 + sigma_t eps (their sqrt(alpha_t) is our alpha_t), one step
from s to t < s (their t to t - 1) with predictions (x0, eps) at x_s is their Eq. 12:

    x_t = alpha_t x0 + sqrt(sigma_t^2 - sigma_tilde^2) eps + sigma_tilde z,
    sigma_tilde = eta sigma_t sqrt(1 - exp(-2 h)),  h = lambda_t - lambda_s,

which is their Eq. 16 rewritten with lambda = log(alpha / sigma). eta = 0 is the deterministic
DDIM sampler, a first-order solver of the probability-flow ODE (Lu et al. 2022,
arXiv:2206.00927v3, Sec. 4.1); eta = 1 gives the DDPM posterior variance exactly
(tested against ``refimpl.samplers.ddpm``). For eta > 0 the sampler is stochastic, of weak order 1
(registered as "ddim_eta_half" with eta = 1/2; its weak order is measured from the exact output law on Gaussian data).

DDIM inversion runs the eta = 0 step forward in time with the model evaluated at the earlier
point, the approximation of Dhariwal & Nichol (2021, arXiv:2105.05233v4, App. F): it is not an
exact inverse, and its round-trip error shrinks only at first order in the step size.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from refimpl._util import expand_like
from refimpl._validation import as_float_tensor, check_finite, check_instance
from refimpl.models import DiffusionModel, predict_x0_eps
from refimpl.registry import SamplerSpec, register
from refimpl.samplers._common import Callback, NoiseSource, StepInfo, check_sampler_inputs
from refimpl.schedules import ScheduleValues

__all__ = ["ddim_sigma", "ddim_step", "invert_ddim", "sample_ddim"]


def ddim_sigma(eta: float, v_s: ScheduleValues, v_t: ScheduleValues) -> Tensor:
    """sigma_tilde of a step s -> t: eta sigma_t sqrt(1 - exp(-2 (lambda_t - lambda_s))) (Eq. 16).

    eta in [0, 1] (eta = 1 is DDPM's posterior, larger would exceed sigma_t), and t no noisier than s."""
    check_instance(v_s, ScheduleValues, "v_s")
    check_instance(v_t, ScheduleValues, "v_t")
    eta = float(check_finite(as_float_tensor(eta, "eta"), "eta"))
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must lie in [0, 1], got {eta}")
    h = v_t.lambda_ - v_s.lambda_
    if bool((h < 0).any()):
        raise ValueError("ddim_sigma: v_t must be no noisier than v_s (lambda_t >= lambda_s); swap the two times")
    return eta * v_t.sigma * torch.sqrt(-torch.expm1(-2.0 * h))


def ddim_step(
    x0: Tensor, eps: Tensor, v_t: ScheduleValues, sigma_tilde: Tensor | float = 0.0, z: Tensor | None = None
) -> Tensor:
    """Song et al. (2021), Eq. 12: x_t = alpha_t x0 + sqrt(sigma_t^2 - sigma_tilde^2) eps + sigma_tilde z,
    with (x0, eps) predicted at the start s of the step. Needs 0 <= sigma_tilde <= sigma_t (a few ulps of
    round-off above sigma_t are read as sigma_t)."""
    check_instance(v_t, ScheduleValues, "v_t")
    for name, value in (("x0", x0), ("eps", eps)):
        if not isinstance(value, Tensor) or not value.is_floating_point():
            raise TypeError(f"{name} must be a floating torch.Tensor, got {type(value).__name__}")
    a_t = expand_like(v_t.alpha, x0)
    sigma_tilde = check_finite(as_float_tensor(sigma_tilde, "sigma_tilde"), "sigma_tilde").to(v_t.sigma.dtype)
    slack = 4 * torch.finfo(v_t.sigma.dtype).eps * v_t.sigma
    if bool((sigma_tilde < 0).any()) or bool((sigma_tilde > v_t.sigma + slack).any()):
        raise ValueError(
            f"sigma_tilde must lie in [0, sigma_t] (sigma_t = {v_t.sigma.tolist()}), got {sigma_tilde.tolist()}"
        )
    direction = torch.sqrt((v_t.sigma**2 - sigma_tilde**2).clamp_min(0.0))  # "direction pointing to x_t"
    x_t = a_t * x0 + expand_like(direction, eps) * eps
    if z is not None:
        x_t = x_t + expand_like(sigma_tilde, z) * z
    return x_t


def sample_ddim(
    model: DiffusionModel,
    x: Tensor,
    timesteps: Tensor,
    *,
    eta: float = 0.0,
    noise: Tensor | None = None,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """DDIM from x at timesteps[0] to timesteps[-1]; deterministic when eta = 0, DDPM when eta = 1."""
    ts = check_sampler_inputs(model, x, timesteps)
    eta = float(check_finite(as_float_tensor(eta, "eta"), "eta"))
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must lie in [0, 1], got {eta}")
    noise_at = NoiseSource(noise, generator, len(ts) - 1, x)
    values = model.schedule(ts)
    for i in range(len(ts) - 1):
        v_s, v_t = values[i], values[i + 1]
        x0, eps = predict_x0_eps(model, x, ts[i], v_s)
        if eta > 0:
            x_next = ddim_step(x0, eps, v_t, ddim_sigma(eta, v_s, v_t), noise_at(i))
        else:
            x_next = ddim_step(x0, eps, v_t)
        if callback is not None:
            callback(StepInfo(i, ts[i], ts[i + 1], x, x_next, x0))
        x = x_next
    return x


def invert_ddim(model: DiffusionModel, x: Tensor, timesteps: Tensor, *, callback: Callback | None = None) -> Tensor:
    """DDIM inversion: from x at timesteps[-1] back up to timesteps[0] (the grid a sampler would use).

    Each step goes up from s to the noisier t > s with the model at its start (x_s, s), where the exact
    inverse of the sampler's step t -> s would need it at its unknown end (x_t, t).
    """
    ts = check_sampler_inputs(model, x, timesteps)
    values = model.schedule(ts)
    n = len(ts) - 1
    for j, i in enumerate(range(n, 0, -1)):
        x0, eps = predict_x0_eps(model, x, ts[i], values[i])
        x_next = ddim_step(x0, eps, values[i - 1])
        if callback is not None:
            callback(StepInfo(j, ts[i], ts[i - 1], x, x_next, x0))
        x = x_next
    return x


def _eta_positive(options: Mapping[str, Any]) -> bool:
    """DDIM injects noise exactly when eta > 0."""
    return options.get("eta", 0) > 0


register(
    SamplerSpec(
        name="ddim",
        sample=sample_ddim,
        order=1,
        stochastic=_eta_positive,
        encode=invert_ddim,
        invertible=False,
        paper="song2021ddim",
        equation="arXiv:2010.02502v4 Eq. 12 with eta = 0",
    )
)
register(
    SamplerSpec(
        name="ddim_eta_half",
        sample=sample_ddim,
        order=1,  # weak order
        stochastic=_eta_positive,
        paper="song2021ddim",
        equation="arXiv:2010.02502v4 Eq. 12 and 16 with eta = 1/2",
        options={"eta": 0.5},
    )
)
