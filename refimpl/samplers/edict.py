"""EDICT: exact diffusion inversion via coupled transformations (Wallace, Gokul & Naik 2023, arXiv:2211.12446).

Two sequences (x, y) are carried together. One step from t to s < t, with T the DDIM transfer map at fixed
eps (``refimpl.samplers._reversible``; their a_t x + b_t eps), is their Eq. 14:

    x_inter = T_{t->s}(x; eps(y, t))            y_inter = T_{t->s}(y; eps(x_inter, t))
    x'      = p x_inter + (1 - p) y_inter       y'      = p y_inter + (1 - p) x'

Every line is an affine coupling (the part that changes is shifted by a function of the part that does not),
so it inverts exactly, line by line in reverse order (the inversion stated with their Eq. 14):

    y_inter = (y' - (1 - p) x') / p             x_inter = (x' - (1 - p) y_inter) / p
    y       = T^{-1}(y_inter; eps(x_inter, t))  x       = T^{-1}(x_inter; eps(y, t)).

The mixing p = 0.93 is the paper's. Generation damps the x - y difference by p^2 a step; inversion grows it by
p^-2 a step, which is the rounding amplification declared in the registry. The official code
(salesforce/EDICT, ``coupled_stablediffusion``, ``leapfrog_steps=True`` by default) swaps which sequence is
updated first at every other step; ``leapfrog=True`` does the same (the mixing order never changes). Generation
starts from x = y = x_T; the output is the x sequence. As an ODE solver EDICT is first order (measured in
``tests/test_registry.py``), with a long pre-asymptotic range: on EDM-like schedules the order shows only
from about 64 steps.
"""

from __future__ import annotations

import math

from torch import Tensor

from refimpl.models import DiffusionModel, predict_x0_eps
from refimpl.registry import SamplerSpec, register
from refimpl.samplers._common import Callback, StepInfo
from refimpl.samplers._reversible import CoupledState, check_coupled_inputs, ddim_transfer, ddim_transfer_inverse
from refimpl.schedules import ScheduleValues

__all__ = ["EDICT_P", "edict_step", "edict_step_inverse", "invert_edict", "sample_edict"]

#: The mixing weight of the paper's experiments (arXiv:2211.12446, Sec. 4).
EDICT_P = 0.93


def _check_p(p: float) -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not math.isfinite(p) or not 0.0 < p <= 1.0:
        raise ValueError(f"the EDICT mixing weight p must lie in (0, 1], got {p!r}")
    return float(p)


def _eps(model: DiffusionModel, x: Tensor, values: ScheduleValues) -> tuple[Tensor, Tensor]:
    """One model call at (x, t): (x0, eps)."""
    return predict_x0_eps(model, x, values.t, values)


def edict_step(
    model: DiffusionModel,
    x: Tensor,
    y: Tensor,
    values_t: ScheduleValues,
    values_s: ScheduleValues,
    p: float = EDICT_P,
    y_first: bool = False,
) -> tuple[Tensor, Tensor, Tensor]:
    """One EDICT step t -> s (arXiv:2211.12446 Eq. 14); two model calls, both at time t.

    ``y_first`` swaps the roles of the two sequences in the coupling (the official code's leapfrog order); the
    mixing always updates x first. Returns (x', y', x0 of the first model call).
    """
    if y_first:  # the same two couplings with the sequences exchanged
        x0, eps = _eps(model, x, values_t)
        y_inter = ddim_transfer(y, eps, values_t, values_s)
        x_inter = ddim_transfer(x, _eps(model, y_inter, values_t)[1], values_t, values_s)
    else:
        x0, eps = _eps(model, y, values_t)
        x_inter = ddim_transfer(x, eps, values_t, values_s)  # x_inter = a_t x + b_t eps(y, t)
        y_inter = ddim_transfer(y, _eps(model, x_inter, values_t)[1], values_t, values_s)  # b_t eps(x_inter, t)
    x_next = p * x_inter + (1 - p) * y_inter  # mixing layer, Eq. 14 third line
    y_next = p * y_inter + (1 - p) * x_next  # Eq. 14 fourth line, uses the new x
    return x_next, y_next, x0


def edict_step_inverse(
    model: DiffusionModel,
    x: Tensor,
    y: Tensor,
    values_t: ScheduleValues,
    values_s: ScheduleValues,
    p: float = EDICT_P,
    y_first: bool = False,
) -> tuple[Tensor, Tensor, Tensor]:
    """The exact inverse of ``edict_step``: from the pair at s back to the pair at t (two model calls at t).

    Returns (x, y, x0 of the first model call).
    """
    y_inter = (y - (1 - p) * x) / p  # undo the fourth line
    x_inter = (x - (1 - p) * y_inter) / p  # undo the third line
    if y_first:
        x0, eps = _eps(model, y_inter, values_t)
        x_prev = ddim_transfer_inverse(x_inter, eps, values_t, values_s)
        y_prev = ddim_transfer_inverse(y_inter, _eps(model, x_prev, values_t)[1], values_t, values_s)
    else:
        x0, eps = _eps(model, x_inter, values_t)
        y_prev = ddim_transfer_inverse(y_inter, eps, values_t, values_s)
        x_prev = ddim_transfer_inverse(x_inter, _eps(model, y_prev, values_t)[1], values_t, values_s)
    return x_prev, y_prev, x0


def sample_edict(
    model: DiffusionModel,
    x: Tensor | CoupledState,
    timesteps: Tensor,
    *,
    p: float = EDICT_P,
    leapfrog: bool = True,
    return_pair: bool = False,
    callback: Callback | None = None,
) -> Tensor | CoupledState:
    """EDICT generation from timesteps[0] to timesteps[-1]; 2 model calls a step.

    x: the start x_T (B, ...), used for both sequences, or a ``CoupledState`` (x, y) such as ``invert_edict``
    returns. Returns the x sequence at timesteps[-1], or the pair if ``return_pair``. The callback sees the x
    sequence; its x0 is that of the step's first model call.
    """
    p = _check_p(p)
    x, y, ts = check_coupled_inputs(model, x, timesteps)
    y = x.clone() if y is None else y
    values = model.schedule(ts)
    for i in range(len(ts) - 1):
        x_next, y, x0 = edict_step(model, x, y, values[i], values[i + 1], p, y_first=leapfrog and i % 2 == 1)
        if callback is not None:
            callback(StepInfo(i, ts[i], ts[i + 1], x, x_next, x0))
        x = x_next
    return CoupledState(x, y) if return_pair else x


def invert_edict(
    model: DiffusionModel,
    x: Tensor | CoupledState,
    timesteps: Tensor,
    *,
    p: float = EDICT_P,
    leapfrog: bool = True,
    callback: Callback | None = None,
) -> CoupledState:
    """EDICT inversion from timesteps[-1] back up to timesteps[0] (the grid ``sample_edict`` will use).

    x: the data (B, ...), used for both sequences, or a pair. Returns the latent pair (x_T, y_T), which
    ``sample_edict`` maps back to the input up to round-off. The callback sees the x sequence, with the x0 of
    each inverse step's first model call.
    """
    p = _check_p(p)
    x, y, ts = check_coupled_inputs(model, x, timesteps)
    y = x.clone() if y is None else y
    values = model.schedule(ts)
    n = len(ts) - 1
    for j, i in enumerate(range(n - 1, -1, -1)):
        x_prev, y, x0 = edict_step_inverse(model, x, y, values[i], values[i + 1], p, leapfrog and i % 2 == 1)
        if callback is not None:
            callback(StepInfo(j, ts[i + 1], ts[i], x, x_prev, x0))
        x = x_prev
    return CoupledState(x, y)


register(
    SamplerSpec(
        name="edict",
        sample=sample_edict,
        order=1,
        stochastic=False,
        encode=invert_edict,
        invertible=True,
        nfe=lambda n: 2 * n,
        amplification=lambda n: EDICT_P ** (-2 * n),
        order_steps=(64, 128, 256, 512),  # pre-asymptotic below ~64 steps on EDM-like schedules
        paper="wallace2023edict",
        equation="arXiv:2211.12446 Eq. 14 (p = 0.93) and its inverse",
    )
)
