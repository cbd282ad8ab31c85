"""Mean-shifted forward processes: x_t = alpha_t x_0 + kappa_t c + sigma_t eps, and their models.

RDDM with its DDIM coefficient map (kappa_t = 1 - alpha_t, c = I_in, Liu et al. 2024, arXiv:2308.13712) and
DiffuseVAE's formulation 2 (c = x_hat, kappa_t = 1 - alpha_t in the paper, kappa_t = 1 in its code; Pandey et al.
2022, arXiv:2201.00308) are both this process. Subtracting the known shift gives z_t = x_t - kappa_t c =
alpha_t x_0 + sigma_t eps, the ordinary process of the same schedule: every exact fact of the book carries over.

A network of the shifted process sees x_t. ``ShiftedModel`` moves a model between the two coordinates: wrapping a
model of z_t with (c, kappa) gives the model of x_t (it answers at x_t what the wrapped one answers at
x_t - kappa_t c), and wrapping a model of x_t with (-c, kappa) gives its view as a model of z_t, which the ordinary
conversions of ``refimpl.parameterization`` then read correctly. eps, x0, v and the score are unchanged by a
translation of x_t; the ODE velocity is not (it gains kappa_t' c), so a velocity model is refused.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

from refimpl._util import expand_like
from refimpl._validation import check_callable, check_finite, check_instance, check_tensor
from refimpl.models import ModelWrapper, check_model
from refimpl.schedules import ScheduleValues

__all__ = ["Kappa", "ShiftedModel", "check_shift", "kappa_one", "kappa_residual", "shifted_forward"]

Kappa = Callable[[ScheduleValues], Tensor]


def kappa_residual(v: ScheduleValues) -> Tensor:
    """kappa_t = 1 - alpha_t: RDDM's abar_t under its DDIM map, DiffuseVAE's formulation 2 (paper)."""
    check_instance(v, ScheduleValues, "v")
    return 1.0 - v.alpha


def kappa_one(v: ScheduleValues) -> Tensor:
    """kappa_t = 1 at every t: DiffuseVAE's formulation 2 as its code implements it (``ddpm_form2.py``)."""
    check_instance(v, ScheduleValues, "v")
    return v.alpha.new_ones(v.alpha.shape)


def check_shift(c: object, x: Tensor, name: str) -> Tensor:
    """The shift ``c`` as a finite tensor broadcasting against x (shape x.shape or x.shape[1:]); None means 0."""
    if not isinstance(name, str):
        raise TypeError(f"name (of the shift, for messages) must be a string, got {type(name).__name__}")
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError(f"x must be a floating torch.Tensor, got {type(x).__name__}")
    if c is None:
        return x.new_zeros(x.shape)
    if not isinstance(c, Tensor) or not c.is_floating_point():
        raise TypeError(f"{name} must be a floating torch.Tensor of shape {tuple(x.shape)} or {tuple(x.shape[1:])}")
    if c.shape not in (x.shape, x.shape[1:]):
        raise ValueError(f"{name} must have shape {tuple(x.shape)} or {tuple(x.shape[1:])}, got {tuple(c.shape)}")
    return check_finite(c, name).to(x.dtype)


def shifted_forward(x0: Tensor, c: Tensor, v_t: ScheduleValues, eps: Tensor, kappa: Kappa = kappa_residual) -> Tensor:
    """x_t = alpha_t x_0 + kappa_t c + sigma_t eps (the process of this module, one draw per row)."""
    x0 = check_tensor(x0, "x0")
    c = check_shift(c, x0, "c")
    check_instance(v_t, ScheduleValues, "v_t")
    if check_tensor(eps, "eps").shape != x0.shape:
        raise ValueError(f"eps must have the shape of x0 {tuple(x0.shape)}, got {tuple(eps.shape)}")
    check_callable(kappa, "kappa")
    return expand_like(v_t.alpha, x0) * x0 + expand_like(kappa(v_t), x0) * c + expand_like(v_t.sigma, eps) * eps


@dataclass
class ShiftedModel(ModelWrapper):
    """``model`` seen through the translation x -> x - kappa_t c: calls return model(x - kappa_t c, t)."""

    c: Tensor | None = None
    kappa: Kappa = kappa_residual

    def __post_init__(self) -> None:
        check_model(self.model)
        if self.model.prediction == "velocity":
            raise ValueError("a velocity model cannot be shifted: the ODE velocity gains kappa_t' c")
        if not isinstance(self.c, Tensor):
            raise TypeError(f"c must be a torch.Tensor, got {type(self.c).__name__}")
        check_finite(self.c, "c")
        check_callable(self.kappa, "kappa")

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        kappa_t = expand_like(self.kappa(self.schedule(t)), x)
        return self.model(x - kappa_t * self.c.to(x.dtype), t)
