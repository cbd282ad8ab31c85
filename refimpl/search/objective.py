"""The exact objective of solver search on Gaussian data: the KL divergence of a linear sampler's output law.

For data x_0 ~ N(mu, Sigma) every model output (x0, eps, v, score) is affine in x_t, so any linear sampler maps its
start state affinely, and started from the exact marginal p_T = N(alpha_T mu, alpha_T^2 Sigma + sigma_T^2 I) its
output is Gaussian with a law computed exactly by ``refimpl.reference.affine_output_law``. The search objective of
USF/S3 (Liu et al. 2024, arXiv:2312.07243v2) and AutoDiffusion (Li et al. 2023, arXiv:2309.10438v2), a sample
metric (FID) in the papers, becomes on this toy the exact number

    KL(q_out || p_{t_end}),   q_out = law of sample(model, x_T, timesteps), x_T ~ p_{t_start},

with p_{t_end} the data's marginal at the grid's last time: no Monte Carlo, no noise in the fitness, so a search is
reproducible and its result checkable (tests/test_search.py checks this number against a Monte Carlo estimate).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from refimpl.reference import affine_output_law, gaussian_kl
from refimpl.samplers._common import check_sampler_inputs
from toy_models.gmm import ExactModel

__all__ = ["exact_kl", "output_law"]


def _check_gaussian(model: ExactModel) -> None:
    if not isinstance(model, ExactModel) or model.mixture.K != 1:
        raise ValueError(
            "model must be an ExactModel of a single Gaussian (mixture with K = 1): the objective is exact"
        )


def output_law(sample: Callable[..., Tensor], model: ExactModel, timesteps: Tensor) -> tuple[Tensor, Tensor]:
    """Mean (d,) and covariance (d, d) of ``sample(model, x_T, timesteps)`` for x_T ~ p_{timesteps[0]} (exact)."""
    _check_gaussian(model)
    ts = check_sampler_inputs(model, model.mixture.means[:1], timesteps)
    start = model.marginal(ts[0])
    return affine_output_law(sample, model, ts, start.means[0], start.covariances[0], stochastic=False)


def exact_kl(sample: Callable[..., Tensor], model: ExactModel, timesteps: Tensor) -> float:
    """KL(q_out || p_{t_end}) of a deterministic linear sampler on Gaussian data, exact up to round-off.

    ``sample(model, x, timesteps)`` must be affine in x (any linear sampler with the exact Gaussian ``model``).
    """
    mean, cov = output_law(sample, model, timesteps)
    target = model.marginal(timesteps[-1])
    return float(gaussian_kl(mean, cov, target.means[0], target.covariances[0]))
