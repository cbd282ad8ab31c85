"""Baselines in the EDM sigma parameterisation: Euler, Heun, and the linear multistep method (LMS).

Karras et al. (2022), arXiv:2206.00364v2, write every diffusion with the scale s(t) = alpha_t and the
noise level sigma = sigma_t / alpha_t = exp(-lambda_t) (their Eq. 4 and Table 1). In the scaled state
x~ = x_t / alpha_t the probability-flow ODE is (their Eq. 3 with s = 1)

    dx~/dsigma = (x~ - D(x~; sigma)) / sigma = eps(x_t, t),

D being the x0 (denoiser) prediction. The samplers below integrate this ODE on any grid of times
(each time t is the noise level sigma = exp(-lambda_t); ``refimpl.grids.karras`` is the grid of the
book) and return x_t = alpha_t x~:

* ``edm_euler`` -- one Euler step in sigma. It is DDIM (Song et al. 2021, arXiv:2010.02502v4,
  Eq. 14-15): x~_s = x~_t + (sigma_s - sigma_t) eps is x_s = alpha_s x0 + sigma_s eps.
* ``edm_heun``  -- Heun's method, EDM Algorithm 1 (deterministic, no churn). The grids here end at
  t_min > 0, so the second-order correction is applied at every step: 2 model calls per step.
* ``lms``       -- the linear multistep method in sigma of k-diffusion's ``sample_lms``: Adams-Bashforth
  with variable steps, whose weights are the integrals over the step of the Lagrange basis polynomials
  through the last k sigmas (k <= 4). The polynomials have degree k - 1 <= 3, so two-point
  Gauss-Legendre integrates them exactly (k-diffusion and diffusers call scipy's ``quad``).
  k-diffusion warms up with the orders 1, 2, ..., k - 1 (``warmup="lower_order"``); the first Euler
  step then has local error O(h^2), which caps the global order at 2 for every k >= 2 (with a small
  constant: near sigma_max the solution is almost a straight line, so the cap shows late). With
  ``warmup="rk4"`` (the default) the first k - 1 steps are classical RK4 in sigma, the pseudo
  Runge-Kutta step of PNDM with the sigma midpoint, and the method keeps its order k (n + 3(k - 1) calls).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from refimpl._util import expand_like
from refimpl.models import DiffusionModel, predict_x0_eps
from refimpl.registry import SamplerSpec, register
from refimpl.samplers._common import Callback, StepInfo, check_sampler_inputs
from refimpl.samplers.pndm import run_prk_step
from refimpl.schedules import ScheduleValues

__all__ = [
    "edm_sigma",
    "euler_step",
    "lms_coefficients",
    "lms_step",
    "sample_edm_euler",
    "sample_edm_heun",
    "sample_lms",
]

MAX_LMS_ORDER = 4
LMS_WARMUPS = ("rk4", "lower_order")

# Two-point Gauss-Legendre on [-1, 1]: exact for polynomials of degree <= 3.
_GL_NODES = (-1.0 / math.sqrt(3.0), 1.0 / math.sqrt(3.0))


def edm_sigma(values: ScheduleValues) -> Tensor:
    """The EDM noise level sigma = sigma_t / alpha_t = exp(-lambda_t) (Karras et al. 2022, Eq. 4)."""
    return torch.exp(-values.lambda_)


def euler_step(x: Tensor, d: Tensor, values_t: ScheduleValues, values_s: ScheduleValues) -> Tensor:
    """One Euler step in sigma: x~_s = x~_t + (sigma_s - sigma_t) d, returned as x_s = alpha_s x~_s.

    x (B, ...) is the unscaled state x_t; d = dx~/dsigma (= eps) at (x_t, t). EDM Algorithm 1, line 5.
    """
    x_tilde = x / expand_like(values_t.alpha, x)
    x_tilde_s = x_tilde + expand_like(edm_sigma(values_s) - edm_sigma(values_t), d) * d
    return expand_like(values_s.alpha, x) * x_tilde_s


def lms_coefficients(sigmas: Tensor, sigma_next: Tensor) -> Tensor:
    """Weights c_j of the variable-step Adams-Bashforth update x~_next = x~_cur + sum_j c_j d_j.

    ``sigmas`` (k,) are the noise levels of the k stored derivatives, the current one last;
    c_j = int_{sigma_cur}^{sigma_next} prod_{m != j} (tau - sigma_m) / (sigma_j - sigma_m) dtau, the integral
    of the j-th Lagrange basis polynomial (degree k - 1 <= 3) over the step, by two-point Gauss-Legendre.
    """
    k = sigmas.numel()
    if not 1 <= k <= MAX_LMS_ORDER:
        raise ValueError(f"the LMS order must lie in 1..{MAX_LMS_ORDER}, got {k} stored derivatives")
    a, b = sigmas[-1], sigma_next
    nodes = 0.5 * (a + b) + 0.5 * (b - a) * torch.tensor(_GL_NODES, dtype=sigmas.dtype)  # (2,)
    coefs = []
    for j in range(k):
        basis = torch.ones_like(nodes)
        for m in range(k):
            if m != j:
                basis = basis * (nodes - sigmas[m]) / (sigmas[j] - sigmas[m])
        coefs.append(0.5 * (b - a) * basis.sum())  # both Gauss-Legendre weights are 1
    return torch.stack(coefs)


def lms_step(x: Tensor, ds: list[Tensor], sigmas: Tensor, values_t: ScheduleValues, values_s: ScheduleValues) -> Tensor:
    """One LMS step from t to s: x~_s = x~_t + sum_j c_j d_j with the weights of ``lms_coefficients``.

    ``ds`` are the stored derivatives d = eps, oldest first, at the noise levels ``sigmas``; the last is at t.
    """
    if len(ds) != sigmas.numel():
        raise ValueError(f"{len(ds)} stored derivatives for {sigmas.numel()} noise levels")
    coefs = lms_coefficients(sigmas, edm_sigma(values_s))
    x_tilde_s = x / expand_like(values_t.alpha, x) + sum(c * d for c, d in zip(coefs, ds, strict=True))
    return expand_like(values_s.alpha, x) * x_tilde_s


def sample_edm_euler(
    model: DiffusionModel, x: Tensor, timesteps: Tensor, *, callback: Callback | None = None
) -> Tensor:
    """Euler in the EDM parameterisation from timesteps[0] to timesteps[-1] (one model call per step)."""
    ts = check_sampler_inputs(model, x, timesteps)
    values = model.schedule(ts)
    for i in range(len(ts) - 1):
        x0, eps = predict_x0_eps(model, x, ts[i], values[i])  # d = (x~ - D) / sigma = eps
        x_next = euler_step(x, eps, values[i], values[i + 1])
        if callback is not None:
            callback(StepInfo(i, ts[i], ts[i + 1], x, x_next, x0))
        x = x_next
    return x


def sample_edm_heun(model: DiffusionModel, x: Tensor, timesteps: Tensor, *, callback: Callback | None = None) -> Tensor:
    """EDM Algorithm 1 (deterministic): an Euler predictor and a trapezoidal corrector, 2 model calls a step."""
    ts = check_sampler_inputs(model, x, timesteps)
    values = model.schedule(ts)
    for i in range(len(ts) - 1):
        v_t, v_s = values[i], values[i + 1]
        x0, d = predict_x0_eps(model, x, ts[i], v_t)  # line 4: d_i = (x_i - D(x_i; t_i)) / t_i
        x_euler = euler_step(x, d, v_t, v_s)  # line 5: Euler step from t_i to t_{i+1}
        _, d_prime = predict_x0_eps(model, x_euler, ts[i + 1], v_s)  # line 7: d'_i at the Euler point
        x_next = euler_step(x, 0.5 * (d + d_prime), v_t, v_s)  # line 8: the trapezoidal rule
        if callback is not None:
            callback(StepInfo(i, ts[i], ts[i + 1], x, x_next, x0))
        x = x_next
    return x


def sample_lms(
    model: DiffusionModel,
    x: Tensor,
    timesteps: Tensor,
    *,
    order: int = 4,
    warmup: str = "rk4",
    callback: Callback | None = None,
) -> Tensor:
    """The linear multistep method in sigma (k-diffusion's ``sample_lms``).

    Step i >= order - 1 is the order-k Adams-Bashforth step with the last k = ``order`` derivatives (one
    model call). The first order - 1 steps are RK4 in sigma (``warmup="rk4"``, 4 calls each) or
    Adams-Bashforth of orders 1, 2, ..., order - 1 (``warmup="lower_order"``, k-diffusion's choice).
    """
    ts = check_sampler_inputs(model, x, timesteps)
    if isinstance(order, bool) or not isinstance(order, int) or not 1 <= order <= MAX_LMS_ORDER:
        raise ValueError(f"order must be an integer in 1..{MAX_LMS_ORDER}, got {order!r}")
    if warmup not in LMS_WARMUPS:
        raise ValueError(f"warmup must be one of {LMS_WARMUPS}, got {warmup!r}")
    values = model.schedule(ts)
    sigmas = edm_sigma(values)
    ds: list[Tensor] = []
    for i in range(len(ts) - 1):
        x0, d = predict_x0_eps(model, x, ts[i], values[i])
        ds = [*ds, d][-order:]  # the derivatives at sigma_{i-k+1}, ..., sigma_i
        if warmup == "rk4" and i < order - 1:
            x_next, _ = run_prk_step(model, x, ts[i], ts[i + 1], d, midpoint="sigma")  # RK4 in (sigma, x~)
        else:
            x_next = lms_step(x, ds, sigmas[i + 1 - len(ds) : i + 1], values[i], values[i + 1])
        if callback is not None:
            callback(StepInfo(i, ts[i], ts[i + 1], x, x_next, x0))
        x = x_next
    return x


register(
    SamplerSpec(
        name="edm_euler",
        sample=sample_edm_euler,
        order=1,
        stochastic=False,
        paper="karras2022edm",
        equation="arXiv:2206.00364v2 Eq. 3 (Euler in sigma = sigma_t / alpha_t)",
    )
)
register(
    SamplerSpec(
        name="edm_heun",
        sample=sample_edm_heun,
        order=2,
        stochastic=False,
        paper="karras2022edm",
        equation="arXiv:2206.00364v2 Algorithm 1 (deterministic)",
        nfe=lambda n: 2 * n,
    )
)
register(
    SamplerSpec(
        name="lms",
        sample=sample_lms,
        order=4,
        stochastic=False,
        paper="karras2022edm",
        equation="variable-step Adams-Bashforth 4 in sigma (k-diffusion sample_lms), RK4 warm-up",
        nfe=lambda n: n + 3 * min(n, 3),
        options={"order": 4, "warmup": "rk4"},
        # Polynomials in sigma resolve the toys' modes slowly: the slope reaches 4 - 0.1 only past 128 steps.
        order_steps=(128, 256, 512, 1024),
    )
)
