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
pairs in float64. Coefficients are scalars or per-sample (B,) tensors. Every conversion checks its input:
states and predictions must be floating tensors (an integer x would truncate alpha and sigma to integers),
coefficients real and finite, and a coefficient it divides by non-zero (``TypeError``/``ValueError`` naming it);
the named conversions also refuse a result that overflows. ``to_x0_eps`` and ``from_x0_eps``, which run on every
model output, skip that last check (they call the private forms of the conversions).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from refimpl._util import expand_like
from refimpl._validation import as_float_tensor, check_finite, check_finite_result, check_instance, check_kinds
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


def _states(**tensors: object) -> Tensor:
    """Raise unless each argument is a floating tensor; return the first (the batch the coefficients follow)."""
    for name, value in tensors.items():
        if not isinstance(value, Tensor) or not value.is_floating_point():
            kind = value.dtype if isinstance(value, Tensor) else type(value).__name__
            raise TypeError(f"{name} must be a floating torch.Tensor, got {kind}")
    shapes = [value.shape for value in tensors.values()]
    if any(shape != shapes[0] for shape in shapes[1:]):  # the usual case, equal shapes, costs two comparisons
        try:
            torch.broadcast_shapes(*shapes)
        except RuntimeError:
            named = ", ".join(f"{name} {tuple(value.shape)}" for name, value in tensors.items())
            raise ValueError(f"the shapes do not broadcast: {named}") from None
    return next(iter(tensors.values()))  # type: ignore[return-value]


def _coef(value: object, name: str, like: Tensor, nonzero: bool = False) -> Tensor:
    """A checked coefficient (real, finite; non-zero if divided by), shaped to broadcast against ``like``."""
    a = check_finite(as_float_tensor(value, name), name)
    if nonzero and bool((a == 0).any()):
        raise ValueError(f"{name} must be non-zero: the conversion divides by it")
    if a.ndim and (a.ndim != 1 or a.shape[0] != like.shape[0]):
        raise ValueError(f"{name} must be a scalar or have shape (B,) = ({like.shape[0]},), got {tuple(a.shape)}")
    return expand_like(a, like)


def _x0_from_eps(x: Tensor, eps: Tensor, alpha_t: Tensor, sigma_t: Tensor) -> Tensor:
    x = _states(x=x, eps=eps)
    return (x - _coef(sigma_t, "sigma_t", x) * eps) / _coef(alpha_t, "alpha_t", x, nonzero=True)


def x0_from_eps(x: Tensor, eps: Tensor, alpha_t: Tensor, sigma_t: Tensor) -> Tensor:
    """x_0 = (x_t - sigma_t eps) / alpha_t."""
    return check_finite_result(_x0_from_eps(x, eps, alpha_t, sigma_t), "x, eps, alpha_t, sigma_t")


def _eps_from_x0(x: Tensor, x0: Tensor, alpha_t: Tensor, sigma_t: Tensor) -> Tensor:
    x = _states(x=x, x0=x0)
    return (x - _coef(alpha_t, "alpha_t", x) * x0) / _coef(sigma_t, "sigma_t", x, nonzero=True)


def eps_from_x0(x: Tensor, x0: Tensor, alpha_t: Tensor, sigma_t: Tensor) -> Tensor:
    """eps = (x_t - alpha_t x_0) / sigma_t."""
    return check_finite_result(_eps_from_x0(x, x0, alpha_t, sigma_t), "x, x0, alpha_t, sigma_t")


def _v_from_x0_eps(x0: Tensor, eps: Tensor, alpha_t: Tensor, sigma_t: Tensor) -> Tensor:
    x0 = _states(x0=x0, eps=eps)
    return _coef(alpha_t, "alpha_t", eps) * eps - _coef(sigma_t, "sigma_t", x0) * x0


def v_from_x0_eps(x0: Tensor, eps: Tensor, alpha_t: Tensor, sigma_t: Tensor) -> Tensor:
    """v = alpha_t eps - sigma_t x_0."""
    return check_finite_result(_v_from_x0_eps(x0, eps, alpha_t, sigma_t), "x0, eps, alpha_t, sigma_t")


def _x0_eps_from_v(x: Tensor, v: Tensor, alpha_t: Tensor, sigma_t: Tensor) -> tuple[Tensor, Tensor]:
    x = _states(x=x, v=v)
    a, s = _coef(alpha_t, "alpha_t", x), _coef(sigma_t, "sigma_t", x)
    norm = a**2 + s**2
    if bool((norm == 0).any()):
        raise ValueError("alpha_t and sigma_t must not both be zero: v does not determine x0 and eps there")
    return (a * x - s * v) / norm, (s * x + a * v) / norm


def x0_eps_from_v(x: Tensor, v: Tensor, alpha_t: Tensor, sigma_t: Tensor) -> tuple[Tensor, Tensor]:
    """Solve x = alpha x0 + sigma eps, v = alpha eps - sigma x0 for (x0, eps).

    For VP schedules alpha^2 + sigma^2 = 1 and this is x0 = alpha x - sigma v, eps = sigma x + alpha v.
    """
    return check_finite_result(_x0_eps_from_v(x, v, alpha_t, sigma_t), "x, v, alpha_t, sigma_t")


def _score_from_eps(eps: Tensor, sigma_t: Tensor) -> Tensor:
    eps = _states(eps=eps)
    return -eps / _coef(sigma_t, "sigma_t", eps, nonzero=True)


def score_from_eps(eps: Tensor, sigma_t: Tensor) -> Tensor:
    """grad log p_t = -eps / sigma_t."""
    return check_finite_result(_score_from_eps(eps, sigma_t), "eps, sigma_t")


def _eps_from_score(score: Tensor, sigma_t: Tensor) -> Tensor:
    score = _states(score=score)
    return -_coef(sigma_t, "sigma_t", score) * score


def eps_from_score(score: Tensor, sigma_t: Tensor) -> Tensor:
    """eps = -sigma_t grad log p_t."""
    return check_finite_result(_eps_from_score(score, sigma_t), "score, sigma_t")


def _velocity_from_x0_eps(x0: Tensor, eps: Tensor, d_alpha_t: Tensor, d_sigma_t: Tensor) -> Tensor:
    x0 = _states(x0=x0, eps=eps)
    return _coef(d_alpha_t, "d_alpha_t", x0) * x0 + _coef(d_sigma_t, "d_sigma_t", eps) * eps


def velocity_from_x0_eps(x0: Tensor, eps: Tensor, d_alpha_t: Tensor, d_sigma_t: Tensor) -> Tensor:
    """dx_t/dt = alpha_t' x_0 + sigma_t' eps, the probability-flow ODE field."""
    return check_finite_result(_velocity_from_x0_eps(x0, eps, d_alpha_t, d_sigma_t), "x0, eps, d_alpha_t, d_sigma_t")


def _x0_eps_from_velocity(
    x: Tensor, u: Tensor, alpha_t: Tensor, sigma_t: Tensor, d_alpha_t: Tensor, d_sigma_t: Tensor
) -> tuple[Tensor, Tensor]:
    x = _states(x=x, u=u)
    a, s = _coef(alpha_t, "alpha_t", x), _coef(sigma_t, "sigma_t", x)
    da, ds = _coef(d_alpha_t, "d_alpha_t", x), _coef(d_sigma_t, "d_sigma_t", x)
    det = a * ds - s * da
    if bool((det == 0).any()):
        raise ValueError("alpha_t d_sigma_t - sigma_t d_alpha_t must be non-zero: u does not determine x0 and eps")
    return (ds * x - s * u) / det, (a * u - da * x) / det


def x0_eps_from_velocity(
    x: Tensor, u: Tensor, alpha_t: Tensor, sigma_t: Tensor, d_alpha_t: Tensor, d_sigma_t: Tensor
) -> tuple[Tensor, Tensor]:
    """Solve x = alpha x0 + sigma eps, u = alpha' x0 + sigma' eps for (x0, eps).

    The determinant alpha sigma' - sigma alpha' = -alpha sigma lambda' is non-zero because
    lambda_t is strictly decreasing.
    """
    return check_finite_result(
        _x0_eps_from_velocity(x, u, alpha_t, sigma_t, d_alpha_t, d_sigma_t),
        "x, u, alpha_t, sigma_t, d_alpha_t, d_sigma_t",
    )


def to_x0_eps(prediction: str, output: Tensor, x: Tensor, values: ScheduleValues) -> tuple[Tensor, Tensor]:
    """The pair (x0, eps) implied by a model ``output`` of kind ``prediction`` at x_t."""
    check_instance(values, ScheduleValues, "values")
    a, s = values.alpha, values.sigma
    if prediction == "eps":
        return _x0_from_eps(x, output, a, s), output
    if prediction == "x0":
        return output, _eps_from_x0(x, output, a, s)
    if prediction == "v":
        return _x0_eps_from_v(x, output, a, s)
    if prediction == "score":
        eps = _eps_from_score(output, s)
        return _x0_from_eps(x, eps, a, s), eps
    if prediction == "velocity":
        return _x0_eps_from_velocity(x, output, a, s, values.d_alpha, values.d_sigma)
    raise ValueError(f"unknown prediction {prediction!r}; choose one of {PREDICTIONS}")


def from_x0_eps(prediction: str, x0: Tensor, eps: Tensor, values: ScheduleValues) -> Tensor:
    """The model output of kind ``prediction`` that corresponds to the pair (x0, eps)."""
    check_instance(values, ScheduleValues, "values")
    if prediction == "eps":
        return eps
    if prediction == "x0":
        return x0
    if prediction == "v":
        return _v_from_x0_eps(x0, eps, values.alpha, values.sigma)
    if prediction == "score":
        return _score_from_eps(eps, values.sigma)
    if prediction == "velocity":
        return _velocity_from_x0_eps(x0, eps, values.d_alpha, values.d_sigma)
    raise ValueError(f"unknown prediction {prediction!r}; choose one of {PREDICTIONS}")


def convert(output: Tensor, source: str, target: str, x: Tensor, values: ScheduleValues) -> Tensor:
    """Convert a model output at x_t from kind ``source`` to kind ``target``."""
    check_kinds(str, source=source, target=target)
    if source == target and source in PREDICTIONS:
        return output
    x0, eps = to_x0_eps(source, output, x, values)
    return from_x0_eps(target, x0, eps, values)
