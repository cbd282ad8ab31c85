"""DDPM: the forward process, the posterior q(x_s | x_t, x_0), and the ancestral sampler.

Ho, Jain & Abbeel (2020), arXiv:2006.11239v2. Their alpha-bar_t is our alpha_t^2. A step goes from s to
an earlier (less noisy) time t < s (their t to t - 1), with the forward transition from x_t to x_s written
x_s = alpha_{s|t} x_t + sigma_{s|t} z, alpha_{s|t} = alpha_s / alpha_t,
sigma_{s|t}^2 = sigma_s^2 - alpha_{s|t}^2 sigma_t^2 (Kingma et al. 2021, arXiv:2107.00630v6, Eq. 22-23, whose
letters are the other way round). For consecutive steps of a discrete schedule sigma_{s|t}^2 is their beta_t.

``posterior_symbolic`` derives the posterior by completing the square in sympy; the numeric
``ddpm_posterior`` is checked against it in ``tests/test_ddpm_ddim.py``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from refimpl._util import expand_like
from refimpl._validation import check_instance
from refimpl.models import DiffusionModel, predict_x0_eps
from refimpl.registry import SamplerSpec, register
from refimpl.samplers._common import Callback, NoiseSource, StepInfo, check_sampler_inputs
from refimpl.schedules import ScheduleValues

__all__ = ["ddpm_posterior", "forward_sample", "posterior_symbolic", "sample_ddpm"]

VARIANCES = ("posterior", "beta")


def forward_sample(x0: Tensor, v_t: ScheduleValues, eps: Tensor) -> Tensor:
    """q(x_t | x_0): x_t = alpha_t x_0 + sigma_t eps (Ho et al. 2020, Eq. 4)."""
    check_instance(v_t, ScheduleValues, "v_t")
    return expand_like(v_t.alpha, x0) * x0 + expand_like(v_t.sigma, eps) * eps


def ddpm_posterior(x_s: Tensor, x0: Tensor, v_s: ScheduleValues, v_t: ScheduleValues) -> tuple[Tensor, Tensor]:
    """Mean and variance of q(x_t | x_s, x_0), t < s (Ho et al. 2020, Eq. 6-7, their q(x_{t-1} | x_t, x_0)).

    mean = alpha_{s|t} sigma_t^2 / sigma_s^2 x_s + alpha_t sigma_{s|t}^2 / sigma_s^2 x_0,
    var  = sigma_{s|t}^2 sigma_t^2 / sigma_s^2   (their beta-tilde_t).

    v_t must be less noisy than v_s (lambda_t > lambda_s): otherwise sigma_{s|t}^2 <= 0 and there is no posterior.
    """
    check_instance(v_s, ScheduleValues, "v_s")
    check_instance(v_t, ScheduleValues, "v_t")
    if bool((v_t.lambda_ <= v_s.lambda_).any()):
        raise ValueError("ddpm_posterior: v_t must be less noisy than v_s (lambda_t > lambda_s); swap the two times")
    for name, value in (("x_s", x_s), ("x0", x0)):
        if not isinstance(value, Tensor) or not value.is_floating_point():
            raise TypeError(f"{name} must be a floating torch.Tensor, got {type(value).__name__}")
    a_t, s_t = v_t.alpha, v_t.sigma
    a_s, s_s = v_s.alpha, v_s.sigma
    a_st = a_s / a_t
    var_st = s_s**2 - a_st**2 * s_t**2
    mean = expand_like(a_st * s_t**2 / s_s**2, x_s) * x_s + expand_like(a_t * var_st / s_s**2, x0) * x0
    return mean, var_st * s_t**2 / s_s**2


def sample_ddpm(
    model: DiffusionModel,
    x: Tensor,
    timesteps: Tensor,
    *,
    variance: str = "posterior",
    noise: Tensor | None = None,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """Ancestral sampling (Ho et al. 2020, Algorithm 2): x_s ~ N(mean(x_t, x0_hat), var) at every step.

    ``variance="posterior"`` uses beta-tilde (the posterior variance); ``"beta"`` uses
    sigma_{s|t}^2 (their sigma_t^2 = beta_t), the two choices of their Sec. 3.2. Noise is injected
    at every step, so the result at timesteps[-1] follows p at that time, not a denoised x_0.
    """
    ts = check_sampler_inputs(model, x, timesteps)
    if variance not in VARIANCES:
        raise ValueError(f"variance must be one of {VARIANCES}, got {variance!r}")
    noise_at = NoiseSource(noise, generator, len(ts) - 1, x)
    values = model.schedule(ts)
    for i in range(len(ts) - 1):
        v_s, v_t = values[i], values[i + 1]
        x0, _ = predict_x0_eps(model, x, ts[i], v_s)
        mean, var = ddpm_posterior(x, x0, v_s, v_t)
        if variance == "beta":
            var = v_s.sigma**2 - (v_s.alpha / v_t.alpha) ** 2 * v_t.sigma**2
        x_next = mean + expand_like(torch.sqrt(var), x) * noise_at(i)
        if callback is not None:
            callback(StepInfo(i, ts[i], ts[i + 1], x, x_next, x0))
        x = x_next
    return x


def posterior_symbolic() -> dict[str, Any]:
    """Derive q(x_s | x_t, x_0) in sympy by completing the square (one coordinate; they are independent).

    In DDPM's letters, as chapter 1 displays them: here s < t, so t is the *start* of a sampler step and s its
    end (``ddpm_posterior`` uses the step letters, s the start).

    With abar_s = alpha_s^2 and abar_t = alpha_t^2 (VP), q(x_s | x_0) = N(sqrt(abar_s) x_0, 1 - abar_s) and
    q(x_t | x_s) = N(sqrt(abar_t / abar_s) x_s, 1 - abar_t / abar_s). The log of their product is a
    quadratic in x_s; its x_s^2 coefficient gives the precision and its linear term the mean.

    Returns the symbols and the factored ``coef_xt``, ``coef_x0`` (the mean is coef_xt x_t + coef_x0 x_0)
    and ``variance``, plus ``log_joint`` (the quadratic before completing the square).
    """
    import sympy as sp

    abar_s, abar_t = sp.symbols("abar_s abar_t", positive=True)
    x_s, x_t, x_0 = sp.symbols("x_s x_t x_0", real=True)
    abar_ts = abar_t / abar_s
    log_joint = -((x_t - sp.sqrt(abar_ts) * x_s) ** 2) / (2 * (1 - abar_ts)) - (x_s - sp.sqrt(abar_s) * x_0) ** 2 / (
        2 * (1 - abar_s)
    )
    poly = sp.Poly(sp.expand(log_joint), x_s)
    quad, lin = poly.coeff_monomial(x_s**2), poly.coeff_monomial(x_s)
    variance = sp.factor(-1 / (2 * quad))  # factor, not simplify: the same rational function, 5x faster
    mean = sp.expand(sp.factor(lin * variance))
    return {
        "abar_s": abar_s,
        "abar_t": abar_t,
        "x_t": x_t,
        "x_0": x_0,
        "log_joint": log_joint,
        "variance": variance,
        "coef_xt": sp.factor(mean.coeff(x_t)),
        "coef_x0": sp.factor(mean.coeff(x_0)),
    }


register(
    SamplerSpec(
        name="ddpm",
        sample=sample_ddpm,
        order=1,
        stochastic=True,
        paper="ho2020ddpm",
        equation="arXiv:2006.11239v2 Algorithm 2 with Eq. 6-7",
    )
)
register(
    SamplerSpec(
        name="ddpm_beta",
        sample=sample_ddpm,
        order=1,  # weak order
        stochastic=True,
        paper="ho2020ddpm",
        equation="arXiv:2006.11239v2 Algorithm 2 with sigma_t^2 = beta_t (Sec. 3.2)",
        options={"variance": "beta"},
    )
)
