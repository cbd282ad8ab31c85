"""The methods the oracle can check against: the registry, plus models of third-party code.

Every refimpl method is a registry entry (``refimpl.registry``); the identities between them (UniP with solved
coefficients is the exact integral of the Lagrange interpolant, in noise prediction DEIS with the polynomial in
log rho = -lambda, diffusers' ``DEISMultistepScheduler`` and DPM-Solver with ``solver_type="heun"``; UniP-2 with
B(h) = e^h - 1 and the official 1/2 is multistep DPM-Solver(++)-2) are stated and tested in
``refimpl.samplers.multistep``. This module adds ``MODELS``: the official / diffusers / k-diffusion third-order
multistep steps (``sample_multistep_3m(official=True)``, half the last Taylor term: models of their code, not
methods), and singlestep DPM-Solver-k with intermediate points chosen by the caller (``stages``), as diffusers'
``DPMSolverSinglestepScheduler`` does from its timestep list (a thin loop over refimpl's pure steps).

``final_step_to_zero`` is the last step of a multistep method to sigma = 0 (alpha = 1), outside every
schedule's domain, which diffusers' LMS and PNDM take with their own multistep formula.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from refimpl._util import expand_like
from refimpl.models import DiffusionModel, predict_x0_eps
from refimpl.parameterization import eps_from_x0
from refimpl.registry import REGISTRY, SamplerSpec
from refimpl.samplers import (
    StepInfo,
    Trajectory,
    sample_lms,
    sample_pndm,
)
from refimpl.samplers._common import Callback, check_orders, check_sampler_inputs
from refimpl.samplers._exponential import phi
from refimpl.samplers.ancestral import SDE_DPM_SOLVER_PP_2S
from refimpl.samplers.dpm_solver import dpm_solver_1_step, dpm_solver_2_step, dpm_solver_3_stage, dpm_solver_3_step
from refimpl.samplers.dpm_solver_pp import dpm_solver_pp_1_step, dpm_solver_pp_2s_step
from refimpl.samplers.edm import lms_step
from refimpl.samplers.lcm import LCM_MULTISTEP
from refimpl.samplers.multistep import SETTINGS, multistep_step
from refimpl.samplers.pndm import plms_direction, pndm_transfer
from refimpl.schedules import ScheduleValues

__all__ = [
    "MODELS",
    "final_step_to_zero",
    "get_method",
    "sample_dpm_solver_singlestep",
    "sample_multistep_3m",
]


def sample_dpm_solver_singlestep(
    model: DiffusionModel,
    x: Tensor,
    timesteps: Tensor,
    *,
    orders: Sequence[int],
    stages: Sequence[Sequence[float]],
    prediction: str = "eps",
    callback: Callback | None = None,
    data_prediction: bool | None = None,
) -> Tensor:
    """Singlestep DPM-Solver (``prediction="eps"``) or DPM-Solver++ (``prediction="x0"``) with caller-chosen
    intermediate points.

    Step i from timesteps[i] to timesteps[i + 1] has order ``orders[i]`` and evaluates the model at the
    orders[i] - 1 times ``stages[i]`` inside it: DPM-Solver-2 (Lu et al. 2022, arXiv:2206.00927v3, Algorithm 1 with
    general r1), DPM-Solver-3 (Algorithm 2 with general r1, r2) or DPM-Solver++(2S) (Lu et al. 2022b,
    arXiv:2211.01095v3, Algorithm 1). ``data_prediction`` is the deprecated spelling of ``prediction="x0"``.
    """
    if data_prediction is not None:
        warnings.warn(
            'data_prediction= is deprecated; use prediction="x0" (or "eps")', DeprecationWarning, stacklevel=2
        )
        prediction = "x0" if data_prediction else "eps"
    if prediction not in ("x0", "eps"):
        raise ValueError(f"prediction must be 'x0' or 'eps', got {prediction!r}")
    data_prediction = prediction == "x0"
    ts = check_sampler_inputs(model, x, timesteps)
    n = len(ts) - 1
    if len(orders) != n or len(stages) != n or any(len(s) != k - 1 for k, s in zip(orders, stages, strict=False)):
        raise ValueError(f"need one order and orders - 1 stage times per step ({n} steps), got {orders}, {stages}")
    if data_prediction and max(orders) > 2:
        raise ValueError("refimpl has no third-order singlestep DPM-Solver++ (DPM-Solver++(3S))")
    schedule = model.schedule
    values = schedule(ts)
    for i in range(n):
        v_s, v_t = values[i], values[i + 1]
        mid = [schedule(torch.as_tensor(t, dtype=torch.float64)) for t in stages[i]]
        x0, eps = predict_x0_eps(model, x, ts[i], v_s)
        if orders[i] == 1:
            x_next = dpm_solver_pp_1_step(x, x0, v_s, v_t) if data_prediction else dpm_solver_1_step(x, eps, v_s, v_t)
        elif data_prediction:
            x0_s1 = predict_x0_eps(model, dpm_solver_pp_1_step(x, x0, v_s, mid[0]), mid[0].t, mid[0])[0]
            x_next = dpm_solver_pp_2s_step(x, x0, x0_s1, v_s, mid[0], v_t)
        else:
            eps_1 = predict_x0_eps(model, dpm_solver_1_step(x, eps, v_s, mid[0]), mid[0].t, mid[0])[1]
            if orders[i] == 2:
                x_next = dpm_solver_2_step(x, eps, eps_1, v_s, mid[0], v_t)
            else:
                u_2 = dpm_solver_3_stage(x, eps, eps_1, v_s, mid[0], mid[1], v_t)
                x_next = dpm_solver_3_step(x, eps, predict_x0_eps(model, u_2, mid[1].t, mid[1])[1], v_s, mid[1], v_t)
        if callback is not None:
            callback(StepInfo(i, ts[i], ts[i + 1], x, x_next, x0))
        x = x_next
    return x


def _lost_half(x: Tensor, xs: list[Tensor], lambdas: list[Tensor], k_t: Tensor, h: Tensor) -> Tensor:
    """k_t hh^3 phi_3(hh) [m0, m1, m2]: the third-order term that the official step drops (refimpl's has 2 [m0, m1, m2]
    with the opposite sign: x0 prediction k_t = alpha_t, hh = -h; eps prediction k_t = sigma_t, hh = h)."""
    m0, m1, m2 = xs[:3]
    l0, l1, l2 = lambdas[:3]
    dd012 = ((m0 - m1) / (l0 - l1) - (m1 - m2) / (l1 - l2)) / (l0 - l2)
    return expand_like(k_t * h**3 * phi(3, h), x) * dd012


def sample_multistep_3m(
    model: DiffusionModel,
    x: Tensor,
    timesteps: Tensor,
    *,
    prediction: str = "x0",
    official: bool = False,
    exact_second: bool = False,
    orders: Sequence[int] | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """Multistep DPM-Solver-3 (``prediction="eps"``) or DPM-Solver++(3M) (``"x0"``), orders 1, 2, 3, 3, ... unless
    ``orders`` (one per step) says otherwise; the second-order steps in the midpoint form (Lu et al. 2022b,
    arXiv:2211.01095v3, Algorithm 2 and its noise-prediction analogue), or with ``exact_second`` the exact integral
    of the linear interpolant (UniP-2 with solved coefficients; k-diffusion's choice).

    The third-order step adds the exact integrals of the Taylor terms of the quadratic through the last three
    model outputs: k_t h^3 phi_3 x'' with x'' = 2 [m0, m1, m2] (the multistep engine's settings "dpm_solver_pp"
    and "dpm_solver", the exact integral of the quadratic). ``official=True`` models
    the official code, diffusers and k-diffusion, which add k_t h^3 phi_3 [m0, m1, m2], half of it: a model of
    theirs (second order), not a refimpl method.
    """
    ts = check_sampler_inputs(model, x, timesteps)
    if prediction not in ("x0", "eps"):
        raise ValueError(f"prediction must be 'x0' or 'eps', got {prediction!r}")
    n = len(ts) - 1
    orders = check_orders(orders if orders is not None else [min(3, i + 1) for i in range(n)], n, 3)
    values = model.schedule(ts)
    ms: list[Tensor] = []
    lambdas: list[Tensor] = []
    midpoint = SETTINGS["dpm_solver_pp" if prediction == "x0" else "dpm_solver"]
    exact = SETTINGS["dpm_solver_pp_exact" if prediction == "x0" else "deis_logrho"]
    for i in range(n):
        v_s, v_t = values[i], values[i + 1]
        x0, eps = predict_x0_eps(model, x, ts[i], v_s)
        ms, lambdas = [x0 if prediction == "x0" else eps, *ms[:2]], [v_s.lambda_, *lambdas[:2]]
        k, h = orders[i], v_t.lambda_ - v_s.lambda_
        outputs = list(zip(lambdas, ms, strict=True))[:k]
        x_next = multistep_step(x, outputs, v_s, v_t, exact if k == 2 and exact_second else midpoint)
        if k == 3 and official:  # put back the half: x0 with (alpha_t, -h), eps with (sigma_t, h)
            k_t, hh = (v_t.alpha, -h) if prediction == "x0" else (v_t.sigma, h)
            x_next = x_next + _lost_half(x, ms, lambdas, k_t, hh)
        if callback is not None:
            callback(StepInfo(i, ts[i], ts[i + 1], x, x_next, x0))
        x = x_next
    return x


def _spec(name: str, sample: Any, declared: float, equation: str, paper: str, /, **options: Any) -> SamplerSpec:
    return SamplerSpec(name, sample, declared, False, paper, equation, options=options)


#: Models of third-party code, not refimpl methods: the official / diffusers / k-diffusion third-order multistep
#: steps (half their last Taylor term), and singlestep DPM-Solvers with intermediate points chosen by the caller
#: (diffusers' ``DPMSolverSinglestepScheduler`` picks them from its timestep list); and two models of diffusers' code
#: that are no registry entries: LCM's multistep sampling (with a diffusion model's x0 it samples no law) and the
#: stochastic DPM-Solver++(2S) of ``DPMSolverSDEScheduler`` (in no paper; two noises a step).
MODELS: dict[str, SamplerSpec] = {spec.name: spec for spec in [
    _spec(
        "dpm_solver_pp_3m_official", sample_multistep_3m, 2,
        "the official / diffusers DPM-Solver++(3M) step (half its last Taylor term): a model of theirs",
        "lu2022dpmsolverpp", prediction="x0", official=True,
    ),
    _spec(
        "dpm_solver_pp_3m_exact_official", sample_multistep_3m, 2,
        "k-diffusion's DPM-Solver++(3M) step (exact second-order step, half the last Taylor term): a model of it",
        "lu2022dpmsolverpp", prediction="x0", official=True, exact_second=True,
    ),
    _spec(
        "dpm_solver_3m_official", sample_multistep_3m, 2,
        "the official / diffusers multistep DPM-Solver-3 step (half its last Taylor term): a model of theirs",
        "lu2022dpmsolverpp", prediction="eps", official=True,
    ),
    *[
        _spec(
            f"dpm_solver_singlestep_{k}", sample_dpm_solver_singlestep, k,
            f"arXiv:2206.00927v3 Algorithms 1-2, DPM-Solver-{k} with given intermediate points",
            "lu2022dpmsolver",
        )
        for k in (2, 3)
    ],
    _spec(
        "dpm_solver_pp_singlestep_2", sample_dpm_solver_singlestep, 2,
        "arXiv:2211.01095v3 Algorithm 1, DPM-Solver++(2S) with given intermediate points",
        "lu2022dpmsolverpp", prediction="x0",
    ),
    LCM_MULTISTEP,
    SDE_DPM_SOLVER_PP_2S,
]}  # fmt: skip


def get_method(name: str) -> SamplerSpec:
    """The registered sampler ``name``, or the oracle's model of third-party code ``MODELS[name]``."""
    if name in REGISTRY:
        return REGISTRY[name]
    if name in MODELS:
        return MODELS[name]
    raise ValueError(f"no method named {name!r}; registered: {sorted(REGISTRY)}; models of third-party code: "
                     f"{sorted(MODELS)}")  # fmt: skip


def _zero_values() -> ScheduleValues:
    """The end point of a step to sigma = 0: alpha = 1, lambda = +inf (the edge of every VP and EDM schedule)."""
    one, zero = torch.tensor(1.0, dtype=torch.float64), torch.tensor(0.0, dtype=torch.float64)
    return ScheduleValues(torch.tensor(math.nan, dtype=torch.float64), one, zero, zero, zero, torch.tensor(math.inf))


def final_step_to_zero(
    method: str, model: DiffusionModel, x: Tensor, grid: Tensor, traj: Trajectory, options: dict[str, Any]
) -> Tensor:
    """The method's own last step from x at grid[-1] to sigma = 0 (one model call), continuing the history of ``traj``.

    LMS: the Adams-Bashforth step in sigma with the last ``order`` derivatives (``lms_step``); PNDM/PLMS: the
    PLMS direction of the last four outputs moved by the transfer part (``pndm_transfer``).
    """
    sample = get_method(method).sample
    schedule = model.schedule
    v_last = schedule(grid[-1])
    eps_now = predict_x0_eps(model, x, grid[-1], v_last)[1]
    past = [(s.t, eps_from_x0(s.x, s.x0, *_alpha_sigma(schedule, s.t))) for s in traj.steps]
    if sample is sample_lms:
        k = options.get("order", 4)
        history = [*past, (grid[-1], eps_now)][-k:]  # oldest first
        sigmas = schedule(torch.stack([torch.as_tensor(t) for t, _ in history])).rho
        return lms_step(x, [e for _, e in history][::-1], sigmas.flip(0), v_last, _zero_values())
    if sample is sample_pndm:
        es = [eps_now, *[e for _, e in reversed(past)]][: options.get("order", 4)]  # newest first
        return pndm_transfer(x, plms_direction(es), v_last, _zero_values())
    raise ValueError(f"the oracle has no step to sigma = 0 for {method}")


def _alpha_sigma(schedule: Any, t: Tensor) -> tuple[Tensor, Tensor]:
    v = schedule(t)
    return v.alpha, v.sigma
