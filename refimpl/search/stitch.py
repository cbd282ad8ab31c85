"""T-Stitch: a small model for the first fraction r of the steps, the large model afterwards, with one solver.

Pan et al. (2024), "T-Stitch: Accelerating Sampling in Pre-Trained Diffusion Models with Trajectory Stitching",
arXiv:2402.14167v1, Sec. 3 [unverified numbering]. ``StitchedModel`` is a model like any other: it answers with the
small model at times above the switch time and with the large one below it, so every registered sampler stitches
without change, and r = 0 (large only) and r = 1 (small only) are those models' samplers bit for bit.

Why the early steps tolerate a weak model: at high noise the noised data law is nearly Gaussian, so a model that is
exact only for the moment-matched Gaussian q of the data is nearly exact for the noised law there. ``noised_kl``
measures KL(p_t || q_t) between the noised data law and the noised Gaussian, which falls towards 0 as t grows.
"""

from __future__ import annotations

import torch
from torch import Tensor

from refimpl._validation import as_finite_float, as_float_tensor, check_finite, check_instance, check_integer
from refimpl.models import DiffusionModel, check_model, predict
from refimpl.schedules import NoiseSchedule
from toy_models.gmm import ExactModel, GaussianMixture

__all__ = ["StitchedModel", "moment_matched_model", "noised_kl", "stitch_time"]


def stitch_time(timesteps: Tensor, fraction: float) -> Tensor:
    """The switch time t_k, k = round(fraction n): steps 0..k-1 start above it and use the small model."""
    timesteps = check_finite(as_float_tensor(timesteps, "timesteps"), "timesteps")
    if timesteps.ndim != 1 or len(timesteps) < 2:
        raise ValueError(f"timesteps must be a 1-D grid of at least 2 times, got shape {tuple(timesteps.shape)}")
    fraction = as_finite_float(fraction, "fraction")
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must lie in [0, 1], got {fraction!r}")
    n = len(timesteps) - 1
    return timesteps[round(float(fraction) * n)]


class StitchedModel:
    """The small model at t > ``t_switch`` (all samples of the batch), the large one otherwise; the large model's
    schedule and prediction (the small model's output is converted when it predicts something else)."""

    def __init__(self, small: DiffusionModel, large: DiffusionModel, t_switch: Tensor | float):
        check_model(small, "small")
        check_model(large, "large")
        if small.schedule is not large.schedule:
            raise ValueError("the small and large models must share one schedule")
        self.small, self.large, self.t_switch = small, large, as_finite_float(t_switch, "t_switch")
        self.schedule: NoiseSchedule = large.schedule
        self.prediction: str = large.prediction

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        if bool((torch.as_tensor(t) > self.t_switch).all()):
            return predict(self.small, x, t, self.prediction)
        return self.large(x, t)


def moment_matched_model(model: ExactModel) -> ExactModel:
    """The exact model of the single Gaussian with the data law's mean and covariance (the "small" model)."""
    check_instance(model, ExactModel, "model")
    mean, cov = model.mixture.moments()
    gaussian = GaussianMixture(torch.ones(1, dtype=mean.dtype), mean[None], cov[None])
    return ExactModel(gaussian, model.schedule, model.prediction)


def noised_kl(model: ExactModel, t: float | Tensor, n: int, generator: torch.Generator) -> tuple[float, float]:
    """KL(p_t || q_t) of the noised data law p_t and the noised moment-matched Gaussian q_t, as E_p[log p_t - log
    q_t] over n exact draws of x_t: (estimate, its standard error). Both densities are exact."""
    small = moment_matched_model(model)
    t = model.schedule.check_t(as_finite_float(t, "t"), "t")
    check_instance(generator, torch.Generator, "generator")
    x_t = model.sample_xt(check_integer(n, "n", 2), t, generator)[1]
    terms = model.log_prob(x_t, t) - small.log_prob(x_t, t)
    return float(terms.mean()), float(terms.std() / n**0.5)
