"""Samplers for flow models: Euler, Heun and the explicit midpoint rule in t on the velocity dx_t/dt.

A flow model gives the velocity u(x_t, t) = alpha_t' x_0 + sigma_t' eps of the path x_t = alpha_t x_0 + sigma_t eps
(Lipman et al. 2023, arXiv:2210.02747v2, Eq. 1 and 21; ``refimpl.parameterization.velocity_from_x0_eps``). Every
model of refimpl answers it through the named conversions, so these samplers run under any schedule; on the
rectified-flow path (alpha_t = 1 - t, sigma_t = t) they are the samplers of flow-matching models
(Esser et al. 2024, arXiv:2403.03206v1, Sec. 5.1: Euler in t). One step goes from s to t < s with dt = t - s < 0:

* Euler:    x_t = x_s + dt u(x_s, s).
* Heun:     x' = x_s + dt u(x_s, s); x_t = x_s + dt (u(x_s, s) + u(x', t)) / 2 (the trapezoidal predictor-corrector;
  EDM's Algorithm 1 is this rule in sigma, Karras et al. 2022, arXiv:2206.00364v2).
* midpoint: x_m = x_s + (m - s) u(x_s, s); x_t = x_s + dt u(x_m, m), with m the midpoint in t (default) or, with
  ``midpoint="lambda"``, the time of the half log-SNR midpoint (lambda_s + lambda_t) / 2.

Equivalences checked to round-off in ``tests/test_flow_samplers.py`` (the change of variables is the rescaled state
y = x / alpha on the EDM path sigma = rho = sigma_t / alpha_t, Karras et al. 2022, Eq. 4):

* on any path linear in t (rectified flow, EDM) an Euler step is a DDIM step (Song et al. 2021,
  arXiv:2010.02502v4, Eq. 12 with eta = 0): both give alpha_t x0 + sigma_t eps;
* on the EDM path, Euler / Heun in t are DDIM / EDM-Heun of any schedule, and midpoint with
  ``midpoint="lambda"`` is DPM-Solver-2 (Lu et al. 2022, arXiv:2206.00927v3, Algorithm 1 with r_1 = 1/2).
"""

from __future__ import annotations

from torch import Tensor

from refimpl._validation import check_instance
from refimpl.models import DiffusionModel, predict_x0_eps
from refimpl.parameterization import velocity_from_x0_eps
from refimpl.registry import SamplerSpec, register
from refimpl.samplers._common import Callback, StepInfo, check_sampler_inputs
from refimpl.schedules import ScheduleValues

#: Why these orders need a schedule smooth in t: on the discrete schedules (DDPM's betas made continuous by
#: piecewise-linear log alpha) the velocity in t jumps at each of the N knots, so a Runge-Kutta step in t that
#: straddles a knot loses its order (``tests/test_flow_samplers.py`` measures Euler's collapse on ddpm_linear).
#: Samplers in lambda or rho never differentiate alpha_t and do not see the knots. The shared mixture test
#: measures these entries on the smooth schedules it draws (``order_needs_smooth_t``).
_ORDER_NOTE = (
    "the velocity in t is discontinuous at the knots of the discrete (piecewise) schedules: the order holds on "
    "schedules smooth in t, where the shared mixture test measures it"
)

__all__ = ["MIDPOINTS", "flow_velocity", "sample_flow_euler", "sample_flow_heun", "sample_flow_midpoint"]

#: Where the midpoint rule evaluates its second velocity: the midpoint in t, or in the half log-SNR lambda.
MIDPOINTS = ("t", "lambda")


def flow_velocity(model: DiffusionModel, x: Tensor, values: ScheduleValues) -> tuple[Tensor, Tensor]:
    """One model call at (x, t): the velocity u = alpha_t' x0 + sigma_t' eps and the model's x0."""
    check_instance(values, ScheduleValues, "values")
    x0, eps = predict_x0_eps(model, x, values.t, values)
    return velocity_from_x0_eps(x0, eps, values.d_alpha, values.d_sigma), x0


def sample_flow_euler(
    model: DiffusionModel, x: Tensor, timesteps: Tensor, *, callback: Callback | None = None
) -> Tensor:
    """Euler in t: x_t = x_s + (t - s) u(x_s, s), from timesteps[0] to timesteps[-1] (one call a step)."""
    ts = check_sampler_inputs(model, x, timesteps)
    values = model.schedule(ts)
    for i in range(len(ts) - 1):
        v_s = values[i]
        u_s, x0 = flow_velocity(model, x, v_s)
        x_next = x + (ts[i + 1] - ts[i]).to(x.dtype) * u_s
        if callback is not None:
            callback(StepInfo(i, ts[i], ts[i + 1], x, x_next, x0))
        x = x_next
    return x


def sample_flow_heun(
    model: DiffusionModel, x: Tensor, timesteps: Tensor, *, callback: Callback | None = None
) -> Tensor:
    """Heun in t: an Euler predictor, then the trapezoid of the two velocities (two calls a step)."""
    ts = check_sampler_inputs(model, x, timesteps)
    values = model.schedule(ts)
    for i in range(len(ts) - 1):
        v_s, v_t = values[i], values[i + 1]
        dt = (ts[i + 1] - ts[i]).to(x.dtype)
        u_s, x0 = flow_velocity(model, x, v_s)
        x_pred = x + dt * u_s  # Euler predictor
        u_t, _ = flow_velocity(model, x_pred, v_t)
        x_next = x + dt * 0.5 * (u_s + u_t)  # trapezoidal corrector
        if callback is not None:
            callback(StepInfo(i, ts[i], ts[i + 1], x, x_next, x0))
        x = x_next
    return x


def sample_flow_midpoint(
    model: DiffusionModel,
    x: Tensor,
    timesteps: Tensor,
    *,
    midpoint: str = "t",
    callback: Callback | None = None,
) -> Tensor:
    """The explicit midpoint rule in t (two calls a step); ``midpoint`` ("t" or "lambda") places the middle time."""
    if midpoint not in MIDPOINTS:
        raise ValueError(f"midpoint must be one of {MIDPOINTS}, got {midpoint!r}")
    ts = check_sampler_inputs(model, x, timesteps)
    schedule = model.schedule
    values = schedule(ts)
    if midpoint == "t":
        t_mid = 0.5 * (ts[:-1] + ts[1:])
    else:
        t_mid = schedule.t_of_lambda(0.5 * (values.lambda_[:-1] + values.lambda_[1:]))
    values_mid = schedule(t_mid)
    for i in range(len(ts) - 1):
        u_s, x0 = flow_velocity(model, x, values[i])
        x_mid = x + (t_mid[i] - ts[i]).to(x.dtype) * u_s  # Euler to the middle time m
        u_mid, _ = flow_velocity(model, x_mid, values_mid[i])
        x_next = x + (ts[i + 1] - ts[i]).to(x.dtype) * u_mid
        if callback is not None:
            callback(StepInfo(i, ts[i], ts[i + 1], x, x_next, x0))
        x = x_next
    return x


register(
    SamplerSpec(
        name="flow_euler",
        sample=sample_flow_euler,
        order=1,
        stochastic=False,
        paper="lipman2023flow",
        equation="arXiv:2210.02747v2 Eq. 1 (the ODE dx/dt = u_t), one Euler step in t",
        order_needs_smooth_t=True,
        order_note=_ORDER_NOTE,
    )
)
register(
    SamplerSpec(
        name="flow_heun",
        sample=sample_flow_heun,
        order=2,
        stochastic=False,
        paper="karras2022edm",
        equation="arXiv:2206.00364v2 Algorithm 1 (Heun's rule), applied in t to the velocity",
        nfe=lambda n: 2 * n,
        order_needs_smooth_t=True,
        order_note=_ORDER_NOTE,
    )
)
register(
    SamplerSpec(
        name="flow_midpoint",
        sample=sample_flow_midpoint,
        order=2,
        stochastic=False,
        paper="lipman2023flow",
        equation="arXiv:2210.02747v2 Eq. 1, explicit midpoint rule in t with the middle time at the lambda midpoint",
        nfe=lambda n: 2 * n,
        # Registered with the lambda midpoint: with the t midpoint, on a path affine in t (EDM, rectified flow) and
        # Gaussian data the rule is of order 3 (its h^3 local error term vanishes when alpha_t^2 l + sigma_t^2 is
        # quadratic in t; sympy in chapter 10), so the shared closed-form Gaussian test cannot show its order 2.
        # tests/test_flow_samplers.py measures midpoint="t" at order 2 on a mixture and 3 on the Gaussian.
        options={"midpoint": "lambda"},
        order_needs_smooth_t=True,
        order_note=_ORDER_NOTE,
        order_steps=(32, 64, 128, 256),  # its local orders on VP-linear settle towards 2 from above
    )
)
