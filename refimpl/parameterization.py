"""Named conversions between the five things a diffusion network can predict.

With x_t = alpha_t x_0 + sigma_t eps (every schedule in ``refimpl.schedules``):

* ``eps``      -- the noise, eps = (x_t - alpha_t x_0) / sigma_t (Ho et al. 2020, arXiv:2006.11239v2, Eq. 11).
* ``x0``       -- the data (denoised) prediction, x_0 = (x_t - sigma_t eps) / alpha_t.
* ``v``        -- v = alpha_t eps - sigma_t x_0 (Salimans & Ho 2022, arXiv:2202.00512v2, Sec. 4).
* ``score``    -- grad log p_t(x_t) = -eps / sigma_t (Song et al. 2021, arXiv:2011.13456v2, Eq. 13 with
  Tweedie's formula, Efron 2011).
* ``velocity`` -- the probability-flow ODE field dx_t/dt = alpha_t' x_0 + sigma_t' eps
  (Song et al. 2021, Eq. 13; the flow-matching form of Lipman et al. 2023, arXiv:2210.02747v2).

Every conversion goes through the pair (x0, eps); ``tests/test_parameterization.py`` round-trips all
pairs in float64. Coefficients are scalars or per-sample (B,) tensors.
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor

from refimpl._util import expand_like
from refimpl.schedules import ScheduleValues

__all__ = [
    "PREDICTIONS",
    "Prediction",
    "convert",
    "eps_from_score",
    "eps_from_x0",
    "from_x0_eps",
    "score_from_eps",
    "to_x0_eps",
    "v_from_x0_eps",
    "velocity_from_x0_eps",
    "x0_eps_from_v",
    "x0_eps_from_velocity",
    "x0_from_eps",
]

Prediction = Literal["eps", "x0", "v", "score", "velocity"]
PREDICTIONS: tuple[str, ...] = ("eps", "x0", "v", "score", "velocity")


def x0_from_eps(x: Tensor, eps: Tensor, alpha_t: Tensor, sigma_t: Tensor) -> Tensor:
    """x_0 = (x_t - sigma_t eps) / alpha_t."""
    return (x - expand_like(sigma_t, x) * eps) / expand_like(alpha_t, x)


def eps_from_x0(x: Tensor, x0: Tensor, alpha_t: Tensor, sigma_t: Tensor) -> Tensor:
    """eps = (x_t - alpha_t x_0) / sigma_t."""
    return (x - expand_like(alpha_t, x) * x0) / expand_like(sigma_t, x)


def v_from_x0_eps(x0: Tensor, eps: Tensor, alpha_t: Tensor, sigma_t: Tensor) -> Tensor:
    """v = alpha_t eps - sigma_t x_0."""
    return expand_like(alpha_t, eps) * eps - expand_like(sigma_t, x0) * x0


def x0_eps_from_v(x: Tensor, v: Tensor, alpha_t: Tensor, sigma_t: Tensor) -> tuple[Tensor, Tensor]:
    """Solve x = alpha x0 + sigma eps, v = alpha eps - sigma x0 for (x0, eps).

    For VP schedules alpha^2 + sigma^2 = 1 and this is x0 = alpha x - sigma v, eps = sigma x + alpha v.
    """
    a, s = expand_like(alpha_t, x), expand_like(sigma_t, x)
    norm = a**2 + s**2
    return (a * x - s * v) / norm, (s * x + a * v) / norm


def score_from_eps(eps: Tensor, sigma_t: Tensor) -> Tensor:
    """grad log p_t = -eps / sigma_t."""
    return -eps / expand_like(sigma_t, eps)


def eps_from_score(score: Tensor, sigma_t: Tensor) -> Tensor:
    """eps = -sigma_t grad log p_t."""
    return -expand_like(sigma_t, score) * score


def velocity_from_x0_eps(x0: Tensor, eps: Tensor, d_alpha_t: Tensor, d_sigma_t: Tensor) -> Tensor:
    """dx_t/dt = alpha_t' x_0 + sigma_t' eps, the probability-flow ODE field."""
    return expand_like(d_alpha_t, x0) * x0 + expand_like(d_sigma_t, eps) * eps


def x0_eps_from_velocity(
    x: Tensor, u: Tensor, alpha_t: Tensor, sigma_t: Tensor, d_alpha_t: Tensor, d_sigma_t: Tensor
) -> tuple[Tensor, Tensor]:
    """Solve x = alpha x0 + sigma eps, u = alpha' x0 + sigma' eps for (x0, eps).

    The determinant alpha sigma' - sigma alpha' = -alpha sigma lambda' is non-zero because
    lambda_t is strictly decreasing.
    """
    a, s = expand_like(alpha_t, x), expand_like(sigma_t, x)
    da, ds = expand_like(d_alpha_t, x), expand_like(d_sigma_t, x)
    det = a * ds - s * da
    return (ds * x - s * u) / det, (a * u - da * x) / det


def to_x0_eps(prediction: str, output: Tensor, x: Tensor, values: ScheduleValues) -> tuple[Tensor, Tensor]:
    """The pair (x0, eps) implied by a model ``output`` of kind ``prediction`` at x_t."""
    a, s = values.alpha, values.sigma
    if prediction == "eps":
        return x0_from_eps(x, output, a, s), output
    if prediction == "x0":
        return output, eps_from_x0(x, output, a, s)
    if prediction == "v":
        return x0_eps_from_v(x, output, a, s)
    if prediction == "score":
        eps = eps_from_score(output, s)
        return x0_from_eps(x, eps, a, s), eps
    if prediction == "velocity":
        return x0_eps_from_velocity(x, output, a, s, values.d_alpha, values.d_sigma)
    raise ValueError(f"unknown prediction {prediction!r}; choose one of {PREDICTIONS}")


def from_x0_eps(prediction: str, x0: Tensor, eps: Tensor, values: ScheduleValues) -> Tensor:
    """The model output of kind ``prediction`` that corresponds to the pair (x0, eps)."""
    if prediction == "eps":
        return eps
    if prediction == "x0":
        return x0
    if prediction == "v":
        return v_from_x0_eps(x0, eps, values.alpha, values.sigma)
    if prediction == "score":
        return score_from_eps(eps, values.sigma)
    if prediction == "velocity":
        return velocity_from_x0_eps(x0, eps, values.d_alpha, values.d_sigma)
    raise ValueError(f"unknown prediction {prediction!r}; choose one of {PREDICTIONS}")


def convert(output: Tensor, source: str, target: str, x: Tensor, values: ScheduleValues) -> Tensor:
    """Convert a model output at x_t from kind ``source`` to kind ``target``."""
    if source == target and source in PREDICTIONS:
        return output
    x0, eps = to_x0_eps(source, output, x, values)
    return from_x0_eps(target, x0, eps, values)
