"""EDICT: exact diffusion inversion via coupled transformations (Wallace, Gokul & Naik 2023, arXiv:2211.12446).

Two sequences (x, y) are carried together. One step from s to t < s (the paper's t -> t - 1), with T the DDIM
transfer map at fixed eps (``refimpl.samplers._reversible``; their a_t x + b_t eps), is their Eq. 14:

    x_inter = T_{s->t}(x; eps(y, s))            y_inter = T_{s->t}(y; eps(x_inter, s))
    x'      = p x_inter + (1 - p) y_inter       y'      = p y_inter + (1 - p) x'

Every line is an affine coupling (the part that changes is shifted by a function of the part that does not),
so it inverts exactly, line by line in reverse order (the inversion stated with their Eq. 14):

    y_inter = (y' - (1 - p) x') / p             x_inter = (x' - (1 - p) y_inter) / p
    y       = T^{-1}(y_inter; eps(x_inter, s))  x       = T^{-1}(x_inter; eps(y, s)).

Steps are pure: ``edict_step`` and ``edict_step_inverse`` take the two model outputs, and ``edict_stage`` /
``edict_inverse_stage`` give the states at which the model is queried (the loops make the calls).

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

from refimpl._validation import check_finite_result, check_float_tensors, check_kinds
from refimpl.models import DiffusionModel, predict_x0_eps
from refimpl.registry import SamplerSpec, register
from refimpl.samplers._common import Callback, StepInfo
from refimpl.samplers._reversible import CoupledState, check_coupled_inputs, ddim_transfer, ddim_transfer_inverse
from refimpl.schedules import ScheduleValues

__all__ = [
    "EDICT_P",
    "edict_inverse_stage",
    "edict_stage",
    "edict_step",
    "edict_step_inverse",
    "edict_unmix",
    "invert_edict",
    "sample_edict",
]

#: The mixing weight of the paper's experiments (arXiv:2211.12446, Sec. 4).
EDICT_P = 0.93


def _check_p(p: float) -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not math.isfinite(p) or not 0.0 < p <= 1.0:
        raise ValueError(f"the EDICT mixing weight p must lie in (0, 1], got {p!r}")
    return float(p)


def _eps(model: DiffusionModel, x: Tensor, values: ScheduleValues) -> tuple[Tensor, Tensor]:
    """One model call at (x, t): (x0, eps)."""
    return predict_x0_eps(model, x, values.t, values)


def edict_stage(
    x: Tensor, y: Tensor, eps_1: Tensor, v_s: ScheduleValues, v_t: ScheduleValues, y_first: bool = False
) -> Tensor:
    """Where an EDICT step s -> t queries the model the second time (at time s): x_inter = T_{s->t}(x; eps_1),
    eps_1 = eps(y, s) (arXiv:2211.12446 Eq. 14, first line); with ``y_first``, y_inter = T_{s->t}(y; eps(x, s))."""
    check_kinds(ScheduleValues, v_s=v_s, v_t=v_t)
    check_float_tensors(x=x, y=y, eps_1=eps_1)
    return ddim_transfer(y if y_first else x, eps_1, v_s, v_t)


def edict_step(
    x: Tensor,
    y: Tensor,
    eps_1: Tensor,
    eps_2: Tensor,
    v_s: ScheduleValues,
    v_t: ScheduleValues,
    p: float = EDICT_P,
    y_first: bool = False,
) -> tuple[Tensor, Tensor]:
    """One EDICT step s -> t (arXiv:2211.12446 Eq. 14) from the pair (x, y) at s; returns (x', y') at t.

    eps_1 = eps(y, s) and eps_2 = eps(x_inter, s), x_inter = ``edict_stage(x, y, eps_1, v_s, v_t)``: two model
    calls, both at time s. ``y_first`` swaps the roles of the two sequences in the coupling (the official code's
    leapfrog order: eps_1 = eps(x, s), eps_2 = eps(y_inter, s)); the mixing always updates x first.
    """
    check_kinds(ScheduleValues, v_s=v_s, v_t=v_t)
    check_float_tensors(x=x, y=y, eps_1=eps_1, eps_2=eps_2)
    p = _check_p(p)
    first = edict_stage(x, y, eps_1, v_s, v_t, y_first)  # Eq. 14 first line: a_t x + b_t eps(y, s)
    second = ddim_transfer(x if y_first else y, eps_2, v_s, v_t)  # second line: b_t eps(x_inter, s)
    x_inter, y_inter = (second, first) if y_first else (first, second)
    x_next = p * x_inter + (1 - p) * y_inter  # mixing layer, Eq. 14 third line
    y_next = p * y_inter + (1 - p) * x_next  # Eq. 14 fourth line, uses the new x
    return x_next, y_next


def edict_unmix(x_t: Tensor, y_t: Tensor, p: float = EDICT_P) -> tuple[Tensor, Tensor]:
    """Undo EDICT's mixing layers: (x_inter, y_inter) from the pair (x', y') at t (Eq. 14, lines 4 and 3)."""
    check_float_tensors(x_t=x_t, y_t=y_t)
    if x_t.shape != y_t.shape:
        raise ValueError(f"x_t and y_t must have one shape, got {tuple(x_t.shape)} and {tuple(y_t.shape)}")
    return check_finite_result(_unmix(x_t, y_t, _check_p(p)), "that x_t and y_t are finite")


def _unmix(x_t: Tensor, y_t: Tensor, p: float) -> tuple[Tensor, Tensor]:
    """``edict_unmix`` without its checks (the steps call it on states they have checked)."""
    y_inter = (y_t - (1 - p) * x_t) / p  # undo the fourth line
    x_inter = (x_t - (1 - p) * y_inter) / p  # undo the third line
    return x_inter, y_inter


def edict_inverse_stage(
    x_t: Tensor,
    y_t: Tensor,
    eps_1: Tensor,
    v_s: ScheduleValues,
    v_t: ScheduleValues,
    p: float = EDICT_P,
    y_first: bool = False,
) -> Tensor:
    """Where the inverse of an EDICT step s -> t queries the model the second time (at time s): y_s =
    T^{-1}(y_inter; eps_1), eps_1 = eps(x_inter, s), the first query at x_inter of ``edict_unmix``. With
    ``y_first`` the roles exchange: x_s = T^{-1}(x_inter; eps_1), eps_1 = eps(y_inter, s)."""
    check_kinds(ScheduleValues, v_s=v_s, v_t=v_t)
    check_float_tensors(x_t=x_t, y_t=y_t, eps_1=eps_1)
    p = _check_p(p)
    x_inter, y_inter = _unmix(x_t, y_t, p)
    return ddim_transfer_inverse(x_inter if y_first else y_inter, eps_1, v_s, v_t)


def edict_step_inverse(
    x_t: Tensor,
    y_t: Tensor,
    eps_1: Tensor,
    eps_2: Tensor,
    v_s: ScheduleValues,
    v_t: ScheduleValues,
    p: float = EDICT_P,
    y_first: bool = False,
) -> tuple[Tensor, Tensor]:
    """The exact inverse of ``edict_step``: the pair at s from the pair (x', y') at t.

    eps_1 = eps(x_inter, s) with x_inter from ``edict_unmix``, eps_2 = eps(y_s, s) at the state of
    ``edict_inverse_stage`` (with ``y_first`` the roles of x and y are exchanged). Returns (x_s, y_s).
    """
    check_kinds(ScheduleValues, v_s=v_s, v_t=v_t)
    check_float_tensors(x_t=x_t, y_t=y_t, eps_1=eps_1, eps_2=eps_2)
    p = _check_p(p)
    x_inter, y_inter = _unmix(x_t, y_t, p)
    first = edict_inverse_stage(x_t, y_t, eps_1, v_s, v_t, p, y_first)
    second = ddim_transfer_inverse(y_inter if y_first else x_inter, eps_2, v_s, v_t)
    return (first, second) if y_first else (second, first)


def _edict_query(
    model: DiffusionModel, x: Tensor, y: Tensor, v_s: ScheduleValues, v_t: ScheduleValues, y_first: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """The two model calls of a generation step: (eps_1, eps_2, x0 of the first call)."""
    x0, eps_1 = _eps(model, x if y_first else y, v_s)
    return eps_1, _eps(model, edict_stage(x, y, eps_1, v_s, v_t, y_first), v_s)[1], x0


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
        v_s, v_t, y_first = values[i], values[i + 1], leapfrog and i % 2 == 1
        eps_1, eps_2, x0 = _edict_query(model, x, y, v_s, v_t, y_first)
        x_next, y = edict_step(x, y, eps_1, eps_2, v_s, v_t, p, y_first)
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
    for j, i in enumerate(range(n - 1, -1, -1)):  # undo the step values[i] -> values[i + 1]
        v_s, v_t, y_first = values[i], values[i + 1], leapfrog and i % 2 == 1
        x0, eps_1 = _eps(model, _unmix(x, y, p)[1 if y_first else 0], v_s)
        eps_2 = _eps(model, edict_inverse_stage(x, y, eps_1, v_s, v_t, p, y_first), v_s)[1]
        x_prev, y = edict_step_inverse(x, y, eps_1, eps_2, v_s, v_t, p, y_first)
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
