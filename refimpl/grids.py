"""Timestep grids: decreasing float64 tensors t_0 > t_1 > ... > t_n from t_start to t_end.

A grid with ``n_steps`` steps has ``n_steps + 1`` entries; both endpoints are exact.

* ``uniform_t``      -- equal steps in t (Ho et al. 2020; Song et al. 2021 DDIM "linear").
* ``uniform_lambda`` -- equal steps in lambda = log(alpha/sigma) (Lu et al. 2022, arXiv:2206.00927v3, Sec. 3.3).
* ``quadratic``      -- equal steps in sqrt(t) (Song et al. 2021, arXiv:2010.02502v4, App. D.2;
  DPM-Solver's "time_quadratic").
* ``karras``         -- equal steps in sigma^(1/rho) of the EDM noise level sigma = sigma_t / alpha_t
  = exp(-lambda) (Karras et al. 2022, arXiv:2206.00364v2, Eq. 5), rho = 7.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from refimpl.schedules import NoiseSchedule

__all__ = ["GRIDS", "karras", "quadratic", "timesteps", "uniform_lambda", "uniform_t"]


def _endpoints(
    schedule: NoiseSchedule, n_steps: int, t_start: float | None, t_end: float | None
) -> tuple[Tensor, Tensor]:
    if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 1:
        raise ValueError(f"n_steps must be a positive integer, got {n_steps!r}")
    t_start = schedule.check_t(schedule.t_max if t_start is None else t_start, "t_start")
    t_end = schedule.check_t(schedule.t_min if t_end is None else t_end, "t_end")
    if not t_start > t_end:
        raise ValueError(f"t_start ({float(t_start):g}) must be larger than t_end ({float(t_end):g})")
    return t_start.to(torch.float64), t_end.to(torch.float64)


def _pin(grid: Tensor, t_start: Tensor, t_end: Tensor) -> Tensor:
    # Map round-trips (t -> lambda -> t) may move the ends by an ulp; put them back exactly.
    grid[0], grid[-1] = t_start, t_end
    return grid


def uniform_t(
    schedule: NoiseSchedule, n_steps: int, t_start: float | None = None, t_end: float | None = None
) -> Tensor:
    """Equal steps in t."""
    t0, t1 = _endpoints(schedule, n_steps, t_start, t_end)
    return _pin(torch.linspace(float(t0), float(t1), n_steps + 1, dtype=torch.float64), t0, t1)


def uniform_lambda(
    schedule: NoiseSchedule, n_steps: int, t_start: float | None = None, t_end: float | None = None
) -> Tensor:
    """Equal steps in lambda = log(alpha_t / sigma_t), the grid the exponential integrators analyse."""
    t0, t1 = _endpoints(schedule, n_steps, t_start, t_end)
    lam = torch.linspace(float(schedule.lambda_t(t0)), float(schedule.lambda_t(t1)), n_steps + 1, dtype=torch.float64)
    return _pin(schedule.t_of_lambda(lam), t0, t1)


def quadratic(
    schedule: NoiseSchedule, n_steps: int, t_start: float | None = None, t_end: float | None = None
) -> Tensor:
    """Equal steps in sqrt(t): denser near t_end."""
    t0, t1 = _endpoints(schedule, n_steps, t_start, t_end)
    return _pin(torch.linspace(float(t0.sqrt()), float(t1.sqrt()), n_steps + 1, dtype=torch.float64) ** 2, t0, t1)


def karras(
    schedule: NoiseSchedule,
    n_steps: int,
    t_start: float | None = None,
    t_end: float | None = None,
    rho: float = 7.0,
) -> Tensor:
    """Karras et al. (2022), Eq. 5, in the EDM noise level sigma = sigma_t / alpha_t = exp(-lambda_t).

    EDM appends a final sigma = 0; here the grid ends at t_end, inside the schedule.
    """
    if isinstance(rho, bool) or not isinstance(rho, (int, float)) or not 0 < rho < math.inf:
        raise ValueError(f"rho must be a positive finite number, got {rho!r}")
    t0, t1 = _endpoints(schedule, n_steps, t_start, t_end)
    s_max, s_min = schedule.rho_t(t0), schedule.rho_t(t1)
    i = torch.arange(n_steps + 1, dtype=torch.float64) / n_steps
    sigma = (s_max ** (1 / rho) + i * (s_min ** (1 / rho) - s_max ** (1 / rho))) ** rho
    return _pin(schedule.t_of_rho(sigma.clamp(s_min, s_max)), t0, t1)


GRIDS: dict[str, Callable[..., Tensor]] = {
    "uniform_t": uniform_t,
    "uniform_lambda": uniform_lambda,
    "quadratic": quadratic,
    "karras": karras,
}


def timesteps(
    schedule: NoiseSchedule,
    n_steps: int,
    spacing: str = "uniform_lambda",
    t_start: float | None = None,
    t_end: float | None = None,
) -> Tensor:
    """The grid called ``spacing`` (a key of ``GRIDS``) with ``n_steps`` steps from t_start to t_end."""
    try:
        grid = GRIDS[spacing]
    except KeyError:
        raise ValueError(f"unknown spacing {spacing!r}; choose one of {sorted(GRIDS)}") from None
    return grid(schedule, n_steps, t_start, t_end)
