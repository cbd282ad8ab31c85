"""Flow matching: the conditional loss, its minimiser (the marginal velocity), couplings and straightness.

Lipman et al. 2023 (arXiv:2210.02747v2): the flow-matching loss L_FM(theta) = E_t E_{x ~ p_t} |v_theta(x, t) -
u_t(x)|^2 (Eq. 5) needs the marginal velocity u_t, which is unknown in practice; the conditional loss
L_CFM(theta) = E_t E_{(x_0, eps)} |v_theta(x_t, t) - u_t(x_t | x_0, eps)|^2 (Eq. 9) needs only the pairs. Their
Theorem 2: L_CFM - L_FM does not depend on theta, so both have the same gradient and the same minimiser, the
marginal velocity (Eq. 8). On the exact mixture toy the difference is E |u_t(x_t | x_0, eps) - u_t(x_t)|^2 for every
theta, checked in ``tests/test_transport_flow_matching.py``.

Couplings: independent pairs (x_0 ~ data, eps ~ N(0, I)) or the minibatch OT pairing of OT-CFM (Tong et al. 2024,
arXiv:2302.00482v4, Alg. 3). Straightness of a flow (Liu et al. 2023, arXiv:2209.03003v1, Eq. 9 with the time
reversed): S = int_0^1 E |dx_t/dt - (x_1 - x_0)|^2 dt, zero exactly when every path is a straight line at constant
speed; ``straightness`` estimates it from a trajectory on a grid.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from refimpl._validation import check_callable, check_tensor
from refimpl.schedules import NoiseSchedule
from refimpl.transport.coupling import minibatch_ot_pairs
from refimpl.transport.paths import conditional_path, marginal_velocity

__all__ = ["cfm_loss", "conditional_batch", "marginal_fm_loss", "straightness"]

COUPLINGS = ("independent", "ot")


def conditional_batch(
    x0: Tensor, eps: Tensor, t: Tensor, schedule: NoiseSchedule, *, coupling: str = "independent"
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """A flow-matching batch: (x0, eps) paired by ``coupling``, x_t and the conditional velocity target.

    Returns (x0, eps, x_t, u) with eps reordered by the minibatch OT pairing when ``coupling="ot"``.
    """
    if not isinstance(coupling, str) or coupling not in COUPLINGS:
        raise ValueError(f"coupling must be one of {COUPLINGS}, got {coupling!r}")
    x0, eps = check_tensor(x0, "x0"), check_tensor(eps, "eps")
    if coupling == "ot":
        eps = eps[minibatch_ot_pairs(x0, eps)]
    x_t, u = conditional_path(x0, eps, t, schedule)
    return x0, eps, x_t, u


def cfm_loss(
    v: Callable[[Tensor, Tensor], Tensor], x0: Tensor, eps: Tensor, t: Tensor, schedule: NoiseSchedule
) -> Tensor:
    """The conditional flow-matching loss, mean over the batch of |v(x_t, t) - (alpha_t' x0 + sigma_t' eps)|^2.

    Lipman et al. 2023 (arXiv:2210.02747v2), Eq. 9 (their Eq. 23 for the straight path); t is a (B,) tensor.
    """
    check_callable(v, "v")
    x_t, u = conditional_path(x0, eps, t, schedule)
    return ((v(x_t, t) - u) ** 2).reshape(x0.shape[0], -1).sum(-1).mean()


def marginal_fm_loss(
    v: Callable[[Tensor, Tensor], Tensor], mixture, x_t: Tensor, t: Tensor, schedule: NoiseSchedule
) -> Tensor:
    """The flow-matching loss at the points x_t: mean |v(x_t, t) - u_t(x_t)|^2 with the exact marginal velocity.

    Lipman et al. 2023 (arXiv:2210.02747v2), Eq. 5; ``mixture`` a ``toy_models.GaussianMixture``.
    """
    u = marginal_velocity(mixture, x_t, t, schedule)
    return ((v(x_t, t) - u) ** 2).sum(-1).mean()


def straightness(xs: Tensor, times: Tensor) -> Tensor:
    """S = int |dx/dt - (x_end - x_start) / (t_end - t_start)|^2 dt / |t_end - t_start|, averaged over the batch.

    ``xs`` (n + 1, B, ...) is a trajectory on the strictly monotone grid ``times`` (n + 1,); dx/dt is the
    piecewise-constant difference quotient, so S is exact for piecewise-linear paths and zero for straight lines
    crossed at constant speed (Liu et al. 2023, arXiv:2209.03003v1, Eq. 9, normalised to a unit interval).
    """
    xs, times = check_tensor(xs, "xs"), check_tensor(times, "times")
    if xs.ndim < 2 or times.ndim != 1 or xs.shape[0] != times.shape[0]:
        raise ValueError(
            f"xs must be (n + 1, B, ...) on times (n + 1,), got {tuple(xs.shape)} and {tuple(times.shape)}"
        )
    dt = torch.diff(times.to(xs.dtype))
    if not bool((dt > 0).all() or (dt < 0).all()):
        raise ValueError("times must be strictly monotone")
    shape = (-1,) + (1,) * (xs.ndim - 1)
    slopes = torch.diff(xs, dim=0) / dt.reshape(shape)  # (n, B, ...)
    total = times[-1] - times[0]
    chord = (xs[-1] - xs[0]) / total.to(xs.dtype)
    dev = ((slopes - chord) ** 2).reshape(slopes.shape[0], slopes.shape[1], -1).sum(-1)  # (n, B)
    return ((dev * dt.abs().reshape(-1, 1)).sum(0) / total.abs()).mean()
