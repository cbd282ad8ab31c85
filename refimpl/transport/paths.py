"""Conditional paths x_t = alpha_t x_0 + sigma_t eps and the exact marginal velocity of a Gaussian mixture.

Every schedule of ``refimpl.schedules`` is a path: the pair (x_0, eps) moves along x_t = alpha_t x_0 + sigma_t eps
with the conditional velocity u_t(x | x_0, eps) = alpha_t' x_0 + sigma_t' eps (Lipman et al. 2023,
arXiv:2210.02747v2, Eq. 20-21, for Gaussian conditional paths; Liu et al. 2023, arXiv:2209.03003v1, Eq. 1, for the
straight path). Averaging it over the pairs that pass through x gives the marginal velocity
(Lipman et al. 2023, Eq. 8)

    u_t(x) = E[alpha_t' x_0 + sigma_t' eps | x_t = x] = alpha_t' E[x_0 | x_t = x] + sigma_t' E[eps | x_t = x],

whose flow carries p_0 to p_t, and which is the probability-flow ODE field of the same path (Song et al. 2021,
arXiv:2011.13456v2, Eq. 13). For a Gaussian mixture both posterior means are exact (``GaussianMixture.x0_eps``).

Time conventions. refimpl puts the data at t = 0 and the noise at t = 1 (diffusion's convention). ``torchcfm`` and
``flow_matching`` (facebookresearch) put the noise at tau = 0 and the data at tau = 1: their X_tau = tau X_1 +
(1 - tau) X_0 with X_1 data and X_0 noise. The two are the same path with tau = 1 - t, and their velocity is minus
ours: dX/dtau = -dx/dt. ``to_library_time`` / ``from_library_time`` convert, checking t, tau in [0, 1].
"""

from __future__ import annotations

from torch import Tensor

from refimpl._util import expand_like
from refimpl._validation import as_float_tensor, check_in_range, check_instance, check_tensor
from refimpl.parameterization import velocity_from_x0_eps
from refimpl.schedules import NoiseSchedule

__all__ = ["conditional_path", "from_library_time", "marginal_velocity", "to_library_time"]


def _unit_time(t: object, name: str) -> Tensor:
    """t as a float tensor, raising ValueError naming ``name`` unless every entry lies in [0, 1]."""
    return check_in_range(as_float_tensor(t, name), 0.0, 1.0, name)


def to_library_time(t: object) -> Tensor:
    """tau = 1 - t: refimpl's time (data at 0) as the flow-matching libraries' time (data at 1)."""
    return 1.0 - _unit_time(t, "t")


def from_library_time(tau: object) -> Tensor:
    """t = 1 - tau: the libraries' time (data at 1) as refimpl's (data at 0)."""
    return 1.0 - _unit_time(tau, "tau")


def conditional_path(x0: Tensor, eps: Tensor, t: object, schedule: NoiseSchedule) -> tuple[Tensor, Tensor]:
    """The point x_t = alpha_t x0 + sigma_t eps and its conditional velocity alpha_t' x0 + sigma_t' eps.

    x0 and eps have shape (B, ...); t is a number or a (B,) tensor in the schedule's [t_min, t_max]
    (Lipman et al. 2023, arXiv:2210.02747v2, Eq. 20-21; with ``RectifiedFlow`` the velocity is eps - x0).
    """
    x0, eps = check_tensor(x0, "x0"), check_tensor(eps, "eps")
    check_instance(schedule, NoiseSchedule, "schedule")
    if x0.shape != eps.shape:
        raise ValueError(f"x0 and eps must have the same shape, got {tuple(x0.shape)} and {tuple(eps.shape)}")
    v = schedule(t)
    x_t = expand_like(v.alpha, x0) * x0 + expand_like(v.sigma, eps) * eps
    return x_t, velocity_from_x0_eps(x0, eps, v.d_alpha, v.d_sigma)


def marginal_velocity(mixture, x: Tensor, t: object, schedule: NoiseSchedule) -> Tensor:
    """The exact marginal velocity u_t(x) = alpha_t' E[x_0 | x] + sigma_t' E[eps | x] of a Gaussian mixture: (B, d).

    ``mixture`` is a ``toy_models.GaussianMixture`` (anything with ``x0_eps(x, alpha, sigma)``); t is a number or a
    (B,) tensor inside the schedule (Lipman et al. 2023, arXiv:2210.02747v2, Eq. 8).
    """
    v = schedule(t)
    x0, eps = mixture.x0_eps(x, v.alpha, v.sigma)
    return velocity_from_x0_eps(x0, eps, v.d_alpha, v.d_sigma)
