"""HD-Painter's reusable piece: DDIM(eta) whose fresh noise is replaced by a structured direction rescaled to zero
mean and unit variance (Manukyan et al. 2023, arXiv:2312.14091v3 [unverified version], RASG, Sec. 3 [unverified]).

The eta-DDIM step x_t = alpha_t x0 + sqrt(sigma_t^2 - sigma_tilde^2) eps + sigma_tilde z (``refimpl.samplers.ddim``)
is valid for any z with the moments of a standard normal. RASG puts the gradient of a guidance objective in z's
place after standardising it over each sample's coordinates, so the step keeps the eta-DDIM variance budget
(empirical variance of sigma_tilde z_hat is exactly sigma_tilde^2) while pointing the noise where the objective wants.
"""

from __future__ import annotations

from torch import Tensor

from refimpl._validation import check_instance, check_real_tensor
from refimpl.samplers.ddim import ddim_step
from refimpl.schedules import ScheduleValues

__all__ = ["standardise", "structured_ddim_step"]


def standardise(g: Tensor) -> Tensor:
    """(g - mean) / std over each sample's coordinates (population std): zero mean, unit variance per row."""
    g = check_real_tensor(g, "g")
    if g.ndim < 2:
        raise ValueError(f"g must be a batch (B, ...) of directions, got shape {tuple(g.shape)}")
    flat = g.flatten(1)
    if flat.shape[1] < 2:
        raise ValueError("standardise needs at least two coordinates per sample")
    centred = flat - flat.mean(1, keepdim=True)
    std = centred.pow(2).mean(1, keepdim=True).sqrt()
    if bool((std == 0).any()):
        raise ValueError("a direction with zero variance cannot be standardised")
    return (centred / std).reshape(g.shape)


def structured_ddim_step(
    x0: Tensor, eps: Tensor, v_t: ScheduleValues, sigma_tilde: Tensor | float, direction: Tensor
) -> Tensor:
    """Eta-DDIM's step with z = standardise(direction) in place of fresh Gaussian noise."""
    check_instance(v_t, ScheduleValues, "v_t")
    x0, z = check_real_tensor(x0, "x0"), standardise(direction)
    if z.shape != x0.shape:
        raise ValueError(f"direction must have the shape of x0 {tuple(x0.shape)}, got {tuple(direction.shape)}")
    return ddim_step(x0, eps, v_t, sigma_tilde, z)
