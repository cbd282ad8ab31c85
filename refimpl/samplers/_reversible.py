"""Building blocks of the exactly invertible samplers (EDICT, BDIA): the DDIM transfer map and a pair state.

With the noise prediction eps held fixed, one deterministic DDIM step from t to s is an affine map of the
state, written without cancellation in the half log-SNR step h = lambda_s - lambda_t (DPM-Solver-1,
Lu et al. 2022, arXiv:2206.00927v3, Eq. 3.7 and Sec. 4.1, which is DDIM, Song et al. 2021,
arXiv:2010.02502v4, Eq. 12 with eta = 0):

    T_{t->s}(x; eps) = (alpha_s / alpha_t) x - sigma_s expm1(h) eps.

It is the same number as ``ddim_step(x0, eps, values_s)`` with x0 = (x - sigma_t eps) / alpha_t (checked in
``tests/test_inversion.py``), but written as a function of the *base* state x, so that its inverse at fixed
eps is exact: x = (alpha_t / alpha_s) (T + sigma_s expm1(h) eps). EDICT and BDIA are both built from this map
with eps evaluated somewhere other than at x, which is what makes them invertible.

``CoupledState`` is the state of a method that carries two tensors of one shape: EDICT's pair of sequences
(x, y), and BDIA's current state with its neighbour on the grid. Such samplers accept a ``CoupledState`` in
place of x (to continue from an encoded latent) and their encoders return one.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from refimpl._util import expand_like
from refimpl._validation import check_finite
from refimpl.models import DiffusionModel
from refimpl.samplers._common import check_sampler_inputs
from refimpl.samplers.dpm_solver import dpm_solver_1_update
from refimpl.schedules import ScheduleValues

__all__ = ["CoupledState", "check_coupled_inputs", "ddim_transfer", "ddim_transfer_inverse"]


class CoupledState(NamedTuple):
    """Two tensors of one shape (B, ...) carried together by a two-state sampler (meaning set by the method)."""

    x: Tensor
    y: Tensor


#: The DDIM step t -> s at fixed eps, (alpha_s / alpha_t) x - sigma_s expm1(h) eps with h = lambda_s - lambda_t,
#: in either direction of time (s < t generates, s > t inverts): DPM-Solver-1, arXiv:2206.00927v3 Eq. 3.7
#: (= arXiv:2010.02502v4 Eq. 12 with eta = 0). One implementation serves both names.
ddim_transfer = dpm_solver_1_update


def ddim_transfer_inverse(x_s: Tensor, eps: Tensor, values_t: ScheduleValues, values_s: ScheduleValues) -> Tensor:
    """The exact inverse of ``ddim_transfer`` at the same eps: the x with ddim_transfer(x, eps, t, s) = x_s,
    x = (alpha_t / alpha_s) (x_s + sigma_s expm1(h) eps)."""
    h = values_s.lambda_ - values_t.lambda_
    return expand_like(values_t.alpha / values_s.alpha, x_s) * (
        x_s + expand_like(values_s.sigma * torch.expm1(h), eps) * eps
    )


def check_coupled_inputs(
    model: DiffusionModel, state: Tensor | CoupledState, timesteps: object
) -> tuple[Tensor, Tensor | None, Tensor]:
    """Validate a sampler's input that is a tensor or a ``CoupledState``; return (x, y or None, timesteps)."""
    if isinstance(state, CoupledState):
        x, y = state
        ts = check_sampler_inputs(model, x, timesteps)
        if not isinstance(y, Tensor) or not y.is_floating_point():
            raise TypeError(f"the second tensor of a CoupledState must be a floating tensor, got {type(y).__name__}")
        if y.shape != x.shape or y.dtype != x.dtype:
            raise ValueError(
                f"the two tensors of a CoupledState must match: shapes {tuple(x.shape)} and {tuple(y.shape)}, "
                f"dtypes {x.dtype} and {y.dtype}"
            )
        check_finite(y, "CoupledState.y")
        return x, y, ts
    if isinstance(state, tuple):
        raise TypeError("pass a pair of states as a CoupledState(x, y), not a plain tuple")
    return state, None, check_sampler_inputs(model, state, timesteps)
