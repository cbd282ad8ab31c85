"""BDIA-DDIM: exact inversion by bi-directional integration approximation (Zhang, Lewis & Kleijn,
arXiv:2307.10829).

On a grid t_0 > t_1 > ... > t_n, with T_{j->k}(z; eps) the DDIM transfer map at fixed eps
(``refimpl.samplers._reversible``) and eps_j = eps(z_j, t_j), BDIA-DDIM computes the next state from the
current one and the previous one (the step goes from s = t_j to t = t_{j+1}; the functions call t_{j-1} "prev"
and take eps_j as an argument, the loops make the model calls):

    z_{j+1} = T_{j->j+1}(z_j; eps_j) + gamma (z_{j-1} - T_{j->j-1}(z_j; eps_j)),

i.e. z_{j+1} = z_{j-1} - (1 - gamma)(z_{j-1} - z_j) - gamma Delta(t_j -> t_{j-1} | z_j) + Delta(t_j -> t_{j+1} | z_j)
with Delta(t_j -> t_k | z_j) = T_{j->k}(z_j; eps_j) - z_j, the update of the paper and of its official code
(guoqiang-zhang-x/BDIA, ``image-editing/bdia_edict_functions.py``, ``BDIA_stablediffusion``). The first step
(z_1 from z_0 alone) is a plain DDIM step. The update is linear in z_{j-1}, so it inverts exactly:

    z_{j-1} = T_{j->j-1}(z_j; eps_j) + (z_{j+1} - T_{j->j+1}(z_j; eps_j)) / gamma.

**Convention (published descriptions disagree).** Here, as in the official code, gamma = 0 is plain DDIM (the
bracket is dropped) and gamma = 1 is the fully bi-directional, time-symmetric update. The repository README at
its current commit writes the same update with gamma and 1 - gamma exchanged, so that gamma = 1 is DDIM there.
The inverse divides by gamma: rounding in the encoder's two-step "discrepancy" mode grows by 1/gamma a step,
so small gamma loses exactness, and gamma = 0 has no inverse at all.

Measured global order (``tests/test_registry.py``): 2 for gamma = 1 (the symmetric two-step update cancels the
leading error of the two DDIM half-steps), 1 for gamma < 1.
"""

from __future__ import annotations

import math

from torch import Tensor

from refimpl._validation import check_float_tensors, check_kinds
from refimpl.models import DiffusionModel, predict_x0_eps
from refimpl.registry import SamplerSpec, register
from refimpl.samplers._common import Callback, StepInfo
from refimpl.samplers._reversible import CoupledState, check_coupled_inputs, ddim_transfer
from refimpl.schedules import ScheduleValues

__all__ = ["bdia_step", "bdia_step_inverse", "invert_bdia", "sample_bdia"]


def _check_gamma(gamma: float, *, invert: bool) -> float:
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not math.isfinite(gamma):
        raise ValueError(f"gamma must be a number in [0, 1], got {gamma!r}")
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must lie in [0, 1], got {gamma!r}")
    if invert and gamma == 0.0:
        raise ValueError(
            "gamma = 0 is plain DDIM, whose update cannot be inverted: BDIA inversion needs 0 < gamma <= 1"
        )
    return float(gamma)


def bdia_step(
    z_prev: Tensor,
    z_s: Tensor,
    eps_s: Tensor,
    v_prev: ScheduleValues,
    v_s: ScheduleValues,
    v_t: ScheduleValues,
    gamma: float,
) -> Tensor:
    """BDIA-DDIM from s to t: z_t from (z_prev, z_s), eps_s = eps(z_s, s) (arXiv:2307.10829).

    Grid t_{j-1} > t_j > t_{j+1} in the paper's letters is prev > s > t here; one model call, at (z_s, s).
    """
    check_kinds(ScheduleValues, v_prev=v_prev, v_s=v_s, v_t=v_t)
    check_float_tensors(z_prev=z_prev, z_s=z_s, eps_s=eps_s)
    gamma = _check_gamma(gamma, invert=False)
    forward = ddim_transfer(z_s, eps_s, v_s, v_t)  # z_j + Delta(t_j -> t_{j+1} | z_j)
    backward = ddim_transfer(z_s, eps_s, v_s, v_prev)  # z_j + Delta(t_j -> t_{j-1} | z_j)
    return forward + gamma * (z_prev - backward)  # BDIA-DDIM update (arXiv:2307.10829)


def bdia_step_inverse(
    z_t: Tensor,
    z_s: Tensor,
    eps_s: Tensor,
    v_prev: ScheduleValues,
    v_s: ScheduleValues,
    v_t: ScheduleValues,
    gamma: float,
) -> Tensor:
    """The exact inverse of ``bdia_step``: z_prev from (z_t, z_s), eps_s = eps(z_s, s), gamma > 0."""
    check_kinds(ScheduleValues, v_prev=v_prev, v_s=v_s, v_t=v_t)
    check_float_tensors(z_t=z_t, z_s=z_s, eps_s=eps_s)
    gamma = _check_gamma(gamma, invert=True)
    forward = ddim_transfer(z_s, eps_s, v_s, v_t)
    backward = ddim_transfer(z_s, eps_s, v_s, v_prev)
    return backward + (z_t - forward) / gamma


def sample_bdia(
    model: DiffusionModel,
    x: Tensor | CoupledState,
    timesteps: Tensor,
    *,
    gamma: float = 1.0,
    return_pair: bool = False,
    callback: Callback | None = None,
) -> Tensor | CoupledState:
    """BDIA-DDIM from timesteps[0] to timesteps[-1]; one model call a step.

    x: the start z_0 (B, ...), whose first step is plain DDIM, or ``CoupledState(z_0, z_1)`` (the states at
    timesteps[0] and timesteps[1], as ``invert_bdia`` returns), which continues without that step. Returns
    z_n, or ``CoupledState(z_n, z_{n-1})`` if ``return_pair`` (what ``invert_bdia`` needs to invert a
    generated sample exactly). gamma in [0, 1]; gamma = 0 is DDIM.
    """
    gamma = _check_gamma(gamma, invert=False)
    z, z_next, ts = check_coupled_inputs(model, x, timesteps)
    values = model.schedule(ts)
    if z_next is None:  # the first step has no previous state: plain DDIM
        x0, eps = predict_x0_eps(model, z, ts[0], values[0])
        z_next = ddim_transfer(z, eps, values[0], values[1])
        if callback is not None:
            callback(StepInfo(0, ts[0], ts[1], z, z_next, x0))
    z_prev, z = z, z_next
    for j in range(1, len(ts) - 1):
        x0, eps = predict_x0_eps(model, z, ts[j], values[j])
        z_next = bdia_step(z_prev, z, eps, values[j - 1], values[j], values[j + 1], gamma)
        if callback is not None:
            callback(StepInfo(j, ts[j], ts[j + 1], z, z_next, x0))
        z_prev, z = z, z_next
    return CoupledState(z, z_prev) if return_pair else z


def invert_bdia(
    model: DiffusionModel,
    x: Tensor | CoupledState,
    timesteps: Tensor,
    *,
    gamma: float = 1.0,
    callback: Callback | None = None,
) -> CoupledState:
    """BDIA inversion from timesteps[-1] back up to timesteps[0]; one model call a step; 0 < gamma <= 1.

    x: the data z_n, whose first inverse step is a DDIM inversion step (model at (z_n, t_n)), or
    ``CoupledState(z_n, z_{n-1})`` from ``sample_bdia(..., return_pair=True)``. Returns
    ``CoupledState(z_0, z_1)``, from which ``sample_bdia`` reproduces z_n up to round-off (also for real data:
    the approximate first step is undone exactly, because decoding never recomputes z_{n-1}).
    """
    gamma = _check_gamma(gamma, invert=True)
    z, z_prev, ts = check_coupled_inputs(model, x, timesteps)
    values = model.schedule(ts)
    n = len(ts) - 1
    if z_prev is None:  # DDIM inversion for the first step (Dhariwal & Nichol 2021, arXiv:2105.05233v4, App. F)
        x0, eps = predict_x0_eps(model, z, ts[n], values[n])
        z_prev = ddim_transfer(z, eps, values[n], values[n - 1])
        if callback is not None:
            callback(StepInfo(0, ts[n], ts[n - 1], z, z_prev, x0))
    z_next, z = z, z_prev
    for k, j in enumerate(range(n - 1, 0, -1), start=1):
        x0, eps = predict_x0_eps(model, z, ts[j], values[j])
        z_prev = bdia_step_inverse(z_next, z, eps, values[j - 1], values[j], values[j + 1], gamma)
        if callback is not None:
            callback(StepInfo(k, ts[j], ts[j - 1], z, z_prev, x0))
        z_next, z = z, z_prev
    return CoupledState(z, z_next)


register(
    SamplerSpec(
        name="bdia",
        sample=sample_bdia,
        order=2,
        stochastic=False,
        encode=invert_bdia,
        invertible=True,
        amplification=lambda n: 1.0,  # gamma = 1: the inverse divides by gamma = 1 (no growth)
        order_steps=(32, 64, 128, 256),  # at 16 steps its error can pass through zero (pre-asymptotic)
        paper="zhang2023bdia",
        equation="arXiv:2307.10829 BDIA-DDIM update with gamma = 1 (official code's convention)",
    )
)
