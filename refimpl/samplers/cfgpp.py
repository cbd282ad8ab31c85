"""CFG++: denoise with the guided noise, renoise with the unconditional one (Chung et al. 2024, arXiv:2406.08070v2).

With eps_lambda = eps_u + lambda (eps_c - eps_u), lambda in [0, 1], one DDIM step from s to t < s is

    x0_hat = (x_s - sigma_s eps_lambda) / alpha_s,     x_t = alpha_t x0_hat + sigma_t eps_u,

against CFG's alpha_t x0_hat + sigma_t eps_lambda (their Algorithm 1 vs 2 [unverified numbering]). x0_hat is
affine in lambda, and lambda = 0 is the unconditional DDIM sampler.

Written in y = x / alpha and rho = sigma / alpha, the step is y_t = y_s + (rho_t - rho_s) eps_u - lambda rho_s
(eps_c - eps_u): a CFG-DDIM step with weight w = lambda rho_s / (rho_s - rho_t), which is lambda / (1 - e^{-h}) on a
grid uniform in lambda with step h. So CFG++ *is* CFG with a step-size-dependent weight, growing like lambda / h as
the steps shrink; its inversion (below) is likewise CFG's DDIM inversion at the same weight. Chapter 6 tests both
identities.

The inversion swaps the roles (the approximate inverse of the step, model evaluated at the start as in DDIM
inversion): x0_hat = (x_s - sigma_s eps_u) / alpha_s, x_t = alpha_t x0_hat + sigma_t eps_lambda for t > s.

``sample_cfgpp`` takes a ``ClassifierFreeGuidance`` model (its w is lambda) and calls cond and uncond once each a
step; any other model is its own unconditional model, and then CFG++ is DDIM (the registered property tests run
that path; the guided identities are in ``tests/test_guidance_cfg.py``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from refimpl._validation import check_float_tensors, check_kinds
from refimpl.models import DiffusionModel, predict
from refimpl.registry import SamplerSpec, register
from refimpl.samplers._common import Callback, StepInfo, check_sampler_inputs
from refimpl.samplers.ddim import ddim_step
from refimpl.schedules import ScheduleValues

__all__ = [
    "cfg_equivalent_weight",
    "cfgpp_eps",
    "cfgpp_inverse_step",
    "cfgpp_step",
    "invert_cfgpp",
    "sample_cfgpp",
]


def cfgpp_eps(model: DiffusionModel, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """(eps_lambda, eps_u) at (x, t): two model calls for a guided model (cond, uncond, w = lambda), one otherwise."""
    cond, uncond, lam = getattr(model, "cond", None), getattr(model, "uncond", None), getattr(model, "w", None)
    if cond is None or uncond is None or lam is None:
        eps = predict(model, x, t, "eps")
        return eps, eps
    if not 0.0 <= float(lam) <= 1.0:
        raise ValueError(f"CFG++ needs the guidance scale lambda (the model's w) in [0, 1], got {lam}")
    eps_c, eps_u = predict(cond, x, t, "eps"), predict(uncond, x, t, "eps")
    return eps_u + lam * (eps_c - eps_u), eps_u


def cfg_equivalent_weight(lam: float, v_s: ScheduleValues, v_t: ScheduleValues) -> Tensor:
    """The CFG weight w = lambda rho_hi / (rho_hi - rho_lo) whose DDIM step (or DDIM inversion step) between the
    noise levels of v_s and v_t equals CFG++'s (or its inversion's): lambda / (1 - e^{-h}) for a log-SNR step h."""
    check_kinds(ScheduleValues, v_s=v_s, v_t=v_t)
    rho_hi, rho_lo = torch.maximum(v_s.rho, v_t.rho), torch.minimum(v_s.rho, v_t.rho)
    return lam * rho_hi / (rho_hi - rho_lo)


def _x0_hat(x: Tensor, eps: Tensor, v: ScheduleValues) -> Tensor:
    return (x - v.sigma * eps) / v.alpha


def cfgpp_step(x: Tensor, eps_lambda: Tensor, eps_u: Tensor, v_s: ScheduleValues, v_t: ScheduleValues) -> Tensor:
    """One CFG++ step s -> t: alpha_t (x_s - sigma_s eps_lambda) / alpha_s + sigma_t eps_u (Chung et al. 2024, Eq. 11
    [unverified])."""
    check_kinds(ScheduleValues, v_s=v_s, v_t=v_t)
    check_float_tensors(x=x, eps_lambda=eps_lambda, eps_u=eps_u)
    return ddim_step(_x0_hat(x, eps_lambda, v_s), eps_u, v_t)


def cfgpp_inverse_step(
    x: Tensor, eps_lambda: Tensor, eps_u: Tensor, v_s: ScheduleValues, v_t: ScheduleValues
) -> Tensor:
    """One CFG++ inversion step s -> t > s: alpha_t (x_s - sigma_s eps_u) / alpha_s + sigma_t eps_lambda."""
    check_kinds(ScheduleValues, v_s=v_s, v_t=v_t)
    check_float_tensors(x=x, eps_lambda=eps_lambda, eps_u=eps_u)
    return ddim_step(_x0_hat(x, eps_u, v_s), eps_lambda, v_t)


def sample_cfgpp(model: DiffusionModel, x: Tensor, timesteps: Tensor, *, callback: Callback | None = None) -> Tensor:
    """CFG++ DDIM from x at timesteps[0] to timesteps[-1] (deterministic; lambda is the guided model's w)."""
    ts = check_sampler_inputs(model, x, timesteps)
    values = model.schedule(ts)
    for i in range(len(ts) - 1):
        v_s, v_t = values[i], values[i + 1]
        eps_lambda, eps_u = cfgpp_eps(model, x, ts[i])
        x_next = cfgpp_step(x, eps_lambda, eps_u, v_s, v_t)
        if callback is not None:
            callback(StepInfo(i, ts[i], ts[i + 1], x, x_next, _x0_hat(x, eps_lambda, v_s)))
        x = x_next
    return x


def invert_cfgpp(model: DiffusionModel, x: Tensor, timesteps: Tensor, *, callback: Callback | None = None) -> Tensor:
    """CFG++ inversion: from x at timesteps[-1] up to timesteps[0], the model at each step's start."""
    ts = check_sampler_inputs(model, x, timesteps)
    values = model.schedule(ts)
    for j, i in enumerate(range(len(ts) - 1, 0, -1)):
        eps_lambda, eps_u = cfgpp_eps(model, x, ts[i])
        x_next = cfgpp_inverse_step(x, eps_lambda, eps_u, values[i], values[i - 1])
        if callback is not None:
            callback(StepInfo(j, ts[i], ts[i - 1], x, x_next, _x0_hat(x, eps_u, values[i])))
        x = x_next
    return x


register(
    SamplerSpec(
        name="cfgpp",
        sample=sample_cfgpp,
        order=1,
        stochastic=False,
        encode=invert_cfgpp,
        invertible=False,
        paper="chung2024cfgpp",
        order_check="gaussian",
        order_note="on an unguided model CFG++ is DDIM step for step (tested), whose mixture order the ddim entry "
        "measures; the guided identities are tested in tests/test_guidance_cfg.py",
        equation="arXiv:2406.08070v2 Algorithm 1 (CFG++ DDIM) [unverified numbering]; unguided model: DDIM",
    )
)
