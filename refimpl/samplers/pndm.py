"""PNDM: pseudo numerical methods for diffusion models (Liu, Ren, Lin & Zhao 2022, arXiv:2202.09778v2).

A pseudo numerical method splits a step t -> s into a *gradient part*, which estimates the noise
direction e' from model outputs, and the *transfer part* phi(x_t, e', t, s), which moves x_t along
the DDIM path with that direction (their Eq. 9). In the notation x_t = alpha_t x_0 + sigma_t eps
(their alpha-bar_t is alpha_t^2), phi is DDIM written without cancellation:

    phi(x_t, e, t, s) = (alpha_s / alpha_t) x_t
                        - (alpha_s^2 sigma_t^2 - alpha_t^2 sigma_s^2) / (alpha_t (alpha_t sigma_s + alpha_s sigma_t)) e,

which for alpha^2 + sigma^2 = 1 is their Eq. 9 term by term (the numerator is alpha-bar_s - alpha-bar_t);
``tests/test_pndm.py`` checks phi = DDIM's step to 1e-12 on every schedule. Gradient parts:

* PLMS (pseudo linear multistep, their Sec. 3.3): e' = (55 e_0 - 59 e_1 + 37 e_2 - 9 e_3) / 24 from the
  last four model outputs, one model call per step (Adams-Bashforth 4 with equal-step weights).
* PRK (pseudo Runge-Kutta): four model calls, at t, twice at the midpoint and at s, each stage moved
  from x_t by phi, combined as (e_1 + 2 e_2 + 2 e_3 + e_4) / 6.
* F-PNDM warms PLMS up with three PRK steps: n steps cost 4 * 3 + (n - 3) = n + 9 model calls, which
  is the 19 calls diffusers' ``PNDMScheduler`` makes after ``set_timesteps(10)``. S-PNDM and
  diffusers' ``skip_prk_steps=True`` start with a pseudo improved Euler step instead (2 calls).

Order. In the scaled state x~ = x / alpha and sigma = sigma_t / alpha_t the ODE is dx~/dsigma = eps
and phi is an Euler step in sigma (Karras et al. 2022, arXiv:2206.00364v2, Eq. 3). PLMS applies the
equal-step Adams-Bashforth weights, so it keeps order 4 only on grids uniform in sigma (and the PRK
midpoint must then be the sigma midpoint, ``midpoint="sigma"``: PRK is then classical RK4). On any
other grid (uniform in t or lambda) the weights miss the step-size ratio by O(h) and the local error
is O(h^3): the global order is 2. That is the order registered (measured in the tests).
"""

from __future__ import annotations

import torch
from torch import Tensor

from refimpl._util import expand_like
from refimpl.models import DiffusionModel, predict_x0_eps
from refimpl.registry import SamplerSpec, register
from refimpl.samplers._common import Callback, StepInfo, check_sampler_inputs
from refimpl.schedules import NoiseSchedule, ScheduleValues

__all__ = ["PLMS_WEIGHTS", "midpoint_time", "plms_direction", "pndm_transfer", "prk_step", "sample_pndm"]

#: Adams-Bashforth weights of PLMS-k, newest model output first (Liu et al. 2022, Sec. 3.3; k = 4 is PLMS).
PLMS_WEIGHTS: dict[int, tuple[float, ...]] = {
    1: (1.0,),
    2: (3 / 2, -1 / 2),
    3: (23 / 12, -16 / 12, 5 / 12),
    4: (55 / 24, -59 / 24, 37 / 24, -9 / 24),
}
WARMUPS = ("prk", "improved_euler")
MIDPOINTS = ("t", "sigma")


def pndm_transfer(x: Tensor, e: Tensor, values_t: ScheduleValues, values_s: ScheduleValues) -> Tensor:
    """The transfer part phi(x_t, e, t, s) of Liu et al. (2022), Eq. 9, for any schedule (see module docstring).

    x and e have shape (B, ...); values_t, values_s are the schedule at the start t and the end s.
    """
    a_t, s_t, a_s, s_s = values_t.alpha, values_t.sigma, values_s.alpha, values_s.sigma
    coef_e = (a_s**2 * s_t**2 - a_t**2 * s_s**2) / (a_t * (a_t * s_s + a_s * s_t))  # Eq. 9, alpha-bar = alpha^2
    return expand_like(a_s / a_t, x) * x - expand_like(coef_e, e) * e


def plms_direction(es: list[Tensor]) -> Tensor:
    """The PLMS gradient part e' = sum_j w_j e_j with the weights of order len(es), ``es`` newest first."""
    weights = PLMS_WEIGHTS.get(len(es))
    if weights is None:
        raise ValueError(f"PLMS needs 1 to 4 stored model outputs, got {len(es)}")
    return sum(w * e for w, e in zip(weights, es, strict=True))


def midpoint_time(schedule: NoiseSchedule, t: Tensor, s: Tensor, midpoint: str) -> Tensor:
    """The PRK midpoint of the step t -> s: (t + s) / 2 (the paper's t - delta/2) or the EDM sigma midpoint."""
    if midpoint == "t":
        return 0.5 * (t + s)
    if midpoint == "sigma":
        sigma_mid = 0.5 * (torch.exp(-schedule.lambda_t(t)) + torch.exp(-schedule.lambda_t(s)))
        return schedule.t_of_lambda(-torch.log(sigma_mid))
    raise ValueError(f"midpoint must be one of {MIDPOINTS}, got {midpoint!r}")


def prk_step(
    model: DiffusionModel, x: Tensor, t: Tensor, s: Tensor, e_1: Tensor, midpoint: str = "t"
) -> tuple[Tensor, Tensor]:
    """One pseudo Runge-Kutta step t -> s (Liu et al. 2022, Sec. 3.3) given e_1 = eps(x, t): 3 more model calls.

    Returns (x_s, e') with e' = (e_1 + 2 e_2 + 2 e_3 + e_4) / 6.
    """
    schedule = model.schedule
    t_mid = midpoint_time(schedule, t, s, midpoint)
    v_t, v_mid, v_s = schedule(t), schedule(t_mid), schedule(s)
    _, e_2 = predict_x0_eps(model, pndm_transfer(x, e_1, v_t, v_mid), t_mid, v_mid)
    _, e_3 = predict_x0_eps(model, pndm_transfer(x, e_2, v_t, v_mid), t_mid, v_mid)
    _, e_4 = predict_x0_eps(model, pndm_transfer(x, e_3, v_t, v_s), s, v_s)
    e_prime = (e_1 + 2.0 * e_2 + 2.0 * e_3 + e_4) / 6.0
    return pndm_transfer(x, e_prime, v_t, v_s), e_prime


def sample_pndm(
    model: DiffusionModel,
    x: Tensor,
    timesteps: Tensor,
    *,
    order: int = 4,
    warmup: str = "prk",
    midpoint: str = "t",
    callback: Callback | None = None,
) -> Tensor:
    """PNDM from timesteps[0] to timesteps[-1].

    ``order`` (1..4) is the Adams-Bashforth order of the PLMS steps. ``warmup="prk"`` takes the first
    order - 1 steps with PRK (F-PNDM for order 4); ``warmup="improved_euler"`` takes the first step with a
    pseudo improved Euler step and then raises the PLMS order by one per step (S-PNDM for order 2,
    diffusers' ``skip_prk_steps=True`` for order 4). ``midpoint`` is the PRK midpoint ("t" or "sigma").
    """
    ts = check_sampler_inputs(model, x, timesteps)
    if isinstance(order, bool) or order not in PLMS_WEIGHTS:
        raise ValueError(f"order must be one of {sorted(PLMS_WEIGHTS)}, got {order!r}")
    if warmup not in WARMUPS:
        raise ValueError(f"warmup must be one of {WARMUPS}, got {warmup!r}")
    if midpoint not in MIDPOINTS:
        raise ValueError(f"midpoint must be one of {MIDPOINTS}, got {midpoint!r}")
    values = model.schedule(ts)
    es: list[Tensor] = []  # model outputs at the start of each step, newest first
    for i in range(len(ts) - 1):
        v_t, v_s = values[i], values[i + 1]
        x0, e = predict_x0_eps(model, x, ts[i], v_t)
        es = [e, *es][:order]
        if warmup == "prk" and i < order - 1:
            x_next, _ = prk_step(model, x, ts[i], ts[i + 1], e, midpoint)
        elif warmup == "improved_euler" and i == 0 and order > 1:
            # Pseudo improved Euler (S-PNDM's first step): average e with the output at the DDIM end point.
            _, e_end = predict_x0_eps(model, pndm_transfer(x, e, v_t, v_s), ts[i + 1], v_s)
            x_next = pndm_transfer(x, 0.5 * (e + e_end), v_t, v_s)
        else:
            x_next = pndm_transfer(x, plms_direction(es), v_t, v_s)  # PLMS of order len(es)
        if callback is not None:
            callback(StepInfo(i, ts[i], ts[i + 1], x, x_next, x0))
        x = x_next
    return x


def _nfe_f_pndm(n: int) -> int:
    return 4 * min(n, 3) + max(n - 3, 0)


register(
    SamplerSpec(
        name="pndm",
        sample=sample_pndm,
        order=2,
        stochastic=False,
        paper="liu2022pndm",
        equation="arXiv:2202.09778v2 Eq. 9 + Sec. 3.3 (F-PNDM: 3 PRK steps, then PLMS-4)",
        nfe=_nfe_f_pndm,
        options={"order": 4, "warmup": "prk", "midpoint": "t"},
        order_steps=(64, 128, 256, 512),
    )
)
register(
    SamplerSpec(
        name="plms",
        sample=sample_pndm,
        order=2,
        stochastic=False,
        paper="liu2022pndm",
        equation="arXiv:2202.09778v2 Eq. 9 + Sec. 3.3 (PLMS-4 after a pseudo improved Euler step)",
        nfe=lambda n: n + 1,
        options={"order": 4, "warmup": "improved_euler"},
        order_steps=(64, 128, 256, 512),
    )
)
