"""Building blocks of the exactly invertible samplers (EDICT, BDIA): the DDIM transfer map and a pair state.

With the noise prediction eps held fixed, one deterministic DDIM step from s to t is an affine map of the
state, written without cancellation in the half log-SNR step h = lambda_t - lambda_s (DPM-Solver-1,
Lu et al. 2022, arXiv:2206.00927v3, Eq. 3.7 and Sec. 4.1, which is DDIM, Song et al. 2021,
arXiv:2010.02502v4, Eq. 12 with eta = 0):

    T_{s->t}(x_s; eps) = (alpha_t / alpha_s) x_s - sigma_t expm1(h) eps.

It is the same number as ``ddim_step(x0, eps, v_t)`` with x0 = (x_s - sigma_s eps) / alpha_s (checked in
``tests/test_inversion.py``), but written as a function of the *base* state x_s, so that its inverse at fixed
eps is exact: x_s = (alpha_s / alpha_t) (x_t + sigma_t expm1(h) eps). EDICT and BDIA are both built from this
map with eps evaluated somewhere other than at x_s, which is what makes them invertible. (EDICT's paper writes
the step t -> t - 1, BDIA's t_j -> t_{j+1}; here s is always the start and t the end of the map.)

``CoupledState`` is the state of a method that carries two tensors of one shape: EDICT's pair of sequences
(x, y), and BDIA's current state with its neighbour on the grid. Such samplers accept a ``CoupledState`` in
place of x (to continue from an encoded latent) and their encoders return one.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from refimpl._util import expand_like
from refimpl._validation import check_finite, check_float_tensors, check_kinds
from refimpl.models import DiffusionModel
from refimpl.samplers._common import check_sampler_inputs
from refimpl.samplers.dpm_solver import dpm_solver_1_step
from refimpl.schedules import ScheduleValues

__all__ = ["CoupledState", "check_coupled_inputs", "ddim_transfer", "ddim_transfer_inverse"]


class _Pair(NamedTuple):
    x: Tensor
    y: Tensor


class CoupledState(_Pair):
    """Two tensors of one shape (B, ...) carried together by a two-state sampler (meaning set by the method).

    Checked when made: two finite floating tensors of one shape and dtype (``TypeError``/``ValueError``)."""

    __slots__ = ()

    def __new__(cls, x: Tensor, y: Tensor) -> CoupledState:
        check_float_tensors(x=x, y=y)
        if y.shape != x.shape or y.dtype != x.dtype:
            raise ValueError(
                f"the two tensors x and y of a CoupledState must match: shapes {tuple(x.shape)} and "
                f"{tuple(y.shape)}, dtypes {x.dtype} and {y.dtype}"
            )
        check_finite(x, "x")
        check_finite(y, "y")
        return super().__new__(cls, x, y)


#: The DDIM step s -> t at fixed eps, (alpha_t / alpha_s) x_s - sigma_t expm1(h) eps with h = lambda_t - lambda_s,
#: in either direction of time (t < s generates, t > s inverts): DPM-Solver-1, arXiv:2206.00927v3 Eq. 3.7
#: (= arXiv:2010.02502v4 Eq. 12 with eta = 0). One implementation serves both names.
ddim_transfer = dpm_solver_1_step


def ddim_transfer_inverse(x_t: Tensor, eps: Tensor, v_s: ScheduleValues, v_t: ScheduleValues) -> Tensor:
    """The exact inverse of ``ddim_transfer`` s -> t at the same eps: the x_s with ddim_transfer(x_s, eps, v_s, v_t)
    = x_t, x_s = (alpha_s / alpha_t) (x_t + sigma_t expm1(h) eps), h = lambda_t - lambda_s."""
    check_kinds(ScheduleValues, v_s=v_s, v_t=v_t)
    check_float_tensors(x_t=x_t, eps=eps)
    h = v_t.lambda_ - v_s.lambda_
    return expand_like(v_s.alpha / v_t.alpha, x_t) * (x_t + expand_like(v_t.sigma * torch.expm1(h), eps) * eps)


def check_coupled_inputs(
    model: DiffusionModel, state: Tensor | CoupledState, timesteps: object
) -> tuple[Tensor, Tensor | None, Tensor]:
    """Validate a sampler's input that is a tensor or a ``CoupledState``; return (x, y or None, timesteps)."""
    if isinstance(state, CoupledState):  # its two tensors were checked when it was made
        x, y = state
        return x, y, check_sampler_inputs(model, x, timesteps)
    if isinstance(state, tuple):
        raise TypeError("pass a pair of states as a CoupledState(x, y), not a plain tuple")
    return state, None, check_sampler_inputs(model, state, timesteps)
