"""Baselines in the EDM sigma parameterisation: Euler, Heun, and the linear multistep method (LMS).

Karras et al. (2022), arXiv:2206.00364v2, write every diffusion with the scale s(t) = alpha_t and the
noise level sigma = sigma_t / alpha_t = exp(-lambda_t) (their Eq. 4 and Table 1). In the scaled state
x~ = x_t / alpha_t the probability-flow ODE is (their Eq. 3 with s = 1)

    dx~/dsigma = (x~ - D(x~; sigma)) / sigma = eps(x_t, t),

D being the x0 (denoiser) prediction. The samplers below integrate this ODE on any grid of times
(each time t is the noise level sigma = ``v.rho`` = exp(-lambda_t); ``refimpl.grids.karras`` is the grid of the
book) and return x_t = alpha_t x~. A step goes from s to t (EDM: from t_i to t_{i+1}):

* ``edm_euler`` -- one Euler step in sigma. It is DDIM (Song et al. 2021, arXiv:2010.02502v4,
  Eq. 14-15): x~_t = x~_s + (sigma_t - sigma_s) eps is x_t = alpha_t x0 + sigma_t eps.
* ``edm_heun``  -- Heun's method, EDM Algorithm 1 (deterministic, no churn). The grids here end at
  t_min > 0, so the second-order correction is applied at every step: 2 model calls per step.
* ``lms``       -- the linear multistep method in sigma of k-diffusion's ``sample_lms``: Adams-Bashforth
  with variable steps, whose weights are the integrals over the step of the Lagrange basis polynomials
  through the last k sigmas (k <= 4), exact (k-diffusion and diffusers call scipy's ``quad``). It is the
  setting ``"lms"`` of the multistep engine (``refimpl.samplers.multistep``), and with the same start the same
  map as DEIS rhoAB (polynomials in rho = sigma on eps, in x / alpha; tests/test_multistep.py).
  k-diffusion warms up with the orders 1, 2, ..., k - 1 (``warmup="lower_order"``); the first Euler
  step then has local error O(h^2), which caps the global order at 2 for every k >= 2 (with a small
  constant: near sigma_max the solution is almost a straight line, so the cap shows late). With
  ``warmup="singlestep"`` (the default) the first k - 1 steps are classical RK4 in sigma, the pseudo
  Runge-Kutta step of PNDM with the sigma midpoint, and the method keeps its order k (n + 3(k - 1) calls).
"""

from __future__ import annotations

from torch import Tensor

from refimpl._util import expand_like
from refimpl._validation import check_float_tensors, check_kinds
from refimpl.models import DiffusionModel, predict_x0_eps
from refimpl.registry import SamplerSpec, register
from refimpl.samplers._common import Callback, StepInfo, check_sampler_inputs
from refimpl.samplers.multistep import SETTINGS, multistep_step, sample_multistep
from refimpl.schedules import ScheduleValues

__all__ = [
    "euler_step",
    "lms_step",
    "sample_edm_euler",
    "sample_edm_heun",
    "sample_lms",
]


def euler_step(x: Tensor, d: Tensor, v_s: ScheduleValues, v_t: ScheduleValues) -> Tensor:
    """One Euler step in sigma from s to t: x~_t = x~_s + (sigma_t - sigma_s) d, returned as x_t = alpha_t x~_t.

    x (B, ...) is the unscaled state x_s; d = dx~/dsigma (= eps) at (x_s, s); sigma = ``v.rho``. EDM Algorithm 1,
    line 5 (their step goes from t_i to t_{i+1}).
    """
    check_kinds(ScheduleValues, v_s=v_s, v_t=v_t)
    check_float_tensors(x=x, d=d)
    x_tilde_t = x / expand_like(v_s.alpha, x) + expand_like(v_t.rho - v_s.rho, d) * d
    return expand_like(v_t.alpha, x) * x_tilde_t


def lms_step(x: Tensor, ds: list[Tensor], sigmas: Tensor, v_s: ScheduleValues, v_t: ScheduleValues) -> Tensor:
    """One LMS step from s to t: x~_t = x~_s + sum_j c_j d_j, c_j = int_{sigma_s}^{sigma_t} l_j(tau) dtau (Eq. below).

    ``ds`` are the stored derivatives d = eps, newest first, at the noise levels ``sigmas`` (sigmas[0] = sigma_s);
    l_j is the Lagrange basis in sigma through them, integrated exactly by the engine (setting ``"lms"``).
    """
    check_kinds(ScheduleValues, v_s=v_s, v_t=v_t)
    check_float_tensors(x=x, sigmas=sigmas)
    check_kinds((list, tuple), ds=ds)
    if len(ds) != sigmas.numel():
        raise ValueError(f"{len(ds)} stored derivatives for {sigmas.numel()} noise levels")
    return multistep_step(x, list(zip(sigmas, ds, strict=True)), v_s, v_t, SETTINGS["lms"])


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
    """EDM Algorithm 1 (deterministic): an Euler predictor and a trapezoidal corrector, 2 model calls a step.

    Each step goes from s = timesteps[i] to t = timesteps[i + 1] (EDM's t_i to t_{i+1}).
    """
    ts = check_sampler_inputs(model, x, timesteps)
    values = model.schedule(ts)
    for i in range(len(ts) - 1):
        v_s, v_t = values[i], values[i + 1]
        x0, d = predict_x0_eps(model, x, ts[i], v_s)  # line 4: d_i = (x_i - D(x_i; t_i)) / t_i
        x_euler = euler_step(x, d, v_s, v_t)  # line 5: Euler step from t_i to t_{i+1}
        _, d_prime = predict_x0_eps(model, x_euler, ts[i + 1], v_t)  # line 7: d'_i at the Euler point
        x_next = euler_step(x, 0.5 * (d + d_prime), v_s, v_t)  # line 8: the trapezoidal rule
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
    warmup: str = "singlestep",
    callback: Callback | None = None,
) -> Tensor:
    """The linear multistep method in sigma (k-diffusion's ``sample_lms``): the engine's setting ``"lms"``.

    Step i >= order - 1 is the order-k Adams-Bashforth step with the last k = ``order`` derivatives (one
    model call). The first order - 1 steps are RK4 in sigma (``warmup="singlestep"``, 4 calls each) or
    Adams-Bashforth of orders 1, 2, ..., order - 1 (``warmup="lower_order"``, k-diffusion's choice; then this is
    DEIS rhoAB, ``sample_deis_ab(variable="rho")``, the same map).
    """
    return sample_multistep(model, x, timesteps, method="lms", order=order, warmup=warmup, callback=callback)


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
        options={"order": 4, "warmup": "singlestep"},
        # Polynomials in sigma resolve the toys' modes slowly: the slope reaches 4 - 0.1 only past 128 steps.
        order_steps=(128, 256, 512, 1024),
    )
)
