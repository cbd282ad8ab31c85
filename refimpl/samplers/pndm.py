"""PNDM: pseudo numerical methods for diffusion models (Liu, Ren, Lin & Zhao 2022, arXiv:2202.09778v2).

A pseudo numerical method splits a step into a *gradient part*, which estimates the noise direction e'
from model outputs, and the *transfer part* phi, which moves the state along the DDIM path with that
direction (their Eq. 9). The paper steps from t to t - delta; here a step goes from s to t < s, so their
phi(x_t, e', t, t - delta) is ``pndm_transfer(x_s, e', v_s, v_t)``. In the notation x_t = alpha_t x_0 +
sigma_t eps (their alpha-bar_t is alpha_t^2), phi is DDIM written without cancellation:

    phi(x_s, e, s, t) = (alpha_t / alpha_s) x_s
                        - (alpha_t^2 sigma_s^2 - alpha_s^2 sigma_t^2) / (alpha_s (alpha_s sigma_t + alpha_t sigma_s)) e,

which for alpha^2 + sigma^2 = 1 is their Eq. 9 term by term (the numerator is alpha-bar_t - alpha-bar_s);
``tests/test_pndm.py`` checks phi = DDIM's step to round-off on every schedule. Gradient parts:

* PLMS (pseudo linear multistep, their Sec. 3.3): e' = (55 e_0 - 59 e_1 + 37 e_2 - 9 e_3) / 24 from the
  last four model outputs, one model call per step (Adams-Bashforth 4 with equal-step weights).
* PRK (pseudo Runge-Kutta): four model calls, at s, twice at the midpoint and at t, each stage moved
  from x_s by phi, combined as (e_1 + 2 e_2 + 2 e_3 + e_4) / 6. ``prk_step`` is the pure step (it takes
  the four outputs; the stage states are phi of x_s with the previous output, ``prk_stage``);
  ``run_prk_step`` makes the three model calls after the first.
* F-PNDM warms PLMS up with three PRK steps: n steps cost 4 * 3 + (n - 3) = n + 9 model calls, which
  is the 19 calls diffusers' ``PNDMScheduler`` makes after ``set_timesteps(10)``. S-PNDM and
  diffusers' ``skip_prk_steps=True`` start with a pseudo improved Euler step instead (2 calls).

Warm-ups use the multistep engine's vocabulary (``refimpl.samplers.multistep.WARMUPS``):
``warmup="singlestep"`` (F-PNDM; formerly "prk") lets the singlestep companion, PRK, take the first order - 1
steps, as the engine's LMS does with RK4 in sigma (PRK with ``midpoint="sigma"`` is that RK4);
``warmup="lower_order"`` (S-PNDM; formerly "improved_euler") raises the PLMS order by one per step as the
engine does, except that PNDM's first step is the pseudo improved Euler step (second order, 2 model calls)
where the engine takes an Euler step. The former names still work, with a DeprecationWarning.

Order. In the scaled state x~ = x / alpha and rho = sigma_t / alpha_t (EDM's sigma) the ODE is
dx~/drho = eps and phi is an Euler step in rho (Karras et al. 2022, arXiv:2206.00364v2, Eq. 3). PLMS applies the
equal-step Adams-Bashforth weights, so it keeps order 4 only on grids uniform in rho (and the PRK
midpoint must then be the rho midpoint, ``midpoint="sigma"``: PRK is then classical RK4). On any
other grid (uniform in t or lambda) the weights miss the step-size ratio by O(h) and the local error
is O(h^3): the global order is 2. That is the order registered (measured in the tests).
"""

from __future__ import annotations

import warnings

from torch import Tensor

from refimpl._util import expand_like
from refimpl._validation import check_finite_result, check_float_tensors, check_kinds
from refimpl.models import DiffusionModel, check_model, predict_x0_eps
from refimpl.registry import SamplerSpec, register
from refimpl.samplers._common import Callback, StepInfo, check_sampler_inputs
from refimpl.samplers.multistep import WARMUPS
from refimpl.schedules import NoiseSchedule, ScheduleValues

__all__ = [
    "PLMS_WEIGHTS",
    "midpoint_time",
    "plms_direction",
    "pndm_transfer",
    "prk_stage",
    "prk_step",
    "run_prk_step",
    "sample_pndm",
]

#: Adams-Bashforth weights of PLMS-k, newest model output first (Liu et al. 2022, Sec. 3.3; k = 4 is PLMS).
PLMS_WEIGHTS: dict[int, tuple[float, ...]] = {
    1: (1.0,),
    2: (3 / 2, -1 / 2),
    3: (23 / 12, -16 / 12, 5 / 12),
    4: (55 / 24, -59 / 24, 37 / 24, -9 / 24),
}
#: PNDM's former warm-up names -> their names in the one vocabulary ``WARMUPS`` (deprecated).
DEPRECATED_WARMUPS = {"prk": "singlestep", "improved_euler": "lower_order"}
MIDPOINTS = ("t", "sigma")


def pndm_transfer(x_s: Tensor, e: Tensor, v_s: ScheduleValues, v_t: ScheduleValues) -> Tensor:
    """The transfer part of Liu et al. (2022), Eq. 9, from s to t for any schedule (see module docstring).

    x_s and e have shape (B, ...); v_s, v_t are the schedule at the start s and the end t (their t and t - delta).
    """
    check_kinds(ScheduleValues, v_s=v_s, v_t=v_t)
    check_float_tensors(x_s=x_s, e=e)
    a_s, s_s, a_t, s_t = v_s.alpha, v_s.sigma, v_t.alpha, v_t.sigma
    coef_e = (a_t**2 * s_s**2 - a_s**2 * s_t**2) / (a_s * (a_s * s_t + a_t * s_s))  # Eq. 9, alpha-bar = alpha^2
    return expand_like(a_t / a_s, x_s) * x_s - expand_like(coef_e, e) * e


def plms_direction(es: list[Tensor]) -> Tensor:
    """The PLMS gradient part e' = sum_j w_j e_j with the weights of order len(es), ``es`` newest first (1 to 4
    finite floating tensors of one shape)."""
    check_kinds((list, tuple), es=es)
    if not 1 <= len(es) <= len(PLMS_WEIGHTS):
        raise ValueError(f"es must hold 1 to {len(PLMS_WEIGHTS)} stored model outputs, got {len(es)}")
    check_float_tensors(**{f"es[{j}]": e for j, e in enumerate(es)})
    if any(e.shape != es[0].shape for e in es):
        raise ValueError(f"es must hold tensors of one shape, got {[tuple(e.shape) for e in es]}")
    return check_finite_result(_plms_direction(es), "that es holds finite values")


def _plms_direction(es: list[Tensor]) -> Tensor:
    """``plms_direction`` without its checks (the sampler's loop: its outputs are checked model outputs)."""
    return sum(w * e for w, e in zip(PLMS_WEIGHTS[len(es)], es, strict=True))


def midpoint_time(schedule: NoiseSchedule, s: Tensor, t: Tensor, midpoint: str) -> Tensor:
    """The PRK midpoint of the step s -> t: (s + t) / 2 (the paper's t - delta/2) or the EDM sigma midpoint,
    t(rho) at rho = (rho_s + rho_t) / 2 (rho = sigma / alpha, EDM's sigma)."""
    if midpoint == "t":
        return 0.5 * (s + t)
    if midpoint == "sigma":
        return schedule.t_of_rho(0.5 * (schedule.rho_t(s) + schedule.rho_t(t)))
    raise ValueError(f"midpoint must be one of {MIDPOINTS}, got {midpoint!r}")


def prk_stage(x_s: Tensor, e_prev: Tensor, v_s: ScheduleValues, v_stage: ScheduleValues) -> Tensor:
    """A PRK stage state: x_s moved by phi with the previous stage's output (Liu et al. 2022, Sec. 3.3).

    Stage 2 is ``prk_stage(x_s, e_1, v_s, v_mid)``, stage 3 ``(x_s, e_2, v_s, v_mid)``, stage 4
    ``(x_s, e_3, v_s, v_t)``; the model output at stage k is e_k.
    """
    check_kinds(ScheduleValues, v_s=v_s, v_stage=v_stage)
    check_float_tensors(x_s=x_s, e_prev=e_prev)
    return pndm_transfer(x_s, e_prev, v_s, v_stage)


def prk_step(
    x_s: Tensor, e_1: Tensor, e_2: Tensor, e_3: Tensor, e_4: Tensor, v_s: ScheduleValues, v_t: ScheduleValues
) -> tuple[Tensor, Tensor]:
    """One pseudo Runge-Kutta step s -> t (Liu et al. 2022, Sec. 3.3) from the four stage outputs (``prk_stage``).

    Returns (x_t, e') with e' = (e_1 + 2 e_2 + 2 e_3 + e_4) / 6 and x_t = phi(x_s, e', s, t).
    """
    check_kinds(ScheduleValues, v_s=v_s, v_t=v_t)
    check_float_tensors(x_s=x_s, e_1=e_1, e_2=e_2, e_3=e_3, e_4=e_4)
    e_prime = (e_1 + 2.0 * e_2 + 2.0 * e_3 + e_4) / 6.0
    return pndm_transfer(x_s, e_prime, v_s, v_t), e_prime


def run_prk_step(
    model: DiffusionModel, x_s: Tensor, s: Tensor, t: Tensor, e_1: Tensor, midpoint: str = "t"
) -> tuple[Tensor, Tensor]:
    """A PRK step s -> t with its model calls: given e_1 = eps(x_s, s), query the 3 other stages and apply
    ``prk_step``. Returns (x_t, e')."""
    check_model(model)
    schedule = model.schedule
    t_mid = midpoint_time(schedule, s, t, midpoint)
    v_s, v_mid, v_t = schedule(s), schedule(t_mid), schedule(t)
    _, e_2 = predict_x0_eps(model, prk_stage(x_s, e_1, v_s, v_mid), t_mid, v_mid)
    _, e_3 = predict_x0_eps(model, prk_stage(x_s, e_2, v_s, v_mid), t_mid, v_mid)
    _, e_4 = predict_x0_eps(model, prk_stage(x_s, e_3, v_s, v_t), t, v_t)
    return prk_step(x_s, e_1, e_2, e_3, e_4, v_s, v_t)


def sample_pndm(
    model: DiffusionModel,
    x: Tensor,
    timesteps: Tensor,
    *,
    order: int = 4,
    warmup: str = "singlestep",
    midpoint: str = "t",
    callback: Callback | None = None,
) -> Tensor:
    """PNDM from timesteps[0] to timesteps[-1].

    ``order`` (1..4) is the Adams-Bashforth order of the PLMS steps. ``warmup="singlestep"`` takes the first
    order - 1 steps with PRK (F-PNDM for order 4); ``warmup="lower_order"`` takes the first step with a
    pseudo improved Euler step and then raises the PLMS order by one per step (S-PNDM for order 2,
    diffusers' ``skip_prk_steps=True`` for order 4). ``midpoint`` is the PRK midpoint ("t" or "sigma").
    The former names "prk" and "improved_euler" are deprecated (``DEPRECATED_WARMUPS``).
    """
    ts = check_sampler_inputs(model, x, timesteps)
    if isinstance(order, bool) or order not in PLMS_WEIGHTS:
        raise ValueError(f"order must be one of {sorted(PLMS_WEIGHTS)}, got {order!r}")
    if warmup in DEPRECATED_WARMUPS:
        new = DEPRECATED_WARMUPS[warmup]
        warnings.warn(f"warmup={warmup!r} is deprecated: use warmup={new!r}", DeprecationWarning, stacklevel=2)
        warmup = new
    if warmup not in WARMUPS:
        raise ValueError(f"warmup must be one of {WARMUPS}, got {warmup!r}")
    if midpoint not in MIDPOINTS:
        raise ValueError(f"midpoint must be one of {MIDPOINTS}, got {midpoint!r}")
    values = model.schedule(ts)
    es: list[Tensor] = []  # model outputs at the start of each step, newest first
    for i in range(len(ts) - 1):
        v_s, v_t = values[i], values[i + 1]
        x0, e = predict_x0_eps(model, x, ts[i], v_s)
        es = [e, *es][:order]
        if warmup == "singlestep" and i < order - 1:
            x_next, _ = run_prk_step(model, x, ts[i], ts[i + 1], e, midpoint)
        elif warmup == "lower_order" and i == 0 and order > 1:
            # Pseudo improved Euler (S-PNDM's first step): average e with the output at the DDIM end point.
            _, e_end = predict_x0_eps(model, pndm_transfer(x, e, v_s, v_t), ts[i + 1], v_t)
            x_next = pndm_transfer(x, 0.5 * (e + e_end), v_s, v_t)
        else:
            x_next = pndm_transfer(x, _plms_direction(es), v_s, v_t)  # PLMS of order len(es)
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
        options={"order": 4, "warmup": "singlestep", "midpoint": "t"},
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
        options={"order": 4, "warmup": "lower_order"},
        order_steps=(64, 128, 256, 512),
    )
)
