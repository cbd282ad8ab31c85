"""DPM-Solver: singlestep exponential integrators in noise-prediction form.

Lu, Zhou, Bao, Chen, Li & Zhu (2022), arXiv:2206.00927v3. With lambda = log(alpha / sigma) and
h = lambda_t - lambda_s, variation of constants gives the exact solution of the probability-flow ODE
(their Eq. 3.4)

    x_t = (alpha_t / alpha_s) x_s - alpha_t int_{lambda_s}^{lambda_t} e^{-lambda} eps(x_lambda, lambda) dlambda,

and a Taylor expansion of eps in lambda turns the integral into
sigma_t sum_k h^{k+1} phi_{k+1}(h) eps^{(k)}(lambda_s) (phi_k from ``_exponential``). DPM-Solver-k keeps
k terms and estimates the derivatives from k - 1 extra model calls inside the step:

* DPM-Solver-1 (Eq. 3.7): DDIM.
* DPM-Solver-2 (Algorithm 1; the general-r1 form of their App. A): one call at lambda_s + r1 h, r1 = 1/2.
* DPM-Solver-3 (Algorithm 2): calls at lambda_s + h/3 and lambda_s + 2h/3.
* DPM-Solver-fast (Sec. 3.3): orders 3, ..., 3 then 2 and/or 1 on equal lambda steps, spending exactly a
  given number of model calls (``fast_orders``, ``fast_timesteps``).
* Adaptive step size (Sec. 3.3 and App. C, "DPM-Solver-12" and "-23"): the lower-order solution shares the
  higher one's model calls and their difference, in a mixed absolute/relative norm, drives h.

Steps are pure: ``dpm_solver_k_step`` takes the model's outputs at s and at the intermediate points and the
schedule values, and ``dpm_solver_3_stage`` gives the state u_2 at which DPM-Solver-3 queries the model at s_2
(u_1 is ``dpm_solver_1_step`` to s_1); the ``sample_*`` loops make the model calls. So another
implementation's intermediate states and outputs can be checked one step at a time.

DPM-Solver-2 and -3 are registered (their orders are measured by ``tests/test_registry.py``), and so are the
adaptive DPM-Solver-12 and -23 (kind "adaptive": ``tests/test_registry.py`` checks their error against the
tolerance); DPM-Solver-1 is DDIM, checked against ``sample_ddim`` in ``tests/test_dpm_solver.py``, which also
tests the NFE recipe and the adaptive solver's model calls. Unlike the official code, the adaptive solver keeps
eps(x_s, s) across a rejected trial instead of evaluating it again.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import torch
from torch import Tensor

from refimpl import grids
from refimpl._util import expand_like
from refimpl._validation import check_float_tensors, check_kinds
from refimpl.models import DiffusionModel, predict_x0_eps
from refimpl.registry import SamplerSpec, register
from refimpl.samplers._common import Callback, StepInfo, check_sampler_inputs
from refimpl.samplers._exponential import phi
from refimpl.schedules import NoiseSchedule, ScheduleValues

__all__ = [
    "dpm_solver_1_step",
    "dpm_solver_2_step",
    "dpm_solver_3_stage",
    "dpm_solver_3_step",
    "fast_orders",
    "fast_timesteps",
    "intermediate_values",
    "sample_dpm_solver",
    "sample_dpm_solver_adaptive",
]

ORDERS = (1, 2, 3)

#: Step counts for the registry's order test (uniform lambda, the toys' whole range): the asymptotic regime,
#: where successive slopes agree to a few hundredths, with errors far above round-off (see chapter 3).
ASYMPTOTIC_STEPS = {2: (32, 64, 128, 256), 3: (64, 128, 256, 512)}


def _eps(model: DiffusionModel, x: Tensor, values: ScheduleValues) -> Tensor:
    """One model call, as the noise prediction eps_theta(x, t)."""
    return predict_x0_eps(model, x, values.t, values)[1]


def intermediate_values(
    schedule: NoiseSchedule, values: ScheduleValues, r1: float | None = None, *, r: float | None = None
) -> ScheduleValues:
    """Schedule values at lambda_s + r1 h inside every step s -> t of a grid (one vectorised call per grid); r1 is
    the ratio of a singlestep method's intermediate point (r1 or r2 of Lu et al. 2022, App. A: the same word for
    the ratio everywhere). ``r`` is the deprecated name of ``r1`` (DeprecationWarning)."""
    if r is not None:
        if r1 is not None:
            raise TypeError("give r1 only (r is its deprecated name)")
        warnings.warn("intermediate_values(..., r=) is deprecated: use r1=", DeprecationWarning, stacklevel=2)
        r1 = r
    if r1 is None:
        raise TypeError("intermediate_values() needs the ratio r1")
    lam = values.lambda_[:-1] + r1 * (values.lambda_[1:] - values.lambda_[:-1])
    return schedule(schedule.t_of_lambda(lam))


def dpm_solver_1_step(x_s: Tensor, eps_s: Tensor, v_s: ScheduleValues, v_t: ScheduleValues) -> Tensor:
    """DPM-Solver-1 from s to t: x_t = (alpha_t / alpha_s) x_s - sigma_t (e^h - 1) eps_s (Eq. 3.7; DDIM)."""
    check_kinds(ScheduleValues, v_s=v_s, v_t=v_t)
    check_float_tensors(x_s=x_s, eps_s=eps_s)
    h = v_t.lambda_ - v_s.lambda_
    return expand_like(v_t.alpha / v_s.alpha, x_s) * x_s - expand_like(v_t.sigma * torch.expm1(h), x_s) * eps_s


def dpm_solver_2_step(
    x_s: Tensor, eps_s: Tensor, eps_s1: Tensor, v_s: ScheduleValues, v_s1: ScheduleValues, v_t: ScheduleValues
) -> Tensor:
    """DPM-Solver-2 from s to t through s_1 = t(lambda_s + r1 h) (Algorithm 1; general r1, their App. A).

    eps_s1 is the model's noise prediction at (u_1, s_1), u_1 = ``dpm_solver_1_step(x_s, eps_s, v_s, v_s1)``
    (their u_i: a DPM-Solver-1 step to s_1); r1 is read from the three times.
    """
    check_kinds(ScheduleValues, v_s=v_s, v_s1=v_s1, v_t=v_t)
    check_float_tensors(x_s=x_s, eps_s=eps_s, eps_s1=eps_s1)
    h = v_t.lambda_ - v_s.lambda_
    r1 = (v_s1.lambda_ - v_s.lambda_) / h
    # x_t = DPM-Solver-1 - sigma_t / (2 r1) (e^h - 1) (eps(u_1, s_1) - eps(x_s, s))
    return dpm_solver_1_step(x_s, eps_s, v_s, v_t) - expand_like(v_t.sigma * torch.expm1(h) / (2 * r1), x_s) * (
        eps_s1 - eps_s
    )


def dpm_solver_3_stage(
    x_s: Tensor,
    eps_s: Tensor,
    eps_s1: Tensor,
    v_s: ScheduleValues,
    v_s1: ScheduleValues,
    v_s2: ScheduleValues,
    v_t: ScheduleValues,
) -> Tensor:
    """The second intermediate state u_2 of DPM-Solver-3 (Algorithm 2), where the model is queried at s_2.

    With D_1 = eps(u_1, s_1) - eps_s (u_1 = ``dpm_solver_1_step`` to s_1) and (e^{rh} - 1)/(rh) - 1 = rh phi_2(rh):
    u_2 = DPM-Solver-1 to s_2 - sigma_{s_2} (r2 / r1) r2 h phi_2(r2 h) D_1.
    """
    check_kinds(ScheduleValues, v_s=v_s, v_s1=v_s1, v_s2=v_s2, v_t=v_t)
    check_float_tensors(x_s=x_s, eps_s=eps_s, eps_s1=eps_s1)
    h = v_t.lambda_ - v_s.lambda_
    r1, r2 = (v_s1.lambda_ - v_s.lambda_) / h, (v_s2.lambda_ - v_s.lambda_) / h
    D1 = eps_s1 - eps_s
    return (
        dpm_solver_1_step(x_s, eps_s, v_s, v_s2)
        - expand_like(v_s2.sigma * (r2 / r1) * r2 * h * phi(2, r2 * h), x_s) * D1
    )


def dpm_solver_3_step(
    x_s: Tensor, eps_s: Tensor, eps_s2: Tensor, v_s: ScheduleValues, v_s2: ScheduleValues, v_t: ScheduleValues
) -> Tensor:
    """DPM-Solver-3 from s to t (Algorithm 2, r1 = 1/3, r2 = 2/3 there; any 0 < r1 < r2 <= 1 here).

    eps_s2 is the model's noise prediction at (u_2, s_2), u_2 from ``dpm_solver_3_stage``; the output at s_1
    enters only through u_2. With D_2 = eps_s2 - eps_s: x_t = DPM-Solver-1 to t - (sigma_t / r2) h phi_2(h) D_2.
    """
    check_kinds(ScheduleValues, v_s=v_s, v_s2=v_s2, v_t=v_t)
    check_float_tensors(x_s=x_s, eps_s=eps_s, eps_s2=eps_s2)
    h = v_t.lambda_ - v_s.lambda_
    r2 = (v_s2.lambda_ - v_s.lambda_) / h
    D2 = eps_s2 - eps_s
    return dpm_solver_1_step(x_s, eps_s, v_s, v_t) - expand_like(v_t.sigma / r2 * h * phi(2, h), x_s) * D2


def sample_dpm_solver(
    model: DiffusionModel,
    x: Tensor,
    timesteps: Tensor,
    *,
    order: int = 3,
    orders: Sequence[int] | None = None,
    r1: float = 0.5,
    callback: Callback | None = None,
) -> Tensor:
    """Singlestep DPM-Solver from x at timesteps[0] to timesteps[-1]: ``order`` model calls a step.

    ``orders`` (one entry per step) overrides ``order``, e.g. the DPM-Solver-fast recipe of ``fast_orders``.
    Intermediate points: lambda_s + r1 h for order 2 (r1 = 1/2 in Algorithm 1; any r1 in (0, 1] is second
    order), lambda_s + h/3 and + 2h/3 for order 3.
    """
    ts = check_sampler_inputs(model, x, timesteps)
    n = len(ts) - 1
    if orders is None:
        if order not in ORDERS:
            raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
        orders = [order] * n
    orders = list(orders)
    if len(orders) != n or any(k not in ORDERS for k in orders):
        raise ValueError(f"orders must list one order in {ORDERS} per step ({n} steps), got {orders}")
    if not 0 < r1 <= 1:
        raise ValueError(f"r1 must lie in (0, 1], got {r1}")
    schedule = model.schedule
    values = schedule(ts)
    mid, third, two_thirds = (intermediate_values(schedule, values, ratio) for ratio in (r1, 1 / 3, 2 / 3))
    for i in range(n):
        v_s, v_t = values[i], values[i + 1]
        x0, eps_s = predict_x0_eps(model, x, ts[i], v_s)
        if orders[i] == 1:
            x_next = dpm_solver_1_step(x, eps_s, v_s, v_t)
        elif orders[i] == 2:
            eps_s1 = _eps(model, dpm_solver_1_step(x, eps_s, v_s, mid[i]), mid[i])
            x_next = dpm_solver_2_step(x, eps_s, eps_s1, v_s, mid[i], v_t)
        else:
            v_s1, v_s2 = third[i], two_thirds[i]
            eps_s1 = _eps(model, dpm_solver_1_step(x, eps_s, v_s, v_s1), v_s1)
            eps_s2 = _eps(model, dpm_solver_3_stage(x, eps_s, eps_s1, v_s, v_s1, v_s2, v_t), v_s2)
            x_next = dpm_solver_3_step(x, eps_s, eps_s2, v_s, v_s2, v_t)
        if callback is not None:
            callback(StepInfo(i, ts[i], ts[i + 1], x, x_next, x0))
        x = x_next
    return x


def fast_orders(nfe: int, order: int = 3) -> list[int]:
    """The orders of DPM-Solver-fast's steps for a budget of ``nfe`` model calls (Sec. 3.3).

    order 3: K = nfe // 3 + 1 steps; nfe % 3 == 0 -> [3] * (K - 2) + [2, 1]; == 1 -> [3] * (K - 1) + [1];
    == 2 -> [3] * (K - 1) + [2]. order 2: [2] * (nfe // 2), plus [1] if nfe is odd. order 1: [1] * nfe.
    The orders always add up to nfe.
    """
    if isinstance(nfe, bool) or not isinstance(nfe, int):
        raise TypeError(f"nfe must be an integer, got {type(nfe).__name__}")
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    if nfe < order:
        raise ValueError(f"an NFE budget of {nfe} is too small for order {order}: one step takes {order} model calls")
    if order == 1:
        return [1] * nfe
    if order == 2:
        return [2] * (nfe // 2) + [1] * (nfe % 2)
    K = nfe // 3 + 1
    tail = {0: [2, 1], 1: [1], 2: [2]}[nfe % 3]
    return [3] * (K - len(tail)) + tail


def fast_timesteps(
    schedule: NoiseSchedule,
    nfe: int,
    order: int = 3,
    spacing: str = "uniform_lambda",
    t_start: float | None = None,
    t_end: float | None = None,
) -> tuple[Tensor, list[int]]:
    """DPM-Solver-fast: the grid (equal lambda steps by default) and per-step orders for ``nfe`` model calls.

    Use as ``ts, orders = fast_timesteps(schedule, 10); sample_dpm_solver(model, x, ts, orders=orders)``.
    """
    orders = fast_orders(nfe, order)
    return grids.timesteps(schedule, len(orders), spacing, t_start, t_end), orders


def _rms_ratio(diff: Tensor, delta: Tensor) -> float:
    """max over the batch of sqrt(mean((diff / delta)^2)): the error norm of the adaptive solver."""
    return float(((diff / delta) ** 2).reshape(diff.shape[0], -1).mean(-1).sqrt().max())


def sample_dpm_solver_adaptive(
    model: DiffusionModel,
    x: Tensor,
    timesteps: Tensor,
    *,
    order: int = 3,
    rtol: float = 0.05,
    atol: float = 0.0078,
    h_init: float = 0.05,
    theta: float = 0.9,
    max_trials: int = 100_000,
    callback: Callback | None = None,
) -> Tensor:
    """Adaptive-step DPM-Solver-12 (order 2) or DPM-Solver-23 (order 3) from timesteps[0] to timesteps[-1].

    ``timesteps`` holds just the two ends. Each trial step of size h (in lambda) computes the lower-order
    solution x_L (DPM-Solver-1, or DPM-Solver-2 with r1 = 1/3) and the higher-order x_H reusing its model
    calls; with delta = max(atol, rtol max(|x_L|, |x_prev|)) and E = max over the batch of
    RMS((x_H - x_L) / delta), the step is accepted (x <- x_H) if E <= 1, and in either case
    h <- min(theta h E^(-1/order), lambda_end - lambda_s) (Sec. 3.3 and App. C; defaults as in their code).
    ``callback`` sees accepted steps only. eps at the current point is reused after a rejection, so a trial
    costs order - 1 model calls plus one per accepted point.
    """
    ts = check_sampler_inputs(model, x, timesteps)
    if len(ts) != 2:
        raise ValueError(f"the adaptive solver takes timesteps = (t_start, t_end), got {len(ts)} entries")
    if order not in (2, 3):
        raise ValueError(f"the adaptive solver has order 2 (DPM-Solver-12) or 3 (DPM-Solver-23), got {order!r}")
    for name, tol in (("rtol", rtol), ("atol", atol)):
        if not (isinstance(tol, (int, float)) and math.isfinite(tol) and tol >= 0):
            raise ValueError(f"{name} must be a finite number >= 0, got {tol!r}")
    if rtol == 0 and atol == 0:
        raise ValueError("rtol and atol cannot both be 0")
    if not (h_init > 0 and 0 < theta <= 1):
        raise ValueError(f"need h_init > 0 and 0 < theta <= 1, got h_init={h_init}, theta={theta}")
    schedule = model.schedule
    v_s, v_end = schedule(ts[0]), schedule(ts[1])
    lambda_end = float(v_end.lambda_)
    h = min(h_init, lambda_end - float(v_s.lambda_))
    x_prev = x
    x0, eps_s = predict_x0_eps(model, x, ts[0], v_s)
    i = 0
    for _ in range(max_trials):
        last = float(v_s.lambda_) + h >= lambda_end
        v_t = v_end if last else schedule(schedule.t_of_lambda(v_s.lambda_ + h))
        step = schedule(torch.stack([v_s.t, v_t.t]))  # the trial step as a one-step grid
        # the lower-order solution's model call at s_1 is the higher one's first (shared calls)
        v_s1 = intermediate_values(schedule, step, 1 / 2 if order == 2 else 1 / 3)[0]
        eps_s1 = _eps(model, dpm_solver_1_step(x, eps_s, v_s, v_s1), v_s1)
        if order == 2:
            x_low = dpm_solver_1_step(x, eps_s, v_s, v_t)
            x_high = dpm_solver_2_step(x, eps_s, eps_s1, v_s, v_s1, v_t)
        else:
            v_s2 = intermediate_values(schedule, step, 2 / 3)[0]
            x_low = dpm_solver_2_step(x, eps_s, eps_s1, v_s, v_s1, v_t)
            eps_s2 = _eps(model, dpm_solver_3_stage(x, eps_s, eps_s1, v_s, v_s1, v_s2, v_t), v_s2)
            x_high = dpm_solver_3_step(x, eps_s, eps_s2, v_s, v_s2, v_t)
        delta = torch.clamp(rtol * torch.maximum(x_low.abs(), x_prev.abs()), min=atol)
        E = _rms_ratio(x_high - x_low, delta)
        if E <= 1.0:  # accept
            if callback is not None:
                callback(StepInfo(i, v_s.t, v_t.t, x, x_high, x0))
            x_prev, x, v_s, i = x_low, x_high, v_t, i + 1
            if last:
                return x
            x0, eps_s = predict_x0_eps(model, x, v_s.t, v_s)
        growth = math.inf if E == 0 else theta * E ** (-1.0 / order)
        h = min(h * growth, lambda_end - float(v_s.lambda_))
    raise RuntimeError(f"the adaptive solver did not reach t_end in {max_trials} trial steps")


# DPM-Solver-1 is DDIM (registered as "ddim"; tests/test_dpm_solver.py checks the identity).
for _k in (2, 3):
    register(
        SamplerSpec(
            name=f"dpm_solver_{_k}",
            sample=sample_dpm_solver,
            order=_k,
            stochastic=False,
            paper="lu2022dpmsolver",
            equation={
                2: "arXiv:2206.00927v3 Algorithm 1 (DPM-Solver-2, r1 = 1/2)",
                3: "arXiv:2206.00927v3 Algorithm 2 (DPM-Solver-3, r1 = 1/3, r2 = 2/3)",
            }[_k],
            nfe=lambda n, k=_k: k * n,
            options={"order": _k},
            order_steps=ASYMPTOTIC_STEPS[_k],
        )
    )


# The adaptive solvers choose their own steps: no step count to measure an order against, so the registry checks
# their error against the tolerance (tests/test_registry.py) instead.
for _k, _pair in ((2, "12"), (3, "23")):
    register(
        SamplerSpec(
            name=f"dpm_solver_{_pair}",
            sample=sample_dpm_solver_adaptive,
            order=_k,
            stochastic=False,
            paper="lu2022dpmsolver",
            equation=f"arXiv:2206.00927v3 Sec. 3.3 and App. C, adaptive step size (DPM-Solver-{_pair})",
            nfe=None,
            options={"order": _k},
            kind="adaptive",
            order_check="tolerance",
            order_note="adaptive: it chooses its own steps between the two ends, so no step count exists to fit an "
            "order against; its error against the exact Gaussian map is checked against its tolerance instead",
        )
    )
